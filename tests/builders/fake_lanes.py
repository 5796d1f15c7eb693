"""Fake lanes for the window's tests: the Lane contract of pipeline/lane.py, with pixels that tell what was drawn.

A fake frame's image encodes its frame index and scale in its pixels, so a test can read back which frame a lane
view shows without trusting the window's own bookkeeping. Features follow a known formula, so plots and the fitted
scale can be checked against hand-computed values.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from core.interfaces import Provenance
from pipeline.session import LaneSpec


def fake_spec(name: str, scale: float = 1.0) -> LaneSpec:
    """A real LaneSpec (the workspace saves it like any other) naming files that are never opened."""
    return LaneSpec(name=name, encoder=Path("fake_encoder.onnx"), generator=Path("fake_generator.onnx"), scale=scale)


@dataclass
class FakeRenderedFrame:
    image: np.ndarray
    crop: np.ndarray
    template_index: int


def fake_raw_features(num_frames: int, gain: float = 1.0, seed: int = 0) -> np.ndarray:
    """Non-negative features [num_frames, 512]; ``gain`` scales them (a lane that is a scaled copy)."""
    rng = np.random.default_rng(seed)
    base = rng.random((num_frames, 512)).astype(np.float32) * 5.0
    return (base * gain).astype(np.float32)


def encoded_frame_index(image: np.ndarray) -> int:
    """Reads back the frame index that FakeLane.frame wrote into pixel (0, 0): blue + 256 * green."""
    return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])


class FakeLane:
    """Quick, deterministic stand-in for pipeline.lane.Lane; raises ``fail_with`` from raw_features if set.

    The mouth crop's brightness is min(255, 20 * mean(features(scale)[i])): bigger features open (brighten) the
    mouth, so moving the scale slider visibly changes the pixels, as it does with a real generator.
    """

    def __init__(self, name: str, num_frames: int, *, gain: float = 1.0, seed: int = 0,
                 size: tuple[int, int] = (48, 64), fail_with: Exception | None = None, scale: float = 1.0) -> None:
        self.spec = fake_spec(name, scale)
        self.num_frames = num_frames
        self._raw = fake_raw_features(num_frames, gain, seed)
        self._size = size
        self._fail_with = fail_with
        self.encoder_provenance = Provenance("fake", "1.0", "CPU", "fp32", f"{name}-encoder")
        self.generator_provenance = Provenance("fake", "1.0", "CPU", "fp32", f"{name}-generator")
        self.calls: list[tuple[str, int | None, float | None, str]] = []
        self._lock = threading.Lock()

    def _record(self, what: str, index: int | None = None, scale: float | None = None) -> None:
        with self._lock:
            self.calls.append((what, index, scale, threading.current_thread().name))

    def raw_features(self) -> np.ndarray:
        self._record("raw_features")
        if self._fail_with is not None:
            raise self._fail_with
        return self._raw

    def features(self, scale: float) -> np.ndarray:
        return self.raw_features() * np.float32(scale)

    def frame(self, index: int, scale: float) -> FakeRenderedFrame:
        self._record("frame", index, scale)
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} of {self.num_frames}")
        brightness = int(min(255.0, 20.0 * float(self.features(scale)[index].mean())))
        height, width = self._size
        image = np.full((height, width, 3), 30, dtype=np.uint8)
        image[height // 2:, width // 4: 3 * width // 4] = brightness
        image[0, 0, 0] = index % 256
        image[0, 0, 1] = index // 256
        crop = image[height // 2:, width // 4: 3 * width // 4].copy()
        return FakeRenderedFrame(image=image, crop=crop, template_index=index % 7)

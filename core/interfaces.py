"""The backend interface: an encoder turns mel windows into features, a generator draws a mouth.

Every backend reports its provenance with every result, because the runtime, its version, the execution provider
(or Core ML compute unit) and the precision can each change the numbers a lane shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from core.constants import AUDIO_TENSOR_SHAPE, MEL_BANDS, WINDOW_FRAMES
from core.errors import InputError


@dataclass(frozen=True)
class Provenance:
    """Where a lane's numbers come from: shown next to every result in the report and the window."""

    runtime: str  # "onnxruntime", "coreml-native", "coreml-emulated", "torch", "dump"
    version: str  # version of the runtime (or "" for dumps)
    provider: str  # execution provider / compute unit / device, e.g. "CPUExecutionProvider", "cpuOnly"
    precision: str  # "fp32", "fp16", "mixed", "unknown"
    source: str  # the file the numbers come from
    details: dict[str, str] = field(default_factory=dict)  # e.g. resolved tensor names

    def summary(self) -> str:
        """One line for titles and tables, e.g. 'onnxruntime 1.22.0 · CPUExecutionProvider · fp32'."""
        parts = [f"{self.runtime} {self.version}".strip(), self.provider, self.precision]
        return " · ".join(p for p in parts if p)


@runtime_checkable
class Encoder(Protocol):
    """Audio encoder: mel windows [B, 1, 80, 16] float32 -> features [B, 512] float32."""

    provenance: Provenance

    def encode(self, windows: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Generator(Protocol):
    """Mouth generator: image [B, 6, S, S] and audio [B, 32, 16, 16] (float32) -> image [B, 3, S, S] in [0, 1]."""

    provenance: Provenance
    size: int  # S: 160 or 320 (or whatever square size the model takes)

    def generate(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray: ...


def checked_windows(windows: np.ndarray, label: str) -> np.ndarray:
    """Encoder input as an array, or an InputError naming the model: every backend promises the same contract."""
    windows = np.asarray(windows)
    if windows.ndim != 4 or windows.shape[1:] != (1, MEL_BANDS, WINDOW_FRAMES):
        raise InputError(
            f"{label}: expected mel windows [B,1,{MEL_BANDS},{WINDOW_FRAMES}], found {list(windows.shape)}"
        )
    return windows


def checked_generator_inputs(image: np.ndarray, audio: np.ndarray, size: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Generator inputs as arrays of matching batch, or an InputError naming the model and the shapes found."""
    image, audio = np.asarray(image), np.asarray(audio)
    if image.ndim != 4 or image.shape[1:] != (6, size, size):
        raise InputError(f"{label}: expected an image [B,6,{size},{size}], found {list(image.shape)}")
    if audio.ndim != 4 or audio.shape[1:] != AUDIO_TENSOR_SHAPE:
        raise InputError(f"{label}: expected audio [B,32,16,16], found {list(audio.shape)}")
    if len(image) != len(audio):
        raise InputError(
            f"{label}: expected as many audio tensors as images, found {len(image)} images and {len(audio)} audio "
            "tensors"
        )
    return image, audio


class ModelOpener(Protocol):
    """Opens model files as backends. The pipeline is handed one (``backends.registry.MODELS``) by whoever builds
    lanes, so the pipeline never imports a backend and data flows one way: backends -> core <- pipeline."""

    def open_encoder(self, path: str | Path, options: Mapping[str, Any] | None = None) -> Encoder: ...

    def open_generator(self, path: str | Path, options: Mapping[str, Any] | None = None) -> Generator: ...

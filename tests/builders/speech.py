"""Real speech for audio tests: espeak-ng renders text, soundfile/soxr turn it into the file layout a test needs.

Synthetic tones hide bugs that speech exposes (silence gaps, broadband fricatives, level changes), and espeak-ng
is deterministic and offline, so the same text always gives the same samples.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import soxr

ESPEAK = "espeak-ng"
ESPEAK_RATE = 22050  # espeak-ng writes 16-bit mono wav at 22.05 kHz


def espeak_available() -> bool:
    """True when the espeak-ng CLI is on PATH (tests that need speech skip otherwise)."""
    return shutil.which(ESPEAK) is not None


def speech_samples(text: str, voice: str = "en-us", speed: int = 150) -> tuple[np.ndarray, int]:
    """Render text with espeak-ng: (float32 mono samples, 22050)."""
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        subprocess.run(
            [ESPEAK, "-v", voice, "-s", str(speed), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        samples, rate = soundfile.read(str(wav), dtype="float32")
    return samples, int(rate)


def spread_to_channels(mono: np.ndarray, channels: int) -> np.ndarray:
    """[n] -> [n, channels] where every channel differs (gain and a small delay), so a wrong downmix shows."""
    columns = []
    for channel in range(channels):
        gain = 1.0 - 0.3 * channel / max(1, channels - 1)
        columns.append(np.roll(mono, 7 * channel) * gain)
    return np.stack(columns, axis=1).astype(np.float32)


def speak(
    text: str,
    path: Path | str,
    voice: str = "en-us",
    speed: int = 150,
    rate: int | None = None,
    channels: int = 1,
    subtype: str | None = None,
) -> Path:
    """Write text as speech to `path` (format from the suffix) at `rate` (default espeak's 22050) with `channels`.

    Resampling uses soxr 'HQ'; multi-channel files get distinct channels (see spread_to_channels).
    """
    path = Path(path)
    samples, native_rate = speech_samples(text, voice=voice, speed=speed)
    target_rate = native_rate if rate is None else int(rate)
    if target_rate != native_rate:
        samples = soxr.resample(samples, native_rate, target_rate, quality="HQ")
    data = spread_to_channels(samples, channels) if channels > 1 else samples
    # Speech from espeak peaks near full scale; keep headroom so resampling ripple never clips in 16-bit files.
    data = np.clip(data * 0.8, -1.0, 1.0)
    soundfile.write(str(path), data, target_rate, subtype=subtype)
    return path

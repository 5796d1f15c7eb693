"""Stage 1 loading: any wav/flac/ogg file -> mono float32 samples at 16 kHz, exactly as librosa.load(sr=16000).

We decode with soundfile and resample with soxr 'HQ' because that is what librosa.load does by default; the
samples therefore equal the ones the reference Python pipeline feeds its mel front end, without librosa at run
time. Every way a user file can be unusable becomes an InputError naming the path, what was expected and what
was found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from core import limits
from core.errors import InputError

from core.constants import HOP_LENGTH, SAMPLE_RATE, WINDOW_FRAMES

MIN_MEL_FRAMES = WINDOW_FRAMES
# T = 1 + len // 200 >= 16 mel frames (one encoder window) needs len >= 15 * 200 samples.
MIN_SAMPLES = (MIN_MEL_FRAMES - 1) * HOP_LENGTH
RESAMPLE_QUALITY = "HQ"

# soundfile's own integer -> float maps (int / 2**(bits-1)), used for in-memory integer arrays too.
_INTEGER_FULL_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


@dataclass
class Audio:
    """Mono float32 samples at 16 kHz, plus where they came from (shown in the report next to the clip)."""

    samples: np.ndarray
    source_rate: int
    source_channels: int
    path: Path | None = None

    @property
    def duration_s(self) -> float:
        """Length in seconds at 16 kHz."""
        return self.samples.shape[0] / SAMPLE_RATE


def _describe(path: Path | None) -> str:
    return f"audio file {path}" if path is not None else "audio samples"


def _ms(num_samples: int) -> str:
    return f"{num_samples * 1000 / SAMPLE_RATE:g} ms"


def _to_float32(samples: np.ndarray, where: str) -> np.ndarray:
    """Floating arrays pass through (as float32); int16/int32 use soundfile's int / 2**(bits-1) map."""
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    if samples.dtype in _INTEGER_FULL_SCALE:
        return (samples / _INTEGER_FULL_SCALE[samples.dtype]).astype(np.float32)
    raise InputError(f"{where}: expected float32, float64, int16 or int32 samples, found dtype {samples.dtype}")


def _resample_to_16k(mono: np.ndarray, rate: int) -> np.ndarray:
    """soxr 'HQ', then trimmed or zero-padded to ceil(n * 16000 / rate) samples as librosa.resample(fix=True) does.

    The length fix matters: it decides T, and so N, for clips whose resampled length lands near a hop boundary.
    """
    resampled = soxr.resample(mono, rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
    target_length = int(np.ceil(mono.shape[0] * (float(SAMPLE_RATE) / rate)))
    if resampled.shape[0] >= target_length:
        return resampled[:target_length]
    return np.pad(resampled, (0, target_length - resampled.shape[0]))


def _mono_16k(frames: np.ndarray, rate: int, path: Path | None) -> Audio:
    """[n] or [n, channels] samples at `rate` -> checked mono 16 kHz Audio (the shared path of both loaders)."""
    where = _describe(path)
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise InputError(f"{where}: expected a positive integer sample rate, found {rate!r}")
    samples = np.asarray(frames)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.ndim != 2:
        raise InputError(f"{where}: expected samples of shape [n] or [n, channels], found {list(samples.shape)}")
    channels = samples.shape[1]
    if samples.shape[0] == 0 or channels == 0:
        raise InputError(f"{where}: expected audio, found zero-length audio (shape {list(samples.shape)})")
    samples = _to_float32(samples, where)
    nan_count, inf_count = int(np.isnan(samples).sum()), int(np.isinf(samples).sum())
    if nan_count or inf_count:
        raise InputError(f"{where}: expected finite samples, found {nan_count} NaN and {inf_count} Inf")
    # librosa.to_mono: the plain mean of the channels, in float32.
    mono = samples.mean(axis=1, dtype=np.float32) if channels > 1 else samples[:, 0]
    if int(rate) != SAMPLE_RATE:
        mono = _resample_to_16k(mono, int(rate))
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if mono.shape[0] < MIN_SAMPLES:
        raise InputError(
            f"{where}: expected at least {_ms(MIN_SAMPLES)} of audio ({MIN_SAMPLES} samples at 16 kHz, "
            f"{MIN_MEL_FRAMES} mel frames: one encoder window), found {_ms(mono.shape[0])} "
            f"({mono.shape[0]} samples at 16 kHz)"
        )
    return Audio(samples=mono, source_rate=int(rate), source_channels=int(channels), path=path)


def audio_from_array(samples: np.ndarray, rate: int) -> Audio:
    """In-memory samples ([n] or soundfile's [n, channels] layout) at `rate` -> mono 16 kHz Audio, same checks."""
    return _mono_16k(samples, rate, None)


def load_audio(path: str | Path) -> Audio:
    """Decode a wav/flac/ogg file and return mono float32 at 16 kHz (equal to librosa.load(path, sr=16000))."""
    # A regular file only: a FIFO would block forever and a device stream without end (core/limits.py).
    path = limits.input_file(path, "audio file", "a wav/flac/ogg file")
    where = _describe(path)
    try:
        # Through a file object: soundfile encodes a str path as UTF-8, which fails for names that are not.
        with open(path, "rb") as handle:
            info = soundfile.info(handle)
            # The header decides how much the decode allocates: refuse absurd rates and lengths before decoding.
            limits.check_audio_header(int(info.frames), int(info.samplerate), int(info.channels), where)
            handle.seek(0)
            frames, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        size = path.stat().st_size
        raise InputError(
            f"{where}: expected audio soundfile can decode (wav, flac, ogg), "
            f"found {size} bytes it cannot read ({error})"
        ) from error
    except MemoryError:
        raise limits.LimitError(f"{where}: decoding it needs more memory than this machine has") from None
    except OSError as error:
        raise InputError(f"{where}: expected a readable file, found an error reading it ({error.strerror or error})") from None
    return _mono_16k(frames, rate, path)

"""The audio front end in chunks: a long clip's mel, windows and features with a bounded working set.

The whole-clip path (pipeline/mel.py, pipeline/windows.py) holds the float64 STFT of the entire clip ([T, 401]
complex and magnitude arrays) and every encoder window ([N, 1, 80, 16] float32) at once: for a 60-minute clip that
is several GB. Here samples go through in blocks: pre-emphasis carries the previous sample across block boundaries,
the centre padding (zeros, or librosa < 0.9's reflection) is added at the true start and end of the clip only, and
each chunk of STFT frames goes through mel.mel_from_magnitude, the very function melspectrogram ends with. Every mel
row depends only on its own 800 samples, so the streamed mel is bit-identical to the whole-clip mel
(tests/test_streaming.py checks that on many lengths and both pad modes). Windows are cut from a rolling buffer of
mel rows at window_starts' positions, and the encoder sees them in batches that are a multiple of every backend's
own batch (64 and 256), so the features are the ones the whole clip gives too.

What stays in memory for a clip of T mel frames and N windows: the samples' 16 kHz float32 copy only when the caller
holds it (``features_from_file`` reads 16 kHz files block by block), the [N+2, 512] float32 features, and a few tens
of MB of chunk buffers; time grows linearly with the length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from core.constants import FEATURE_WIDTH, HOP_LENGTH, MEL_BANDS, SAMPLE_RATE, WINDOW_FRAMES
from core.errors import InputError
from pipeline.mel import N_FFT, PAD_MODES, PREEMPHASIS, hann_window, mel_from_magnitude, num_mel_frames
from pipeline.windows import num_windows, window_starts

# 4096 frames: 26 MB of windowed float64 frames and as much again for the FFT; small next to the clip, large enough
# that numpy's per-call overhead is negligible.
DEFAULT_CHUNK_FRAMES = 4096
# Windows per encoder call from here: 2048 x 5 KB = 10 MB, a multiple of the ONNX backend's 64 and Core ML / torch's
# 256 so each backend batches exactly as it does for the whole clip.
DEFAULT_WINDOW_BATCH = 2048
_MARGIN = N_FFT // 2
# Reflect padding mirrors y[1..400] at the start and y[n-401..n-2] at the end.
_REFLECT_SPAN = _MARGIN + 1

Encode = Callable[[np.ndarray], np.ndarray]


def _check_total(total_samples: int, pad_mode: str) -> int:
    """The same checks (and messages) as melspectrogram, made before the first block arrives."""
    if pad_mode not in PAD_MODES:
        raise InputError(f"mel pad mode: expected one of {', '.join(PAD_MODES)}, found {pad_mode!r}")
    total = int(total_samples)
    if total <= 0:
        raise InputError("mel input: expected at least one sample, found an empty array")
    if pad_mode == "reflect" and total <= _MARGIN:
        raise InputError(f"mel input: reflect padding needs more than {_MARGIN} samples, found {total}")
    return total


class MelStream:
    """Feed a clip's 16 kHz samples in order, in blocks of any size; get its mel rows [n, 80] float32 in order.

    ``total_samples`` must be known up front: the number of mel frames is 1 + total // 200 and the last frames
    depend on the end padding. After ``finish()`` exactly that many rows have been returned.
    """

    def __init__(self, total_samples: int, pad_mode: str = "constant",
                 chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> None:
        self.total_samples = _check_total(total_samples, pad_mode)
        self.pad_mode = pad_mode
        self.num_frames = num_mel_frames(self.total_samples)
        self.chunk_frames = max(1, int(chunk_frames))
        self._received = 0
        self._emitted = 0
        self._previous: float | None = None  # last raw sample, for the pre-emphasis of the next block's first
        self._tail = np.zeros(0, np.float64)  # last 401 emphasised samples (the reflection at the end)
        self._head: list[np.ndarray] = []  # reflect mode: emphasised samples held until the first 401 are known
        self._head_size = 0
        # The centre-padded, emphasised signal from padded position emitted * 200 on.
        self._buffer = np.zeros(_MARGIN if pad_mode == "constant" else 0, np.float64)
        self._started = pad_mode == "constant"
        self._finished = False

    def _emphasised(self, block: np.ndarray) -> np.ndarray:
        """y[n] = x[n] - 0.97 x[n-1] in float64, continuing from the previous block (y[0] = x[0] at the start)."""
        x = np.asarray(block).astype(np.float64)
        y = x.copy()
        y[1:] -= PREEMPHASIS * x[:-1]
        if self._previous is not None and x.size:
            y[0] -= PREEMPHASIS * self._previous
        if x.size:
            self._previous = float(x[-1])
        return y

    def feed(self, block: np.ndarray) -> np.ndarray:
        """Take the next samples; returns the mel rows they complete (possibly none), [n, 80] float32."""
        if self._finished:
            raise InputError("mel stream: samples fed after finish()")
        block = np.asarray(block)
        if block.ndim != 1:
            raise InputError(f"mel input: expected mono samples of shape [n], found shape {list(block.shape)}")
        if self._received + block.size > self.total_samples:
            raise InputError(f"mel stream: expected {self.total_samples} samples in all, found more")
        self._received += block.size
        if block.size == 0:
            return np.zeros((0, MEL_BANDS), np.float32)
        y = self._emphasised(block)
        self._tail = np.concatenate([self._tail, y])[-_REFLECT_SPAN:]
        if not self._started:
            self._head.append(y)
            self._head_size += y.size
            if self._head_size < _REFLECT_SPAN:
                return np.zeros((0, MEL_BANDS), np.float32)
            y = np.concatenate(self._head)
            self._head = []
            self._buffer = y[_MARGIN:0:-1].copy()  # np.pad's "reflect": y[400], y[399], ..., y[1]
            self._started = True
        self._buffer = np.concatenate([self._buffer, y])
        return self._drain(final=False)

    def finish(self) -> np.ndarray:
        """Add the end padding and return the remaining rows; every one of the clip's T rows has then been returned."""
        if self._finished:
            return np.zeros((0, MEL_BANDS), np.float32)
        if self._received != self.total_samples:
            raise InputError(f"mel stream: expected {self.total_samples} samples, found {self._received}")
        if not self._started:  # reflect mode, and the clip's first 401 samples came in several small blocks
            y = np.concatenate(self._head)
            self._buffer = np.concatenate([y[_MARGIN:0:-1], y])
            self._started = True
        if self.pad_mode == "constant":
            end = np.zeros(_MARGIN, np.float64)
        else:
            end = self._tail[-2::-1][:_MARGIN]  # y[n-2], y[n-3], ..., y[n-401]
        self._buffer = np.concatenate([self._buffer, end])
        rows = self._drain(final=True)
        self._finished = True
        if self._emitted != self.num_frames:  # pragma: no cover - an internal contract, not a user error
            raise AssertionError(f"mel stream produced {self._emitted} rows, expected {self.num_frames}")
        return rows

    def _drain(self, final: bool) -> np.ndarray:
        """Turn every complete frame in the buffer into mel rows, chunk by chunk, and drop the samples used up."""
        complete = 0 if self._buffer.size < N_FFT else (self._buffer.size - N_FFT) // HOP_LENGTH + 1
        complete = min(complete, self.num_frames - self._emitted)
        if not final and complete < self.chunk_frames:  # wait for a whole chunk: small blocks, few numpy calls
            complete = 0
        if complete <= 0:
            return np.zeros((0, MEL_BANDS), np.float32)
        frames = sliding_window_view(self._buffer, N_FFT)[::HOP_LENGTH]
        parts = []
        for start in range(0, complete, self.chunk_frames):
            chunk = frames[start:min(start + self.chunk_frames, complete)]
            # Exactly stft_magnitude's expression, then melspectrogram's own tail.
            magnitude = np.abs(np.fft.rfft(np.multiply(chunk, hann_window()), n=N_FFT, axis=1))
            parts.append(mel_from_magnitude(magnitude))
        self._emitted += complete
        self._buffer = self._buffer[complete * HOP_LENGTH:].copy()
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _blocks_of(samples: np.ndarray, block_samples: int) -> Iterator[np.ndarray]:
    for start in range(0, samples.shape[0], block_samples):
        yield samples[start:start + block_samples]


def iter_mel_chunks(blocks: Iterable[np.ndarray], total_samples: int, pad_mode: str = "constant",
                    chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> Iterator[np.ndarray]:
    """Mel rows [n, 80] float32 in order, as sample blocks arrive; together they are melspectrogram(all samples)."""
    stream = MelStream(total_samples, pad_mode, chunk_frames)
    for block in blocks:
        rows = stream.feed(block)
        if len(rows):
            yield rows
    rows = stream.finish()
    if len(rows):
        yield rows


def streamed_melspectrogram(samples: np.ndarray, pad_mode: str = "constant",
                            chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> np.ndarray:
    """melspectrogram(samples, pad_mode), bit for bit, computed in chunks: peak memory is the [T, 80] result plus
    a few chunk buffers instead of the clip's whole float64 STFT."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise InputError(f"mel input: expected mono samples of shape [n], found shape {list(x.shape)}")
    total = _check_total(x.size, pad_mode)
    out = np.empty((num_mel_frames(total), MEL_BANDS), np.float32)
    row = 0
    for rows in iter_mel_chunks(_blocks_of(x, chunk_frames * HOP_LENGTH), total, pad_mode, chunk_frames):
        out[row:row + len(rows)] = rows
        row += len(rows)
    return out


def iter_window_batches(mel_chunks: Iterable[np.ndarray], num_mel_rows: int,
                        batch: int = DEFAULT_WINDOW_BATCH) -> Iterator[np.ndarray]:
    """Encoder inputs [b, 1, 80, 16] float32 in order, cut from mel rows as they arrive; together they are
    mel_windows(whole mel). Only the mel rows a pending window still needs are kept."""
    starts = window_starts(num_mel_rows)
    count = starts.shape[0]
    offsets = np.arange(WINDOW_FRAMES)
    held = np.zeros((0, MEL_BANDS), np.float32)
    held_from = 0  # mel row index of held[0]
    arrived = 0
    done = 0
    batch = max(1, int(batch))

    def cut(stop: int) -> np.ndarray:
        index = (starts[done:stop] - held_from)[:, None] + offsets[None, :]
        windows = held[index]  # [b, 16, 80]
        return np.ascontiguousarray(windows.transpose(0, 2, 1)[:, None, :, :], dtype=np.float32)

    for rows in mel_chunks:
        held = np.concatenate([held, np.asarray(rows, np.float32)])
        arrived += len(rows)
        ready = int(np.searchsorted(starts + WINDOW_FRAMES, arrived, side="right"))  # windows ending by `arrived`
        while ready - done >= batch or (ready == count and done < count):
            stop = min(done + batch, ready)
            yield cut(stop)
            done = stop
            keep_from = int(starts[done]) if done < count else arrived
            held = held[keep_from - held_from:]
            held_from = keep_from
    if done != count:
        raise InputError(f"mel stream: expected {num_mel_rows} mel rows, found {arrived}")


def encode_window_batches(encode: Encode, batches: Iterable[np.ndarray], count: int) -> np.ndarray:
    """Padded features [count + 2, 512] float32 from encoder calls on window batches, filled in place (no copy of
    the [N, 512] array the way pad_features concatenates): row 0 repeats row 1, the last repeats the one before."""
    out = np.empty((count + 2, FEATURE_WIDTH), np.float32)
    row = 0
    for windows in batches:
        features = np.asarray(encode(windows), dtype=np.float32)
        if features.shape != (len(windows), FEATURE_WIDTH):
            raise InputError(f"encoder: expected features of shape {[len(windows), FEATURE_WIDTH]} for "
                             f"{len(windows)} windows, found {list(features.shape)}")
        out[1 + row:1 + row + len(windows)] = features
        row += len(windows)
    if row != count:
        raise InputError(f"encoder: expected {count} feature rows, found {row}")
    out[0] = out[1]
    out[-1] = out[-2]
    return out


def features_from_mel(encode: Encode, mel: np.ndarray, batch: int = DEFAULT_WINDOW_BATCH) -> np.ndarray:
    """pad_features(encode(mel_windows(mel))) without ever holding all N windows (460 MB for an hour)."""
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] != MEL_BANDS:
        raise InputError(f"mel spectrogram: expected shape [T, {MEL_BANDS}], found {list(mel.shape)}")
    chunks = (mel[start:start + DEFAULT_CHUNK_FRAMES] for start in range(0, mel.shape[0], DEFAULT_CHUNK_FRAMES))
    count = num_windows(mel.shape[0])
    return encode_window_batches(encode, iter_window_batches(chunks, mel.shape[0], batch), count)


def features_from_samples(encode: Encode, blocks: Iterable[np.ndarray], total_samples: int,
                          pad_mode: str = "constant", batch: int = DEFAULT_WINDOW_BATCH,
                          chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> np.ndarray:
    """Padded features [N+2, 512] of a clip given as 16 kHz sample blocks: mel, windows and encoder all streamed."""
    rows = num_mel_frames(_check_total(total_samples, pad_mode))
    count = num_windows(rows)
    mel_chunks = iter_mel_chunks(blocks, total_samples, pad_mode, chunk_frames)
    return encode_window_batches(encode, iter_window_batches(mel_chunks, rows, batch), count)


def file_sample_blocks(path: str | Path, block_samples: int = DEFAULT_CHUNK_FRAMES * HOP_LENGTH
                       ) -> tuple[int, Iterator[np.ndarray]]:
    """(total 16 kHz samples, their blocks) for an audio file, equal to load_audio(path).samples cut in blocks.

    A 16 kHz file is read block by block (mono = the float32 mean of the channels, as load_audio takes it). Any other
    rate is resampled whole by load_audio, because soxr's streaming resampler does not give the whole-clip samples
    bit for bit; that costs the clip's float32 samples (230 MB for an hour at 16 kHz), not its STFT.
    """
    import soundfile

    from pipeline.audio import MIN_SAMPLES, load_audio

    path = Path(path)
    try:
        info = soundfile.info(str(path))
    except Exception:  # noqa: BLE001 - load_audio gives the user-facing message for anything unreadable
        info = None
    if info is None or info.samplerate != SAMPLE_RATE or info.frames < MIN_SAMPLES:
        samples = load_audio(path).samples
        return samples.shape[0], _blocks_of(samples, block_samples)

    def blocks() -> Iterator[np.ndarray]:
        for frames in soundfile.blocks(str(path), blocksize=block_samples, dtype="float32", always_2d=True):
            mono = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
            if not np.isfinite(mono).all():
                raise InputError(f"audio file {path}: expected finite samples, found NaN or Inf")
            yield np.ascontiguousarray(mono, dtype=np.float32)

    return int(info.frames), blocks()


def features_from_file(encode: Encode, path: str | Path, pad_mode: str = "constant",
                       batch: int = DEFAULT_WINDOW_BATCH) -> np.ndarray:
    """Padded features [N+2, 512] of an audio file, streamed from the file to the encoder."""
    total, blocks = file_sample_blocks(path)
    return features_from_samples(encode, blocks, total, pad_mode, batch)

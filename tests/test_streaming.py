"""The chunked front end (pipeline/streaming.py) gives the whole-clip mel, windows and features bit for bit.

A long clip's features must not need the whole clip's STFT in memory, but a lane must show exactly the numbers the
whole-clip reference computes: so every streamed array here is compared with array_equal, never a tolerance,
including the clip edges (centre padding, reflect mode), lengths next to a hop boundary and blocks of any size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InputError
from pipeline.audio import load_audio
from pipeline.features import pad_features
from pipeline.mel import melspectrogram
from pipeline.streaming import (
    MelStream,
    features_from_file,
    features_from_mel,
    features_from_samples,
    iter_mel_chunks,
    iter_window_batches,
    streamed_melspectrogram,
)
from pipeline.windows import mel_windows


def _clip(length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(length) * 0.2).astype(np.float32)


def _blocks(samples: np.ndarray, size: int):
    return (samples[i:i + size] for i in range(0, samples.shape[0], size))


def _fake_encoder(windows: np.ndarray) -> np.ndarray:
    """Any row-wise function of the window will do: the encoder is not what is under test."""
    flat = windows.reshape(len(windows), -1)
    return (flat[:, :512] * 3.0 - flat[:, 512:1024]).astype(np.float32)


# 3000 is the shortest clip with one window; 3199/3200/3201 straddle a hop; 401 is reflect's minimum (mel only).
@pytest.mark.parametrize("length", [401, 3000, 3199, 3200, 3201, 16000 * 2 + 17, 16000 * 21 + 199])
@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_streamed_mel_is_the_whole_clip_mel(length: int, pad_mode: str) -> None:
    samples = _clip(length)
    whole = melspectrogram(samples, pad_mode)
    for chunk_frames in (1, 3, 64, 4096):
        assert np.array_equal(streamed_melspectrogram(samples, pad_mode, chunk_frames), whole)
    for block in (1 if length < 4000 else 997, 200, 333, 401, length):
        rows = np.concatenate(list(iter_mel_chunks(_blocks(samples, block), length, pad_mode, 16)))
        assert rows.dtype == np.float32
        assert np.array_equal(rows, whole), (block, pad_mode)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(min_value=401, max_value=9000), block=st.integers(min_value=1, max_value=5000),
       chunk=st.integers(min_value=1, max_value=70), reflect=st.booleans(), seed=st.integers(0, 3))
def test_streamed_mel_any_blocks_any_chunks(length: int, block: int, chunk: int, reflect: bool, seed: int) -> None:
    pad_mode = "reflect" if reflect else "constant"
    samples = _clip(length, seed)
    rows = list(iter_mel_chunks(_blocks(samples, block), length, pad_mode, chunk))
    assert np.array_equal(np.concatenate(rows), melspectrogram(samples, pad_mode))


@pytest.mark.parametrize("length", [3000, 3201, 16000 * 7 + 5])
@pytest.mark.parametrize("batch", [1, 5, 64, 2048])
def test_windows_and_features_in_batches_are_the_whole_ones(length: int, batch: int) -> None:
    mel = melspectrogram(_clip(length, 1))
    chunks = (mel[i:i + 37] for i in range(0, mel.shape[0], 37))
    windows = np.concatenate(list(iter_window_batches(chunks, mel.shape[0], batch)))
    assert np.array_equal(windows, mel_windows(mel))
    expected = pad_features(_fake_encoder(mel_windows(mel)))
    assert np.array_equal(features_from_mel(_fake_encoder, mel, batch), expected)
    samples = _clip(length, 1)
    streamed = features_from_samples(_fake_encoder, _blocks(samples, 1234), length, "constant", batch, 8)
    assert np.array_equal(streamed, expected)


def test_features_from_a_16k_file_and_a_44k_file_match_load_audio(tmp_path: Path) -> None:
    stereo = np.stack([_clip(16000 * 3 + 123, 2), _clip(16000 * 3 + 123, 3)], axis=1)
    for rate, name in ((16000, "a16.wav"), (44100, "a44.wav")):
        path = tmp_path / name
        soundfile.write(str(path), stereo, rate, subtype="PCM_16")
        whole = pad_features(_fake_encoder(mel_windows(melspectrogram(load_audio(path).samples))))
        assert np.array_equal(features_from_file(_fake_encoder, path), whole), rate


def test_a_stream_checks_its_length_and_padding() -> None:
    with pytest.raises(InputError, match="reflect padding needs more than 400"):
        MelStream(400, "reflect")
    with pytest.raises(InputError, match="pad mode"):
        MelStream(4000, "edge")
    stream = MelStream(4000)
    stream.feed(np.zeros(3000, np.float32))
    with pytest.raises(InputError, match="expected 4000 samples, found 3000"):
        stream.finish()
    with pytest.raises(InputError, match="found more"):
        stream.feed(np.zeros(1001, np.float32))


def test_an_encoder_returning_the_wrong_shape_is_named() -> None:
    mel = melspectrogram(_clip(8000))
    with pytest.raises(InputError, match="expected features of shape"):
        features_from_mel(lambda w: np.zeros((len(w), 10), np.float32), mel)

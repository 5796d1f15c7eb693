"""Stage 2: one 16-frame mel window per 25 fps video frame, pinned to PIPELINE.md and the reference's own code.

The references are the reference's AudDataset calls (tests/reference_calls.py): data_len's
``int((T - 16) / 80. * float(25)) + 2`` and crop_audio_window's ``int(80. * (i / float(25)))`` with its slide-back,
evaluated by Python itself on a spectrogram whose values name their frame.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InputError
from pipeline.mel import melspectrogram
from pipeline.windows import mel_windows, num_windows, window_starts
from tests import reference_calls as reference


def literal_num_windows(T: int) -> int:
    """The reference's AudDataset.data_len for a T-frame spectrogram."""
    return reference.data_len(T)


def literal_starts(T: int) -> list[int]:
    """The first frame of each of the reference's windows: crop_audio_window on a spectrogram whose rows are 0..T-1."""
    frame_numbers = np.arange(T)[:, None]
    return [int(reference.crop_audio_window(frame_numbers, i)[0, 0]) for i in range(literal_num_windows(T))]


@pytest.mark.parametrize(("seconds", "T", "N"), [(1, 81, 22), (10, 801, 247), (20, 1601, 497)])
def test_pipeline_examples(seconds: int, T: int, N: int) -> None:
    mel = melspectrogram(np.zeros(16000 * seconds, dtype=np.float32))
    assert mel.shape[0] == T
    assert num_windows(T) == N
    assert mel_windows(mel).shape == (N, 1, 80, 16)


def test_num_windows_matches_the_python_float_expression() -> None:
    for T in range(16, 20000):
        assert num_windows(T) == literal_num_windows(T), T


def test_window_starts_for_one_second_by_hand() -> None:
    # int(3.2 i) for i = 0..21; the last one (67) would end at 83 > 81, so it slides back to 81 - 16 = 65.
    expected = [0, 3, 6, 9, 12, 16, 19, 22, 25, 28, 32, 35, 38, 41, 44, 48, 51, 54, 57, 60, 64, 65]
    assert window_starts(81).tolist() == expected


@pytest.mark.parametrize("T", [16, 17, 81, 96, 801, 1601, 4801, 16000, 160001])
def test_window_starts_match_the_literal_expression(T: int) -> None:
    starts = window_starts(T)
    assert starts.tolist() == literal_starts(T)
    assert starts.min() >= 0 and starts.max() + 16 <= T


def test_thousands_of_starts_match_python_float_semantics() -> None:
    T = 250_000  # about 52 minutes of audio: N = 78,122 windows
    starts = window_starts(T)
    assert len(starts) == literal_num_windows(T) > 70_000
    python_starts = np.array([min(int(80.0 * (i / float(25))), T - 16) for i in range(len(starts))])
    np.testing.assert_array_equal(starts, python_starts)


def test_only_windows_past_the_end_slide_back() -> None:
    T = 801
    starts = window_starts(T)
    unslid = (np.arange(len(starts)) * 16) // 5  # 80 i / 25 = 16 i / 5 in exact integers
    slid = np.flatnonzero(starts != unslid)
    assert np.all(unslid[slid] + 16 > T)
    assert np.all(starts[slid] == T - 16)
    assert np.all(unslid[starts == unslid] + 16 <= T)


def test_windows_are_the_reference_encoder_inputs_bit_for_bit() -> None:
    # Stages 1-2 end to end against AudDataset.__getitem__: orig_mel (float64) cropped, transposed, cast to float32.
    rng = np.random.default_rng(31)
    samples = (0.2 * rng.standard_normal(16000 * 2 + 137)).astype(np.float32)
    orig_mel = reference.orig_mel(samples, "constant")
    expected = np.stack([reference.encoder_input(orig_mel, i) for i in range(reference.data_len(orig_mel.shape[0]))])
    windows = mel_windows(melspectrogram(samples))
    assert windows.shape == expected.shape == (47, 1, 80, 16)  # T = 161: int(145 / 80 * 25) + 2
    np.testing.assert_array_equal(windows, expected)


def test_band_zero_is_row_zero_and_frames_run_along_the_width() -> None:
    T = 81
    frame, band = np.meshgrid(np.arange(T), np.arange(80), indexing="ij")
    mel = (1000 * frame + band).astype(np.float32)  # value names its (frame, band)
    windows = mel_windows(mel)
    starts = window_starts(T)
    for i in (0, 1, 5, 21):
        for row in (0, 1, 79):
            for column in (0, 7, 15):
                assert windows[i, 0, row, column] == 1000 * (starts[i] + column) + row
    np.testing.assert_array_equal(windows[3, 0], mel[9:25].T)


def test_windows_are_contiguous_float32() -> None:
    windows = mel_windows(np.random.default_rng(0).standard_normal((100, 80)))
    assert windows.dtype == np.float32 and windows.flags.c_contiguous


def test_too_few_mel_frames_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"expected at least 16 mel frames .* found 15"):
        mel_windows(np.zeros((15, 80), dtype=np.float32))
    with pytest.raises(InputError, match="found 3"):
        num_windows(3)


def test_wrong_mel_shape_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"expected shape \[T, 80\], found \[80, 100\]"):
        mel_windows(np.zeros((80, 100), dtype=np.float32))
    with pytest.raises(InputError, match=r"found \[100\]"):
        mel_windows(np.zeros(100, dtype=np.float32))

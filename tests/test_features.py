"""Stages 3-4: padding the encoder features and cutting the [32, 16, 16] audio tensor for each output frame.

Besides hand-built cases and a loop written here, both stages are compared with the reference's own calls
(tests/reference_calls.py): inference_328.py's torch.cat of first row, outputs, last row, and SyncTalk_2D's
get_audio_features followed by its reshape(32, 16, 16).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from core.errors import InputError
from pipeline.features import (
    NonFiniteFeaturesWarning,
    audio_tensor,
    audio_tensors,
    pad_features,
    validate_features,
)
from tests import reference_calls as reference


def numbered_features(rows: int) -> np.ndarray:
    """[rows, 512] where row r holds r + 1 in every column plus column / 1000: no value is zero, each names itself."""
    return ((np.arange(rows)[:, None] + 1) + np.arange(512)[None, :] / 1000).astype(np.float32)


def loop_audio_tensor(padded: np.ndarray, i: int) -> np.ndarray:
    """A second implementation, written the plain way: copy 16 rows one by one, then fill a [32,16,16] by index."""
    rows = np.zeros((16, 512), dtype=np.float32)
    for k in range(16):
        source = i - 8 + k
        if 0 <= source < padded.shape[0]:
            rows[k] = padded[source]
    flat = [value for row in rows for value in row]
    tensor = np.zeros((32, 16, 16), dtype=np.float32)
    for c in range(32):
        for h in range(16):
            for w in range(16):
                tensor[c, h, w] = flat[c * 256 + h * 16 + w]
    return tensor


def test_pad_repeats_first_and_last_row() -> None:
    features = numbered_features(5)
    padded = pad_features(features)
    assert padded.shape == (7, 512) and padded.dtype == np.float32
    for padded_row, source_row in enumerate([0, 0, 1, 2, 3, 4, 4]):
        np.testing.assert_array_equal(padded[padded_row], features[source_row])


def test_pad_of_a_single_row_gives_three_copies() -> None:
    assert np.all(pad_features(np.ones((1, 512))) == 1.0) and pad_features(np.ones((1, 512))).shape == (3, 512)


def test_frame_zero_is_eight_zero_rows_then_rows_zero_to_seven() -> None:
    padded = numbered_features(30)
    tensor = audio_tensor(padded, 0)
    assert tensor.shape == (32, 16, 16) and tensor.dtype == np.float32
    rows = tensor.reshape(16, 512)
    assert np.all(rows[:8] == 0.0)
    np.testing.assert_array_equal(rows[8:], padded[0:8])
    # Row-major reshape: the 16 x 512 block fills channels first by 256 values, i.e. half a feature row each.
    assert tensor[16, 0, 0] == padded[0, 0]  # flat index 16 * 256 = 4096 = row 8, column 0
    assert tensor[17, 0, 0] == padded[0, 256]  # flat 4352 = row 8, column 256
    assert tensor[18, 1, 3] == padded[1, 19]  # flat 4608 + 19 = row 9, column 19
    assert tensor[31, 15, 15] == padded[7, 511]


def test_last_frame_is_nine_rows_then_seven_zero_rows() -> None:
    padded = numbered_features(30)
    rows = audio_tensor(padded, 29).reshape(16, 512)  # rows [21, 37): 21..29 exist, 30..36 do not
    np.testing.assert_array_equal(rows[:9], padded[21:30])
    assert np.all(rows[9:] == 0.0)


def test_middle_frame_has_no_zeros() -> None:
    padded = numbered_features(30)
    np.testing.assert_array_equal(audio_tensor(padded, 12).reshape(16, 512), padded[4:20])


@pytest.mark.parametrize("rows", [1, 3, 17, 40])
def test_vectorised_tensors_equal_the_loop_implementation(rows: int) -> None:
    padded = np.random.default_rng(rows).standard_normal((rows, 512)).astype(np.float32)
    tensors = audio_tensors(padded)
    assert tensors.shape == (rows, 32, 16, 16) and tensors.dtype == np.float32 and tensors.flags.c_contiguous
    for i in range(rows):
        np.testing.assert_array_equal(tensors[i], loop_audio_tensor(padded, i))


@pytest.mark.parametrize("rows", [1, 2, 6, 7, 60])
def test_padding_is_the_references_concatenation(rows: int) -> None:
    outputs = np.random.default_rng(40 + rows).random((rows, 512), dtype=np.float32)
    expected = reference.audio_feats(outputs)
    padded = pad_features(outputs)
    assert padded.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(padded, expected)


@pytest.mark.parametrize("rows", [8, 9, 15, 16, 17, 30, 249])
def test_every_frames_tensor_is_the_references_get_audio_features_reshaped(rows: int) -> None:
    # rows = N + 2 padded rows, one output frame each; from 8 rows up the reference always yields 16 rows.
    padded = np.random.default_rng(rows).standard_normal((rows, 512)).astype(np.float32)
    tensors = audio_tensors(padded)
    for i in range(rows):
        expected = reference.get_audio_features(padded, i).reshape(32, 16, 16)
        np.testing.assert_array_equal(tensors[i], expected)


def test_below_eight_rows_the_reference_cannot_build_a_tensor_and_we_pad_with_zeros() -> None:
    # The reference pads with zeros_like(auds[:pad]): with fewer rows than the padding that block is too short,
    # its reshape(32, 16, 16) fails, and the reference stops. We keep the documented fact (zeros outside), so a
    # clip of under 0.56 s still renders; this pins that the difference is only where the reference has no answer.
    padded = numbered_features(4)  # N = 2: the shortest clip the encoder accepts (16 mel frames)
    assert reference.get_audio_features(padded, 0).shape[0] != 16
    np.testing.assert_array_equal(audio_tensor(padded, 0), loop_audio_tensor(padded, 0))


def test_selected_frames_keep_their_order() -> None:
    padded = numbered_features(20)
    tensors = audio_tensors(padded, [5, 0, 19, 5])
    for k, i in enumerate([5, 0, 19, 5]):
        np.testing.assert_array_equal(tensors[k], loop_audio_tensor(padded, i))
    assert audio_tensors(padded, []).shape == (0, 32, 16, 16)


@pytest.mark.parametrize("frame", [-1, 20, 100])
def test_frame_outside_the_padded_features_is_an_input_error(frame: int) -> None:
    with pytest.raises(InputError, match=rf"expected 0 <= i < 20 \(N\+2 frames\), found {frame}"):
        audio_tensors(numbered_features(20), [3, frame])


def test_validate_accepts_and_converts_to_float32() -> None:
    values = validate_features(np.ones((4, 512), dtype=np.float64), expected_rows=4)
    assert values.dtype == np.float32 and values.shape == (4, 512)


@pytest.mark.parametrize(
    ("features", "expected_rows", "message"),
    [
        (np.zeros(512), None, r"expected a 2-D array \[rows, 512\], found shape \[512\]"),
        (np.zeros((1, 4, 512)), None, r"expected a 2-D array \[rows, 512\], found shape \[1, 4, 512\]"),
        (np.zeros((10, 256)), None, r"expected 512 values per row, found 256"),
        (np.zeros((247, 512)), 249, r"expected 249 rows, found 247"),
        (np.array([["a"] * 512]), None, r"expected numbers \(float32\), found dtype <U1"),
    ],
)
def test_validate_rejects_wrong_shapes(features: np.ndarray, expected_rows: int | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate_features(features, expected_rows)


def test_nonfinite_features_are_reported_not_rejected() -> None:
    features = np.ones((4, 512), dtype=np.float32)
    features[0, :3] = np.nan
    features[2, 7] = np.inf
    features[3, 9] = -np.inf
    with pytest.warns(NonFiniteFeaturesWarning, match="found 3 NaN and 2 Inf of 2048"):
        values = validate_features(features)
    assert np.isnan(values).sum() == 3 and np.isinf(values).sum() == 2
    with pytest.raises(InputError, match="expected finite values, found 3 NaN and 2 Inf"):
        validate_features(features, reject_nonfinite=True)


def test_nan_features_flow_through_padding_and_tensors_without_error() -> None:
    features = np.full((28, 512), np.nan, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # padding and slicing must neither raise nor warn on NaN
        tensors = audio_tensors(pad_features(features))
    assert tensors.shape == (30, 32, 16, 16)
    assert np.isnan(tensors[12]).all()  # a middle frame is all NaN; edge frames keep their zero rows
    assert np.all(tensors[0].reshape(16, 512)[:8] == 0.0)


def test_pad_rejects_empty_and_misshapen_features() -> None:
    with pytest.raises(InputError, match=r"expected at least 1 row to pad, found shape \[0, 512\]"):
        pad_features(np.zeros((0, 512), dtype=np.float32))
    with pytest.raises(InputError, match="expected 512 values per row, found 80"):
        pad_features(np.zeros((4, 80), dtype=np.float32))

"""Stages 3-4 glue: encoder features [N, 512] -> padded [N+2, 512] -> one audio tensor [32, 16, 16] per frame.

These are the shapes every backend and every dump meet in, so the checks here are where a wrong file is caught
and described (ndim, width, rows, non-finite values) before it can turn into a confusing failure downstream.
"""

from __future__ import annotations

import warnings

import numpy as np

from core.errors import InputError

from core.constants import AUDIO_TENSOR_SHAPE, CONTEXT_ROWS, FEATURE_WIDTH  # noqa: F401 (re-exported)


class NonFiniteFeaturesWarning(UserWarning):
    """Features hold NaN or Inf. Reported, not rejected: a broken backend is exactly what the app must show."""


def count_nonfinite(features: np.ndarray) -> tuple[int, int]:
    """(number of NaN values, number of +-Inf values)."""
    values = np.asarray(features)
    return int(np.isnan(values).sum()), int(np.isinf(values).sum())


def _checked_shape(features: np.ndarray, expected_rows: int | None, what: str) -> np.ndarray:
    """The array, after checking it is numeric [rows, 512] (and has expected_rows rows if given)."""
    values = np.asarray(features)
    if values.ndim != 2:
        raise InputError(f"{what}: expected a 2-D array [rows, {FEATURE_WIDTH}], found shape {list(values.shape)}")
    if values.shape[1] != FEATURE_WIDTH:
        raise InputError(
            f"{what}: expected {FEATURE_WIDTH} values per row, found {values.shape[1]} (shape {list(values.shape)})"
        )
    if expected_rows is not None and values.shape[0] != expected_rows:
        raise InputError(f"{what}: expected {expected_rows} rows, found {values.shape[0]}")
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise InputError(f"{what}: expected numbers (float32), found dtype {values.dtype}")
    return values


def validate_features(
    features: np.ndarray,
    expected_rows: int | None = None,
    *,
    reject_nonfinite: bool = False,
    what: str = "features",
) -> np.ndarray:
    """Check a feature array is [rows, 512] (with expected_rows if given) and return it as float32.

    NaN or Inf values raise only when reject_nonfinite is set; otherwise they are reported with a
    NonFiniteFeaturesWarning and passed through, because a lane whose encoder produces NaN must still be drawable.
    """
    values = _checked_shape(features, expected_rows, what)
    nan_count, inf_count = count_nonfinite(values)
    if nan_count or inf_count:
        message = f"{what}: expected finite values, found {nan_count} NaN and {inf_count} Inf of {values.size}"
        if reject_nonfinite:
            raise InputError(message)
        warnings.warn(message, NonFiniteFeaturesWarning, stacklevel=2)
    return np.asarray(values, dtype=np.float32)


def pad_features(features: np.ndarray) -> np.ndarray:
    """[N, 512] -> [N+2, 512] float32 by repeating the first and the last row once (what aud_ave.npy holds)."""
    values = np.asarray(_checked_shape(features, None, "features"), dtype=np.float32)
    if values.shape[0] == 0:
        raise InputError(f"features: expected at least 1 row to pad, found shape {list(values.shape)}")
    return np.concatenate([values[:1], values, values[-1:]], axis=0)


def _frames_with_context(padded: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """[F, 16, 512]: rows [i - 8, i + 8) of padded for each frame i, with zero rows outside the array."""
    zero_rows = np.zeros((CONTEXT_ROWS, FEATURE_WIDTH), dtype=np.float32)
    extended = np.concatenate([zero_rows, padded, zero_rows], axis=0)
    # Row r of `padded` is row r + 8 of `extended`, so rows [i - 8, i + 8) are extended[i : i + 16].
    row_index = frames[:, None] + np.arange(2 * CONTEXT_ROWS)[None, :]
    return extended[row_index]


def audio_tensors(padded: np.ndarray, frames: np.ndarray | list[int] | None = None) -> np.ndarray:
    """Audio tensors [F, 32, 16, 16] float32 for the given output frames (default: all N+2 of them).

    Each is rows [i - 8, i + 8) of the padded features, zeros outside, reshaped row-major; no normalisation.
    """
    # Shape only: scanning for NaN on every frame request would be slow and would repeat validate_features' report.
    values = np.asarray(_checked_shape(padded, None, "padded features"), dtype=np.float32)
    total = values.shape[0]
    index = np.arange(total) if frames is None else np.asarray(frames)
    if index.ndim == 1 and index.size == 0:
        index = index.astype(np.int64)  # np.asarray([]) is float64; an empty selection is still valid
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise InputError(f"output frames: expected a 1-D list of integers, found {index.dtype} of shape {list(index.shape)}")
    if index.size and (index.min() < 0 or index.max() >= total):
        bad = index[(index < 0) | (index >= total)]
        raise InputError(f"output frame: expected 0 <= i < {total} (N+2 frames), found {int(bad[0])}")
    context = _frames_with_context(values, index.astype(np.int64))
    return np.ascontiguousarray(context.reshape((index.size,) + AUDIO_TENSOR_SHAPE))


def audio_tensor(padded: np.ndarray, i: int) -> np.ndarray:
    """The [32, 16, 16] float32 audio tensor for output frame i (see audio_tensors)."""
    return audio_tensors(padded, [int(i)])[0]

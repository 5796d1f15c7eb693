"""Numbers that say how two lanes differ: statistics, comparison against a reference, shared histograms, row ranges.

Built for the question this project exists to answer ("is the Core ML encoder a scaled copy of ONNX, or something
else?"): besides Polygraphy-style error figures, ``compare`` fits the best scale between the lanes and says how much
of the lane that scale explains (r2). A lane that is merely scaled has r2 near 1; a lane with random weights does
not, however it is scaled.

Everything is computed in float64 over the positions that are finite, and non-finite values are counted rather
than allowed to poison the figures: a backend that emits NaN must show up as a count in the report, not as a crash
or as a report full of NaN. Undefined figures (the cosine of an all-zero vector, ...) are NaN, never an exception.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from core.constants import CONTEXT_ROWS
from core.errors import InputError

NAN = float("nan")


@dataclass(frozen=True)
class Stats:
    """Summary of one array. Moments and percentiles use finite values only; percentiles interpolate linearly.

    ``std`` is the population standard deviation (ddof=0), as numpy and Polygraphy report it. With no finite value
    every float field is NaN. ``argmin``/``argmax`` are flat indices into the original array (-1 when undefined).
    """

    min: float
    max: float
    mean: float
    std: float
    median: float
    p1: float
    p99: float
    nan: int
    inf: int
    count: int  # all elements, finite or not
    argmin: int = -1
    argmax: int = -1

    @property
    def finite(self) -> int:
        return self.count - self.nan - self.inf

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _as_float64(a: np.ndarray | Sequence[float]) -> np.ndarray:
    array = np.asarray(a)
    if array.dtype.kind not in "biuf":
        raise InputError(f"statistics: expected a real numeric array, found dtype {array.dtype}")
    return array.astype(np.float64, copy=False).reshape(-1)


def stats(a: np.ndarray | Sequence[float]) -> Stats:
    """Polygraphy-style summary of any real array (any shape; flattened)."""
    values = _as_float64(a)
    finite_mask = np.isfinite(values)
    nan_count = int(np.isnan(values).sum())
    inf_count = int(np.isinf(values).sum())
    finite = values[finite_mask]
    if finite.size == 0:
        return Stats(NAN, NAN, NAN, NAN, NAN, NAN, NAN, nan_count, inf_count, int(values.size))
    positions = np.flatnonzero(finite_mask)
    p1, median, p99 = np.percentile(finite, [1.0, 50.0, 99.0])
    return Stats(
        min=float(finite.min()),
        max=float(finite.max()),
        mean=float(finite.mean()),
        std=float(finite.std()),
        median=float(median),
        p1=float(p1),
        p99=float(p99),
        nan=nan_count,
        inf=inf_count,
        count=int(values.size),
        argmin=int(positions[np.argmin(finite)]),
        argmax=int(positions[np.argmax(finite)]),
    )


@dataclass(frozen=True)
class Comparison:
    """How a lane (a) differs from a reference (b), over the positions finite in both.

    - ``max_abs``, ``mean_abs``: of a - b. ``rel`` = max_abs / max|b|; 0.0 when both are all zero, inf when only
      the reference is (any difference is infinitely large relative to nothing).
    - ``cosine`` = <a,b> / (|a| |b|); NaN when either vector is all zero (a zero vector has no direction).
    - ``scale`` = <a,b> / <b,b>: the least-squares s in a ≈ s·b (NaN when b is all zero).
    - ``r2`` = 1 - Σ(a - s·b)² / Σ(a - mean a)²: how much of the lane's variation the scaled reference explains.
      Centred on purpose: features after a ReLU are all positive, and an uncentred R² would call any two positive
      vectors a good fit. 1 is a perfect scaled copy; it can go negative. NaN when the lane is constant.
    - ``correction`` = <a,b> / <a,a>: the factor to multiply the lane by so it best matches the reference
      (what the window's "fit" button sets); NaN when the lane is all zero.
    - ``compared``/``excluded``: positions used and left out (non-finite in either); ``lane_nan``/``reference_nan``
      and ``lane_inf``/``reference_inf`` count NaNs and infinities in each input. With nothing to compare, every
      float figure is NaN.
    - ``lane_non_finite``: positions where the lane is NaN/Inf although the reference is finite there (values the
      lane produced); ``reference_non_finite``: positions where the reference is NaN/Inf. ``first_lane_non_finite``
      and ``first_reference_non_finite`` are the flat indices of the first of each (-1 when there is none), so a
      report can say where they start. The figures above describe only the finite positions: a caller must treat
      any non-finite count as a failed comparison, never read the figures alone.
    """

    max_abs: float
    mean_abs: float
    rel: float
    cosine: float
    scale: float
    r2: float
    correction: float
    compared: int = 0
    excluded: int = 0
    lane_nan: int = 0
    reference_nan: int = 0
    max_abs_index: int = -1  # flat index of the largest difference (-1 when nothing was compared)
    lane_inf: int = 0
    reference_inf: int = 0
    lane_non_finite: int = 0
    reference_non_finite: int = 0
    first_lane_non_finite: int = -1
    first_reference_non_finite: int = -1

    @property
    def non_finite(self) -> bool:
        """True when either side holds a NaN/Inf: such a comparison is never a match, whatever the figures say."""
        return self.lane_non_finite > 0 or self.reference_non_finite > 0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _first(mask: np.ndarray) -> int:
    """Flat index of the first True in ``mask``, -1 when there is none."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else -1


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator != 0.0 else NAN


def compare(lane: np.ndarray, reference: np.ndarray) -> Comparison:
    """Compare a lane with the reference lane; shapes must match exactly (no broadcasting hides a wrong shape)."""
    lane_array, reference_array = np.asarray(lane), np.asarray(reference)
    if lane_array.shape != reference_array.shape:
        raise InputError(
            f"compare: expected lane and reference of the same shape, found lane {list(lane_array.shape)} "
            f"and reference {list(reference_array.shape)}"
        )
    a_all, b_all = _as_float64(lane_array), _as_float64(reference_array)
    a_finite, b_finite = np.isfinite(a_all), np.isfinite(b_all)
    both_finite = a_finite & b_finite
    compared = int(both_finite.sum())
    lane_only = ~a_finite & b_finite  # the lane produced these: the reference has a number there
    counts = dict(
        compared=compared,
        excluded=int(a_all.size - compared),
        lane_nan=int(np.isnan(a_all).sum()),
        reference_nan=int(np.isnan(b_all).sum()),
        lane_inf=int(np.isinf(a_all).sum()),
        reference_inf=int(np.isinf(b_all).sum()),
        lane_non_finite=int(lane_only.sum()),
        reference_non_finite=int(b_all.size - int(b_finite.sum())),
        first_lane_non_finite=_first(lane_only),
        first_reference_non_finite=_first(~b_finite),
    )
    if compared == 0:
        return Comparison(NAN, NAN, NAN, NAN, NAN, NAN, NAN, **counts)
    a, b = a_all[both_finite], b_all[both_finite]
    difference = np.abs(a - b)
    worst = int(np.argmax(difference))
    max_abs = float(difference[worst])
    reference_peak = float(np.abs(b).max())
    if reference_peak > 0.0:
        rel = max_abs / reference_peak
    else:
        rel = 0.0 if max_abs == 0.0 else float("inf")
    ab, aa, bb = float(a @ b), float(a @ a), float(b @ b)
    cosine = ab / (np.sqrt(aa) * np.sqrt(bb)) if aa > 0.0 and bb > 0.0 else NAN
    scale = _ratio(ab, bb)
    if np.isnan(scale):
        r2 = NAN
    else:
        total = float(((a - a.mean()) ** 2).sum())
        residual = float(((a - scale * b) ** 2).sum())
        r2 = 1.0 - residual / total if total > 0.0 else NAN
    return Comparison(
        max_abs=max_abs,
        mean_abs=float(difference.mean()),
        rel=rel,
        cosine=float(np.clip(cosine, -1.0, 1.0)) if not np.isnan(cosine) else NAN,
        scale=scale,
        r2=r2,
        correction=_ratio(ab, aa),
        max_abs_index=int(np.flatnonzero(both_finite)[worst]),
        **counts,
    )


@dataclass(frozen=True)
class Histogram:
    """Counts of several arrays on one set of bins, so the lanes' distributions overlay honestly."""

    edges: np.ndarray  # [bins + 1] float64, shared by every lane; the last bin includes its right edge
    counts: np.ndarray  # [lanes, bins] int64
    excluded: np.ndarray  # [lanes] int64: non-finite values (and, with an explicit range, values outside it)


def histogram(
    arrays: Sequence[np.ndarray], bins: int = 64, value_range: tuple[float, float] | None = None
) -> Histogram:
    """Histogram each array on bins shared by all: by default spanning the finite values of every array together.

    A single value (or none) gets a unit-wide range around it, so the result always has ``bins`` proper bins.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    flats = [_as_float64(a) for a in arrays]
    finite = [f[np.isfinite(f)] for f in flats]
    if value_range is None:
        present = [f for f in finite if f.size]
        if present:
            low, high = min(float(f.min()) for f in present), max(float(f.max()) for f in present)
        else:
            low, high = 0.0, 1.0
    else:
        low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    counts = np.zeros((len(flats), bins), dtype=np.int64)
    excluded = np.zeros(len(flats), dtype=np.int64)
    for row, (flat, values) in enumerate(zip(flats, finite)):
        counts[row] = np.histogram(values, bins=edges)[0]
        excluded[row] = flat.size - counts[row].sum()
    return Histogram(edges=edges, counts=counts, excluded=excluded)


@dataclass(frozen=True)
class RowRanges:
    """Per-row summaries [N] of a feature matrix, for the live plots (one point per audio frame)."""

    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    p1: np.ndarray
    p99: np.ndarray


def per_row_ranges(features: np.ndarray) -> RowRanges:
    """min / max / mean / p1 / p99 of every row of [N, D] features, vectorised, over each row's finite values.

    A row with no finite value gives NaN in every field, which the plots draw as a gap.
    """
    matrix = np.asarray(features)
    if matrix.ndim != 2 or matrix.dtype.kind not in "biuf":
        raise InputError(f"features: expected a real matrix [N, D], found {matrix.dtype} {list(matrix.shape)}")
    values = matrix.astype(np.float64)
    if values.size == 0:
        empty = np.full(values.shape[0], NAN)
        return RowRanges(empty, empty.copy(), empty.copy(), empty.copy(), empty.copy())
    if np.isfinite(values).all():
        p1, p99 = np.percentile(values, [1.0, 99.0], axis=1)
        return RowRanges(values.min(axis=1), values.max(axis=1), values.mean(axis=1), p1, p99)
    values[~np.isfinite(values)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN is the intended answer
        p1, p99 = np.nanpercentile(values, [1.0, 99.0], axis=1)
        return RowRanges(np.nanmin(values, axis=1), np.nanmax(values, axis=1), np.nanmean(values, axis=1), p1, p99)


# -- scales ------------------------------------------------------------------------------------------------------
# A lane's features are float32 and are multiplied by its scale in float32 (pipeline.lane.Lane.features). float32
# cannot carry a magnitude above FLOAT32_MAX (the product becomes Inf, and Inf - Inf then NaN downstream), and below
# FLOAT32_TINY (the smallest normal number) it keeps fewer and fewer significant bits until everything is 0. Such a
# scale is refused rather than clamped: a silently changed scale would make the window and the report disagree with
# what the user typed.
FLOAT32_MAX = float(np.finfo(np.float32).max)  # 3.4028235e38
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # 1.1754944e-38, the smallest normal float32


def feature_peak(features: np.ndarray) -> float:
    """The largest finite |value| of a lane's unscaled features (0.0 when none is finite or non-zero).

    The one number ``check_scale`` needs: the peak is also the largest non-zero magnitude, so if the peak times the
    scale falls below the smallest normal float32, every non-zero feature does.
    """
    values = np.abs(_as_float64(features))
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else 0.0


def scale_problem(scale: object, peak: float | None = None) -> str | None:
    """Why ``scale`` cannot multiply float32 features whose largest |value| is ``peak``; None when it can.

    Without ``peak`` only the scale itself is checked (a session file, a command-line option): it must be a finite
    real number > 0 that float32 represents as a normal number. With ``peak`` (the lane's ``feature_peak``), the
    product must neither overflow float32 nor drive every non-zero feature to 0 or a denormal. Messages name the
    value found and the limit, so the caller can show them as they are (prefixed with where the scale came from).
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        return f"expected a number > 0, found {scale!r}"
    value = float(scale)
    if not np.isfinite(value) or value <= 0.0:
        return f"expected a finite number > 0, found {value!r}"
    if value > FLOAT32_MAX:
        return (f"{value:g} does not fit in float32 (largest {FLOAT32_MAX:.4g}): the features would become Inf/NaN; "
                "expected a scale <= that")
    if value < FLOAT32_TINY:
        return (f"{value:g} is below float32's smallest normal number {FLOAT32_TINY:.4g}: every feature would become "
                "0 or lose its precision; expected a scale >= that")
    if peak is None or not np.isfinite(peak) or peak <= 0.0:
        return None
    product = float(peak) * float(np.float32(value))
    if product > FLOAT32_MAX:
        return (f"{value:g} times this lane's largest |feature| {peak:.4g} is {product:.4g}, above float32's largest "
                f"{FLOAT32_MAX:.4g}: those features would become Inf; expected a scale <= {FLOAT32_MAX / peak:.4g}")
    if product < FLOAT32_TINY:
        return (f"{value:g} times this lane's largest |feature| {peak:.4g} is {product:.4g}, below float32's smallest "
                f"normal number {FLOAT32_TINY:.4g}: every non-zero feature would become 0 or a denormal; expected a "
                f"scale >= {FLOAT32_TINY / peak:.4g}")
    return None


def check_scale(scale: object, where: str = "scale", peak: float | None = None) -> float:
    """``scale`` as a float, or an InputError naming ``where`` it came from, the value and the limit it breaks.

    The one check every entry point uses (session files, ``dump --scale``, the lane itself, the window's slider,
    box and Fit), so all of them refuse the same scales with the same words.
    """
    problem = scale_problem(scale, peak)
    if problem is not None:
        raise InputError(f"{where}: {problem}")
    return float(scale)  # type: ignore[arg-type]


# -- where non-finite values are ---------------------------------------------------------------------------------
def non_finite_rows(array: np.ndarray) -> np.ndarray:
    """[rows] bool: which entries along the first axis (feature rows, output frames) hold a NaN or an Inf."""
    values = np.asarray(array)
    if values.ndim == 0 or values.dtype.kind not in "biuf":
        raise InputError(f"non-finite rows: expected a real array with at least one axis, found {values.dtype} "
                         f"{list(values.shape)}")
    if values.dtype.kind != "f":
        return np.zeros(values.shape[0], dtype=bool)  # integers are always finite
    return ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)


def frames_fed_non_finite(padded_features: np.ndarray) -> np.ndarray:
    """[N+2] bool: output frames whose audio tensor holds a non-finite feature.

    Frame i's audio tensor is padded rows [i - 8, i + 8) (PIPELINE.md stage 4), so one bad row r reaches frames
    r - 7 .. r + 8: those frames are what the generator draws from poisoned input, so they are the ones to mark.
    """
    bad = non_finite_rows(padded_features)
    total = bad.size
    if not bad.any():
        return bad
    # frame i is poisoned when any row in [i - 8, i + 8) is bad: a sliding window over a cumulative count.
    counts = np.concatenate([[0], np.cumsum(bad)])
    index = np.arange(total)
    start = np.clip(index - CONTEXT_ROWS, 0, total)
    stop = np.clip(index + CONTEXT_ROWS, 0, total)
    return (counts[stop] - counts[start]) > 0

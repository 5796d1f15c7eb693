"""Metrics against hand-computed cases and independent formulas (least squares via np.linalg.lstsq, explicit loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import InputError
from pipeline.features import audio_tensors
from pipeline.metrics import (
    FLOAT32_MAX,
    FLOAT32_TINY,
    check_scale,
    compare,
    feature_peak,
    frames_fed_non_finite,
    histogram,
    non_finite_rows,
    per_row_ranges,
    scale_problem,
    stats,
)


# ---------------------------------------------------------------------------------------------------------------
# stats


def test_stats_by_hand_with_non_finite_values() -> None:
    s = stats(np.array([[4.0, 1.0, np.nan], [3.0, np.inf, 2.0]], np.float32))
    # Finite values 4, 1, 3, 2 (flat positions 0, 1, 3, 5).
    assert (s.min, s.max, s.mean, s.median) == (1.0, 4.0, 2.5, 2.5)
    assert s.std == pytest.approx(math.sqrt((2.25 + 0.25 + 0.25 + 2.25) / 4))  # population std
    # Linear interpolation on sorted [1, 2, 3, 4]: position 0.01 * 3 and 0.99 * 3.
    assert s.p1 == pytest.approx(1.03) and s.p99 == pytest.approx(3.97)
    assert (s.nan, s.inf, s.count, s.finite) == (1, 1, 6, 4)
    assert (s.argmin, s.argmax) == (1, 0)


def test_stats_of_nothing_finite_is_nan_not_an_error() -> None:
    s = stats(np.array([np.nan, -np.inf]))
    assert all(math.isnan(v) for v in (s.min, s.max, s.mean, s.std, s.median, s.p1, s.p99))
    assert (s.nan, s.inf, s.count, s.finite) == (1, 1, 2, 0)
    empty = stats(np.zeros((0, 512), np.float32))
    assert empty.count == 0 and math.isnan(empty.mean)


def test_stats_percentiles_on_a_known_ramp() -> None:
    s = stats(np.arange(101, dtype=np.float32)[::-1])
    assert (s.p1, s.median, s.p99, s.min, s.max) == (1.0, 50.0, 99.0, 0.0, 100.0)
    assert (s.argmin, s.argmax) == (100, 0)


def test_stats_rejects_non_numeric() -> None:
    with pytest.raises(InputError, match="expected a real numeric array, found dtype <U1"):
        stats(np.array(["a", "b"]))


# ---------------------------------------------------------------------------------------------------------------
# compare


def test_compare_a_scaled_copy_by_hand() -> None:
    lane = np.array([1.0, 2.0, 3.0])
    reference = np.array([2.0, 4.0, 6.0])
    c = compare(lane, reference)
    # <a,b> = 28, <b,b> = 56, <a,a> = 14; differences 1, 2, 3.
    assert c.max_abs == 3.0 and c.mean_abs == 2.0 and c.rel == 0.5
    assert c.scale == pytest.approx(0.5) and c.correction == pytest.approx(2.0)
    assert c.cosine == pytest.approx(1.0) and c.r2 == pytest.approx(1.0)
    assert (c.compared, c.excluded, c.lane_nan, c.reference_nan, c.max_abs_index) == (3, 0, 0, 0, 2)


def test_compare_orthogonal_vectors_by_hand() -> None:
    c = compare(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert c.cosine == 0.0 and c.scale == 0.0 and c.correction == 0.0
    # Fit a ≈ 0·b: residual Σa² = 1; centred total Σ(a - 0.5)² = 0.5; r2 = 1 - 1/0.5 = -1.
    assert c.r2 == pytest.approx(-1.0)
    assert c.max_abs == 1.0 and c.rel == 1.0


@pytest.mark.parametrize(
    "a,b,expected",
    [([1, 1], [1, 0], 1 / math.sqrt(2)), ([3, 4], [4, 3], 24 / 25), ([1, 2], [-1, -2], -1.0), ([0, 5], [0, 0.1], 1.0)],
)
def test_cosine_on_explicit_vectors(a: list[float], b: list[float], expected: float) -> None:
    assert compare(np.array(a, float), np.array(b, float)).cosine == pytest.approx(expected)


def test_cosine_is_not_the_correlation_of_centred_data() -> None:
    # Same direction up to an offset: correlation is 1, cosine is not.
    a, b = np.array([1.0, 2.0, 3.0]), np.array([11.0, 12.0, 13.0])
    expected = (11 + 24 + 39) / (math.sqrt(14) * math.sqrt(121 + 144 + 169))
    assert compare(a, b).cosine == pytest.approx(expected)
    assert compare(a, b).cosine < 0.99


def test_scale_and_r2_against_least_squares() -> None:
    rng = np.random.default_rng(0)
    reference = rng.gamma(2.0, 2.0, size=(40, 512)).astype(np.float32)
    lane = (0.007 * reference + rng.normal(0, 0.004, size=reference.shape)).astype(np.float32)
    c = compare(lane, reference)
    a, b = lane.astype(np.float64).ravel(), reference.astype(np.float64).ravel()
    solution, residual, *_ = np.linalg.lstsq(b[:, None], a, rcond=None)
    assert c.scale == pytest.approx(solution[0], rel=1e-9)
    assert c.r2 == pytest.approx(1 - residual[0] / (len(a) * a.var()), rel=1e-9)
    back, _, *_ = np.linalg.lstsq(a[:, None], b, rcond=None)
    assert c.correction == pytest.approx(back[0], rel=1e-9)
    assert 0.5 < c.r2 < 1.0


def test_random_weights_are_not_a_scaled_copy() -> None:
    # The project's bug: an encoder with random weights gives small values whose zero pattern differs.
    rng = np.random.default_rng(1)
    reference = np.maximum(rng.normal(1.0, 2.0, size=(30, 512)), 0)
    lane = np.maximum(rng.normal(0.0, 0.02, size=(30, 512)), 0)
    c = compare(lane, reference)
    assert c.r2 < 0.2
    assert compare(reference * 0.01, reference).r2 == pytest.approx(1.0)


def test_compare_excludes_non_finite_positions_and_counts_them() -> None:
    lane = np.array([1.0, np.nan, 3.0, np.inf, 5.0])
    reference = np.array([1.0, 2.0, np.nan, 4.0, 4.0])
    c = compare(lane, reference)
    # Only positions 0 and 4 are finite in both: differences 0 and 1.
    assert (c.compared, c.excluded, c.lane_nan, c.reference_nan) == (2, 3, 1, 1)
    assert c.max_abs == 1.0 and c.mean_abs == 0.5 and c.max_abs_index == 4
    assert c.scale == pytest.approx((1 + 20) / (1 + 16))


def test_compare_all_nan_gives_nan_figures_and_counts() -> None:
    c = compare(np.full(4, np.nan), np.ones(4))
    assert (c.compared, c.excluded, c.lane_nan) == (0, 4, 4)
    assert all(math.isnan(v) for v in (c.max_abs, c.mean_abs, c.rel, c.cosine, c.scale, c.r2, c.correction))


def test_compare_zero_arrays_never_divide_by_zero() -> None:
    zeros, ones = np.zeros(5), np.ones(5)
    both = compare(zeros, zeros)
    assert both.max_abs == 0.0 and both.rel == 0.0
    assert math.isnan(both.cosine) and math.isnan(both.scale) and math.isnan(both.correction) and math.isnan(both.r2)
    zero_reference = compare(ones, zeros)
    assert zero_reference.rel == math.inf and math.isnan(zero_reference.cosine) and math.isnan(zero_reference.scale)
    assert zero_reference.correction == 0.0
    zero_lane = compare(zeros, ones)
    assert zero_lane.scale == 0.0 and math.isnan(zero_lane.correction) and math.isnan(zero_lane.cosine)
    assert math.isnan(zero_lane.r2)  # a constant lane has no variation to explain


def test_compare_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(InputError, match=r"found lane \[10, 512\] and reference \[12, 512\]"):
        compare(np.zeros((10, 512)), np.zeros((12, 512)))


# ---------------------------------------------------------------------------------------------------------------
# histogram


def test_histogram_shares_bins_across_lanes_by_hand() -> None:
    h = histogram([np.array([0.0, 1.0, 1.0, 3.9]), np.array([2.0, 4.0, np.nan])], bins=4)
    # Shared range [0, 4]: edges 0, 1, 2, 3, 4; the last bin includes 4.
    np.testing.assert_allclose(h.edges, [0, 1, 2, 3, 4])
    assert h.counts.tolist() == [[1, 2, 0, 1], [0, 0, 1, 1]]
    assert h.excluded.tolist() == [0, 1]


def test_histogram_of_a_constant_and_of_nothing() -> None:
    h = histogram([np.full(3, 2.0)], bins=2)
    np.testing.assert_allclose(h.edges, [1.5, 2.0, 2.5])
    assert h.counts.tolist() == [[0, 3]]
    empty = histogram([np.array([np.nan])], bins=3)
    assert empty.counts.tolist() == [[0, 0, 0]] and empty.excluded.tolist() == [1]


def test_histogram_with_an_explicit_range_counts_outsiders_as_excluded() -> None:
    h = histogram([np.array([-1.0, 0.25, 0.75, 2.0])], bins=2, value_range=(0.0, 1.0))
    assert h.counts.tolist() == [[1, 1]] and h.excluded.tolist() == [2]


# ---------------------------------------------------------------------------------------------------------------
# per_row_ranges


def test_per_row_ranges_on_known_ramps() -> None:
    ramp = np.arange(101, dtype=np.float32)
    features = np.stack([ramp, 2 * ramp[::-1], ramp - 50])
    r = per_row_ranges(features)
    assert r.min.tolist() == [0, 0, -50] and r.max.tolist() == [100, 200, 50]
    assert r.mean.tolist() == [50, 100, 0]
    assert r.p1.tolist() == [1, 2, -49] and r.p99.tolist() == [99, 198, 49]


def test_per_row_ranges_matches_a_row_by_row_loop_with_non_finite_values() -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(6, 512)).astype(np.float32)
    features[1, 3] = np.nan
    features[2, :] = np.nan
    features[4, 10] = np.inf
    r = per_row_ranges(features)
    for row in range(6):
        values = np.sort(features[row][np.isfinite(features[row])].astype(np.float64))
        if values.size == 0:
            assert all(math.isnan(x[row]) for x in (r.min, r.max, r.mean, r.p1, r.p99))
            continue
        # Linear-interpolation percentile written out: position q * (n - 1) in the sorted values.
        def percentile(q: float) -> float:
            position = q * (values.size - 1)
            low = int(math.floor(position))
            high = min(low + 1, values.size - 1)
            return values[low] + (position - low) * (values[high] - values[low])

        assert r.min[row] == values[0] and r.max[row] == values[-1]
        assert r.mean[row] == pytest.approx(sum(values) / values.size)
        assert r.p1[row] == pytest.approx(percentile(0.01)) and r.p99[row] == pytest.approx(percentile(0.99))


def test_per_row_ranges_rejects_a_vector() -> None:
    with pytest.raises(InputError, match=r"expected a real matrix \[N, D\], found float64 \[512\]"):
        per_row_ranges(np.zeros(512))



# ---------------------------------------------------------------------------------------------------------------
# non-finite values: counted per side, located, and never hidden by the finite figures


def test_compare_counts_and_locates_non_finite_values_per_side_by_hand() -> None:
    lane = np.array([[1.0, 2.0], [np.nan, 4.0], [5.0, np.inf], [np.nan, 8.0]])
    reference = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [np.nan, 8.0]])
    c = compare(lane, reference)
    # Lane-only non-finite: flat 2 (NaN) and 5 (Inf); flat 6 is NaN on both sides, so it is the reference's.
    assert (c.lane_nan, c.lane_inf, c.reference_nan, c.reference_inf) == (2, 1, 1, 0)
    assert (c.lane_non_finite, c.reference_non_finite) == (2, 1)
    assert (c.first_lane_non_finite, c.first_reference_non_finite) == (2, 6)
    assert c.non_finite
    # The finite positions alone agree exactly: exactly what must not be read as a match.
    assert c.max_abs == 0.0 and c.compared == 5


def test_compare_of_finite_arrays_reports_no_non_finite_value() -> None:
    c = compare(np.arange(6.0), np.arange(6.0) * 2)
    assert (c.lane_non_finite, c.reference_non_finite, c.first_lane_non_finite, c.first_reference_non_finite) == (
        0, 0, -1, -1)
    assert not c.non_finite


def test_non_finite_rows_by_hand() -> None:
    a = np.zeros((4, 3, 2), np.float32)
    a[1, 2, 1] = np.inf
    a[3, 0, 0] = np.nan
    assert non_finite_rows(a).tolist() == [False, True, False, True]
    assert non_finite_rows(np.zeros((3, 2), np.uint8)).tolist() == [False, False, False]
    with pytest.raises(InputError, match="at least one axis"):
        non_finite_rows(np.float32(1.0))


@pytest.mark.parametrize("bad_rows", [[], [0], [5], [29], [3, 20]])
def test_frames_fed_non_finite_matches_the_audio_tensors_themselves(bad_rows: list[int]) -> None:
    # Independent reference: build every frame's audio tensor (PIPELINE.md stage 4) and look for NaN/Inf in it.
    features = np.ones((30, 512), np.float32)
    for r in bad_rows:
        features[r, 7] = np.nan if r % 2 else np.inf
    tensors = audio_tensors(features)
    expected = ~np.isfinite(tensors.reshape(len(tensors), -1)).all(axis=1)
    np.testing.assert_array_equal(frames_fed_non_finite(features), expected)


# ---------------------------------------------------------------------------------------------------------------
# scales float32 cannot carry


def test_float32_limits_are_the_ieee_single_precision_ones() -> None:
    # IEEE 754 binary32: largest finite (2 - 2^-23) * 2^127, smallest normal 2^-126.
    assert FLOAT32_MAX == (2 - 2**-23) * 2.0**127
    assert FLOAT32_TINY == 2.0**-126


@pytest.mark.parametrize("scale, words", [
    (1e308, "largest"), (3.5e38, "largest"), (1e-320, "smallest normal"), (1e-39, "smallest normal"),
    (float("inf"), "finite"), (float("nan"), "finite"), (0.0, "> 0"), (-2.0, "> 0"), (True, "number"),
    ("2", "number"),
])
def test_scales_float32_cannot_carry_are_refused_with_the_limit(scale: object, words: str) -> None:
    problem = scale_problem(scale)
    assert problem is not None and words in problem
    with pytest.raises(InputError, match=r"^--scale: "):
        check_scale(scale, "--scale")


def test_scales_within_float32_pass_and_come_back_as_float() -> None:
    for scale in (FLOAT32_TINY, 0.01, 1, 200.0, 3e38):
        assert scale_problem(scale) is None
        assert check_scale(scale) == float(scale)


def test_feature_peak_is_the_largest_finite_magnitude() -> None:
    assert feature_peak(np.array([[0.5, -7.0], [np.inf, np.nan]], np.float32)) == 7.0
    assert feature_peak(np.array([np.nan, np.inf])) == 0.0
    assert feature_peak(np.zeros(4)) == 0.0


@pytest.mark.parametrize("peak", [1e-30, 1e-3, 1.0, 10.0, 1e30])
@pytest.mark.parametrize("scale", [1e-37, 1e-30, 1e-8, 1.0, 1e8, 1e10, 1e30, 1e37, 3e38])
def test_the_product_check_agrees_with_float32_arithmetic(peak: float, scale: float) -> None:
    # Independent reference: multiply in float32 exactly as a lane does, and look at what comes out.
    features = np.array([peak, -peak / 2, 0.0], np.float32)
    with np.errstate(over="ignore", under="ignore"):
        product = features * np.float32(scale)
    overflows = not np.isfinite(product).all()
    vanishes = bool(np.abs(product[:2]).max() < FLOAT32_TINY)  # every non-zero feature 0 or denormal
    problem = scale_problem(scale, feature_peak(features))
    assert (problem is not None) == (overflows or vanishes), (peak, scale, product, problem)
    if overflows:
        assert "above float32's largest" in problem
    if vanishes:
        assert "every non-zero feature" in problem


def test_all_zero_features_accept_any_representable_scale() -> None:
    assert scale_problem(1e38, feature_peak(np.zeros(8, np.float32))) is None

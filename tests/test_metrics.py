"""Metrics against hand-computed cases and independent formulas (least squares via np.linalg.lstsq, explicit loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import InputError
from pipeline.metrics import compare, histogram, per_row_ranges, stats


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

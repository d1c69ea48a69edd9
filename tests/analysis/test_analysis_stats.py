"""labkit.analysis.stats against brute-force definitions and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from labkit.analysis.stats import (
    bootstrap_medians,
    delta_magnitude,
    hodges_lehmann,
    median_ci,
    rank_test,
    summarize,
)


def test_summarize_matches_numpy_and_sample_std():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, np.nan])
    s = summarize(x)
    v = x[~np.isnan(x)]
    assert s["n"] == 8
    assert s["mean"] == pytest.approx(v.mean())
    assert s["std"] == pytest.approx(v.std(ddof=1))  # the dissertation's (sample) standard deviation
    assert s["median"] == pytest.approx(3.5)
    assert (s["min"], s["max"]) == (1.0, 9.0)
    assert s["p95"] == pytest.approx(np.percentile(v, 95))
    assert s["p99"] == pytest.approx(np.percentile(v, 99))


def test_summarize_empty_and_single():
    assert summarize([])["n"] == 0 and math.isnan(summarize([])["median"])
    one = summarize([7.0])
    assert one["median"] == 7.0 and math.isnan(one["std"])


@pytest.mark.parametrize("n", [51, 50])
def test_bootstrap_medians_match_brute_force_resampling(n):
    """The order-statistic shortcut draws from the same distribution as resampling with replacement."""
    rng = np.random.default_rng(3)
    x = rng.lognormal(3, 0.6, n)
    fast = bootstrap_medians(x, n_boot=20000, seed=1)
    idx = rng.integers(0, n, size=(20000, n))
    slow = np.median(x[idx], axis=1)
    for q in (2.5, 25, 50, 75, 97.5):
        assert np.percentile(fast, q) == pytest.approx(np.percentile(slow, q), rel=0.03)
    assert fast.std() == pytest.approx(slow.std(), rel=0.08)


def test_median_ci_is_seeded_and_covers_the_median():
    x = np.random.default_rng(5).normal(100, 10, 400)
    lo, hi = median_ci(x, seed=42)
    assert (lo, hi) == median_ci(x, seed=42)
    assert lo < np.median(x) < hi
    # a 95 % CI for the median of N(100, 10) with n=400 is about +-1.2 wide on each side
    assert 0.5 < (hi - lo) / 2 < 2.5


def test_median_ci_coverage_is_about_nominal():
    rng = np.random.default_rng(11)
    hits = 0
    trials = 300
    for k in range(trials):
        x = rng.exponential(10.0, 61)  # true median 10 ln 2
        lo, hi = median_ci(x, seed=k, n_boot=1000)
        hits += lo <= 10 * math.log(2) <= hi
    assert 0.90 <= hits / trials <= 0.99


def test_median_ci_degenerate():
    assert all(math.isnan(v) for v in median_ci([]))
    assert median_ci([4.0]) == (4.0, 4.0)


def test_hodges_lehmann_equals_median_of_pairwise_differences():
    rng = np.random.default_rng(8)
    for na, nb in ((7, 9), (8, 8), (30, 41)):
        x, y = rng.normal(0, 1, na), rng.normal(0.7, 2, nb)
        brute = np.median((y[None, :] - x[:, None]).ravel())
        assert hodges_lehmann(x, y) == pytest.approx(brute, abs=1e-5)


def test_rank_test_against_scipy_and_brute_force_delta():
    rng = np.random.default_rng(2)
    x, y = rng.normal(10, 2, 200), rng.normal(11, 2, 150)
    r = rank_test(x, y)
    ref = mannwhitneyu(y, x, alternative="two-sided")
    assert r["p"] == pytest.approx(ref.pvalue)
    gt = (y[None, :] > x[:, None]).mean()
    lt = (y[None, :] < x[:, None]).mean()
    assert r["cliffs_delta"] == pytest.approx(gt - lt)
    assert r["cliffs_delta"] > 0  # y is larger
    assert r["hl_shift"] == pytest.approx(np.median((y[None, :] - x[:, None]).ravel()), abs=1e-5)


def test_rank_test_identical_samples_show_no_effect():
    x = np.random.default_rng(4).normal(0, 1, 300)
    r = rank_test(x, x.copy())
    assert r["cliffs_delta"] == pytest.approx(0.0)
    assert r["p"] == pytest.approx(1.0)
    assert delta_magnitude(r["cliffs_delta"]) == "negligible"


def test_delta_magnitudes():
    assert [delta_magnitude(d) for d in (0.1, -0.2, 0.4, -0.9)] == ["negligible", "small", "medium", "large"]
    assert delta_magnitude(float("nan")) == ""

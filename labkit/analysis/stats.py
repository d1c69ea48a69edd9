"""Statistics for the report and compare: summaries, bootstrap CIs for medians, rank tests, effect sizes.

- ``summarize``: n, mean, std (sample, ddof=1, as the dissertation's tables), median, min, max, p95, p99.
- ``median_ci``: a seeded percentile-bootstrap confidence interval for the median. It draws the bootstrap
  medians directly: the k-th smallest of n draws with replacement from the sorted sample is
  ``sorted[floor(n * U_(k))]`` where ``U_(k) ~ Beta(k, n - k + 1)`` is the k-th order statistic of n uniforms,
  so each replicate costs O(1) instead of O(n) and the result is the same distribution as resampling.
- ``rank_test``: Mann-Whitney U (two-sided), Cliff's delta (from U) and the Hodges-Lehmann shift
  (the median of all pairwise differences y - x, found exactly by bisection with sorted counts).
"""

from __future__ import annotations

import math

import numpy as np

STAT_KEYS = ("n", "mean", "std", "median", "min", "max", "p95", "p99")


def _clean(x) -> np.ndarray:
    a = np.asarray(x, dtype="float64")
    return a[~np.isnan(a)]


def summarize(x) -> dict[str, float]:
    """n, mean, std (ddof=1), median, min, max, p95, p99 of the non-NaN values (NaN when empty)."""
    a = _clean(x)
    n = a.size
    if n == 0:
        return {"n": 0, **{k: math.nan for k in STAT_KEYS[1:]}}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"n": int(n), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if n > 1 else math.nan,
            "median": float(p50), "min": float(a.min()), "max": float(a.max()), "p95": float(p95),
            "p99": float(p99)}


def bootstrap_medians(x, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the sample median (see the module docstring for the method)."""
    s = np.sort(_clean(x))
    n = s.size
    if n == 0:
        return np.full(n_boot, math.nan)
    rng = np.random.default_rng(seed)
    if n % 2:
        k = (n + 1) // 2
        u = rng.beta(k, n - k + 1, size=n_boot)
        return s[np.minimum((u * n).astype(np.int64), n - 1)]
    k = n // 2
    u1 = rng.beta(k, n - k + 1, size=n_boot)
    u2 = u1 + (1.0 - u1) * rng.beta(1, n - k, size=n_boot)
    i1 = np.minimum((u1 * n).astype(np.int64), n - 1)
    i2 = np.minimum((u2 * n).astype(np.int64), n - 1)
    return (s[i1] + s[i2]) / 2.0


def median_ci(x, conf: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval (level ``conf``) for the median; (NaN, NaN) when empty."""
    reps = bootstrap_medians(x, n_boot, seed)
    if np.isnan(reps).all():
        return (math.nan, math.nan)
    lo, hi = np.percentile(reps, [50 * (1 - conf), 50 * (1 + conf)])
    return (float(lo), float(hi))


def hodges_lehmann(x, y, tol: float = 1e-6) -> float:
    """Median of all pairwise differences ``y_j - x_i`` (the Hodges-Lehmann shift of y against x)."""
    a, b = np.sort(_clean(x)), np.sort(_clean(y))
    if a.size == 0 or b.size == 0:
        return math.nan
    total = a.size * b.size

    def count_le(d: float) -> int:  # pairs with y - x <= d
        return int(np.searchsorted(b, a + d, side="right").sum())

    def kth(k: int) -> float:  # the k-th smallest difference (1-based)
        lo, hi = b[0] - a[-1], b[-1] - a[0]
        while hi - lo > tol * max(1.0, abs(lo), abs(hi)):
            mid = (lo + hi) / 2
            if count_le(mid) >= k:
                hi = mid
            else:
                lo = mid
        return hi

    if total % 2:
        return kth(total // 2 + 1)
    return (kth(total // 2) + kth(total // 2 + 1)) / 2


def rank_test(x, y) -> dict[str, float]:
    """Two-sided Mann-Whitney U of y against x, Cliff's delta (P(y>x) - P(y<x)) and the HL shift (y - x)."""
    from scipy.stats import mannwhitneyu

    a, b = _clean(x), _clean(y)
    if a.size == 0 or b.size == 0:
        return {"u": math.nan, "p": math.nan, "cliffs_delta": math.nan, "hl_shift": math.nan}
    res = mannwhitneyu(b, a, alternative="two-sided", method="auto")
    u_b = float(res.statistic)  # pairs with b > a, ties counted half
    delta = 2.0 * u_b / (a.size * b.size) - 1.0
    return {"u": u_b, "p": float(res.pvalue), "cliffs_delta": delta, "hl_shift": hodges_lehmann(a, b)}


def delta_magnitude(d: float) -> str:
    """Romano et al. (2006) thresholds for |Cliff's delta|: negligible, small, medium, large."""
    if d is None or math.isnan(d):
        return ""
    d = abs(d)
    return "negligible" if d < 0.147 else "small" if d < 0.33 else "medium" if d < 0.474 else "large"

"""The statistics of the robustness analysis, on plain numbers (scipy.stats does every test).

- `mean_ci`: the 95 % Student-t interval of a mean over seeds. Why t and not a bootstrap: a
  study has 1-5 seeds per cell, and with so few values the bootstrap's resamples take only a
  handful of distinct values (3 seeds: 10) and its percentile interval is too narrow (it
  ignores that the spread itself is estimated from 3 numbers). The t interval is exact when the
  seed-to-seed noise is normal, which an accuracy averaged over thousands of test images, each
  moved a little by the seed, is close to.
- `paired_comparison`: DFA against a baseline on one pair, seed by seed. The same seed gives
  both methods the same batch order and held-out split, so the difference per seed removes the
  noise the two share; its mean gets a t interval (`ttest_rel` gives the p-value). The outcome
  follows the interval: `win` if it lies above 0, `loss` below 0, `tie` if it contains 0, and
  `too few seeds` with fewer than 2 seeds in common (no spread, no interval, no claim).
- `band_outcome`: the older rule, kept as an option: |mean difference| against the pooled seed
  standard deviation, or a fixed tolerance when both methods have one seed.
- `across_pairs`: does DFA beat a baseline over pairs? One number per pair (its mean
  difference); a Wilcoxon signed-rank test from `MIN_PAIRS_WILCOXON` non-zero pairs on, an exact
  sign test (binomial) below; effect size: the matched-pairs rank-biserial correlation
  (+1: DFA ahead on every pair, 0: no tendency) and the median difference.
- `holm`: Holm's step-down adjustment of a family of p-values. scipy.stats offers only
  false-discovery-rate control (`false_discovery_control`: Benjamini-Hochberg / -Yekutieli) and
  statsmodels is not a dependency; Holm controls the family-wise error, which a claim about
  every baseline at once needs, so it is written out here (6 lines).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
# Below 6 non-zero pairs no two-sided test at 0.05 can reject (the smallest exact p is 2 / 2^n:
# 0.0625 at n = 5); the sign test there needs no symmetry of the differences and reads simply
# ("k of n pairs positive").
MIN_PAIRS_WILCOXON = 6
# Accuracies are percentages with a few decimals; differences are rounded to this many decimals
# so that float noise (70.7 - 70.8 vs 70.5 - 70.6) does not pass for seed-to-seed spread.
DECIMALS = 9

WIN, TIE, LOSS, TOO_FEW = "win", "tie", "loss", "too few seeds"
OUTCOMES = (WIN, TIE, LOSS, TOO_FEW)


def _clean(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(list(values), dtype=float)
    return np.round(a[~np.isnan(a)], DECIMALS)


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Student-t interval of the mean of `values` (NaN, NaN with fewer than 2 values; a
    zero-width interval when they are all equal)."""
    a = _clean(values)
    if a.size < 2:
        return float("nan"), float("nan")
    mean, sd = float(a.mean()), float(a.std(ddof=1))
    if sd == 0.0:
        return mean, mean
    low, high = stats.t.interval(confidence, a.size - 1, loc=mean, scale=sd / math.sqrt(a.size))
    return float(low), float(high)


def ci_outcome(low: float, high: float) -> str:
    """win / loss when the interval lies above / below 0, tie when it contains 0."""
    if math.isnan(low) or math.isnan(high):
        return TOO_FEW
    if low > 0:
        return WIN
    if high < 0:
        return LOSS
    return TIE


@dataclass(frozen=True)
class Paired:
    """DFA minus a baseline over the seeds both have."""

    n: int
    seeds: tuple[int, ...]
    mean: float  # mean difference (points); NaN without a common seed
    std: float  # sample std of the differences; NaN with fewer than 2
    ci_low: float
    ci_high: float
    p_value: float  # paired t-test (scipy.stats.ttest_rel); NaN with < 2 seeds or no spread
    outcome: str


def paired_comparison(ref: Mapping[int, float], base: Mapping[int, float],
                      confidence: float = CONFIDENCE) -> Paired:
    """Compare `ref` with `base` (seed -> accuracy) on their common seeds."""
    seeds = tuple(sorted(s for s in ref if s in base and not math.isnan(ref[s]) and not math.isnan(base[s])))
    a = np.array([ref[s] for s in seeds], dtype=float)
    b = np.array([base[s] for s in seeds], dtype=float)
    d = _clean(a - b)
    if d.size == 0:
        return Paired(0, seeds, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), TOO_FEW)
    mean = float(d.mean())
    if d.size < 2:
        return Paired(1, seeds, mean, float("nan"), float("nan"), float("nan"), float("nan"), TOO_FEW)
    sd = float(d.std(ddof=1))
    low, high = mean_ci(d, confidence)
    if sd == 0.0:  # every seed moved by the same amount: t is undefined, the interval has no width
        p = float("nan")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_rel(a, b).pvalue)
    return Paired(int(d.size), seeds, mean, sd, low, high, p, ci_outcome(low, high))


def pooled_std(std_a: float, n_a: int, std_b: float, n_b: int) -> float:
    """sqrt(((n_a-1) s_a^2 + (n_b-1) s_b^2) / (n_a + n_b - 2)); NaN when n_a + n_b < 3."""
    dof = n_a + n_b - 2
    if dof < 1:
        return float("nan")
    va = 0.0 if n_a < 2 else std_a**2
    vb = 0.0 if n_b < 2 else std_b**2
    return math.sqrt(((n_a - 1) * va + (n_b - 1) * vb) / dof)


def band_outcome(gain: float, sigma: float) -> str:
    """The band rule: tie if |gain| <= sigma, else win or loss by the sign."""
    if abs(gain) <= sigma:
        return TIE
    return WIN if gain > 0 else LOSS


@dataclass(frozen=True)
class AcrossPairs:
    """A baseline against DFA over pairs: one difference per pair."""

    n: int  # pairs
    n_nonzero: int
    positive: int  # pairs where DFA is ahead
    negative: int
    test: str  # "wilcoxon" | "sign" | "none"
    statistic: float  # Wilcoxon's T (the smaller rank sum) or the sign test's count of positives
    p_value: float
    rank_biserial: float
    median: float


def rank_biserial(diffs: Sequence[float]) -> float:
    """(R+ - R-) / (R+ + R-): ranks of |d| over the non-zero differences (scipy's average ranks)."""
    d = _clean(diffs)
    d = d[d != 0]
    if d.size == 0:
        return float("nan")
    ranks = stats.rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def across_pairs(diffs: Sequence[float], min_wilcoxon: int = MIN_PAIRS_WILCOXON) -> AcrossPairs:
    """Wilcoxon signed-rank (n non-zero >= `min_wilcoxon`) or the exact sign test, two-sided;
    zero differences are dropped (they favour neither side)."""
    d = _clean(diffs)
    nz = d[d != 0]
    pos, neg = int((nz > 0).sum()), int((nz < 0).sum())
    median = float(np.median(d)) if d.size else float("nan")
    effect = rank_biserial(d)
    if nz.size == 0:
        return AcrossPairs(int(d.size), 0, 0, 0, "none", float("nan"), float("nan"), effect, median)
    if nz.size >= min_wilcoxon:
        res = stats.wilcoxon(nz)
        return AcrossPairs(int(d.size), int(nz.size), pos, neg, "wilcoxon", float(res.statistic),
                           float(res.pvalue), effect, median)
    res = stats.binomtest(pos, int(nz.size), 0.5)
    return AcrossPairs(int(d.size), int(nz.size), pos, neg, "sign", float(pos), float(res.pvalue), effect, median)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's adjusted p-values (NaN entries stay NaN and are not counted in the family)."""
    p = np.asarray(list(p_values), dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    # the k-th smallest p (k = 0..m-1) is multiplied by m - k; a running maximum keeps the order
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


__all__ = ["AcrossPairs", "CONFIDENCE", "DECIMALS", "LOSS", "MIN_PAIRS_WILCOXON", "OUTCOMES", "Paired", "TIE",
           "TOO_FEW", "WIN", "across_pairs", "band_outcome", "ci_outcome", "holm", "mean_ci", "paired_comparison",
           "pooled_std", "rank_biserial"]

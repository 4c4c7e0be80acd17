"""How robust is DFA across teacher-student pairs? Numbers over seeds, pair by pair.

All accuracies are test top-1 in percent; differences are in percentage points. The tests
themselves are in `dfa_ray_analysis.stats` (scipy.stats); docs/analysis.md says why each.

- `seed_values`: one row per study x pair x method x metric x seed (completed distillation
  trials only: a running or errored trial has no test number).
- `method_summary`: per study x pair x method x metric, the mean, the sample standard deviation
  (ddof 1; NaN with one seed), n and the 95 % Student-t interval of the mean over seeds, for
  `test_acc_last` and `test_acc_best`.
- `dfa_gains`: per pair, DFA (method `dfa`) against every other method. `gain` is the
  difference of the means over each method's seeds; the comparison itself is paired, seed by
  seed, on the seeds both have (`paired_*`, `ci_low`/`ci_high`: the 95 % t interval of the mean
  paired difference, `p_value`: the paired t-test, `p_holm`: Holm-adjusted over every pair x
  baseline of the study and metric). **The tie rule** (`rule="ci"`, the default): a win if the
  interval lies above 0, a loss if below, a tie if it contains 0, and "too few seeds" with
  fewer than 2 seeds in common. `rule="band"` is the older rule: tie if |gain| <= sigma, the
  pooled seed std of the two methods, or `TIE_TOLERANCE` points when both have one seed.
- `win_tie_loss`: those outcomes counted over pairs, per baseline and in total, with the
  across-pairs test of each baseline (Wilcoxon signed-rank, or the exact sign test below 6
  pairs; Holm-adjusted over the baselines) and its effect size (rank-biserial correlation).
- `verdict`: per pair, DFA against the best other method of that pair, by the rule.
- `average_ranks`: per pair the methods are ranked by mean accuracy (rank 1 = best, equal means
  share the average of their ranks); a method's average rank is over the pairs it ran on.
- `gap_table` / `gap_correlations`: DFA's gain against the teacher-student gap, measured as
  the accuracy gap (teacher's test accuracy from the teacher-stage rows, minus the vanilla
  student's) and the parameter ratio (teacher / student, `dfa_ray_analysis.model_params`), with
  Spearman's rank correlation (scipy.stats.spearmanr; needs 3 pairs or more, NaN otherwise).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from dfa_ray_analysis import stats as ST
from dfa_ray_analysis.loading import Results, decode_json, sort_methods
from dfa_ray_analysis.model_params import param_count

METRICS = ("test_acc_last", "test_acc_best")
REFERENCE = "dfa"
RULES = ("ci", "band")
# points; the band rule's tolerance where both methods have one seed: the low end of the usual
# seed-to-seed spread of CIFAR-100 accuracies (0.3-0.5 points)
TIE_TOLERANCE = 0.3
MIN_PAIRS_FOR_CORRELATION = 3

_KEY = ["study", "dataset", "protocol", "pair", "teacher", "student"]


def _metric_rank(metric: str) -> int:
    return METRICS.index(metric) if metric in METRICS else len(METRICS)


def _by_metric(frame: pd.DataFrame, *then: str) -> pd.DataFrame:
    """Sorted by study, then metric in `METRICS` order (last epoch first), then `then`."""
    if frame.empty:
        return frame.reset_index(drop=True)
    frame = frame.assign(_m=frame["metric"].map(_metric_rank))
    return frame.sort_values(["study", "_m", *then], kind="stable").drop(columns="_m").reset_index(drop=True)


def completed_distill(trials: pd.DataFrame) -> pd.DataFrame:
    """Distillation trials that finished and have test numbers."""
    d = trials[(trials["stage"] == "distill") & (trials["status"] == "completed")]
    return d[d["test_acc_last"].notna() | d["test_acc_best"].notna()].reset_index(drop=True)


def seed_values(trials: pd.DataFrame, metrics: Iterable[str] = METRICS) -> pd.DataFrame:
    """One row per study x pair x method x metric x seed: columns _KEY, method, metric, seed, value,
    source (the sweep the row came from)."""
    d = completed_distill(trials)
    cols = _KEY + ["method", "metric", "seed", "value", "source"]
    frames = []
    for metric in metrics:
        part = d[d[metric].notna()]
        frames.append(pd.DataFrame({**{k: part[k] for k in _KEY + ["method"]}, "metric": metric,
                                    "seed": part["seed"].astype(int), "value": part[metric].astype(float),
                                    "source": part["source"] if "source" in part else part["sweep"]}))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return out[cols].sort_values(_KEY + ["method", "metric", "seed"], kind="stable").reset_index(drop=True)


def method_summary(trials: pd.DataFrame, metrics: Iterable[str] = METRICS,
                   confidence: float = ST.CONFIDENCE) -> pd.DataFrame:
    """Mean, std, n and the t interval of the mean over seeds per study x pair x method x metric.

    Columns: study, dataset, protocol, pair, teacher, student, method, metric, n, mean, std,
    ci_low, ci_high, seeds. `std` is the sample standard deviation (ddof 1), NaN with a single
    seed, as is the interval.
    """
    v = seed_values(trials, metrics)
    cols = _KEY + ["method", "metric", "n", "mean", "std", "ci_low", "ci_high", "seeds"]
    rows = []
    for key, g in v.groupby(_KEY + ["method", "metric"], dropna=False, sort=True):
        values = g["value"]
        low, high = ST.mean_ci(values, confidence)
        rows.append(dict(zip(_KEY + ["method", "metric"], key), n=int(values.size), mean=float(values.mean()),
                         std=float(values.std(ddof=1)) if values.size > 1 else float("nan"),
                         ci_low=low, ci_high=high, seeds=",".join(str(s) for s in sorted(g["seed"]))))
    return _by_metric(pd.DataFrame(rows, columns=cols), "pair")


def pooled_std(std_a: float, n_a: int, std_b: float, n_b: int) -> float:
    """sqrt(((n_a-1) s_a^2 + (n_b-1) s_b^2) / (n_a + n_b - 2)); NaN when n_a + n_b < 3."""
    return ST.pooled_std(std_a, n_a, std_b, n_b)


def tie_threshold(std_a: float, n_a: int, std_b: float, n_b: int,
                  tolerance: float = TIE_TOLERANCE) -> tuple[float, str]:
    """(sigma, where it came from) for the band rule of the module docstring."""
    sigma = pooled_std(std_a, n_a, std_b, n_b)
    if math.isnan(sigma):
        return tolerance, "fixed tolerance (one seed each)"
    return sigma, "pooled seed std"


def outcome(gain: float, sigma: float) -> str:
    """The band rule's outcome."""
    return ST.band_outcome(gain, sigma)


def dfa_gains(values: pd.DataFrame, reference: str = REFERENCE, rule: str = "ci",
              tolerance: float = TIE_TOLERANCE, confidence: float = ST.CONFIDENCE) -> pd.DataFrame:
    """DFA against every other method, per study x pair x metric, from `seed_values` rows.

    Columns: study, dataset, protocol, pair, teacher, student, metric, baseline, ref_mean,
    ref_std, ref_n, base_mean, base_std, base_n, gain, paired_n, paired_seeds, paired_mean,
    paired_std, ci_low, ci_high, p_value, p_holm, sigma, sigma_source, rule, outcome.
    `outcome` follows `rule` ("ci" or "band"); both rules' inputs are always there.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
    cols = _KEY + ["metric", "baseline", "ref_mean", "ref_std", "ref_n", "base_mean", "base_std", "base_n", "gain",
                   "paired_n", "paired_seeds", "paired_mean", "paired_std", "ci_low", "ci_high", "p_value", "p_holm",
                   "sigma", "sigma_source", "rule", "outcome"]
    rows = []
    for key, g in values.groupby(_KEY + ["metric"], dropna=False, sort=True):
        by_method = {m: dict(zip(gm["seed"].astype(int), gm["value"].astype(float)))
                     for m, gm in g.groupby("method", sort=False)}
        ref = by_method.get(reference)
        if not ref:
            continue
        r = pd.Series(list(ref.values()), dtype=float)
        r_std = float(r.std(ddof=1)) if r.size > 1 else float("nan")
        for base_name in sort_methods(m for m in by_method if m != reference):
            base = by_method[base_name]
            b = pd.Series(list(base.values()), dtype=float)
            b_std = float(b.std(ddof=1)) if b.size > 1 else float("nan")
            gain = float(r.mean() - b.mean())
            sigma, source = tie_threshold(r_std, int(r.size), b_std, int(b.size), tolerance)
            paired = ST.paired_comparison(ref, base, confidence)
            rows.append(dict(zip(_KEY + ["metric"], key), baseline=base_name, ref_mean=float(r.mean()), ref_std=r_std,
                             ref_n=int(r.size), base_mean=float(b.mean()), base_std=b_std, base_n=int(b.size),
                             gain=gain, paired_n=paired.n, paired_seeds=",".join(map(str, paired.seeds)),
                             paired_mean=paired.mean, paired_std=paired.std, ci_low=paired.ci_low,
                             ci_high=paired.ci_high, p_value=paired.p_value, p_holm=float("nan"), sigma=sigma,
                             sigma_source=source, rule=rule,
                             outcome=paired.outcome if rule == "ci" else ST.band_outcome(gain, sigma)))
    out = pd.DataFrame(rows, columns=cols)
    if len(out):
        # Holm over the family of every pair x baseline comparison of one study and metric
        for _, idx in out.groupby(["study", "metric"]).groups.items():
            out.loc[idx, "p_holm"] = ST.holm(out.loc[idx, "p_value"])
        order = {m: i for i, m in enumerate(sort_methods(out["baseline"]))}
        out["_order"] = out["baseline"].map(order)
        out = _by_metric(out, "pair", "_order").drop(columns="_order")
    return out


def win_tie_loss(gains: pd.DataFrame) -> pd.DataFrame:
    """DFA's outcomes over pairs, per study x metric x baseline, plus an `all` row, with the
    across-pairs test of each baseline.

    Columns: study, metric, baseline, pairs, wins, ties, losses, too_few, mean_gain, worst_gain,
    worst_pair, best_gain, best_pair, test, tested_pairs, positive, negative, statistic,
    p_value, p_holm, rank_biserial, median_gain. The test is on each pair's `gain`
    (`stats.across_pairs`); p_holm is adjusted over the baselines of one study and metric;
    the `all` row has no test (its comparisons share DFA's numbers and are not independent).
    """
    cols = ["study", "metric", "baseline", "pairs", "wins", "ties", "losses", "too_few", "mean_gain", "worst_gain",
            "worst_pair", "best_gain", "best_pair", "test", "tested_pairs", "positive", "negative", "statistic",
            "p_value", "p_holm", "rank_biserial", "median_gain"]
    rows = []

    def row(study: str, metric: str, baseline: str, g: pd.DataFrame) -> dict:
        worst, best = g.loc[g["gain"].idxmin()], g.loc[g["gain"].idxmax()]
        counts = g["outcome"].value_counts()
        out = dict(study=study, metric=metric, baseline=baseline, pairs=int(g["pair"].nunique()),
                   wins=int(counts.get(ST.WIN, 0)), ties=int(counts.get(ST.TIE, 0)),
                   losses=int(counts.get(ST.LOSS, 0)), too_few=int(counts.get(ST.TOO_FEW, 0)),
                   mean_gain=float(g["gain"].mean()), worst_gain=float(worst["gain"]), worst_pair=worst["pair"],
                   best_gain=float(best["gain"]), best_pair=best["pair"], test="none", tested_pairs=0, positive=0,
                   negative=0, statistic=float("nan"), p_value=float("nan"), p_holm=float("nan"),
                   rank_biserial=float("nan"), median_gain=float(g["gain"].median()))
        if baseline != "all":
            a = ST.across_pairs(g["gain"])
            out.update(test=a.test, tested_pairs=a.n_nonzero, positive=a.positive, negative=a.negative,
                       statistic=a.statistic, p_value=a.p_value, rank_biserial=a.rank_biserial)
        return out

    for (study, metric), g in gains.groupby(["study", "metric"], sort=True):
        block = [row(study, metric, baseline, g[g["baseline"] == baseline]) for baseline in sort_methods(g["baseline"])]
        for r, p in zip(block, ST.holm([r["p_value"] for r in block])):
            r["p_holm"] = float(p)
        rows += block + [row(study, metric, "all", g)]
    return _by_metric(pd.DataFrame(rows, columns=cols))


def verdict(gains: pd.DataFrame) -> pd.DataFrame:
    """Per study x metric x pair: DFA against the best other method of the pair (the highest
    mean over its seeds), the `dfa_gains` row of that comparison plus `n_methods` (methods
    compared) and `min_seeds` (the fewest seeds of any method of the pair)."""
    if gains.empty:
        return gains.assign(n_methods=pd.Series(dtype=int), min_seeds=pd.Series(dtype=int))
    rows = []
    for _, g in gains.groupby(["study", "metric", "pair"], sort=False):
        best = g.loc[g["base_mean"].idxmax()].copy()
        best["n_methods"] = int(len(g) + 1)
        best["min_seeds"] = int(min(g["base_n"].min(), g["ref_n"].min()))
        rows.append(best)
    return _by_metric(pd.DataFrame(rows), "pair")


def rank_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rank of each method within each pair (1 = best mean; equal means share the average rank)."""
    out = summary.copy()
    out["rank"] = out.groupby(["study", "pair", "metric"])["mean"].rank(method="average", ascending=False)
    return out


def average_ranks(summary: pd.DataFrame) -> pd.DataFrame:
    """Average rank per study x metric x method over the pairs it ran on (columns: study, metric,
    method, avg_rank, pairs, firsts: pairs where it ranked best, alone or shared)."""
    cols = ["study", "metric", "method", "avg_rank", "pairs", "firsts"]
    if summary.empty:
        return pd.DataFrame(columns=cols)
    ranked = rank_table(summary)
    ranked["first"] = ranked.groupby(["study", "pair", "metric"])["mean"].transform("max") == ranked["mean"]
    agg = (ranked.groupby(["study", "metric", "method"])
           .agg(avg_rank=("rank", "mean"), pairs=("pair", "nunique"), firsts=("first", "sum"))
           .reset_index())
    agg["firsts"] = agg["firsts"].astype(int)
    return _by_metric(agg, "avg_rank")[cols]


# --- the teacher-student gap ----------------------------------------------------------------
def teacher_accuracy(results: Results, metrics: Iterable[str] = METRICS) -> pd.DataFrame:
    """Test accuracy of each teacher (per dataset x model), mean over its seeds.

    From the teacher-stage rows of this sweep; a teacher taken from the teacher store has no
    rows here, so its `metrics.json` in the store (the `teacher_path` of the distillation
    config) is read instead when it is reachable. Columns: dataset, teacher, metric, n, mean,
    source.
    """
    rows = []
    t = results.trials
    done = t[(t["stage"] == "teacher") & (t["status"] == "completed")]
    seen: set[tuple[str, str]] = set()
    for (dataset, model), g in done.groupby(["dataset", "student"], sort=True):
        for metric in metrics:
            values = g[metric].dropna()
            if len(values):
                rows.append(dict(dataset=dataset, teacher=model, metric=metric, n=int(values.size),
                                 mean=float(values.mean()), source="teacher-stage rows"))
                seen.add((dataset, model))
    distill = t[t["stage"] == "distill"]
    for _, r in distill.drop_duplicates(["dataset", "teacher"]).iterrows():
        if (r["dataset"], r["teacher"]) in seen:
            continue
        final = _store_metrics(r["cfg"].get("teacher_path") if isinstance(r["cfg"], dict) else None)
        if final is None:
            continue
        for metric in metrics:
            if isinstance(final.get(metric), (int, float)):
                rows.append(dict(dataset=r["dataset"], teacher=r["teacher"], metric=metric, n=1,
                                 mean=float(final[metric]), source="teacher store metrics.json"))
        seen.add((r["dataset"], r["teacher"]))
    return pd.DataFrame(rows, columns=["dataset", "teacher", "metric", "n", "mean", "source"])


def _store_metrics(teacher_path: str | None) -> dict | None:
    if not teacher_path:
        return None
    path = Path(teacher_path) / "metrics.json"
    try:
        data = decode_json(path.read_text())
    except OSError:
        return None
    final = data.get("final") if isinstance(data, dict) else None
    return final if isinstance(final, dict) else None


def gap_table(summary: pd.DataFrame, teachers: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per study x pair x metric: the gap measures and DFA's gains.

    acc_gap = teacher accuracy - vanilla student accuracy (points; NaN without either);
    param_ratio = teacher params / student params (at 100 classes);
    gain_vs_best = DFA - the best other method of the pair (its name in best_other);
    gain_vs_vanilla = DFA - vanilla.
    """
    cols = _KEY + ["metric", "teacher_acc", "vanilla_acc", "acc_gap", "teacher_params", "student_params",
                   "param_ratio", "dfa_acc", "best_other", "gain_vs_best", "gain_vs_vanilla"]
    tacc = {(r.dataset, r.teacher, r.metric): r.mean for r in teachers.itertuples()}
    rows = []
    for key, g in summary.groupby(_KEY + ["metric"], dropna=False, sort=True):
        k = dict(zip(_KEY + ["metric"], key))
        means = dict(zip(g["method"], g["mean"]))
        t_acc = tacc.get((k["dataset"], k["teacher"], k["metric"]), float("nan"))
        v_acc = means.get("vanilla", float("nan"))
        d_acc = means.get(reference, float("nan"))
        others = {m: v for m, v in means.items() if m != reference}
        best_other = max(others, key=others.get) if others else None
        tp, sp = param_count(str(k["teacher"])), param_count(str(k["student"]))
        rows.append(dict(k, teacher_acc=t_acc, vanilla_acc=v_acc, acc_gap=t_acc - v_acc,
                         teacher_params=tp, student_params=sp,
                         param_ratio=(tp / sp) if tp and sp else float("nan"),
                         dfa_acc=d_acc, best_other=best_other,
                         gain_vs_best=d_acc - others[best_other] if best_other else float("nan"),
                         gain_vs_vanilla=d_acc - v_acc))
    return _by_metric(pd.DataFrame(rows, columns=cols), "pair")


def rankdata(values: Iterable[float]) -> np.ndarray:
    """Ranks 1..n, ties given the average of the ranks they span (scipy.stats.rankdata)."""
    return scipy_stats.rankdata(np.asarray(list(values), dtype=float), method="average")


def spearman(x: Iterable[float], y: Iterable[float], min_n: int = MIN_PAIRS_FOR_CORRELATION) -> float:
    """Spearman's rho (scipy.stats.spearmanr) over the complete (x, y) pairs.

    NaN with fewer than `min_n` complete pairs or when either side is constant.
    """
    frame = pd.DataFrame({"x": list(x), "y": list(y)}, dtype=float).dropna()
    if len(frame) < max(min_n, 2) or frame["x"].nunique() < 2 or frame["y"].nunique() < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy_stats.spearmanr(frame["x"], frame["y"]).statistic)


def gap_correlations(gap: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rho between each DFA gain and each gap measure, per study x metric
    (columns: study, metric, gain, measure, n, rho)."""
    rows = []
    for (study, metric), g in gap.groupby(["study", "metric"], sort=True):
        for gain in ("gain_vs_best", "gain_vs_vanilla"):
            for measure in ("acc_gap", "param_ratio"):
                ok = g[[gain, measure]].dropna()
                rows.append(dict(study=study, metric=metric, gain=gain, measure=measure, n=len(ok),
                                 rho=spearman(ok[gain], ok[measure])))
    return _by_metric(pd.DataFrame(rows, columns=["study", "metric", "gain", "measure", "n", "rho"]))


__all__ = [
    "METRICS",
    "MIN_PAIRS_FOR_CORRELATION",
    "REFERENCE",
    "RULES",
    "TIE_TOLERANCE",
    "average_ranks",
    "completed_distill",
    "dfa_gains",
    "gap_correlations",
    "gap_table",
    "method_summary",
    "outcome",
    "pooled_std",
    "rank_table",
    "rankdata",
    "seed_values",
    "spearman",
    "teacher_accuracy",
    "tie_threshold",
    "verdict",
    "win_tie_loss",
]

"""How robust is DFA across teacher-student pairs? Numbers over seeds, pair by pair.

All accuracies are test top-1 in percent; differences are in percentage points.

- `method_summary`: per study x pair x method x metric, the mean and the sample standard
  deviation (ddof 1; NaN with one seed) over seeds of `test_acc_last` and `test_acc_best`.
  Only completed distillation trials count (a running or errored trial has no test number).
- `dfa_gains`: per pair, the gain of DFA (method `dfa`) over every other method, and whether it
  is a win, a tie or a loss. **The tie rule**: with Delta = mean(DFA) - mean(B) over seeds and
  sigma the pooled seed standard deviation
      sigma = sqrt(((n_D - 1) s_D^2 + (n_B - 1) s_B^2) / (n_D + n_B - 2)),
  defined when n_D + n_B >= 3 (at least one of the two has two seeds), it is a tie if
  |Delta| <= sigma, a win if Delta > sigma and a loss if Delta < -sigma. When both have a single
  seed there is no measured noise, and sigma is a fixed tolerance, `TIE_TOLERANCE` = 0.3 points:
  the low end of the CIFAR-100 seed-to-seed spread (0.3-0.5 points, kd_protocol.md).
- `win_tie_loss`: those outcomes counted over pairs, per baseline and in total.
- `average_ranks`: per pair the methods are ranked by mean accuracy (rank 1 = best, equal means
  share the average of their ranks); a method's average rank is over the pairs it ran on.
- `gap_table` / `gap_correlations`: DFA's gain against the teacher-student gap, measured as
  the accuracy gap (teacher's test accuracy from the teacher-stage rows, minus the vanilla
  student's) and the parameter ratio (teacher / student, `analysis.model_params`), with
  Spearman's rank correlation (needs 3 pairs or more; NaN otherwise).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from analysis.loading import Results, decode_json, sort_methods
from analysis.model_params import param_count

METRICS = ("test_acc_last", "test_acc_best")
REFERENCE = "dfa"
TIE_TOLERANCE = 0.3  # points; the CIFAR-100 seed spread (kd_protocol.md), used when there is one seed
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


def method_summary(trials: pd.DataFrame, metrics: Iterable[str] = METRICS) -> pd.DataFrame:
    """Mean and std over seeds per study x pair x method x metric.

    Columns: study, dataset, protocol, pair, teacher, student, method, metric, n, mean, std, seeds.
    `std` is the sample standard deviation (ddof 1), NaN with a single seed.
    """
    d = completed_distill(trials)
    cols = _KEY + ["method", "metric", "n", "mean", "std", "seeds"]
    rows = []
    for key, g in d.groupby(_KEY + ["method"], dropna=False, sort=True):
        for metric in metrics:
            values = g[metric].dropna()
            if values.empty:
                continue
            rows.append(dict(zip(_KEY + ["method"], key), metric=metric, n=int(values.size),
                             mean=float(values.mean()),
                             std=float(values.std(ddof=1)) if values.size > 1 else float("nan"),
                             seeds=",".join(str(s) for s in sorted(g.loc[values.index, "seed"]))))
    return pd.DataFrame(rows, columns=cols)


def pooled_std(std_a: float, n_a: int, std_b: float, n_b: int) -> float:
    """sqrt(((n_a-1) s_a^2 + (n_b-1) s_b^2) / (n_a + n_b - 2)); NaN when n_a + n_b < 3."""
    dof = n_a + n_b - 2
    if dof < 1:
        return float("nan")
    va = 0.0 if n_a < 2 else std_a**2
    vb = 0.0 if n_b < 2 else std_b**2
    return math.sqrt(((n_a - 1) * va + (n_b - 1) * vb) / dof)


def tie_threshold(std_a: float, n_a: int, std_b: float, n_b: int,
                  tolerance: float = TIE_TOLERANCE) -> tuple[float, str]:
    """(sigma, where it came from) for the tie rule of the module docstring."""
    sigma = pooled_std(std_a, n_a, std_b, n_b)
    if math.isnan(sigma):
        return tolerance, "fixed tolerance (one seed each)"
    return sigma, "pooled seed std"


def outcome(gain: float, sigma: float) -> str:
    if abs(gain) <= sigma:
        return "tie"
    return "win" if gain > 0 else "loss"


def dfa_gains(summary: pd.DataFrame, reference: str = REFERENCE, tolerance: float = TIE_TOLERANCE) -> pd.DataFrame:
    """Gain of `reference` over every other method, per study x pair x metric.

    Columns: study, dataset, protocol, pair, teacher, student, metric, baseline, ref_mean, ref_std,
    ref_n, base_mean, base_std, base_n, gain, sigma, sigma_source, outcome.
    """
    cols = _KEY + ["metric", "baseline", "ref_mean", "ref_std", "ref_n", "base_mean", "base_std", "base_n", "gain",
                   "sigma", "sigma_source", "outcome"]
    rows = []
    for key, g in summary.groupby(_KEY + ["metric"], dropna=False, sort=True):
        ref = g[g["method"] == reference]
        if ref.empty:
            continue
        r = ref.iloc[0]
        for _, b in g[g["method"] != reference].iterrows():
            sigma, source = tie_threshold(r["std"], int(r["n"]), b["std"], int(b["n"]), tolerance)
            gain = float(r["mean"] - b["mean"])
            rows.append(dict(zip(_KEY + ["metric"], key), baseline=b["method"], ref_mean=r["mean"], ref_std=r["std"],
                             ref_n=int(r["n"]), base_mean=b["mean"], base_std=b["std"], base_n=int(b["n"]),
                             gain=gain, sigma=sigma, sigma_source=source, outcome=outcome(gain, sigma)))
    out = pd.DataFrame(rows, columns=cols)
    if len(out):
        order = {m: i for i, m in enumerate(sort_methods(out["baseline"]))}
        out["_order"] = out["baseline"].map(order)
        out = _by_metric(out, "pair", "_order").drop(columns="_order")
    return out


def win_tie_loss(gains: pd.DataFrame) -> pd.DataFrame:
    """DFA's wins / ties / losses over pairs, per study x metric x baseline, plus an `all` row.

    Columns: study, metric, baseline, pairs, wins, ties, losses, mean_gain, worst_gain, worst_pair,
    best_gain, best_pair.
    """
    cols = ["study", "metric", "baseline", "pairs", "wins", "ties", "losses", "mean_gain", "worst_gain", "worst_pair",
            "best_gain", "best_pair"]
    rows = []

    def row(study: str, metric: str, baseline: str, g: pd.DataFrame) -> dict:
        worst, best = g.loc[g["gain"].idxmin()], g.loc[g["gain"].idxmax()]
        return dict(study=study, metric=metric, baseline=baseline, pairs=int(g["pair"].nunique()),
                    wins=int((g["outcome"] == "win").sum()), ties=int((g["outcome"] == "tie").sum()),
                    losses=int((g["outcome"] == "loss").sum()), mean_gain=float(g["gain"].mean()),
                    worst_gain=float(worst["gain"]), worst_pair=worst["pair"], best_gain=float(best["gain"]),
                    best_pair=best["pair"])

    for (study, metric), g in gains.groupby(["study", "metric"], sort=True):
        for baseline in sort_methods(g["baseline"]):
            rows.append(row(study, metric, baseline, g[g["baseline"] == baseline]))
        rows.append(row(study, metric, "all", g))
    return _by_metric(pd.DataFrame(rows, columns=cols))


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
    """Ranks 1..n, ties given the average of the ranks they span (as scipy's 'average')."""
    return pd.Series(list(values), dtype=float).rank(method="average").to_numpy()


def spearman(x: Iterable[float], y: Iterable[float], min_n: int = MIN_PAIRS_FOR_CORRELATION) -> float:
    """Spearman's rho: Pearson correlation of the average ranks of the complete (x, y) pairs.

    NaN with fewer than `min_n` complete pairs or when either side is constant.
    """
    frame = pd.DataFrame({"x": list(x), "y": list(y)}, dtype=float).dropna()
    if len(frame) < max(min_n, 2):
        return float("nan")
    rx, ry = rankdata(frame["x"]), rankdata(frame["y"])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


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
    "spearman",
    "teacher_accuracy",
    "tie_threshold",
    "win_tie_loss",
]

"""`write_report(results, out_dir)`: the report of one sweep or several, as Markdown with tables
and figures.

Writes into `out_dir`:
    report.md            the report: a verdict (did DFA beat the best other method of each pair?),
                         a reading of the numbers, tables, figures, where each number came from,
                         what is missing
    tables/*.md|tex|csv  paper-style tables per study and metric, and the analysis tables as CSV
    figures/*.png|pdf    gains, the teacher-student gap, alpha heatmaps and trajectories, search curves

Several sweeps (`write_report([a, b], out)`) are joined into one report (`loading.load_many`),
with a table of which sweep each number came from. It reports what is there: an empty folder,
a sweep still running, a stage not run yet or a pair with one seed gives a report of the rows
that exist and a "Missing" section that says what is not there (against each sweep's
spec.json when it sits next to the results, else against the grid the rows themselves imply).
A folder that is not a results folder raises one `dfa_ray.errors.DfaRayError`.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pandas as pd

from dfa_ray_analysis import plots as P
from dfa_ray_analysis import robustness as R
from dfa_ray_analysis import search as S
from dfa_ray_analysis import tables as T
from dfa_ray_analysis.bundle import SweepAnalysis
from dfa_ray.errors import DfaRayError
from dfa_ray_analysis.loading import METRIC_LABELS, Results, load_many, method_label
from dfa_ray_analysis.markdown import fmt, md_table, pct, plain, rel, slug
from dfa_ray_analysis.missing import missing_items
from dfa_ray_analysis.reading import PRIMARY, reading, tie_rule, verdict_section


# --- sections ------------------------------------------------------------------------------------
def _signed(v) -> str:
    return fmt(v, signed=True)


# (columns -> headers, column -> formatter) of the report's tables
def _p(v) -> str:
    return fmt(v, 3) if not (isinstance(v, float) and v < 0.001) else "< 0.001"


_GAIN_TABLE = (
    {"pair": "pair", "baseline": "baseline", "ref_mean": "DFA", "ref_n": "n DFA", "base_mean": "baseline",
     "base_n": "n B", "gain": "Δ means", "paired_n": "seeds in common", "paired_mean": "Δ paired",
     "ci_low": "95 % CI low", "ci_high": "95 % CI high", "p_value": "p (paired t)", "p_holm": "p (Holm)",
     "outcome": "outcome"},
    {"baseline": method_label, "ref_n": plain, "base_n": plain, "gain": _signed, "paired_n": plain,
     "paired_mean": _signed, "ci_low": _signed, "ci_high": _signed, "p_value": _p, "p_holm": _p, "outcome": plain},
)
_BAND_COLUMNS = {"sigma": "σ (band)", "sigma_source": "σ from"}
_WTL_TABLE = (
    {"metric": "metric", "baseline": "baseline", "pairs": "pairs", "wins": "wins", "ties": "ties",
     "losses": "losses", "too_few": "too few seeds", "mean_gain": "mean Δ", "median_gain": "median Δ",
     "worst_gain": "worst Δ", "worst_pair": "worst pair", "best_gain": "best Δ", "best_pair": "best pair",
     "test": "test across pairs", "positive": "pairs DFA ahead", "negative": "pairs DFA behind",
     "p_value": "p", "p_holm": "p (Holm)", "rank_biserial": "rank-biserial r"},
    {"metric": plain, "baseline": lambda b: "all baselines" if b == "all" else method_label(b), "pairs": plain,
     "wins": plain, "ties": plain, "losses": plain, "too_few": plain, "mean_gain": _signed, "median_gain": _signed,
     "worst_gain": _signed, "best_gain": _signed, "worst_pair": plain, "best_pair": plain,
     "test": lambda s: {"wilcoxon": "Wilcoxon signed-rank", "sign": "exact sign test"}.get(s, "–"),
     "positive": plain, "negative": plain, "p_value": _p, "p_holm": _p, "rank_biserial": _signed},
)
_GAP_TABLE = (
    {"metric": "metric", "pair": "pair", "teacher_acc": "teacher", "vanilla_acc": "vanilla student",
     "acc_gap": "accuracy gap", "param_ratio": "param. ratio", "dfa_acc": "DFA", "best_other": "best other",
     "gain_vs_best": "DFA − best other", "gain_vs_vanilla": "DFA − vanilla"},
    {"metric": plain, "best_other": lambda m: method_label(m) if isinstance(m, str) else "–", "acc_gap": _signed,
     "gain_vs_best": _signed, "gain_vs_vanilla": _signed},
)
_CORRELATION_TABLE = (
    {"metric": "metric", "gain": "gain", "measure": "gap measure", "n": "pairs", "rho": "Spearman ρ"},
    {"metric": plain, "gain": lambda g: "DFA − best other" if g == "gain_vs_best" else "DFA − vanilla",
     "measure": lambda m: "accuracy gap" if m == "acc_gap" else "parameter ratio", "n": plain, "rho": _signed},
)


def _overview(results: Results) -> list[str]:
    t = results.trials
    where = ([f"- Results: `{results.root}`"] if len(results.sources) <= 1 else
             ["- Results of several sweeps, joined on (dataset x protocol, pair, method, seed):"]
             + [f"  - {s.name}: `{s.root}`" for s in results.sources])
    lines = ["## Overview", "", *where,
             f"- Written: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
             f"{len(t)} trial rows, {len(results.epochs)} epoch rows.",
             ""]
    if t.empty:
        return lines + ["No trial has written a row yet.", ""]
    rows = []
    for stage in ("teacher", "search", "distill"):
        g = t[t["stage"] == stage]
        counts = g["status"].value_counts()
        rows.append(dict(stage=stage, trials=len(g), datasets=", ".join(sorted(g["dataset"].unique())) or "–",
                         pairs=g["pair"].nunique(), **{s: int(counts.get(s, 0)) for s in
                                                        ("completed", "pruned", "errored", "running")}))
    lines.append(md_table(pd.DataFrame(rows), {"stage": "stage", "trials": "trials", "datasets": "dataset",
                                               "pairs": "pairs / models", "completed": "completed",
                                               "pruned": "pruned (sha / asha)", "errored": "errored",
                                               "running": "running"}, {k: plain for k in
                                                                       ("trials", "datasets", "pairs", "completed",
                                                                        "pruned", "errored", "running")}))
    return lines


def _study_sections(a: SweepAnalysis, out: Path) -> list[str]:
    lines: list[str] = []
    for study in a.studies:
        key = slug(study)
        lines += [f"## Study: {study}", ""]
        for metric in R.METRICS:
            table = T.paper_table(a.summary, a.teachers, study, metric, a.configs_by_pair(study))
            paths = T.write_table(table, out / "tables", f"accuracy_{key}_{metric}")
            lines += [f"### {table.title}", "", "Mean ± std over seeds; best method per pair in **bold**.", "",
                      T.to_markdown(table)]
            lines += [f"- {note}" for note in table.notes]
            lines += ["", f"Also as [CSV]({rel(paths['csv'], out)}) and [LaTeX]({rel(paths['tex'], out)}).", ""]
        g = a.gains[a.gains["study"] == study]
        if len(g):
            lines += ["### Gain of DFA over each baseline", "", tie_rule(a.rule), ""]
            columns = {**_GAIN_TABLE[0], **(_BAND_COLUMNS if a.rule == "band" else {})}
            for metric in R.METRICS:
                gm = g[g["metric"] == metric]
                if gm.empty:
                    continue
                lines += [f"{METRIC_LABELS[metric].capitalize()}:", "",
                          md_table(gm, columns, {**_GAIN_TABLE[1], "sigma_source": plain})]
            lines += _figure(P.plot_dfa_gains(a.gains, study), out, f"gains_{key}")
            w = a.wtl[a.wtl["study"] == study]
            lines += ["### Win / tie / loss of DFA", "",
                      md_table(w.assign(metric=w["metric"].map(METRIC_LABELS)), *_WTL_TABLE)]
        rk = a.ranks[a.ranks["study"] == study]
        if len(rk):
            lines += ["### Average rank across pairs", "", "Rank 1 = best mean accuracy on a pair; ties share the "
                      "average rank.", "",
                      md_table(rk.assign(metric=rk["metric"].map(METRIC_LABELS)),
                               {"metric": "metric", "method": "method", "avg_rank": "average rank", "pairs": "pairs",
                                "firsts": "pairs ranked first"},
                               {"metric": plain, "method": method_label, "pairs": plain, "firsts": plain})]
        lines += _gap_section(a, study, key, out)
    return lines


def _gap_section(a: SweepAnalysis, study: str, key: str, out: Path) -> list[str]:
    gp = a.gap[a.gap["study"] == study]
    if gp.empty:
        return []
    lines = ["### DFA's gain and the teacher-student gap", "",
             "Accuracy gap = teacher − vanilla student test accuracy (points; the teacher's from its own "
             "teacher-stage rows). Parameter ratio = teacher / student parameters (at 100 classes, "
             "`dfa_ray_analysis.model_params`). Correlation: Spearman's ρ over pairs "
             f"(needs ≥ {R.MIN_PAIRS_FOR_CORRELATION} pairs).", ""]
    lines.append(md_table(gp.assign(metric=gp["metric"].map(METRIC_LABELS)), *_GAP_TABLE))
    c = a.correlations[a.correlations["study"] == study]
    lines.append(md_table(c.assign(metric=c["metric"].map(METRIC_LABELS)), *_CORRELATION_TABLE))
    src = a.teachers[a.teachers["source"] != "teacher-stage rows"]
    if len(src):
        lines.append(f"Teacher accuracy of {', '.join(sorted(src['teacher'].unique()))} read from the teacher store "
                     "(the sweep reused a stored teacher and wrote no teacher rows).")
        lines.append("")
    lines += _figure(P.plot_gap(a.gap, a.summary, study, PRIMARY), out, f"gap_{key}")
    return lines


def _figure(fig, out: Path, name: str) -> list[str]:
    """Save `fig` as PNG and PDF under figures/; the Markdown that embeds the PNG and links the PDF."""
    plot = P.save(fig, out / "figures" / name)
    return [f"![{plot.title}]({rel(plot.path, out)})", "",
            f"Also as [PDF]({rel(plot.paths['pdf'], out)}).", ""]


def _search_section(a: SweepAnalysis, out: Path) -> list[str]:
    st = a.search_trials
    if st.empty:
        return []
    lines = ["## Search", "", "Held-out accuracy here is the student's accuracy on the architecture split "
             "(never the test set). The chosen trial of a pair is the one whose genotype the `dfa` distillation "
             "used (else: best final accuracy among the trials that ran every epoch).", ""]
    lines += ["### Chosen trial per pair", "",
              md_table(a.chosen, {"pair": "pair", "trial_id": "trial", "chosen_by": "how"},
                       {"trial_id": plain, "chosen_by": plain})]
    if len(a.effects):
        lines += ["### Effect of the searched options", "",
                  "Trials stopped by the scheduler (sha / asha) have no final accuracy, so each option is related to the held-out accuracy "
                  "at the *common epoch* (the last epoch every trial of the pair ran: all trials, equal training), and "
                  "to the final accuracy of the completed trials only. ρ is Spearman's rank correlation of the option "
                  "value with the accuracy (NaN with fewer than 3 trials).", "",
                  md_table(a.effects, {"pair": "pair", "option": "option", "kind": "kind", "n": "trials",
                                       "common_epoch": "common epoch", "rho_common": "ρ at common epoch",
                                       "best_value": "best at common epoch", "n_completed": "completed",
                                       "rho_completed": "ρ completed", "best_completed_value": "best completed"},
                           {"option": plain, "kind": plain, "n": plain, "common_epoch": plain,
                            "n_completed": plain, "rho_common": lambda v: fmt(v, signed=True),
                            "rho_completed": lambda v: fmt(v, signed=True),
                            "best_value": lambda v: fmt(v, 4) if isinstance(v, float) else plain(v),
                            "best_completed_value": lambda v: fmt(v, 4) if isinstance(v, float) else plain(v)})]
        if len(a.levels):
            lines += ["Per value of the options whose values repeat across trials (mean held-out accuracy, %):", "",
                      md_table(a.levels, {"pair": "pair", "option": "option", "value": "value", "n": "trials",
                                          "mean_common": "at common epoch", "n_completed": "completed",
                                          "mean_completed": "final (completed)"},
                               {"option": plain, "value": plain, "n": plain, "n_completed": plain})]
    else:
        lines += ["No option varied between the search trials of a pair, so there is no option effect to "
                  "measure.", ""]
    if len(a.alphas):
        lines += ["### Aggregation weights α", "", "α at the end of search of each pair's chosen trial, per student "
                  "group (candidates are the teacher group's blocks, shallowest first), with the normalised entropy "
                  "(1 = uniform, 0 = one candidate).", ""]
        rows = []
        for (pair, group), g in a.alphas.groupby(["pair", "group"]):
            g = g.sort_values("position")
            rows.append(dict(pair=pair, group=f"S{int(g['student_group'].iloc[0]) + 1} ← T"
                                                f"{int(g['teacher_group'].iloc[0]) + 1}",
                             alpha=", ".join(f"{c}: {w:.3f}" for c, w in zip(g["candidate"], g["weight"])),
                             entropy=S.alpha_entropy(g["weight"])))
        lines.append(md_table(pd.DataFrame(rows), {"pair": "pair", "group": "group", "alpha": "α per candidate",
                                                   "entropy": "entropy"},
                              {"group": plain, "alpha": plain, "entropy": lambda v: fmt(v, 4)}))
        lines += _figure(P.plot_alpha_heatmaps(a.alphas), out, "alpha_heatmaps")
        lines += _figure(P.plot_alpha_trajectories(a.trajectories), out, "alpha_trajectories")
    lines += ["### Search learning curves and what ASHA saved", "",
              "Epochs run against the epochs of running every trial to the end; seconds for all trials to the end are "
              "estimated at the pair's mean seconds per epoch. *Best at common epoch* compares all trials at the "
              "last epoch every trial ran; *pruned contenders* are stopped trials that were at least as good as the "
              "chosen trial at the epoch they were stopped.", "",
              md_table(a.asha, {"pair": "pair", "trials": "trials", "completed": "completed", "pruned": "pruned",
                                "errored": "errored", "running": "running", "epochs_run": "epochs run",
                                "epochs_full": "epochs if all ran", "saved_fraction": "saved",
                                "seconds_run": "seconds run", "seconds_full_est": "seconds if all ran (est.)",
                                "chosen_trial": "chosen", "common_epoch": "common epoch",
                                "best_at_common": "best at common epoch", "same_best": "same?",
                                "pruned_contenders": "pruned contenders"},
                       {"trials": plain, "completed": plain, "pruned": plain, "errored": plain, "running": plain,
                        "epochs_run": plain, "epochs_full": plain, "saved_fraction": pct,
                        "seconds_run": lambda v: fmt(v, 0), "seconds_full_est": lambda v: fmt(v, 0),
                        "chosen_trial": plain, "common_epoch": plain, "best_at_common": plain,
                        "same_best": lambda v: "–" if v is None else ("yes" if v else "no"),
                        "pruned_contenders": lambda v: v or "none"})]
    lines += _figure(P.plot_search_curves(st, a.search_epochs, a.chosen), out, "search_curves")
    return lines


def _provenance_section(a: SweepAnalysis) -> list[str]:
    """Which sweep each number came from (always shown when the report joins several sweeps)."""
    pv = a.provenance
    if pv.empty or (len(a.results.sources) <= 1 and pv["source"].nunique() <= 1):
        return []
    return ["## Where each number came from", "",
            "Per study, pair and method: the sweep whose finished trials gave the seeds of the tables above.", "",
            md_table(pv, {"study": "study", "pair": "pair", "method": "method", "source": "sweep", "seeds": "seeds",
                          "n": "n"}, {"study": plain, "method": method_label, "source": plain, "seeds": plain,
                                       "n": plain})]


def _errored_section(results: Results) -> list[str]:
    t = results.trials
    err = t[t["status"] == "errored"]
    if err.empty:
        return []
    return ["## Errored trials", "", "These trials stopped with an error; their rows up to the error are kept, "
            "but they count nowhere above.", "",
            md_table(err, {"stage": "stage", "pair": "pair", "method": "method", "seed": "seed", "trial_id": "trial",
                           "epochs_run": "epochs run", "reason": "reason"},
                     {k: plain for k in ("stage", "pair", "method", "seed", "trial_id", "epochs_run", "reason")})]


def _missing_section(a: SweepAnalysis) -> list[str]:
    items = missing_items(a)
    lines = ["## Missing", ""]
    if not items:
        return lines + ["Nothing: every planned trial finished.", ""]
    return lines + [f"- {item}" for item in items] + [""]


def _files_section(out: Path) -> list[str]:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "report.md")
    if not files:
        return []
    return ["## Files", ""] + [f"- [{rel(p, out)}]({rel(p, out)})" for p in files] + [""]


def write_report(results: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 out_dir: str | os.PathLike[str] | None = None, rule: str = "ci") -> Path:
    """Write the report of the sweep at `results` (its folder or its `results/` folder), or of
    several sweeps (a list of folders) joined into one, into `out_dir` (default
    `<sweep_dir>/report`; required for several sweeps); `rule` is the tie rule ("ci", the
    interval of the paired difference, or "band"). Returns the path of report.md."""
    paths = [results] if isinstance(results, (str, os.PathLike)) else list(results)
    if rule not in R.RULES:
        raise DfaRayError(f"tie rule {rule!r} is not known; use one of {', '.join(R.RULES)}")
    if len(paths) > 1 and out_dir is None:
        raise DfaRayError("a report of several sweeps needs an output folder: give --out DIR")
    loaded = load_many(paths)
    out = Path(out_dir) if out_dir is not None else loaded.sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    stale = [p for ext in ("png", "pdf", "svg") for p in (out / "figures").glob(f"*.{ext}")]
    stale += [p for ext in ("md", "tex", "csv") for p in (out / "tables").glob(f"*.{ext}")]
    for old in stale:  # a report written again must not list last time's files
        if old.is_file():
            old.unlink()
    a = SweepAnalysis(loaded, rule=rule)
    _write_csvs(a, out / "tables")
    body = (verdict_section(a) + _overview(loaded) + reading(a) + _study_sections(a, out) + _search_section(a, out)
            + _provenance_section(a) + _errored_section(loaded) + _missing_section(a))
    title = "DFA sweep report" if len(loaded.sources) <= 1 else "DFA report over several sweeps"
    lines = [f"# {title}: {loaded.sweep_name}", ""] + body + _files_section(out)
    path = out / "report.md"
    tmp = out / ".report.md.tmp"
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    tmp.replace(path)
    return path


def _write_csvs(a: SweepAnalysis, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frames = {"summary": a.summary, "seed_values": a.values, "dfa_gains": a.gains, "win_tie_loss": a.wtl,
              "verdict": a.verdict, "provenance": a.provenance, "average_ranks": a.ranks,
              "teacher_gap": a.gap, "gap_correlations": a.correlations, "search_option_effects": a.effects,
              "search_option_levels": a.levels, "search_alpha_final": a.alphas, "search_asha": a.asha}
    for name, frame in frames.items():
        if len(frame):
            frame.to_csv(folder / f"{name}.csv", index=False)


__all__ = ["write_report"]

"""What a report lacks: stages without rows, trials still running, cells of the planned grid
(the sweep's spec.json, else the grid the rows imply) that never ran, single-seed pairs,
teachers without an accuracy. One sentence per item."""

from __future__ import annotations

from analysis import robustness as R
from analysis.bundle import SweepAnalysis
from analysis.loading import sort_methods


def missing_items(a: SweepAnalysis) -> list[str]:
    """What the report lacks, one sentence each (empty when nothing is missing)."""
    results = a.results
    t = results.trials
    items: list[str] = list(results.notes)
    spec = results.spec or {}
    search_on = (spec.get("search") or {}).get("enabled", True) if spec else True
    distill_on = (spec.get("distill") or {}).get("enabled", True) if spec else True
    for stage, planned in (("teacher", True), ("search", search_on), ("distill", distill_on)):
        if planned and t[t["stage"] == stage].empty:
            extra = " (teachers may have come from the teacher store)" if stage == "teacher" else ""
            items.append(f"No {stage}-stage trial has written a row{extra}.")
    running = t[t["status"] == "running"]
    for _, r in running.iterrows():
        items.append(f"Still running: {r['stage']} {r['pair']} {r['method']} seed {r['seed']} (trial {r['trial_id']}, "
                     f"epoch {r['epochs_run']} of {r['epochs_planned']}); its numbers are not in the tables yet.")
    d = t[t["stage"] == "distill"]
    if spec.get("pairs") and distill_on:
        methods = list((spec.get("distill") or {}).get("methods") or [])
        seeds = list((spec.get("distill") or {}).get("seeds") or [])
        for p in spec["pairs"]:
            pair = f"{p.get('teacher')}->{p.get('student')}"
            for method in methods:
                have = set(d[(d["pair"] == pair) & (d["method"] == method)]["seed"])
                lacking = [s for s in seeds if s not in have]
                if lacking:
                    items.append(f"{pair} {method}: no trial for seed(s) {', '.join(map(str, lacking))} "
                                 "(planned in spec.json, never started or skipped).")
        if search_on:
            for p in spec["pairs"]:
                pair = f"{p.get('teacher')}->{p.get('student')}"
                if a.search_trials.empty or pair not in set(a.search_trials["pair"]):
                    items.append(f"{pair}: no search trial.")
    elif len(d):
        for study, g in d.groupby("study"):
            methods, seeds = set(g["method"]), set(g["seed"])
            for pair, gp in g.groupby("pair"):
                for method in sort_methods(methods):
                    lacking = sorted(seeds - set(gp[gp["method"] == method]["seed"]))
                    if lacking:
                        items.append(f"{study}: {pair} {method}: no trial for seed(s) "
                                     f"{', '.join(map(str, lacking))} (run for other cells of this study).")
    done = R.completed_distill(t)
    for (study, pair), g in done.groupby(["study", "pair"]):
        if g.groupby("method")["seed"].nunique().max() < 2:
            items.append(f"{study}: {pair} has one seed per method: no seed spread, ties use the fixed "
                         f"{R.TIE_TOLERANCE:g}-point tolerance.")
    for (dataset, teacher), _ in d.groupby(["dataset", "teacher"]):
        if a.teachers[(a.teachers["dataset"] == dataset) & (a.teachers["teacher"] == teacher)].empty:
            items.append(f"Teacher {teacher} on {dataset}: no accuracy (no teacher-stage row and no readable "
                         "metrics.json in the teacher store): no accuracy gap for its pairs.")
    if len(done) and "dfa" not in set(done["method"]):
        items.append("No finished `dfa` distillation trial: no gains of DFA to report.")
    if len(done) and "vanilla" not in set(done["method"]):
        items.append("No finished `vanilla` student: no teacher-student accuracy gap.")
    return items


__all__ = ["missing_items"]

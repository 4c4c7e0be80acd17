"""What a report lacks: stages without rows, trials still running, cells of the planned grid
(the sweep's spec.json, else the grid the rows imply) that never ran, single-seed pairs,
teachers without an accuracy. One sentence per item."""

from __future__ import annotations

from dfa_ray_analysis import robustness as R
from dfa_ray_analysis.bundle import SweepAnalysis
from dfa_ray_analysis.loading import sort_methods


def missing_items(a: SweepAnalysis) -> list[str]:
    """What the report lacks, one sentence each (empty when nothing is missing)."""
    results = a.results
    t_all = results.trials
    items: list[str] = list(results.notes)
    sources = results.sources or [None]
    for source in sources:  # each sweep against its own spec.json
        t = t_all if source is None or len(sources) == 1 else t_all[t_all["source"] == source.name]
        spec = (source.spec if source is not None else results.spec) or {}
        where = f"{source.name}: " if len(sources) > 1 else ""
        items += _missing_of_sweep(a, t, spec, where)
    done = R.completed_distill(t_all)
    rule = ("no comparison there can be decided by the interval rule (it needs 2 seeds in common)"
            if a.rule == "ci" else f"ties there use the fixed {R.TIE_TOLERANCE:g}-point tolerance")
    for (study, pair), g in done.groupby(["study", "pair"]):
        if g.groupby("method")["seed"].nunique().max() < 2:
            items.append(f"{study}: {pair} has one seed per method: no seed spread, {rule}.")
    d = t_all[t_all["stage"] == "distill"]
    for (dataset, teacher), _ in d.groupby(["dataset", "teacher"]):
        if a.teachers[(a.teachers["dataset"] == dataset) & (a.teachers["teacher"] == teacher)].empty:
            items.append(f"Teacher {teacher} on {dataset}: no accuracy (no teacher-stage row and no readable "
                         "metrics.json in the teacher store): no accuracy gap for its pairs.")
    if len(done) and "dfa" not in set(done["method"]):
        items.append("No finished `dfa` distillation trial: no gains of DFA to report.")
    if len(done) and "vanilla" not in set(done["method"]):
        items.append("No finished `vanilla` student: no teacher-student accuracy gap.")
    return items


def _missing_of_sweep(a: SweepAnalysis, t, spec: dict, where: str) -> list[str]:
    """What one sweep's rows `t` lack against its spec (or the grid its rows imply)."""
    items: list[str] = []
    search_on = (spec.get("search") or {}).get("enabled", True) if spec else True
    distill_on = (spec.get("distill") or {}).get("enabled", True) if spec else True
    for stage, planned in (("teacher", True), ("search", search_on), ("distill", distill_on)):
        if planned and t[t["stage"] == stage].empty:
            extra = " (teachers may have come from the teacher store)" if stage == "teacher" else ""
            items.append(f"{where}No {stage}-stage trial has written a row{extra}.")
    running = t[t["status"] == "running"]
    for _, r in running.iterrows():
        items.append(f"{where}Still running: {r['stage']} {r['pair']} {r['method']} seed {r['seed']} "
                     f"(trial {r['trial_id']}, epoch {r['epochs_run']} of {r['epochs_planned']}); its numbers are "
                     "not in the tables yet.")
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
                    items.append(f"{where}{pair} {method}: no trial for seed(s) {', '.join(map(str, lacking))} "
                                 "(planned in spec.json, never started or skipped).")
        if search_on:
            searched = set(t[t["stage"] == "search"]["pair"])
            for p in spec["pairs"]:
                pair = f"{p.get('teacher')}->{p.get('student')}"
                if pair not in searched:
                    items.append(f"{where}{pair}: no search trial.")
    elif len(d):
        for study, g in d.groupby("study"):
            methods, seeds = set(g["method"]), set(g["seed"])
            for pair, gp in g.groupby("pair"):
                for method in sort_methods(methods):
                    lacking = sorted(seeds - set(gp[gp["method"] == method]["seed"]))
                    if lacking:
                        items.append(f"{where}{study}: {pair} {method}: no trial for seed(s) "
                                     f"{', '.join(map(str, lacking))} (run for other cells of this study).")
    return items


__all__ = ["missing_items"]

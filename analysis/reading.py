"""The short reading of a sweep's numbers: who wins how often, by how much, where DFA loses,
what the search and ASHA did. Plain sentences, built from `bundle.SweepAnalysis`."""

from __future__ import annotations

import math

import pandas as pd

from dfa_ray_analysis import robustness as R
from dfa_ray_analysis import stats as ST
from dfa_ray_analysis.bundle import SweepAnalysis
from dfa_ray_analysis.loading import METRIC_LABELS, method_label, sort_methods
from dfa_ray_analysis.markdown import count, fmt, md_table, pct, plain
from dfa_ray_analysis.published import published_for

PRIMARY = "test_acc_last"  # the published CRD numbers are last-epoch accuracies
NEAR_UNIFORM = 0.05  # |alpha x N - 1| below this everywhere: the search has not moved alpha


def tie_rule(rule: str = "ci") -> str:
    """The tie, test and rank rules, stated for the report (see `dfa_ray_analysis.robustness`)."""
    tests = ("p: the paired t-test (scipy.stats.ttest_rel) on the same seeds; p (Holm): adjusted by Holm's method "
             "over every pair × baseline comparison of the study and metric. Across pairs: one number per pair "
             "(its difference of means), a Wilcoxon signed-rank test from "
             f"{ST.MIN_PAIRS_WILCOXON} non-zero pairs on, the exact sign test below (under 6 pairs no two-sided test "
             "can reach p < 0.05), two-sided, Holm-adjusted over the baselines; effect size: the rank-biserial "
             "correlation (+1: DFA ahead on every pair). Ranks: per pair, methods ordered by mean accuracy "
             "(1 = best, equal means share the average rank), averaged over the pairs a method ran on.")
    if rule == "band":
        return ("**Tie rule (band).** For DFA against a baseline B on one pair, Δ = mean(DFA) − mean(B) over seeds "
                "(accuracy points) and σ = the pooled seed standard deviation "
                "√(((n_DFA−1)·s²_DFA + (n_B−1)·s²_B) / (n_DFA + n_B − 2)), defined when at least one of the two "
                f"has two seeds. With a single seed each there is no measured noise and σ = {R.TIE_TOLERANCE:g} "
                "points, the low end of the usual CIFAR-100 seed-to-seed spread (0.3–0.5 points). "
                "|Δ| ≤ σ is a tie, Δ > σ a win, Δ < −σ a loss. The 95 % intervals are still shown. " + tests)
    return ("**Tie rule (95 % interval of the paired difference).** For DFA against a baseline B on one pair, "
            "the difference DFA − B is taken seed by seed over the seeds both ran (the same seed gives both the "
            "same batch order and held-out split, so the pairing is real); its mean gets a 95 % Student-t "
            "interval, mean ± t(0.975, n−1) · s / √n. The interval above 0 is a **win**, below 0 a **loss**, "
            "containing 0 a **tie**; with fewer than 2 seeds in common there is no interval and no claim "
            "(**too few seeds**). " + tests)


def verdict_section(a: SweepAnalysis, metric: str = PRIMARY) -> list[str]:
    """The first page: per study, did DFA beat the best other method of each pair, by the rule?"""
    lines = ["## Verdict", ""]
    v = a.verdict[a.verdict["metric"] == metric] if len(a.verdict) else a.verdict
    if v.empty:
        return lines + ["No pair has a finished DFA trial next to another method, so there is no verdict yet "
                        "(see **Missing** below).", ""]
    rule = ("the 95 % interval of the paired difference above zero" if a.rule == "ci"
            else "the difference of means beyond the band σ")
    for study in sorted(v["study"].unique()):
        g = v[v["study"] == study]
        counts = g["outcome"].value_counts()
        few = g[g["outcome"] == ST.TOO_FEW]["pair"].tolist()
        first = (f"**{study}** ({METRIC_LABELS[metric]}): DFA beat the best other method of the pair on "
                 f"**{int(counts.get(ST.WIN, 0))} of {len(g)}** pair(s) by the rule ({rule}), tied on "
                 f"{int(counts.get(ST.TIE, 0))} and lost on {int(counts.get(ST.LOSS, 0))}"
                 + (f"; {len(few)} pair(s) have too few seeds in common (< 2) for any claim: {', '.join(few)}."
                    if few else "."))
        seeds = sorted(set(g["ref_n"]) | set(g["base_n"]))
        paired = sorted(set(g["paired_n"]))
        second = (f"Cells have {seeds[0]}–{seeds[-1]} seed(s)" if len(seeds) > 1 else f"Every cell has {seeds[0]} "
                  "seed(s)") + (f", {paired[0]}–{paired[-1]} in common per comparison" if len(paired) > 1 else
                                f", {paired[0]} in common per comparison") + \
            "; the table gives each pair's numbers and the tie rule is stated with the gains below."
        lines += [first + " " + second, ""]
        rows = g.assign(dfa=[f"{fmt(r.ref_mean)} ± {fmt(r.ref_std)} (n={r.ref_n})" for r in g.itertuples()],
                        best=[f"{fmt(r.base_mean)} ± {fmt(r.base_std)} (n={r.base_n})" for r in g.itertuples()],
                        delta=[f"{fmt(r.paired_mean, signed=True)} [{fmt(r.ci_low, signed=True)}, "
                               f"{fmt(r.ci_high, signed=True)}]" for r in g.itertuples()])
        lines.append(md_table(rows, {"pair": "pair", "baseline": "best other method", "dfa": "DFA",
                                     "best": "best other", "paired_n": "seeds in common",
                                     "delta": "DFA − best other, paired [95 % CI]", "outcome": "outcome"},
                              {"baseline": method_label, "dfa": plain, "best": plain, "paired_n": plain,
                               "delta": plain, "outcome": plain}))
    return lines


def reading(a: SweepAnalysis) -> list[str]:
    """The short reading of the numbers: who wins how often, by how much, where DFA loses."""
    lines = ["## Reading", ""]
    if not a.studies:
        return lines + ["No distillation trial has finished, so there is nothing to compare yet "
                        "(see **Missing** below).", ""]
    for study in a.studies:
        lines.append(f"**{study}** ({METRIC_LABELS[PRIMARY]} unless said otherwise):")
        lines.append("")
        s = a.summary[(a.summary["study"] == study) & (a.summary["metric"] == PRIMARY)]
        g = a.gains[(a.gains["study"] == study) & (a.gains["metric"] == PRIMARY)]
        w = a.wtl[(a.wtl["study"] == study) & (a.wtl["metric"] == PRIMARY)]
        pairs = sorted(s["pair"].unique())
        seeds = sorted(set(s["n"]))
        methods = ", ".join(method_label(m) for m in sort_methods(s["method"]))
        lines.append(f"- {len(pairs)} pair(s), methods {methods}; "
                     f"seeds per cell: {', '.join(map(str, seeds))}."
                     + ((" With one seed there is no seed spread: no comparison can be decided by the interval."
                         if a.rule == "ci" else " With one seed there is no seed spread: every tie uses the fixed "
                         "tolerance.") if seeds == [1] else ""))
        if g.empty:
            lines.append("- DFA has no finished trial next to a baseline here, so there are no gains to report.")
        else:
            total = w[w["baseline"] == "all"].iloc[0]
            n = int(total["wins"] + total["ties"] + total["losses"])
            lines.append(f"- DFA against the other methods: **{count(total['wins'], 'win')}, "
                         f"{count(total['ties'], 'tie')}, {count(total['losses'], 'loss')}** in {n} decided "
                         "pair-by-baseline comparisons"
                         + (f", {int(total['too_few'])} with too few seeds" if total["too_few"] else "")
                         + f" (mean gain {fmt(total['mean_gain'], signed=True)} points).")
            for _, r in w[w["baseline"] != "all"].iterrows():
                if r["pairs"] == 1:
                    spread = f"on {r['best_pair']}"
                elif math.isclose(r["worst_gain"], r["best_gain"], abs_tol=1e-9):
                    spread = "the same on every pair"
                else:
                    spread = (f"from {fmt(r['worst_gain'], signed=True)} ({r['worst_pair']}) to "
                              f"{fmt(r['best_gain'], signed=True)} ({r['best_pair']})")
                test = ("" if r["test"] == "none" else
                        f"; across pairs {'Wilcoxon' if r['test'] == 'wilcoxon' else 'sign test'} "
                        f"p = {fmt(r['p_value'], 3)} (Holm {fmt(r['p_holm'], 3)}), rank-biserial "
                        f"{fmt(r['rank_biserial'], signed=True)}")
                lines.append(f"  - vs {method_label(r['baseline'])}: {int(r['wins'])}/{int(r['ties'])}/"
                             f"{int(r['losses'])} (win/tie/loss)"
                             + (f", {int(r['too_few'])} too few seeds" if r["too_few"] else "")
                             + f", gain {fmt(r['mean_gain'], signed=True)} points on average, {spread}{test}.")
            losses = g[g["outcome"] == "loss"].sort_values("gain")
            if len(losses):
                lost = [f"{r['pair']} vs {method_label(r['baseline'])} ({fmt(r['gain'], signed=True)}, 95 % CI "
                        f"[{fmt(r['ci_low'], signed=True)}, {fmt(r['ci_high'], signed=True)}])"
                        for _, r in losses.iterrows()]
                lines.append(f"- **Where DFA loses**: {'; '.join(lost)}.")
            else:
                lines.append("- DFA loses to no method on any pair by the tie rule.")
            other = a.wtl[(a.wtl["study"] == study) & (a.wtl["metric"] != PRIMARY) & (a.wtl["baseline"] == "all")]
            for _, r in other.iterrows():
                lines.append(f"- With the {METRIC_LABELS[r['metric']]}: {count(r['wins'], 'win')}, "
                             f"{count(r['ties'], 'tie')}, {count(r['losses'], 'loss')} "
                             f"(mean gain {fmt(r['mean_gain'], signed=True)} points).")
        rk = a.ranks[(a.ranks["study"] == study) & (a.ranks["metric"] == PRIMARY)]
        if len(rk):
            best = rk.iloc[0]
            dfa = rk[rk["method"] == "dfa"]
            text = (f"- Best average rank: {method_label(best['method'])} ({fmt(best['avg_rank'])} over "
                    f"{int(best['pairs'])} pair(s), first on {int(best['firsts'])})")
            if len(dfa) and dfa.iloc[0]["method"] != best["method"]:
                text += f"; DFA {fmt(dfa.iloc[0]['avg_rank'])} (first on {int(dfa.iloc[0]['firsts'])})"
            lines.append(text + ".")
        gp = a.gap[(a.gap["study"] == study) & (a.gap["metric"] == PRIMARY)]
        weak = gp[gp["acc_gap"] < 0]
        if len(weak):
            lines.append("- The teacher is *less* accurate than the vanilla student on "
                         + "; ".join(f"{r['pair']} ({fmt(r['teacher_acc'])} vs {fmt(r['vanilla_acc'])})"
                                     for _, r in weak.iterrows())
                         + ": distillation there has little to transfer, so gains are not evidence either way.")
        corr = a.correlations[(a.correlations["study"] == study) & (a.correlations["metric"] == PRIMARY)
                              & (a.correlations["gain"] == "gain_vs_best")]
        if len(corr) and corr["rho"].notna().any():
            measure = {"acc_gap": "accuracy gap", "param_ratio": "parameter ratio"}
            parts = [f"ρ = {fmt(r['rho'], signed=True)} with the {measure[r['measure']]} (n = {int(r['n'])})"
                     for _, r in corr.iterrows() if not math.isnan(r["rho"])]
            lines.append("- DFA's gain over the best other method against the teacher-student gap: "
                         f"{'; '.join(parts)}.")
        else:
            lines.append(f"- Gain vs. teacher-student gap: a rank correlation needs ≥ {R.MIN_PAIRS_FOR_CORRELATION} "
                         f"pairs with a teacher accuracy and a vanilla student; this study has "
                         f"{int(gp['acc_gap'].notna().sum())}.")
        lines += _published_reading(s, pairs)
        done = R.completed_distill(a.results.trials)
        step = _resolution(done[done["study"] == study]["test_acc_last"])
        if step is not None:
            lines.append(f"- Test accuracies here move in steps of {fmt(step)} points: one image of a test set of "
                         f"about {round(100 / step)}. A difference of one or two images is within the noise, "
                         f"whatever the tie rule says.")
        lines.append("")
    lines += _search_reading(a)
    return lines


def _published_reading(s: pd.DataFrame, pairs: list[str]) -> list[str]:
    """One line per pair with published numbers: ours - published, per matching method."""
    lines = []
    for pair in pairs:
        rows = s[s["pair"] == pair]
        info = rows.iloc[0]
        pub = published_for(info["teacher"], info["student"], info["dataset"], info["protocol"])
        if pub is None:
            continue
        diffs, used = [], {}
        for _, r in rows.iterrows():
            number = pub.for_method(r["method"])
            if number is not None:
                diffs.append(f"{method_label(r['method'])} {fmt(r['mean'] - number.value, signed=True)} "
                             f"[{number.source.mark}]")
                used[number.source.mark] = number.source
        marks = "; ".join(f"[{s.mark}] {s.citation.split(',')[0]}: {s.rule}" for _, s in sorted(used.items()))
        lines.append(f"- {pair} has published {pub.protocol} numbers; ours ({METRIC_LABELS[PRIMARY]}) − "
                     "published: " + (", ".join(diffs) if diffs else "no method in common")
                     + f" points (published as: {marks}).")
    if not lines:
        lines.append("- No pair matches a published setting (that needs the dataset, the protocol (`crd`, "
                     "`overhaul`, `dfa_author`) and a pair of the papers), so no published numbers are shown.")
    return lines


def _resolution(values: pd.Series, min_values: int = 5, min_step: float = 0.15) -> float | None:
    """The accuracy step of a small test set (100 / its size, in points), when the accuracies show one.

    It is the smallest positive difference between two accuracies, reported only if every
    difference is a whole multiple of it, it is at least `min_step` points (a test set of
    under ~670 images) and there are `min_values` distinct accuracies or more; else None.
    """
    distinct = sorted(set(round(float(v), 6) for v in values.dropna()))
    steps = [b - a for a, b in zip(distinct, distinct[1:]) if b - a > 1e-6]
    if len(distinct) < min_values or not steps:
        return None
    step = min(steps)
    multiples = [(v - distinct[0]) / step for v in distinct]
    if step < min_step or any(abs(m - round(m)) > 0.02 for m in multiples):
        return None
    return step


def _search_reading(a: SweepAnalysis) -> list[str]:
    if a.search_trials.empty:
        return []
    lines = ["**Search:**", ""]
    for _, r in a.asha.iterrows():
        text = (f"- {r['pair']}: {r['trials']} trials, {r['pruned']} stopped by the scheduler; {r['epochs_run']} of "
                f"{r['epochs_full']} epochs run ({pct(r['saved_fraction'])} saved).")
        if r["chosen_trial"] and r["best_at_common"]:
            if r["same_best"]:
                text += (f" The chosen trial was also the best at epoch {r['common_epoch']}, the last epoch all "
                         "trials ran.")
            else:
                leader = a.search_trials[a.search_trials["trial_id"] == r["best_at_common"]]
                finished = len(leader) and leader["status"].iloc[0] == "completed"
                text += (f" At epoch {r['common_epoch']} (the last epoch all trials ran) {r['best_at_common']} led, "
                         f"not the chosen {r['chosen_trial']}; "
                         + ("it finished behind, so the early ranking was not predictive." if finished else
                            "it was stopped, so whether it would have finished ahead is unknown."))
        if r["pruned_contenders"]:
            text += (" Pruned although at least as good as the chosen trial at the same epoch: "
                     f"{r['pruned_contenders']}.")
        lines.append(text)
    if len(a.alphas):
        dev = (a.alphas["weight"] * a.alphas["n_candidates"] - 1).abs()
        if dev.max() < NEAR_UNIFORM:
            lines.append(f"- α stayed within {fmt(dev.max() / a.alphas['n_candidates'].max(), 4)} of uniform in every "
                         "group of every pair: the search did not move the aggregation, so the DFA genotype is "
                         "effectively the `average` one (more search epochs or a larger `arch_lr` would be needed "
                         "before the searched genotype can matter).")
        else:
            for pair, g in a.alphas.groupby("pair"):
                top = g.loc[g.groupby("group")["weight"].idxmax()]
                lines.append(f"- {pair}: favoured candidate per group: "
                             + ", ".join(f"group {int(r['student_group']) + 1}: block {int(r['position'])}/"
                                         f"{int(r['n_candidates'])} (α = {fmt(r['weight'], 3)})"
                                         for _, r in top.iterrows()) + ".")
    lines.append("")
    return lines


__all__ = ["NEAR_UNIFORM", "PRIMARY", "reading", "tie_rule", "verdict_section"]

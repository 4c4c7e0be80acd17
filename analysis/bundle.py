"""Every analysis of one results folder (or several joined), computed once and shared by the
report's sections."""

from __future__ import annotations

from dfa_ray_analysis import robustness as R
from dfa_ray_analysis import search as S
from dfa_ray_analysis.loading import Results, provenance


class SweepAnalysis:
    """The frames of `dfa_ray_analysis.robustness` and `dfa_ray_analysis.search` for the results;
    `rule` is the tie rule of the gains ("ci": the paired interval, "band": the older band)."""

    def __init__(self, results: Results, rule: str = "ci") -> None:
        self.results = results
        self.rule = rule
        self.values = R.seed_values(results.trials)
        self.summary = R.method_summary(results.trials)
        self.gains = R.dfa_gains(self.values, rule=rule)
        self.wtl = R.win_tie_loss(self.gains)
        self.verdict = R.verdict(self.gains)
        self.ranks = R.average_ranks(self.summary)
        self.teachers = R.teacher_accuracy(results)
        self.gap = R.gap_table(self.summary, self.teachers)
        self.correlations = R.gap_correlations(self.gap)
        self.provenance = provenance(results.trials)
        self.search_trials = S.search_trials(results)
        self.chosen = S.chosen_trials(results, self.search_trials)
        self.search_epochs = S.search_epochs(results)
        self.effects = S.option_effects(self.search_trials, self.search_epochs)
        self.levels = S.option_levels(self.search_trials, self.search_epochs)
        self.alphas = S.final_alphas(results, self.chosen)
        self.trajectories = S.alpha_trajectories(results, self.chosen)
        self.asha = S.asha_savings(self.search_trials, self.search_epochs, self.chosen)
        self.studies = sorted(self.summary["study"].unique())

    def configs_by_pair(self, study: str) -> dict[str, dict]:
        """One distillation config per pair of `study` (its recipe is checked against the protocol)."""
        d = self.results.trials
        d = d[(d["stage"] == "distill") & (d["study"] == study)]
        return {pair: g["cfg"].iloc[0] for pair, g in d.groupby("pair")}


__all__ = ["SweepAnalysis"]

"""The analysis on results with known values: every number below is worked out by hand from
tests/analysis_fixtures.py (the comments show the arithmetic)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dfa_ray_analysis import robustness as R
from dfa_ray_analysis import search as S
from dfa_ray_analysis import tables as T
from dfa_ray_analysis.loading import load_results
from dfa_ray_analysis.published import PUBLISHED, protocol_deviations, published_for
from analysis_fixtures import DIGITS, ERROR_REASON, P1, P2, P3, P4, pair_name, write_known_sweep

REPO = Path(__file__).resolve().parents[1]
CRD = "cifar100 / crd"


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    sweep = write_known_sweep(tmp_path_factory.mktemp("known") / "known")
    results = load_results(sweep)
    summary = R.method_summary(results.trials)
    return results, summary


def cell(summary: pd.DataFrame, pair, method: str, metric: str = "test_acc_last") -> pd.Series:
    row = summary[(summary["pair"] == pair_name(pair)) & (summary["method"] == method) & (summary["metric"] == metric)]
    assert len(row) == 1
    return row.iloc[0]


def test_analysis_imports_neither_torch_nor_ray_nor_the_spec(tmp_path):
    """Run from a folder outside the repository (the installed package), writing a whole report."""
    sweep = write_known_sweep(tmp_path / "s")  # writing results is the sweep's job, not the analysis'
    code = (
        "import sys\n"
        "import dfa_ray_analysis, dfa_ray_analysis.loading, dfa_ray_analysis.robustness, dfa_ray_analysis.search\n"
        "import dfa_ray_analysis.published, dfa_ray_analysis.stats, dfa_ray_analysis.tables, dfa_ray_analysis.plots\n"
        "import dfa_ray_analysis.report, dfa_ray_analysis.model_params\n"
        "from dfa_ray_analysis.report import write_report\n"
        f"write_report({str(sweep)!r}, {str(tmp_path / 'r')!r})\n"
        "bad = sorted(m for m in ('torch', 'ray', 'dfa_ray.spec', 'pydantic', 'analysis') if m in sys.modules)\n"
        "assert not bad, bad\n"
        "assert sys.modules['dfa_ray_analysis'].__file__.endswith('analysis/__init__.py')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "report.md").is_file()


def test_mean_and_std_over_seeds(known):
    _, summary = known
    c = cell(summary, P1, "vanilla")  # 73.0, 73.4
    assert c["n"] == 2 and c["mean"] == pytest.approx(73.2)
    assert c["std"] == pytest.approx(math.sqrt(0.08))  # sample std: sqrt(((0.2)^2 + (0.2)^2) / 1)
    assert cell(summary, P1, "kd")["std"] == pytest.approx(math.sqrt(0.02))
    best = cell(summary, P1, "dfa", "test_acc_best")  # best = last - 1
    assert best["mean"] == pytest.approx(74.2) and best["std"] == pytest.approx(math.sqrt(0.08))
    single = cell(summary, P4, "kd")
    assert single["n"] == 1 and math.isnan(single["std"])


def test_errored_and_digits_rows_stay_apart(known):
    results, summary = known
    assert "fitnet" not in set(summary["method"])  # the errored trial has no test number and counts nowhere
    assert set(summary["study"]) == {CRD, "digits / quick"}
    errored = results.trials[results.trials["status"] == "errored"]
    assert errored["reason"].tolist() == [ERROR_REASON]


def _gains(summary_or_trials, rule="ci"):
    return R.dfa_gains(R.seed_values(summary_or_trials), rule=rule)


def test_gains_and_the_band_rule(known):
    results, _ = known
    gains = _gains(results.trials, rule="band")
    g = gains[(gains["metric"] == "test_acc_last") & (gains["study"] == CRD)].set_index(["pair", "baseline"])

    def at(pair, base):
        return g.loc[(pair_name(pair), base)]

    assert at(P1, "vanilla")["gain"] == pytest.approx(2.0)
    assert at(P1, "kd")["gain"] == pytest.approx(1.1)
    assert at(P1, "kd")["sigma"] == pytest.approx(math.sqrt((0.08 + 0.02) / 2))  # pooled std
    assert at(P1, "kd")["outcome"] == "win"
    assert at(P2, "kd")["gain"] == pytest.approx(-0.1) and at(P2, "kd")["outcome"] == "tie"  # |-0.1| <= 0.1414
    assert at(P3, "kd")["gain"] == pytest.approx(-0.6) and at(P3, "kd")["outcome"] == "loss"
    assert at(P3, "vanilla")["gain"] == pytest.approx(0.3) and at(P3, "vanilla")["outcome"] == "win"
    assert at(P4, "kd")["sigma"] == R.TIE_TOLERANCE and at(P4, "kd")["sigma_source"].startswith("fixed")
    assert at(P4, "kd")["gain"] == 0.0 and at(P4, "kd")["outcome"] == "tie"
    assert at(P4, "vanilla")["gain"] == pytest.approx(2.8)


def test_gains_and_the_interval_rule(known):
    results, _ = known
    g = _gains(results.trials)
    g = g[(g["metric"] == "test_acc_last") & (g["study"] == CRD)].set_index(["pair", "baseline"])
    p1 = g.loc[(pair_name(P1), "kd")]
    # seeds 0, 1: DFA - KD = 1.0, 1.2 -> mean 1.1, s = 0.1414; t(0.975, 1) = 12.706
    half = 12.7062047 * math.sqrt(0.02) / math.sqrt(2)
    assert p1["paired_n"] == 2 and p1["paired_seeds"] == "0,1"
    assert (p1["ci_low"], p1["ci_high"]) == (pytest.approx(1.1 - half), pytest.approx(1.1 + half))
    assert p1["outcome"] == "tie"  # the band rule called it a win; two seeds cannot
    # t = 1.1 / (0.1414 / sqrt 2) = 11 on 1 dof: p = 2 * (1 - F(11)) = 0.0577
    assert p1["p_value"] == pytest.approx(0.05772, abs=1e-4)
    # the same difference on both seeds: a zero-width interval, decided by its sign
    assert g.loc[(pair_name(P3), "kd"), "outcome"] == "loss" and g.loc[(pair_name(P3), "vanilla"), "outcome"] == "win"
    assert g.loc[(pair_name(P2), "kd"), "ci_high"] == pytest.approx(-0.1)
    assert g.loc[(pair_name(P4), "kd"), "outcome"] == "too few seeds"  # one seed: no interval, no claim
    assert math.isnan(g.loc[(pair_name(P4), "kd"), "ci_low"])
    with pytest.raises(ValueError, match="rule must be one of ci, band"):
        R.dfa_gains(R.seed_values(results.trials), rule="fixed")


def test_pooled_std_and_threshold():
    assert R.pooled_std(0.2, 2, 0.4, 2) == pytest.approx(math.sqrt((0.04 + 0.16) / 2))
    assert R.pooled_std(0.0, 1, 0.5, 3) == pytest.approx(0.5)  # the single seed adds no variance, no dof
    assert math.isnan(R.pooled_std(float("nan"), 1, float("nan"), 1))
    assert R.tie_threshold(float("nan"), 1, float("nan"), 1, tolerance=0.3) == (0.3, "fixed tolerance (one seed each)")
    assert R.outcome(0.3, 0.3) == "tie" and R.outcome(0.31, 0.3) == "win" and R.outcome(-0.31, 0.3) == "loss"


def test_win_tie_loss_counts(known):
    results, _ = known
    wtl = R.win_tie_loss(_gains(results.trials, rule="band"))
    w = wtl[(wtl["study"] == CRD) & (wtl["metric"] == "test_acc_last")].set_index("baseline")
    assert w.loc["vanilla", ["wins", "ties", "losses"]].tolist() == [4, 0, 0]
    assert w.loc["kd", ["wins", "ties", "losses"]].tolist() == [1, 2, 1]
    assert w.loc["all", ["wins", "ties", "losses"]].tolist() == [5, 2, 1]
    assert w.loc["kd", "mean_gain"] == pytest.approx((1.1 - 0.1 - 0.6 + 0.0) / 4)
    assert w.loc["kd", "worst_pair"] == pair_name(P3) and w.loc["kd", "worst_gain"] == pytest.approx(-0.6)
    assert list(wtl["metric"].unique()) == ["test_acc_last", "test_acc_best"]  # last epoch first
    # across pairs (4 pairs: the sign test): vanilla behind DFA on all 4 -> p = 2 / 2^4
    assert w.loc["vanilla", "test"] == "sign" and w.loc["vanilla", "p_value"] == pytest.approx(0.125)
    assert w.loc["vanilla", "p_holm"] == pytest.approx(0.25)  # the smaller of 2 p-values, times 2
    assert w.loc["vanilla", "rank_biserial"] == pytest.approx(1.0)
    # kd: gains +1.1, -0.1, -0.6, 0.0 -> the zero is dropped; 1 of 3 positive: p = 1
    assert w.loc["kd", ["tested_pairs", "positive", "negative"]].tolist() == [3, 1, 2]
    assert w.loc["kd", "p_value"] == pytest.approx(1.0)
    # ranks of |d| 1.1, 0.1, 0.6 -> 3, 1, 2: (3 - 1 - 2) / 6 = 0
    assert w.loc["kd", "rank_biserial"] == pytest.approx(0.0)
    assert w.loc["all", "test"] == "none"

    ci = R.win_tie_loss(_gains(results.trials))
    c = ci[(ci["study"] == CRD) & (ci["metric"] == "test_acc_last")].set_index("baseline")
    assert c.loc["kd", ["wins", "ties", "losses", "too_few"]].tolist() == [0, 1, 2, 1]
    assert c.loc["all", ["wins", "ties", "losses", "too_few"]].tolist() == [3, 1, 2, 2]


def test_verdict_is_against_the_best_other_method(known):
    results, _ = known
    v = R.verdict(_gains(results.trials))
    v = v[(v["study"] == CRD) & (v["metric"] == "test_acc_last")].set_index("pair")
    assert set(v["baseline"]) == {"kd"}  # KD has the higher mean on every pair
    assert v.loc[pair_name(P1), "outcome"] == "tie" and v.loc[pair_name(P4), "outcome"] == "too few seeds"
    assert v.loc[pair_name(P4), "min_seeds"] == 1 and v.loc[pair_name(P1), "min_seeds"] == 2


def test_summary_has_the_t_interval(known):
    _, summary = known
    c = cell(summary, P1, "vanilla")  # 73.0, 73.4: mean 73.2, s = 0.2828, t(0.975, 1) = 12.706
    half = 12.7062047 * math.sqrt(0.08) / math.sqrt(2)
    assert (c["ci_low"], c["ci_high"]) == (pytest.approx(73.2 - half), pytest.approx(73.2 + half))
    assert math.isnan(cell(summary, P4, "kd")["ci_low"])


def test_average_ranks_with_ties(known):
    _, summary = known
    ranks = R.average_ranks(summary)
    r = ranks[(ranks["study"] == CRD) & (ranks["metric"] == "test_acc_last")].set_index("method")
    # per pair: P1 dfa 1 kd 2; P2 kd 1 dfa 2; P3 kd 1 dfa 2; P4 dfa = kd -> 1.5 each; vanilla always 3
    assert r.loc["dfa", "avg_rank"] == pytest.approx((1 + 2 + 2 + 1.5) / 4)
    assert r.loc["kd", "avg_rank"] == pytest.approx((2 + 1 + 1 + 1.5) / 4)
    assert r.loc["vanilla", "avg_rank"] == 3.0
    assert r.loc["kd", "firsts"] == 3 and r.loc["dfa", "firsts"] == 2  # the shared first place counts for both
    assert r.index.tolist()[0] == "kd"  # sorted by average rank


def test_spearman_matches_hand_computation():
    assert R.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert R.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties: ranks x = 1, 2.5, 2.5, 4; y = 1, 3, 2, 4 -> 4.5 / sqrt(4.5 * 5)
    assert R.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(R.spearman([1, 2], [2, 1]))  # fewer than 3 pairs
    assert math.isnan(R.spearman([1, 1, 1], [1, 2, 3]))  # constant side
    assert R.spearman([1, 2, float("nan"), 3], [1, 2, 5, 3]) == pytest.approx(1.0)  # incomplete pairs dropped


def test_gap_table_and_correlations(known):
    results, summary = known
    teachers = R.teacher_accuracy(results)
    assert set(teachers["source"]) == {"teacher-stage rows"}
    gap = R.gap_table(summary, teachers)
    g = gap[(gap["study"] == CRD) & (gap["metric"] == "test_acc_last")].set_index("pair")
    assert g.loc[pair_name(P1), "acc_gap"] == pytest.approx(75.6 - 73.2)
    assert g.loc[pair_name(P3), "acc_gap"] == pytest.approx(79.4 - 72.6)
    assert g.loc[pair_name(P1), "param_ratio"] == pytest.approx(2_255_156 / 703_284)
    assert g.loc[pair_name(P2), "best_other"] == "kd"
    assert g.loc[pair_name(P2), "gain_vs_best"] == pytest.approx(-0.1)
    assert g.loc[pair_name(P4), "gain_vs_vanilla"] == pytest.approx(2.8)
    corr = R.gap_correlations(gap)
    c = corr[(corr["study"] == CRD) & (corr["metric"] == "test_acc_last")].set_index(["gain", "measure"])
    # gain_vs_best ranks (P1..P4) 4, 2, 1, 3; acc_gap ranks 1, 2, 4, 3: sum d^2 = 18 -> 1 - 6*18/(4*15)
    assert c.loc[("gain_vs_best", "acc_gap"), "rho"] == pytest.approx(-0.8)
    # param ratio ranks 3, 2, 4, 1: sum d^2 = 14 -> 1 - 6*14/60
    assert c.loc[("gain_vs_best", "param_ratio"), "rho"] == pytest.approx(-0.4)
    # gain_vs_vanilla 2.0, 1.5, 0.3, 2.8 -> ranks 3, 2, 1, 4 against acc_gap ranks 1, 2, 4, 3: sum d^2 = 14
    assert c.loc[("gain_vs_vanilla", "acc_gap"), "rho"] == pytest.approx(-0.4)
    assert c.loc[("gain_vs_best", "acc_gap"), "n"] == 4
    digits = corr[corr["study"] == "digits / quick"]
    assert digits["rho"].isna().all()  # one pair: no correlation


def test_published_numbers_only_beside_matching_pairs(known):
    results, summary = known
    teachers = R.teacher_accuracy(results)
    table = T.paper_table(summary, teachers, CRD, "test_acc_last")
    assert table.published_pairs == sorted(pair_name(p) for p in (P1, P2, P3, P4))
    assert table.cell("kd", pair_name(P1), "published")["mean"] == 74.92
    assert table.cell("vanilla", pair_name(P1), "published")["mean"] == 73.26
    assert table.cell("teacher", pair_name(P1), "published")["mean"] == 75.61
    assert table.cell("published:CRD", pair_name(P1), "published")["mean"] == 75.48
    assert table.cell("published:DKD", pair_name(P1), "published")["source"] == "mdistiller"
    assert table.cell("dfa", pair_name(P1), "published") is None  # the CRD table has no DFA column
    md = T.to_markdown(table)
    assert "wrn_40_2->wrn_16_2 [published]" in md and "74.92 [a]" in md and "CRD [published]" in md
    assert "76.23 [b]" in md  # DKD, from mdistiller: its own source mark
    assert "**75.20 ± 0.28**" in md  # ours, best of the pair in bold
    notes = " ".join(table.notes)
    assert "[a] published: Tian et al." in notes and "the last epoch" in notes
    assert "[b] published: Zhao et al." in notes and "best epoch on the test set, mean of 5 runs" in notes
    assert "Ours: test accuracy of the weights of the last epoch" in notes
    assert "74.92" in T.to_latex(table) and r"wrn\_40\_2$\to$wrn\_16\_2" in T.to_latex(table)
    assert "the last epoch" in T.to_latex(table)
    csv = T.to_csv_frame(table).set_index("method")
    assert csv.loc["kd", "wrn_40_2->wrn_16_2 published"] == 74.92
    assert csv.loc["kd", "wrn_40_2->wrn_16_2 published rule"] == "the last epoch"
    assert csv.loc["dfa", "wrn_40_2->wrn_16_2 mean"] == pytest.approx(75.2)
    assert csv.loc["dfa", "wrn_40_2->wrn_16_2 n"] == 2

    best = T.paper_table(summary, teachers, CRD, "test_acc_best")
    assert "held-out validation split" in " ".join(best.notes)

    digits = T.paper_table(summary, teachers, "digits / quick", "test_acc_last")
    assert digits.published_pairs == [] and "published" not in T.to_markdown(digits)
    assert set(digits.cells["kind"]) == {"ours"}


def test_published_matching_rules():
    assert published_for("wrn_40_2", "wrn_16_2", "cifar100", "crd").for_method("kd").value == 74.92
    assert published_for("wrn_40_2", "wrn_16_2", "cifar100", "overhaul") is None  # other protocol
    assert published_for("wrn_40_2", "wrn_16_2", "cifar100", "quick") is None
    assert published_for("wrn_40_2", "wrn_16_2", "cifar10", "crd") is None  # other dataset
    assert published_for(*DIGITS, "digits", "quick") is None
    assert published_for("resnet20", "resnet8", "cifar100", "crd") is None  # not a published pair
    overhaul = published_for("wrn_28_4", "wrn_16_4", "cifar100", "overhaul")
    assert overhaul.for_method("dfa").value == 79.74 and overhaul.for_method("vanilla").value == 77.28
    assert overhaul.value("Overhaul") == 79.11 and overhaul.value("T") == 78.91
    assert overhaul.for_method("ofd").source.rule == "the median of 5 final models"
    assert published_for("wrn_28_4", "resnet56", "cifar100", "overhaul").for_method("dfa") is None
    assert len([p for p in PUBLISHED if p.protocol == "crd"]) == 13
    assert protocol_deviations({"recipe.epochs": 30, "recipe.batch_size": 64}, "crd") == ["epochs 30 (protocol: 240)"]
    assert protocol_deviations({"recipe.epochs": 240}, "crd") == []


def test_search_option_effects_and_levels(known):
    results, _ = known
    st = S.search_trials(results)
    assert S.searched_options(st) == ["options.gamma_ts", "options.lam"]  # batch_size is fixed
    effects = S.option_effects(st, results.epochs).set_index("option")
    # common epoch 1: val_acc 10, 15, 20, 5 for gamma 0.5, 1, 2, 4 -> sum d^2 = 12 -> 1 - 72/60
    assert effects.loc["gamma_ts", "common_epoch"] == 1
    assert effects.loc["gamma_ts", "rho_common"] == pytest.approx(-0.2)
    # lam 1, 3, 1, 3 (ranks 1.5, 3.5, 1.5, 3.5) with acc ranks 2, 3, 4, 1 -> -2 / sqrt(4 * 5)
    assert effects.loc["lam", "rho_common"] == pytest.approx(-2 / math.sqrt(20))
    assert effects.loc["lam", "n_completed"] == 2 and math.isnan(effects.loc["lam", "rho_completed"])
    assert effects.loc["gamma_ts", "best_value"] == 2.0 and effects.loc["gamma_ts", "best_completed_value"] == 1.0
    levels = S.option_levels(st, results.epochs)
    assert set(levels["option"]) == {"lam"}  # gamma_ts: every trial its own value
    lam = levels.set_index("value")
    assert lam.loc["1.0", "mean_common"] == pytest.approx(15.0) and lam.loc["3.0", "mean_common"] == pytest.approx(10.0)
    assert lam.loc["1.0", "mean_completed"] == 40.0 and lam.loc["3.0", "mean_completed"] == 45.0


def test_chosen_trial_alpha_and_asha(known):
    results, _ = known
    st = S.search_trials(results)
    chosen = S.chosen_trials(results, st)
    assert chosen["trial_id"].tolist() == ["s1"]  # best final val_acc among the completed trials
    alphas = S.final_alphas(results, chosen)
    assert alphas["candidate"].tolist() == ["groups.0.0", "groups.0.1", "groups.1.0", "groups.1.1", "groups.1.2"]
    assert alphas["weight"].tolist() == [0.7, 0.3, 0.1, 0.3, 0.6]
    traj = S.alpha_trajectories(results, chosen)
    assert len(traj) == 4 * 5
    assert traj[(traj["epoch"] == 3) & (traj["group"] == 1)]["weight"].tolist() == [0.2, 0.3, 0.5]
    assert S.alpha_entropy([0.5, 0.5]) == pytest.approx(1.0) and S.alpha_entropy([1.0, 0.0]) == pytest.approx(0.0)
    asha = S.asha_savings(st, results.epochs, chosen).iloc[0]
    assert (asha["epochs_run"], asha["epochs_full"], asha["saved_epochs"]) == (11, 16, 5)
    assert asha["saved_fraction"] == pytest.approx(5 / 16)
    assert asha["seconds_run"] == pytest.approx(22.0) and asha["seconds_full_est"] == pytest.approx(32.0)
    assert asha["best_at_common"] == "s2" and not asha["same_best"]
    assert asha["pruned_contenders"] == "s2"  # 26 at its last epoch 2 >= the chosen trial's 25


def test_chosen_trial_follows_the_distilled_genotype(tmp_path):
    from dfa_ray.results import ResultsWriter
    from analysis_fixtures import distill_trial, search_trials

    w = ResultsWriter(tmp_path, {"sweep": "g"})
    search_trials(w)
    distill_trial(w, P1, "dfa", 0, 75.0, genotype={"trial_id": "s0", "groups": []})
    chosen = S.chosen_trials(load_results(tmp_path))
    assert chosen["trial_id"].tolist() == ["s0"] and chosen["chosen_by"].iloc[0].startswith("genotype")

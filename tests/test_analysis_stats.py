"""The statistics of the robustness analysis on numbers whose answer is known: golden values worked
out from the formulas (t quantiles from tables), simulated seeds with a known margin and known
noise (the intervals cover, the tests reject and do not reject as they should), and a results
folder built from such seeds, through the whole analysis (the tie rule follows the interval)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dfa_ray.results import ResultsWriter
from dfa_ray_analysis import robustness as R
from dfa_ray_analysis import stats as ST
from dfa_ray_analysis.loading import load_results
from analysis_fixtures import CRD_CONFIG, distill_trial

# two-sided 95 % Student-t quantiles t(0.975, dof), from a table
T975 = {1: 12.7062, 2: 4.3027, 4: 2.7764}


def test_mean_ci_is_the_t_interval():
    low, high = ST.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    half = T975[4] * math.sqrt(2.5) / math.sqrt(5)  # s^2 = 10 / 4
    assert (low, high) == (pytest.approx(3 - half, abs=1e-3), pytest.approx(3 + half, abs=1e-3))
    assert all(math.isnan(v) for v in ST.mean_ci([3.0]))  # one seed: no interval
    assert ST.mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)  # no spread: no width
    assert ST.mean_ci([1.0, float("nan"), 3.0]) == ST.mean_ci([1.0, 3.0])  # NaN seeds are dropped


def test_paired_comparison_uses_the_common_seeds():
    ref = {0: 75.0, 1: 75.5, 2: 74.8, 7: 90.0}
    base = {0: 74.0, 1: 74.3, 2: 74.0, 5: 10.0}
    c = ST.paired_comparison(ref, base)
    d = [1.0, 1.2, 0.8]  # seeds 0, 1, 2 only
    sd = float(np.std(d, ddof=1))
    assert c.seeds == (0, 1, 2) and c.n == 3 and c.mean == pytest.approx(1.0) and c.std == pytest.approx(sd)
    half = T975[2] * sd / math.sqrt(3)
    assert (c.ci_low, c.ci_high) == (pytest.approx(1.0 - half, abs=1e-3), pytest.approx(1.0 + half, abs=1e-3))
    assert c.outcome == "win"  # 1.0 - 0.497 > 0
    # paired t = mean / (s / sqrt(n)) = 1 / (0.2 / sqrt 3) = 8.66 on 2 dof: p = 0.01307
    assert c.p_value == pytest.approx(0.01307, abs=1e-4)
    none = ST.paired_comparison({0: 1.0}, {1: 2.0})
    assert none.n == 0 and none.outcome == ST.TOO_FEW and math.isnan(none.mean)
    one = ST.paired_comparison({0: 1.0, 1: 3.0}, {0: 2.0})
    assert one.n == 1 and one.mean == -1.0 and one.outcome == ST.TOO_FEW


def test_the_outcome_follows_the_interval():
    assert ST.ci_outcome(0.01, 2.0) == "win" and ST.ci_outcome(-2.0, -0.01) == "loss"
    assert ST.ci_outcome(-0.5, 0.5) == "tie" and ST.ci_outcome(0.0, 1.0) == "tie"  # 0 inside or on the edge
    assert ST.ci_outcome(float("nan"), float("nan")) == "too few seeds"


def test_intervals_cover_the_true_difference_at_their_level():
    rng = np.random.default_rng(0)
    margin, noise, seeds, runs = 0.8, 0.3, 5, 2000
    covered = rejected = 0
    for _ in range(runs):
        base = 72.0 + rng.normal(0, 1.0, seeds)  # the seed moves both methods alike
        ref = base + margin + rng.normal(0, noise, seeds)
        c = ST.paired_comparison(dict(enumerate(ref)), dict(enumerate(base)))
        covered += c.ci_low <= margin <= c.ci_high
        rejected += c.p_value < 0.05
    # binomial sd of the coverage over 2000 runs: sqrt(0.95 * 0.05 / 2000) = 0.005
    assert 0.93 <= covered / runs <= 0.97
    assert rejected / runs > 0.97  # 0.8 points against 0.3 of noise: the paired test's power is ~0.99


def test_no_margin_is_rejected_at_about_the_nominal_rate_and_mostly_tied():
    rng = np.random.default_rng(1)
    runs, rejected, outcomes = 2000, 0, {"win": 0, "tie": 0, "loss": 0}
    for _ in range(runs):
        base = 72.0 + rng.normal(0, 1.0, 4)
        ref = base + rng.normal(0, 0.3, 4)
        c = ST.paired_comparison(dict(enumerate(ref)), dict(enumerate(base)))
        rejected += c.p_value < 0.05
        outcomes[c.outcome] += 1
        assert c.outcome == ST.ci_outcome(c.ci_low, c.ci_high)
        assert (c.outcome != "tie") == (c.p_value < 0.05)  # the 95 % interval excludes 0 iff p < 0.05
    assert 0.03 <= rejected / runs <= 0.07
    assert outcomes["tie"] / runs >= 0.93 and outcomes["win"] > 0 and outcomes["loss"] > 0


def test_wilcoxon_and_sign_test_golden_values():
    # |d| ranks 1..7 with the one negative difference on rank 1: T- = 1, two-sided exact
    # p = 2 * #{subsets of 1..7 with rank sum <= 1} / 2^7 = 2 * 2 / 128
    a = ST.across_pairs([1.0, 2.0, 3.0, -0.5, 4.0, 5.0, 6.0])
    assert a.test == "wilcoxon" and a.statistic == 1.0 and a.p_value == pytest.approx(4 / 128)
    assert a.rank_biserial == pytest.approx((27 - 1) / 28) and a.positive == 6 and a.negative == 1
    assert a.median == pytest.approx(3.0)
    # fewer than 6 non-zero pairs: the exact sign test, 3 of 4 positive -> 2 * P(X >= 3) = 2 * 5/16
    s = ST.across_pairs([1.0, 2.0, -1.0, 3.0, 0.0])
    assert s.test == "sign" and s.n == 5 and s.n_nonzero == 4 and s.p_value == pytest.approx(10 / 16)
    assert ST.across_pairs([0.0, 0.0]).test == "none"
    assert ST.across_pairs([1.0] * 10).p_value == pytest.approx(2 / 2**10)  # every pair ahead


def test_across_pairs_rejects_a_real_margin_and_holds_under_none():
    rng = np.random.default_rng(2)
    null = sum(ST.across_pairs(rng.normal(0, 0.5, 12)).p_value < 0.05 for _ in range(500)) / 500
    real = sum(ST.across_pairs(1.0 + rng.normal(0, 0.5, 12)).p_value < 0.01 for _ in range(200)) / 200
    assert null <= 0.07  # the exact test keeps its level (it is a little conservative)
    assert real >= 0.95


def test_holm_golden_values():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    adjusted = ST.holm([0.01, 0.04, 0.03, float("nan")])
    assert adjusted[:3].tolist() == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert ST.holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])  # 0.5 x 2 = 1, and never below it
    assert ST.holm([]).size == 0


# --- a constructed results folder: KD is beaten by a known margin, FitNet is not ------------------
PAIRS = [("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"), ("resnet110", "resnet20"),
         ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"), ("vgg13", "vgg8"), ("vgg13", "MobileNetV2")]
MARGIN = 1.0  # DFA - KD on every pair and seed, plus paired noise
NOISE = 0.1


@pytest.fixture(scope="module")
def constructed(tmp_path_factory):
    rng = np.random.default_rng(3)
    w = ResultsWriter(tmp_path_factory.mktemp("known-margin"), {"sweep": "margin"})
    for p, pair in enumerate(PAIRS):
        level = 70.0 + p  # pairs differ in level; the tests see only differences
        for seed in range(5):
            shared = rng.normal(0, 0.5)  # the seed's own effect, common to every method
            dfa = level + shared + MARGIN
            distill_trial(w, pair, "dfa", seed, dfa, config=CRD_CONFIG)
            distill_trial(w, pair, "kd", seed, dfa - MARGIN + rng.normal(0, NOISE), config=CRD_CONFIG)
            distill_trial(w, pair, "fitnet", seed, dfa + rng.normal(0, NOISE), config=CRD_CONFIG)
    results = load_results(w.results_dir)
    gains = R.dfa_gains(R.seed_values(results.trials))
    return gains[gains["metric"] == "test_acc_last"], R.win_tie_loss(gains)


def test_constructed_margin_is_found_pair_by_pair(constructed):
    gains, _ = constructed
    kd = gains[gains["baseline"] == "kd"]
    assert len(kd) == len(PAIRS) and (kd["paired_n"] == 5).all()
    assert (kd["outcome"] == "win").all()  # half-width ~0.12 against a margin of 1.0
    covered = ((kd["ci_low"] <= MARGIN) & (MARGIN <= kd["ci_high"])).sum()
    assert covered >= 6  # 95 % intervals: P(>= 6 of 8 cover) = 0.994
    assert (kd["p_holm"] < 0.01).all() and (kd["p_holm"] >= kd["p_value"]).all()
    fitnet = gains[gains["baseline"] == "fitnet"]
    assert ((fitnet["ci_low"] <= 0) & (0 <= fitnet["ci_high"])).sum() >= 6  # no margin: mostly ties
    for _, r in gains.iterrows():  # the tie rule follows the interval, row by row
        assert r["outcome"] == ST.ci_outcome(r["ci_low"], r["ci_high"])


def test_constructed_margin_across_pairs(constructed):
    _, wtl = constructed
    w = wtl[wtl["metric"] == "test_acc_last"].set_index("baseline")
    # 8 pairs, DFA ahead of KD on all: Wilcoxon exact p = 2 / 2^8; Holm over 2 baselines: at most x2
    assert w.loc["kd", "test"] == "wilcoxon" and w.loc["kd", "p_value"] == pytest.approx(2 / 256)
    assert w.loc["kd", "p_holm"] <= 2 * 2 / 256 and w.loc["kd", "rank_biserial"] == pytest.approx(1.0)
    assert w.loc["kd", "wins"] == 8
    assert w.loc["fitnet", "p_value"] > 0.05  # no margin, no rejection
    assert abs(w.loc["fitnet", "rank_biserial"]) < 1.0

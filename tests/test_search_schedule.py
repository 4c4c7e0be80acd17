"""The search's pruning settings: sha is the default, the first rung defaults to the first
group's share of a groupwise search, and an earlier rung is refused unless asked for."""

from __future__ import annotations

import pytest

from dfa_ray.errors import ConfigError
from dfa_ray.spec import first_rung, parse_spec
from dfa_ray.tune.schedulers import halvings


def spec(tmp_path, pairs=(("resnet20", "resnet8"),), **search):
    return {"name": "s", "storage": str(tmp_path), "pairs": [{"teacher": t, "student": s} for t, s in pairs],
            "search": {"epochs": 6, **search}}


def test_default_is_sha_with_the_first_groups_share_as_grace(tmp_path):
    s = parse_spec(spec(tmp_path))
    assert s.search.scheduler.type == "sha" and first_rung(s) == 2  # 6 epochs / 3 groups
    # the pair with the fewest groups decides: its first group's search ends last
    mixed = parse_spec(spec(tmp_path, pairs=(("resnet20", "resnet8"), ("vgg13", "vgg8")), epochs=8))
    assert first_rung(mixed) == 3  # ceil(8 / 3), not ceil(8 / 4)
    joint = parse_spec(spec(tmp_path, options={"schedule": "joint"}))
    assert first_rung(joint) == 1


@pytest.mark.parametrize("kind", ["sha", "asha"])
def test_a_rung_before_the_first_group_is_done_is_refused_with_the_fix(tmp_path, kind):
    with pytest.raises(ConfigError) as err:
        parse_spec(spec(tmp_path, scheduler={"type": kind, "grace_period": 1}))
    text = str(err.value)
    assert "search.scheduler.grace_period" in text and "6 epochs / 3 groups = 2" in text
    assert "set grace_period >= 2" in text and "early_rungs: true" in text


def test_an_early_rung_is_accepted_when_asked_for_or_when_no_trial_is_groupwise(tmp_path):
    assert parse_spec(spec(tmp_path, scheduler={"type": "sha", "grace_period": 1, "early_rungs": True}))
    assert parse_spec(spec(tmp_path, scheduler={"type": "asha", "grace_period": 1}, options={"schedule": "joint"}))
    assert parse_spec(spec(tmp_path, scheduler={"type": "fifo", "grace_period": 1}))
    # a searched schedule that can be groupwise still counts
    with pytest.raises(ConfigError, match="before the first group's search is over"):
        parse_spec(spec(tmp_path, scheduler={"type": "sha", "grace_period": 1},
                        space={"schedule": {"choice": ["groupwise", "joint"]}}))


@pytest.mark.parametrize("max_t,grace,eta,expected", [(6, 2, 2, 2), (6, 1, 2, 3), (18, 2, 4, 2), (4, 4, 2, 0)])
def test_rung_count_follows_ashas_layout(max_t, grace, eta, expected):
    """Rungs at grace * eta^k below max_t, e.g. 6 epochs, grace 2, eta 2: rungs at 2 and 4."""
    assert halvings(max_t, grace, eta) == expected


def test_protocol_dfa_author_validates(tmp_path):
    s = parse_spec({**spec(tmp_path), "protocol": "dfa_author"})
    assert s.protocol == "dfa_author"
    s = parse_spec({**spec(tmp_path), "protocol": "dfa_author_cinic", "data": {"name": "cinic10"}})
    assert s.protocol == "dfa_author_cinic"


def test_a_warmup_comes_before_the_first_groups_share(tmp_path):
    s = parse_spec(spec(tmp_path, epochs=8, options={"warmup_epochs": 2}))
    assert first_rung(s) == 4  # 2 warm-up + 6 epochs / 3 groups
    with pytest.raises(ConfigError) as err:
        parse_spec(spec(tmp_path, epochs=8, options={"warmup_epochs": 2}, scheduler={"grace_period": 3}))
    assert "(2 warm-up + 6 epochs / 3 groups = 4)" in str(err.value) and "set grace_period >= 4" in str(err.value)
    # from the space, the longest warm-up decides
    s = parse_spec(spec(tmp_path, epochs=8, space={"warmup_epochs": {"choice": [0, 2, 5]}}))
    assert first_rung(s) == 6  # ceil(5 + 3 / 3)
    with pytest.raises(ConfigError, match=r"search.options.warmup_epochs: a warm-up of 6 epoch\(s\) leaves none of "
                                          r"the 6 search epochs"):
        parse_spec(spec(tmp_path, options={"warmup_epochs": 6}))


def test_a_rung_keeps_the_best_and_gives_ties_to_the_trial_created_last():
    """The rule the README states, on the bracket the scheduler builds (trials in creation order)."""
    from dfa_ray.tune.schedulers import SynchronousHalving

    sha = SynchronousHalving(max_t=8, grace_period=2, reduction_factor=2, num_trials=4, metric="val_acc", mode="max")
    bracket = sha._create_bracket(sha._halvings)
    for name, acc in [("t0", 50.0), ("t1", 60.0), ("t2", 60.0), ("t3", 40.0)]:
        bracket._live_trials[name] = {"val_acc": acc}
    good, bad = bracket.successive_halving("val_acc", 1.0)
    assert sorted(good) == ["t1", "t2"] and sorted(bad) == ["t0", "t3"]
    good, bad = bracket.successive_halving("val_acc", 1.0)  # the next rung: one of the tied two
    assert good == ["t2"]


def test_a_joint_search_with_a_warmup_is_not_pruned_before_beta_moves(tmp_path):
    options = {"schedule": "joint", "warmup_epochs": 4}
    assert first_rung(parse_spec(spec(tmp_path, options=options))) == 5
    with pytest.raises(ConfigError, match=r"the first rung \(2 epoch\(s\)\) comes before beta has been searched for "
                                          r"an epoch \(4 warm-up epoch\(s\) \+ 1\).*set grace_period >= 5"):
        parse_spec(spec(tmp_path, options=options, scheduler={"grace_period": 2}))
    assert first_rung(parse_spec(spec(tmp_path, options={"schedule": "joint"}))) == 1  # no warm-up: as before

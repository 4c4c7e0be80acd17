"""Aggregation genotypes: derivation, JSON round trip, refusal of foreign genotypes,
reference genotypes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dfa_ray.dfa import (
    Aggregation,
    Genotype,
    SearchNet,
    SearchOptions,
    derive,
    genotype_from_search,
    pair_groups,
    reference_genotype,
)
from dfa_ray.errors import CheckpointError, ConfigError
from dfa_helpers import TinyNet, tiny_student, tiny_teacher

LOG124 = torch.log(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))  # softmax = [1, 2, 4] / 7


def test_derive_modes():
    betas = [LOG124, torch.tensor([0.3, -0.1], dtype=torch.float64)]
    soft = derive(betas, "softmax")
    assert soft[0] == pytest.approx([1 / 7, 2 / 7, 4 / 7], abs=1e-12)
    e = math.exp(0.4)
    assert soft[1] == pytest.approx([e / (1 + e), 1 / (1 + e)], abs=1e-12)
    assert derive(betas, "argmax") == [[0.0, 0.0, 1.0], [1.0, 0.0]]
    assert derive(betas, "topk:2")[0] == pytest.approx([0.0, 1 / 3, 2 / 3], abs=1e-12)
    assert derive(betas, "topk:5")[0] == pytest.approx(soft[0], abs=1e-12)  # K >= N: softmax
    with pytest.raises(ConfigError, match="derive='top'"):
        derive(betas, "top")


def test_derive_from_aggregation_and_seeded_init():
    a, b = Aggregation([2, 3], seed=5), Aggregation([2, 3], seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.betas, b.betas))
    assert all(x.abs().max() < 1e-2 for x in a.betas)  # 1e-3 * randn
    assert not torch.equal(a.betas[0], Aggregation([2, 3], seed=6).betas[0])
    assert "betas.1" in a.state_dict()
    with torch.no_grad():
        a.betas[1].copy_(LOG124.float())
    assert derive(a, "argmax")[1] == [0.0, 0.0, 1.0]


@pytest.fixture
def models():
    return tiny_teacher(), tiny_student()


@pytest.fixture
def searched(models):
    t, s = models
    net = SearchNet(t, s, SearchOptions(derive="topk:2"), image_size=8, seed=1)
    with torch.no_grad():
        net.aggregation.betas[1].copy_(LOG124.float())
    return genotype_from_search(net, "tiny_t", "tiny_s", "cifar100", trial_id="trial_0007")


def test_genotype_from_search(searched):
    g = searched
    assert (g.teacher, g.student, g.dataset, g.kind, g.derive, g.trial_id) == (
        "tiny_t", "tiny_s", "cifar100", "search", "topk:2", "trial_0007"
    )
    assert [(x.student_group, x.teacher_group) for x in g.groups] == [(0, 0), (1, 1), (2, 2)]
    assert g.groups[1].candidates == ("groups.1.0", "groups.1.1", "groups.1.2")
    assert list(g.groups[1].weights) == pytest.approx([0.0, 1 / 3, 2 / 3], abs=1e-6)
    assert g.options["derive"] == "topk:2" and g.options["lam"] == SearchOptions().lam
    assert g.version == 1


def test_json_round_trip(tmp_path, searched):
    path = searched.save(tmp_path / "sub" / "genotype.json")
    loaded = Genotype.load(path)
    assert loaded == searched
    assert loaded.source == str(path)
    assert json.loads(path.read_text())["version"] == 1
    assert not [p for p in path.parent.iterdir() if p.name != "genotype.json"]  # no temp file left
    assert Genotype.from_dict(searched.to_dict()) == searched


def test_validate_for_accepts_its_own_pair(tmp_path, searched, models):
    t, s = models
    g = Genotype.load(searched.save(tmp_path / "g.json"))
    assert g.validate_for("tiny_t", "tiny_s", "cifar100", t, s, image_size=8) is g


@pytest.mark.parametrize(
    "names", [("other_t", "tiny_s", "cifar100"), ("tiny_t", "tiny_s", "cifar10")]
)
def test_refuses_other_pair_or_dataset(tmp_path, searched, models, names):
    t, s = models
    path = searched.save(tmp_path / "g.json")
    with pytest.raises(CheckpointError) as e:
        Genotype.load(path).validate_for(*names, t, s)
    msg = str(e.value)
    assert str(path) in msg
    if names[0] != "tiny_t":  # another pair: never, not even as a transfer
        assert "tiny_t -> tiny_s on cifar100" in msg and f"{names[0]} -> {names[1]} on {names[2]}" in msg
        with pytest.raises(CheckpointError):
            Genotype.load(path).validate_for(*names, t, s, transfer=True)
    else:  # another dataset: only as a transfer, which the message says how to ask for
        assert "searched on cifar100, not on cifar10" in msg and "--transfer" in msg
        assert Genotype.load(path).validate_for(*names, t, s, transfer=True).dataset == "cifar100"


def test_refuses_candidate_count_mismatch(tmp_path, searched):
    torch.manual_seed(0)
    other_teacher = TinyNet(channels=(4, 6, 8), blocks=(2, 2, 2))  # 2 candidates in group 1, not 3
    path = searched.save(tmp_path / "g.json")
    with pytest.raises(CheckpointError, match=r"g\.json.*T1 has 3 candidates in the genotype and 2 in the model"):
        Genotype.load(path).validate_for("tiny_t", "tiny_s", "cifar100", other_teacher, tiny_student(), 8)


@pytest.mark.parametrize(
    "text,match",
    [
        ("{not json", "not valid JSON"),
        ('{"version": 9}', "version 9 is not supported"),
        ('{"version": 1, "teacher": "a"}', "malformed"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_files_name_the_file(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(CheckpointError, match=match) as e:
        Genotype.load(path)
    assert str(path) in str(e.value)
    with pytest.raises(CheckpointError, match="no such file"):
        Genotype.load(tmp_path / "missing.json")


def test_bad_weights_are_refused(tmp_path, searched):
    d = searched.to_dict()
    d["groups"][0]["weights"] = [0.7, 0.7]
    path = tmp_path / "w.json"
    path.write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="sum to 1"):
        Genotype.load(path)


def test_reference_genotypes(models):
    t, s = models
    pairing = pair_groups(t, s, 8)
    last = reference_genotype("last", pairing, "tiny_t", "tiny_s", "cifar100")
    assert [list(g.weights) for g in last.groups] == [[0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0]]
    avg = reference_genotype("average", pairing, "tiny_t", "tiny_s", "cifar100")
    assert list(avg.groups[1].weights) == pytest.approx([1 / 3] * 3)
    r1 = reference_genotype("random", pairing, "tiny_t", "tiny_s", "cifar100", seed=4)
    r2 = reference_genotype("random", pairing, "tiny_t", "tiny_s", "cifar100", seed=4)
    r3 = reference_genotype("random", pairing, "tiny_t", "tiny_s", "cifar100", seed=5)
    assert r1 == r2 and r1 != r3 and r1.options == {"seed": 4}
    for g in r1.groups:
        assert sum(g.weights) == pytest.approx(1.0, abs=1e-12) and min(g.weights) > 0
    assert {x.kind for x in (last, avg, r1)} == {"last", "average", "random"}
    with pytest.raises(ConfigError, match="valid kinds: last, average, random"):
        reference_genotype("best", pairing, "tiny_t", "tiny_s", "cifar100")

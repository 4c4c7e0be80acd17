"""The distillation methods: the contract (keys, frozen teacher, gradients), weights, options."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dfa_ray.dfa import pair_groups, reference_genotype
from dfa_ray.engine.methods import METHODS, TrainSplit, build_distiller, method_catalog
from dfa_ray.errors import CheckpointError, ConfigError
from dfa_ray.losses import at_loss, feature_l2, kd_loss, resize_to
from dfa_helpers import TinyNet, batch, cross_student, cross_teacher, tiny_student, tiny_teacher

KEYS = {"loss_ce", "loss_kd", "loss_feat"}


ALL = ["vanilla", "kd", "dkd", "fitnet", "at", "nst", "sp", "pkt", "rkd", "cc", "dfa"]
# each method's own terms besides the three every row has
OWN_TERMS = {"dkd": {"loss_tckd", "loss_nckd"}, "rkd": {"loss_rkd_dist", "loss_rkd_angle"}}
# the term that carries the method's distillation signal (must be non-zero on random data)
SIGNAL = {"kd": ["loss_kd"], "dkd": ["loss_tckd", "loss_nckd"], "rkd": ["loss_rkd_dist", "loss_rkd_angle"]}


def make(method, options=None, kind="average", pair="same"):
    t, s = (tiny_teacher(), tiny_student()) if pair == "same" else (cross_teacher(), cross_student())
    size = 8 if pair == "same" else 16
    geno = None
    if method == "dfa":
        geno = reference_genotype(kind, pair_groups(t, s, size), "t", "s", "cifar100")
    return build_distiller(method, t, s, options, genotype=geno, image_size=size), size


def test_the_part1_methods_are_registered_in_order():
    # part-2 methods (CRD, VID, ...) follow in their own modules and test files
    assert METHODS.names()[: len(ALL)] == ALL


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("pair", ["same", "cross"])
def test_forward_train_contract(method, pair):
    d, size = make(method, pair=pair)
    d.train()
    assert not d.teacher.training  # eval whatever train() says
    assert all(not p.requires_grad for p in d.teacher.parameters())
    x, y = batch(n=6, size=size)
    logits, losses = d.forward_train(x, y, torch.arange(6))
    assert logits.shape == (6, 5) and set(losses) == KEYS | OWN_TERMS.get(method, set())
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    for key in SIGNAL.get(method, ["loss_feat"] if method not in ("vanilla",) else []):
        assert losses[key].item() > 0, key
    total = sum(losses.values())
    total.backward()
    # gradient flow: the student and every module of the method get gradients, the teacher never
    assert all(p.grad is None for p in d.teacher.parameters())
    assert all(p.grad is not None for p in d.student.parameters())
    own = [(n, p) for n, p in d.named_parameters() if not n.startswith(("student.", "teacher."))]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in own), [n for n, p in own if p.grad is None]
    assert not d.teacher.training
    assert torch.equal(d(x), d.student(x))
    ids = {id(p) for p in d.trainable_parameters()}
    assert ids.isdisjoint(id(p) for p in d.teacher.parameters())
    assert {id(p) for p in d.student.parameters()} <= ids
    assert ids == {id(p) for p in d.student.parameters()} | {id(p) for _, p in own}
    if method in ("fitnet", "dfa", "cc"):  # their mapping modules are trained too
        assert own
    # the method's modules and buffers are in its state (so checkpoints carry them)
    assert {n for n, _ in own} <= set(d.state_dict())


def test_weights_are_applied():
    x, y = batch(n=4, size=8)
    d, _ = make("kd")
    logits, losses = d.forward_train(x, y)
    with torch.no_grad():
        t_logits = d.teacher(x)
    assert losses["loss_ce"].item() == pytest.approx(0.1 * F.cross_entropy(logits, y).item(), rel=1e-6)
    assert losses["loss_kd"].item() == pytest.approx(0.9 * kd_loss(logits, t_logits, 4.0).item(), rel=1e-6)
    assert losses["loss_feat"].item() == 0.0

    d, _ = make("vanilla")
    logits, losses = d.forward_train(x, y)
    assert losses["loss_ce"].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert losses["loss_kd"].item() == 0.0 and losses["loss_feat"].item() == 0.0

    d, _ = make("at", {"w_feat": 3.0})
    logits, losses = d.forward_train(x, y)
    _, sf = d.student.forward_groups(x, preact=False)
    _, tf = d.teacher.forward_groups(x, preact=False)
    expected = at_loss([f[-1] for f in sf], [f[-1] for f in tf], p=2.0)
    assert losses["loss_feat"].item() == pytest.approx(3.0 * expected.item(), rel=1e-5)

    d, _ = make("fitnet")
    assert d.config["hint_group"] == 1 and d.config["w_feat"] == 100.0
    d.eval()  # deterministic BN so the two forwards agree
    _, losses = d.forward_train(x, y)
    _, sf = d.student.forward_groups(x, preact=False)
    _, tf = d.teacher.forward_groups(x, preact=False)
    expected = feature_l2(d.regressor(sf[1][-1]), tf[1][-1])
    assert losses["loss_feat"].item() == pytest.approx(100.0 * expected.item(), rel=1e-5)


@pytest.mark.parametrize("stages", ["uniform", "halving"])
def test_dfa_feature_loss_uses_the_genotype(stages):
    x, y = batch(n=4, size=8)
    d, _ = make("dfa", {"stage_weights": stages, "w_kl": 0.5}, kind="last")
    assert d.config["w_feat"] == 10.0 and d.config["w_ce"] == 1.0 and d.config["preact"] is True
    d.eval()
    logits, losses = d.forward_train(x, y)
    _, sf = d.student.forward_groups(x, preact=True)
    _, tf = d.teacher.forward_groups(x, preact=True)
    c = [1.0, 1.0, 1.0] if stages == "uniform" else [0.25, 0.5, 1.0]
    # the "last" genotype: A_g is the teacher group's last block output
    expected = sum(c[g] * feature_l2(d.connectors[g](sf[g][-1]), tf[g][-1]).item() for g in range(3))
    assert losses["loss_feat"].item() == pytest.approx(10.0 * expected, rel=1e-5)
    assert losses["loss_kd"].item() == pytest.approx(0.5 * kd_loss(logits, d.teacher(x), 4.0).item(), rel=1e-5)


def test_dfa_average_genotype_on_a_cross_pair_resizes():
    d, size = make("dfa", kind="average", pair="cross")
    x, _ = batch(n=2, size=16)
    _, tf = d.teacher.forward_groups(x, preact=True)
    aggs = d.aggregates(tf, x)
    assert [tuple(a.shape[-2:]) for a in aggs] == [(16, 16), (4, 4), (1, 1)]
    expected0 = resize_to(0.5 * tf[0][0] + 0.5 * tf[0][1], (16, 16))
    torch.testing.assert_close(aggs[0], expected0)


def test_dfa_takes_lambda_and_preact_from_the_search():
    t, s = tiny_teacher(), tiny_student()
    g = reference_genotype("average", pair_groups(t, s, 8), "t", "s", "cifar100")
    g = dataclasses.replace(g, options={"lam": 3.5, "preact": False})
    d = build_distiller("dfa", t, s, {}, genotype=g, image_size=8)
    assert d.config["w_feat"] == 3.5 and d.config["preact"] is False
    d = build_distiller("dfa", t, s, {"w_feat": 7}, genotype=g, image_size=8)
    assert d.config["w_feat"] == 7.0


def test_dfa_unit_candidate_scale_divides_each_candidate_by_its_rms():
    """candidate_scale: unit, written out: A_g = sum_j w_j T_j / sqrt(mean(T_j^2)), the mean over
    the whole batch; it comes from the genotype's search like lambda, and a reference run
    inherits it (sweep.reference_options)."""
    from dfa_ray.dfa.search_net import teacher_candidates
    from dfa_ray.sweep import reference_options
    from dfa_ray.spec import parse_spec

    t, s = tiny_teacher(), tiny_student()
    pairing = pair_groups(t, s, 8)
    g = reference_genotype("average", pairing, "t", "s", "cifar100")
    g = dataclasses.replace(g, options={"lam": 2.0, "preact": True, "candidate_scale": "unit"})
    d = build_distiller("dfa", t, s, {}, genotype=g, image_size=8).eval()
    assert d.config["candidate_scale"] == "unit" and d.config["w_feat"] == 2.0
    x, y = batch(n=4, size=8)
    _, losses = d.forward_train(x, y)
    _, sf = d.student.forward_groups(x, preact=True)
    _, tf = d.teacher.forward_groups(x, preact=True)
    expected = 0.0
    for gi in range(3):
        cands = tf[gi]
        target = sum(c / torch.sqrt((c ** 2).mean()) for c in cands) / len(cands)
        expected += feature_l2(d.connectors[gi](sf[gi][-1]), target).item()
    assert losses["loss_feat"].item() == pytest.approx(2.0 * expected, rel=1e-5)
    plain = build_distiller("dfa", t, s, {"candidate_scale": "none"}, genotype=g, image_size=8).eval()
    assert plain.forward_train(x, y)[1]["loss_feat"].item() != pytest.approx(losses["loss_feat"].item(), rel=1e-3)
    # the search's candidates: every one of unit second moment (same-size pairs: no resize)
    for stacked in teacher_candidates(t, s, pairing, x, True, "unit"):
        for c in stacked:
            assert (c ** 2).mean().item() == pytest.approx(1.0, rel=1e-5)
    spec = parse_spec({"name": "r", "pairs": [{"teacher": "resnet14", "student": "resnet8"}]})
    assert reference_options(spec, g.to_dict(), {}) == {"w_feat": 2.0, "preact": True, "candidate_scale": "unit"}
    with pytest.raises(ConfigError, match="candidate_scale='rms' is invalid; allowed: none \\| unit"):
        from dfa_ray.dfa.options import SearchOptions
        SearchOptions(candidate_scale="rms")


def test_option_errors():
    t, s = tiny_teacher(), tiny_student()
    with pytest.raises(ConfigError, match=r"unknown option\(s\) tau for method kd; valid options: w_ce, w_kl, temperature$"):
        build_distiller("kd", t, s, {"tau": 2})
    with pytest.raises(ConfigError, match="kd option temperature=0 is invalid; allowed: a number > 0$"):
        build_distiller("kd", t, s, {"temperature": 0})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) w_feat for method kd"):  # kd has no feature term
        build_distiller("kd", t, s, {"w_feat": 1.0})
    with pytest.raises(ConfigError, match="at option w_feat=True is invalid; allowed: a number >= 0"):
        build_distiller("at", t, s, {"w_feat": True})
    with pytest.raises(ConfigError, match="at option pairing='depth' is invalid; allowed: index \\| size"):
        build_distiller("at", t, s, {"pairing": "depth"})
    with pytest.raises(ConfigError, match="rkd option w_angle=inf is invalid; allowed: a number >= 0"):
        build_distiller("rkd", t, s, {"w_angle": float("inf")})
    with pytest.raises(ConfigError, match="cc option p_order=2.5 is invalid; allowed: an integer >= 0 and <= 10"):
        build_distiller("cc", t, s, {"p_order": 2.5})
    with pytest.raises(ConfigError, match="dkd option warmup=-1 is invalid"):
        build_distiller("dkd", t, s, {"warmup": -1})
    with pytest.raises(ConfigError, match="stage_weights='double'.*uniform \\| halving"):
        build_distiller("dfa", t, s, {"stage_weights": "double"}, genotype=reference_genotype("last", pair_groups(t, s, 8), "t", "s", "c"), image_size=8)
    with pytest.raises(ConfigError, match="dfa needs a genotype"):
        build_distiller("dfa", t, s, {})
    with pytest.raises(ConfigError, match="unknown distillation method 'crdx'.*vanilla, kd, dkd, fitnet"):
        build_distiller("crdx", t, s, {})
    with pytest.raises(ConfigError, match="hint_group=7"):
        build_distiller("fitnet", t, s, {"hint_group": 7})
    with pytest.raises(ConfigError, match="method kd takes no genotype"):
        build_distiller("kd", t, s, {}, genotype=reference_genotype("last", pair_groups(t, s, 8), "t", "s", "c"),
                        image_size=8)


def test_dfa_refuses_a_genotype_of_other_shape():
    t, s = tiny_teacher(), tiny_student()
    torch.manual_seed(0)
    other = TinyNet(channels=(4, 6, 8), blocks=(1, 1, 1))
    geno = reference_genotype("average", pair_groups(other, s, 8), "t", "s", "cifar100")
    with pytest.raises(CheckpointError, match="T0 has 1 candidates in the genotype and 2 in the model"):
        build_distiller("dfa", t, s, {}, genotype=geno, image_size=8)

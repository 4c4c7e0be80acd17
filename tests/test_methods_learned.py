"""CRD, VID, OFD, AB, FT, FSP and ReviewKD as distillers: the contract and gradient flow, their
refusals, the init stages as a phase of the trial, training on digits, bit-for-bit resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dfa_ray.engine.checkpoint import load_checkpoint, save_checkpoint
from dfa_ray.engine.distill import build_distill_run
from dfa_ray.engine.methods import METHODS, TrainSplit, build_distiller, method_catalog
from dfa_ray.engine.recipes import get_recipe
from dfa_ray.engine.training import format_progress
from dfa_ray.errors import ConfigError
from dfa_ray.losses_part2 import ab_loss, crd_nce_loss, ofd_loss
from dfa_ray.method_modules import teacher_margins
from dfa_ray.models import create_model

LEARNED = ["crd", "crd+kd", "vid", "ofd", "ab", "ft", "fsp", "reviewkd"]
INIT = ["ab", "ft", "fsp"]
# options that make the tiny unit cases cheap or switch the main-phase term on
UNIT_OPTIONS = {"crd": {"nce_k": 16}, "crd+kd": {"nce_k": 16}, "ab": {"w_feat": 1.0}, "fsp": {"w_feat": 1.0}}
SPLIT = TrainSplit(num_samples=12, num_classes=5, labels=torch.arange(12) % 5)


def pair(teacher="resnet14", student="resnet8", seed=0):
    torch.manual_seed(seed)
    t = create_model(teacher, num_classes=5).eval()
    s = create_model(student, num_classes=5)
    return t, s


def make(method, options=None, teacher="resnet14", student="resnet8", epochs=None):
    t, s = pair(teacher, student)
    opts = {**UNIT_OPTIONS.get(method, {}), **(options or {})}
    return build_distiller(method, t, s, opts, image_size=8, split=SPLIT, epochs=epochs)


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g), torch.arange(n)


def test_all_registered_and_listed():
    names = METHODS.names()
    assert names[-len(LEARNED):] == LEARNED
    catalog = {m["name"]: m for m in method_catalog()}
    for m in LEARNED:
        assert catalog[m]["paper"] and catalog[m]["options"]
    crd = {o["name"]: o["default"] for o in catalog["crd"]["options"]}
    assert (crd["w_feat"], crd["nce_k"], crd["nce_t"], crd["nce_momentum"], crd["feat_dim"]) == (0.8, 16384, 0.07, 0.5, 128)
    assert {o["name"]: o["default"] for o in catalog["crd+kd"]["options"]}["w_kl"] == 1.0
    assert {o["name"]: o["default"] for o in catalog["ofd"]["options"]}["w_feat"] == 0.001
    assert {o["name"]: o["default"] for o in catalog["ft"]["options"]}["w_feat"] == 200.0
    assert {o["name"]: o["default"] for o in catalog["reviewkd"]["options"]}["w_feat"] == 5.0


@pytest.mark.parametrize("method", LEARNED)
def test_contract_and_gradient_flow(method):
    d = make(method)
    d.train()
    x, y, index = batch()
    logits, losses = d.forward_train(x, y, index)
    assert logits.shape == (6, 5) and {"loss_ce", "loss_kd", "loss_feat"} <= set(losses)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert losses["loss_feat"].item() > 0
    assert (losses["loss_kd"].item() > 0) == (method == "crd+kd")
    sum(losses.values()).backward()
    assert all(p.grad is None for p in d.teacher.parameters()) and not d.teacher.training
    assert all(p.grad is not None for p in d.student.parameters())
    trainable = {id(p) for p in d.trainable_parameters()}
    own = [(n, p) for n, p in d.named_parameters() if not n.startswith(("student.", "teacher."))]
    # FSP learns no module; AB's connectors are identities where the shapes already agree
    assert own or method == "fsp" or (method == "ab" and all(c.identity for c in d.connectors))
    for n, p in own:
        if id(p) in trainable:  # every module the main phase trains gets a gradient
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert trainable.isdisjoint(id(p) for p in d.teacher.parameters())
    assert {n for n, _ in own} <= set(d.state_dict())


def test_crd_loss_is_the_nce_of_both_sides_and_the_banks_are_checkpointed():
    d = make("crd")
    assert d.memory.bank_s.shape == (12, 128) and d.memory.bank_t.shape == (12, 128)
    assert {"memory.bank_s", "memory.bank_t", "memory.z_s", "memory.z_t"} <= set(d.state_dict())
    assert not any(n.startswith("memory.") for n, _ in d.named_parameters())
    x, y, index = batch()
    d2 = make("crd")  # built the same way: the same weights and initial banks
    d.eval(), d2.eval()
    before = d.memory.bank_s.clone()
    torch.manual_seed(3)
    _, losses = d.forward_train(x, y, index)
    torch.manual_seed(3)  # the same negatives
    with torch.no_grad():
        _, _, e_s = d2.student.forward_groups_embedding(x)
        _, _, e_t = d2.teacher.forward_groups_embedding(x)
        out_s, out_t = d2.memory(d2.embed_s(e_s), d2.embed_t(e_t), index)
    expected = 0.8 * (crd_nce_loss(out_s, 12) + crd_nce_loss(out_t, 12))
    assert losses["loss_feat"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert not torch.equal(d.memory.bank_s[index], before[index])  # updated by the momentum rule


def test_crd_needs_the_training_split():
    t, s = pair()
    with pytest.raises(ConfigError, match="method crd needs the training split"):
        build_distiller("crd", t, s, image_size=8)


def test_ofd_margins_connectors_and_refusal():
    d = make("ofd")
    margins = teacher_margins(d.teacher, [0, 1, 2], "CifarResNet")
    assert all(torch.equal(a, b) for a, b in zip(d.margins(), margins))
    assert d.preact and len(d.connectors) == 3
    x, y, index = batch()
    d.eval()
    _, losses = d.forward_train(x, y, index)
    _, sf = d.student.forward_groups(x, preact=True)
    _, tf = d.teacher.forward_groups(x, preact=True)
    expected = 0.001 * ofd_loss([c(f[-1]) for c, f in zip(d.connectors, sf)], [f[-1] for f in tf], margins)
    assert losses["loss_feat"].item() == pytest.approx(expected.item(), rel=1e-5)
    t, s = create_model("ShuffleV2", num_classes=5), create_model("resnet8", num_classes=5)
    with pytest.raises(ConfigError, match="teacher ShuffleNetV2 .*has none at stage 0.*use another teacher"):
        build_distiller("ofd", t, s, image_size=8)


def test_fsp_refuses_maps_of_different_sizes():
    t, s = create_model("wrn_16_2", num_classes=5), create_model("wrn_16_1", num_classes=5)
    with pytest.raises(ConfigError, match=r"paired maps must have the same size.*teacher WideResNet stem 16, "
                                          r"groups 32/64/128, student WideResNet stem 16, groups 16/32/64"):
        build_distiller("fsp", t, s, image_size=8)


def test_ab_main_phase_is_cross_entropy_only_by_default():
    d = make("ab", {"w_feat": 0.0})
    assert d.views == frozenset()  # no feature pass is paid for
    x, y, index = batch()
    _, losses = d.forward_train(x, y, index)
    assert losses["loss_feat"].item() == 0.0


@pytest.mark.parametrize("method", INIT)
def test_init_stage_trains_its_own_modules(method):
    d = make(method, {"w_feat": 0.0} if method != "ft" else None, epochs=240)
    stage = d.init_stage(240, 0.05)
    assert stage.epochs == 30 and stage.lr == 0.01  # the CRD code's stage for a ResNet student
    assert d.config["init_epochs"] == 30 and d.config["init_lr"] == 0.01  # recorded, resolved
    assert d.init_stage(80, 0.05).epochs == 10  # scaled with the run's epochs
    d.train()
    x, y, index = batch()
    logits, losses = stage.forward(x, y, index)
    assert losses["loss_init"].item() > 0 and losses["loss_feat"].item() == 0
    sum(losses.values()).backward()
    params = {id(p) for p in stage.parameters}
    assert all(p.grad is None for p in d.teacher.parameters())
    if method == "ft":  # the paraphraser alone, on the teacher's map; the student is not run
        assert logits is None
        assert params == {id(p) for p in d.paraphraser.parameters()}
        assert all(p.grad is not None for p in d.paraphraser.parameters())
        assert all(p.grad is None for p in d.student.parameters())
        assert params.isdisjoint(id(p) for p in d.trainable_parameters())  # frozen in the main phase
    else:  # the student's feature layers (its classifier gets no gradient) and AB's connectors
        assert logits.shape == (6, 5)
        assert all(p.grad is not None for n, p in d.student.named_parameters() if not n.startswith("fc."))
        assert d.student.fc.weight.grad is None
    if method == "ab":
        x2 = torch.randn(2, 3, 8, 8)
        _, sf = d.student.forward_groups(x2, preact=True)
        _, tf = d.teacher.forward_groups(x2, preact=True)
        assert d._ab(sf, tf).item() == pytest.approx(
            ab_loss([c(f[-1], tuple(g[-1].shape[-2:])) for c, f, g in zip(d.connectors, sf, tf)],
                    [g[-1] for g in tf]).item(), rel=1e-6)
    other = make(method, {"init_lr": 0.2, "init_epochs": 0}).init_stage(240, 0.05)
    assert other is None
    mobile = build_distiller(method, *pair("resnet14", "MobileNetV2"), image_size=32, split=SPLIT) \
        if method != "fsp" else None
    if mobile is not None:
        assert mobile.init_stage(240, 0.01).lr == 0.01 and mobile.init_stage(240, 0.02).lr == 0.02  # the run's lr


# -- on digits: training, phases, resume ---------------------------------------------------
RECIPE = {"epochs": 3, "batch_size": 128}
# FT's weight (200) is calibrated for 8x8 factors at 32 px: its loss is a mean over positions of
# a unit vector's entries, so on 8 px digits (2x2 factors) the same weight is ~16x stronger.
DIGITS_OPTIONS = {"crd": {"nce_k": 256}, "crd+kd": {"nce_k": 256}, "ab": {"init_epochs": 2},
                  "ft": {"init_epochs": 2, "w_feat": 12.5}, "fsp": {"init_epochs": 2}}


def distil(teacher, digits, method, epochs=3, options=None, log=None):
    recipe = get_recipe("quick", {**RECIPE, "epochs": epochs})
    opts = {**DIGITS_OPTIONS.get(method, {}), **(options or {})}
    return build_distill_run(teacher, "resnet20", "resnet8", digits, recipe, method, seed=0, options=opts,
                             device="cpu", log=log)


@pytest.mark.parametrize("method", LEARNED)
def test_every_learned_method_distils_on_digits(digits, digits_teacher, method):
    _, teacher, _ = digits_teacher
    lines: list[str] = []
    # CRD's loss first rises while its banks turn from random rows into real embeddings (the
    # constant Z is fixed on the random banks of the first batch), then falls: 6 epochs show both
    epochs = 6 if method.startswith("crd") else 3
    run = distil(teacher, digits, method, epochs=epochs, log=lines.append)
    final = run.run()
    h = run.history
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in h)
    if method in INIT:
        init, main = h[:2], h[2:]
        assert [r["phase"] for r in h] == ["init"] * 2 + ["train"] * 3
        assert [r["epoch"] for r in h] == [1, 2, 3, 4, 5] and [r["phase_epoch"] for r in h] == [1, 2, 1, 2, 3]
        assert init[1]["loss_init"] < init[0]["loss_init"]
        assert init[0]["lr"] == 0.01 and main[0]["lr"] == pytest.approx(run.recipe.lr)
        assert "init   1/2" in lines[0] and "epoch   1/3" in lines[2]
        assert final["init_epochs"] == 2 and final["epochs"] == 3
        assert 3 <= final["best_epoch"] <= 5  # chosen in the main phase, numbered as its row
    else:
        main = h
        assert "phase" not in h[0]
        feat = [r["loss_feat"] for r in main]
        if method.startswith("crd"):
            assert feat[-1] < feat[-2] < feat[-3] and feat[-1] < 0.8 * max(feat)
        else:
            assert feat[-1] < feat[0]
    assert main[-1]["train_loss"] < main[0]["train_loss"]
    assert final["test_acc_last"] > 20.0


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_crd_resumed_mid_run_ends_bit_for_bit(digits, digits_teacher, tmp_path: Path):
    _, teacher, _ = digits_teacher
    few = {"nce_k": 64}
    straight = distil(teacher, digits, "crd", options=few)
    straight.run()

    first = distil(teacher, digits, "crd", options=few)
    first.step()
    save_checkpoint(tmp_path / "mid.pt", first.state_dict())
    assert "memory.bank_s" in load_checkpoint(tmp_path / "mid.pt")["task"]
    del first
    torch.manual_seed(999)  # disturb the global RNG (the negatives' draws): the checkpoint restores it
    resumed = distil(teacher, digits, "crd", options=few)
    resumed.load_state_dict(load_checkpoint(tmp_path / "mid.pt"))
    resumed.run()
    _same_state(straight.task, resumed.task)  # student, embeddings and both memory banks
    assert straight.final == resumed.final
    assert [r["loss_feat"] for r in straight.history] == [r["loss_feat"] for r in resumed.history]


@pytest.mark.parametrize("method", INIT)
def test_resumed_inside_the_init_stage_continues_there(digits, digits_teacher, tmp_path: Path, method):
    _, teacher, _ = digits_teacher
    straight = distil(teacher, digits, method, epochs=1)
    straight.run()

    first = distil(teacher, digits, method, epochs=1)
    first.step()
    assert first.phase == "init"
    save_checkpoint(tmp_path / "init.pt", first.state_dict())
    state = load_checkpoint(tmp_path / "init.pt")
    assert state["phase"] == "init" and state["init_epoch"] == 1 and state["epoch"] == 0
    del first
    resumed = distil(teacher, digits, method, epochs=1)
    resumed.load_state_dict(state)
    assert resumed.phase == "init"
    row = resumed.step()
    assert (row["phase"], row["phase_epoch"], row["epoch"]) == ("init", 2, 2)
    assert resumed.phase == "train"
    resumed.run()
    _same_state(straight.task, resumed.task)
    assert straight.final == resumed.final
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in resumed.history]


def test_progress_line_names_the_phase():
    m = {"epoch": 2, "phase": "init", "phase_epoch": 2, "lr": 0.01, "train_loss": 1.0, "train_acc": float("nan"),
         "images_per_s": 10.0}
    assert format_progress("ft a->b", m, 30).startswith("[ft a->b] init   2/30  lr 0.01")
    m = {**m, "epoch": 32, "phase": "train", "phase_epoch": 2, "train_acc": 50.0}
    assert format_progress("ft a->b", m, 240).startswith("[ft a->b] epoch   2/240")


def test_the_phase_reaches_the_epoch_rows_extra_metrics():
    from dfa_ray.tune.callbacks import epoch_row

    row = epoch_row({"stage": "distill"}, "t1", 2, {"epoch": 2, "phase": "init", "phase_epoch": 2, "loss_init": 0.5,
                                                     "train_loss": 0.5, "device": "cpu"})
    assert row["extra"] == {"phase": "init", "phase_epoch": 2, "loss_init": 0.5}

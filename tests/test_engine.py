"""The teacher-training engine: recipes, the epoch loop, checkpoints, bit-for-bit resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dfa_ray.engine.checkpoint import load_checkpoint, save_checkpoint
from dfa_ray.engine.recipes import get_recipe
from dfa_ray.engine.teacher import build_teacher_run, load_teacher, save_teacher_state, teacher_meta, train_teacher
from dfa_ray.errors import CheckpointError, ConfigError


def test_protocol_recipes_match_the_published_schedules():
    crd = get_recipe("crd")
    assert (crd.epochs, crd.batch_size, crd.lr, crd.momentum, crd.weight_decay) == (240, 64, 0.05, 0.9, 5e-4)
    assert crd.milestone_epochs() == [150, 180, 210]
    assert crd.lr_for("MobileNetV2") == 0.01 and crd.lr_for("ShuffleV1") == 0.01 and crd.lr_for("resnet20") == 0.05
    overhaul = get_recipe("overhaul")
    assert (overhaul.epochs, overhaul.batch_size, overhaul.lr, overhaul.nesterov) == (200, 128, 0.1, True)
    assert overhaul.milestone_epochs() == [100, 150]
    # Overriding the epochs keeps the schedule's shape.
    assert get_recipe("crd", {"epochs": 24}).milestone_epochs() == [15, 18, 21]


def test_recipe_overrides_are_validated_with_the_field_named():
    assert get_recipe("quick", {"lr": "0.2", "nesterov": "true"}).lr == 0.2
    with pytest.raises(ConfigError, match="'lrr' does not exist; valid fields: epochs"):
        get_recipe("quick", {"lrr": 0.1})
    with pytest.raises(ConfigError, match="epochs = 0 is invalid"):
        get_recipe("quick", {"epochs": 0})
    with pytest.raises(ConfigError, match="'batch_size': 'abc' is not a valid int"):
        get_recipe("quick", {"batch_size": "abc"})
    with pytest.raises(ConfigError, match="unknown recipe 'fast'; valid recipes: crd, overhaul, dfa_author, dfa_author_cinic, quick"):
        get_recipe("fast")


def test_lr_schedule_multistep_follows_the_milestones(digits):
    recipe = get_recipe("crd", {"epochs": 4, "milestones": [0.5, 0.75], "batch_size": 256})
    run = build_teacher_run("resnet8", digits, recipe, seed=0, device="cpu")
    lrs = [run.step()["lr"] for _ in range(4)]
    assert lrs == pytest.approx([0.05, 0.05, 0.005, 0.0005])


def test_quick_teacher_on_digits_reaches_90_percent(digits, tmp_path: Path):
    lines: list[str] = []
    final = train_teacher("resnet8", digits, get_recipe("quick"), seed=0, out_dir=tmp_path, device="cpu",
                          log=lines.append)
    assert final["test_acc_last"] >= 90.0
    assert final["test_acc_best"] >= 85.0
    assert len(lines) == 15 and "epoch  15/15" in lines[-1] and "test(last)" in lines[-1]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["finished"] and len(metrics["history"]) == 15
    assert metrics["final"]["test_acc_last"] == final["test_acc_last"]
    assert metrics["machine"]["torch"] == torch.__version__
    # validation accuracy is recorded every epoch; test accuracy only at the end
    assert all("val_acc" in h for h in metrics["history"])
    assert all("test_acc_last" not in h for h in metrics["history"][:-1])
    model, meta = load_teacher(tmp_path, digits, expect_model="resnet8")
    assert meta["model"] == "resnet8" and not model.training
    assert all(not p.requires_grad for p in model.parameters())


def test_resume_from_a_mid_training_checkpoint_is_bit_for_bit(digits, tmp_path: Path):
    recipe = get_recipe("quick", {"epochs": 4, "batch_size": 128})
    straight = build_teacher_run("resnet8", digits, recipe, seed=3, device="cpu")
    straight.run()

    first = build_teacher_run("resnet8", digits, recipe, seed=3, device="cpu")
    first.step()
    first.step()
    save_checkpoint(tmp_path / "mid.pt", first.state_dict())
    del first
    torch.manual_seed(12345)  # disturb the global RNG: the checkpoint must restore it
    resumed = build_teacher_run("resnet8", digits, recipe, seed=3, device="cpu")
    resumed.load_state_dict(load_checkpoint(tmp_path / "mid.pt"))
    resumed.run()

    for (name, a), (_, b) in zip(straight.student.state_dict().items(), resumed.student.state_dict().items()):
        assert torch.equal(a, b), name
    assert straight.final == resumed.final
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]


def test_train_teacher_continues_an_interrupted_folder_and_refuses_a_foreign_one(digits, tmp_path: Path):
    recipe = get_recipe("quick", {"epochs": 3, "batch_size": 256})
    run = build_teacher_run("resnet8", digits, recipe, seed=1, device="cpu")
    run.step()
    save_teacher_state(tmp_path, run, teacher_meta("resnet8", digits, recipe, 1))
    with pytest.raises(CheckpointError, match="has not finished training \\(epoch 1 of 3\\)"):
        load_teacher(tmp_path, digits)
    lines: list[str] = []
    train_teacher("resnet8", digits, recipe, seed=1, out_dir=tmp_path, device="cpu", log=lines.append)
    assert "resuming" in lines[0] and "after epoch 1" in lines[0]
    assert sum("epoch" in line and "/3" in line for line in lines) == 2  # only epochs 2 and 3 ran
    with pytest.raises(CheckpointError, match="already holds a different run"):
        train_teacher("resnet8", digits, recipe, seed=2, out_dir=tmp_path, device="cpu")


def test_corrupt_and_mismatched_teacher_checkpoints_are_clear_errors(digits, tmp_path: Path):
    with pytest.raises(CheckpointError, match="no teacher checkpoint at"):
        load_teacher(tmp_path / "nothing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match=r"checkpoint .*checkpoint.pt cannot be read"):
        load_teacher(bad)
    good = tmp_path / "good"
    train_teacher("resnet8", digits, get_recipe("quick", {"epochs": 1, "batch_size": 256}), 0, good, device="cpu")
    with pytest.raises(CheckpointError, match="is a 'resnet8', not the expected 'resnet20'"):
        load_teacher(good, expect_model="resnet20")
    from dfa_ray.data import load_dataset

    other = load_dataset("synthetic", num_classes=5, image_size=8, channels=1, n_train=50, n_test=20)
    with pytest.raises(CheckpointError, match="trained for 10 classes"):
        load_teacher(good, other)
    # truncate a real checkpoint half-way: still one clear error naming the file
    blob = (good / "checkpoint.pt").read_bytes()
    (good / "checkpoint.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="good/checkpoint.pt cannot be read"):
        load_teacher(good)


def test_non_finite_loss_stops_the_run_with_the_epoch(digits):
    from dfa_ray.engine.training import NonFiniteLossError

    recipe = get_recipe("quick", {"epochs": 2, "lr": 1e30, "batch_size": 256})
    run = build_teacher_run("resnet8", digits, recipe, seed=0, device="cpu")
    with pytest.raises(NonFiniteLossError, match="non-finite in epoch"):
        run.run()

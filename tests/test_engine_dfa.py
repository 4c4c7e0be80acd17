"""The search and distillation loops on real data (digits) with a real trained teacher."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfa_ray.dfa.genotype import Genotype
from dfa_ray.dfa.options import SearchOptions
from dfa_ray.engine.checkpoint import load_checkpoint, save_checkpoint
from dfa_ray.engine.distill import build_distill_run
from dfa_ray.engine.recipes import get_recipe
from dfa_ray.engine.search import SearchRun
from dfa_ray.errors import CheckpointError, ConfigError


def uniform_distance(alphas: list[list[float]]) -> float:
    return max(abs(a - 1 / len(alpha)) for alpha in alphas for a in alpha)


def test_search_on_digits_moves_alpha_and_learns(digits, digits_teacher):
    _, teacher, _ = digits_teacher
    options = SearchOptions(batch_size=32)
    run = SearchRun(teacher, "resnet20", "resnet8", digits, options, epochs=3, seed=0, device="cpu")
    start = [a.tolist() for a in run.net.alphas()]
    history = [run.step() for _ in range(3)]
    end = history[-1]["alphas"]
    # every group's alpha moved away from uniform, well beyond its random initial spread
    for g in range(3):
        assert uniform_distance([end[g]]) > 3 * uniform_distance([start[g]]), (g, start[g], end[g])
    assert history[-1]["val_acc"] > 30.0  # chance is 10 %
    # groupwise: one group per third of the search, in order
    assert [h["active_groups"] for h in history] == [[0], [1], [2]]
    for key in ("l_st", "l_ts", "l_train", "val_acc", "lr", "images_per_s"):
        assert math.isfinite(history[-1][key]), key
    genotype = run.genotype()
    assert (genotype.teacher, genotype.student, genotype.dataset) == ("resnet20", "resnet8", "digits")
    assert [len(g.weights) for g in genotype.groups] == [3, 3, 3]
    assert genotype.groups[0].weights == pytest.approx(history[-1]["alphas"][0], abs=1e-6)


def test_search_warmup_trains_the_weights_only_then_searches_every_group(digits, digits_teacher):
    _, teacher, _ = digits_teacher
    options = SearchOptions(batch_size=64, warmup_epochs=1, arch_lr=0.05)
    run = SearchRun(teacher, "resnet20", "resnet8", digits, options, epochs=4, seed=0, device="cpu")
    start = [a.tolist() for a in run.net.alphas()]
    weights = [p.detach().clone() for p in run.net.student.parameters()]
    warm = run.step()
    # beta did not move, the student and the TS connectors did, and the upper loss was measured
    assert warm["alphas"] == start
    assert any(not torch.equal(a, b) for a, b in zip(weights, run.net.student.parameters()))
    assert math.isfinite(warm["l_ts"]) and math.isfinite(warm["l_st"]) and warm["loss_ts_connector"] > 0
    # measuring the upper loss on the architecture batch leaves the student's BN statistics to
    # the weight steps, as the architect's step does: the same count as an epoch without warm-up
    plain = SearchRun(teacher, "resnet20", "resnet8", digits, SearchOptions(batch_size=64, arch_lr=0.05), epochs=4,
                      seed=0, device="cpu")
    plain.step()

    def tracked(r):
        return [int(b) for n, b in r.net.student.named_buffers() if n.endswith("num_batches_tracked")]

    assert tracked(run) == tracked(plain) and tracked(run)[0] > 0
    history = [warm] + [run.step() for _ in range(3)]
    # the three epochs after the warm-up are shared by the three groups, in order
    assert [h["active_groups"] for h in history] == [[0], [0], [1], [2]]
    for g in range(3):
        assert uniform_distance([history[-1]["alphas"][g]]) > 3 * uniform_distance([start[g]]), g
    with pytest.raises(ConfigError, match="warmup_epochs=4 is invalid; allowed: an integer below the search's epochs"):
        SearchRun(teacher, "resnet20", "resnet8", digits, SearchOptions(warmup_epochs=4), epochs=4, seed=0, device="cpu")
    with pytest.raises(ConfigError, match="warmup_epochs=-1 is invalid; allowed: an integer >= 0"):
        SearchOptions(warmup_epochs=-1)


def test_search_resume_is_bit_for_bit(digits, digits_teacher, tmp_path: Path):
    _, teacher, _ = digits_teacher
    options = SearchOptions(batch_size=128, schedule="joint", order=2)
    straight = SearchRun(teacher, "resnet20", "resnet8", digits, options, epochs=2, seed=5, device="cpu")
    straight.run()
    first = SearchRun(teacher, "resnet20", "resnet8", digits, options, epochs=2, seed=5, device="cpu")
    first.step()
    save_checkpoint(tmp_path / "s.pt", first.state_dict())
    torch.manual_seed(99)
    resumed = SearchRun(teacher, "resnet20", "resnet8", digits, options, epochs=2, seed=5, device="cpu")
    resumed.load_state_dict(load_checkpoint(tmp_path / "s.pt"))
    resumed.step()
    assert straight.history[-1]["alphas"] == resumed.history[-1]["alphas"]
    for (name, a), (_, b) in zip(straight.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.equal(a, b), name
    assert "teacher.stem.0.weight" not in load_checkpoint(tmp_path / "s.pt")["net"]  # the teacher is not stored


@pytest.mark.parametrize("method, genotype", [("vanilla", None), ("kd", None), ("fitnet", None), ("at", None),
                                              ("dfa", "last"), ("dfa", "random")])
def test_every_method_distils_on_digits(digits, digits_teacher, method, genotype):
    _, teacher, _ = digits_teacher
    recipe = get_recipe("quick", {"epochs": 3, "batch_size": 128})
    # AT's protocol weight (1000) is calibrated for 32 px maps: its loss is a mean over the map,
    # so on 8 px digits (maps of 8x8 down to 2x2) the same weight is 16-256x stronger.
    options = {"w_feat": 50} if method == "at" else None
    run = build_distill_run(teacher, "resnet20", "resnet8", digits, recipe, method, seed=0, genotype=genotype,
                            options=options, device="cpu")
    final = run.run()
    assert final["test_acc_last"] > 20.0
    assert 1 <= final["best_epoch"] <= 3
    history = run.history
    if method in ("fitnet", "at", "dfa"):
        assert history[-1]["loss_feat"] < history[0]["loss_feat"]
    assert history[0]["loss_ce"] > 0
    if method in ("fitnet", "at", "dfa"):
        assert history[0]["loss_feat"] > 0
    else:
        assert history[0]["loss_feat"] == 0
    assert (history[0]["loss_kd"] > 0) == (method == "kd")


def test_dfa_with_a_searched_genotype_and_a_mismatched_one(digits, digits_teacher, tmp_path: Path):
    _, teacher, _ = digits_teacher
    search = SearchRun(teacher, "resnet20", "resnet8", digits, SearchOptions(batch_size=256), epochs=1, seed=0,
                       device="cpu")
    path = search.run().save(tmp_path / "g.json")
    assert Genotype.load(path) == search.genotype()
    recipe = get_recipe("quick", {"epochs": 1, "batch_size": 256})
    run = build_distill_run(teacher, "resnet20", "resnet8", digits, recipe, "dfa", seed=0, genotype=path, device="cpu")
    assert run.task.config["w_feat"] == SearchOptions().lam  # stage 2 starts from the search's lambda
    with pytest.raises(CheckpointError, match="was made for resnet20 -> resnet8 on digits, not for resnet20 -> resnet14"):
        build_distill_run(teacher, "resnet20", "resnet14", digits, recipe, "dfa", seed=0, genotype=path, device="cpu")
    with pytest.raises(ConfigError, match="neither a file nor a reference genotype"):
        build_distill_run(teacher, "resnet20", "resnet8", digits, recipe, "dfa", seed=0, genotype="best",
                          device="cpu")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfa_ray.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_cli_search_then_distill(digits_teacher, tmp_path: Path):
    teacher_dir, _, _ = digits_teacher
    proc = run_cli("search", "--teacher", str(teacher_dir), "--student", "resnet8", "--epochs", "1",
                   "--batch-size", "256", "--gamma-ts", "2", "--order", "2", "--out", "g.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pairing resnet20 -> resnet8" in proc.stdout and "[search resnet8] epoch   1/1" in proc.stdout
    genotype = json.loads((tmp_path / "g.json").read_text())
    assert genotype["options"]["gamma_ts"] == 2 and genotype["options"]["order"] == 2
    assert json.loads((tmp_path / "g.history.json").read_text())["history"][0]["epoch"] == 1
    proc = run_cli("distill", "--teacher", str(teacher_dir / "checkpoint.pt"), "--student", "resnet8", "--method",
                   "dfa", "--genotype", "g.json", "--epochs", "1", "--set", "batch_size=256", "--opt",
                   "stage_weights=halving", "--out", "d", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert metrics["method"] == "dfa" and metrics["options"]["stage_weights"] == "halving"
    assert metrics["final"]["test_acc_last"] >= 0


@pytest.mark.parametrize("args, message", [
    (["search", "--student", "resnet8", "--gamma-ts", "abc"], "gamma_ts"),
    (["search", "--student", "resnet8", "--schedule", "sideways"], "schedule='sideways' is invalid; allowed: groupwise | joint"),
    (["distill", "--student", "resnet8", "--method", "dfa"], "--method dfa needs --genotype"),
    (["distill", "--student", "resnet8", "--method", "kd", "--opt", "temp=3"], "unknown option(s) temp for method kd"),
    (["distill", "--student", "resnet8", "--method", "magic"], "unknown distillation method 'magic'; valid distillation methods: vanilla, kd"),
])
def test_cli_mistakes_are_one_line(digits_teacher, tmp_path: Path, args, message):
    teacher_dir, _, _ = digits_teacher
    proc = run_cli(*args, "--teacher", str(teacher_dir), "--out", "o", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr and "Traceback" not in proc.stderr

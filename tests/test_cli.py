"""The command line: tables, JSON, and one clear line (exit 2) for every user mistake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dfa_ray.cli import main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfa_ray.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def test_models_json_lists_every_model_with_params_groups_and_min_size(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert set(rows[0]) == {"name", "params", "groups", "min_size"}
    assert by_name["resnet56"]["params"] == 861_620
    assert [g["blocks"] for g in by_name["resnet56"]["groups"]] == [9, 9, 9]
    assert by_name["wrn_40_2"]["params"] == 2_255_156
    for name in ("resnet8x4", "resnet32x4", "wrn_28_4", "vgg13", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet50"):
        assert name in by_name


def test_models_table_has_one_line_per_model(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["name", "params@100"]
    line = next(l for l in out if l.startswith("resnet20 "))
    assert "278,324" in line and "16x3, 32x3, 64x3" in line


def test_datasets_lists_where_each_is_looked_for(capsys):
    assert main(["datasets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) >= {"digits", "cifar10", "cifar100", "cinic10", "fashion_mnist", "synthetic"}
    assert rows["digits"]["present"] is True
    assert rows["fashion_mnist"]["root"] == "/usr/share/datasets/fashion-mnist"


def test_teacher_command_trains_and_writes_its_folder(tmp_path: Path):
    out = tmp_path / "t"
    proc = run_cli("teacher", "--model", "resnet8", "--data", "digits", "--epochs", "2", "--set", "batch_size=256",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "[teacher resnet8] epoch   2/2" in proc.stdout
    assert "test accuracy" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"]["epochs"] == 2 and metrics["recipe"]["batch_size"] == 256
    assert (out / "checkpoint.pt").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["teacher", "--model", "resnet9", "--out", "x"], "unknown model 'resnet9'; valid models: "),
        (["teacher", "--model", "resnet8", "--data", "imagenet", "--out", "x"], "unknown dataset 'imagenet'"),
        (["teacher", "--model", "resnet8", "--set", "lr", "--out", "x"], "--set 'lr': expected KEY=VALUE"),
        (["teacher", "--model", "resnet8", "--epochs", "0", "--out", "x"], "argument --epochs: '0' is not an epoch count"),
        (["teacher", "--model", "resnet8", "--data", "cifar100", "--data-root", "/nonexistent", "--out", "x"],
         "/nonexistent"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(args, message, tmp_path):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

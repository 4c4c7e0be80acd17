"""Every command-line mistake a new user makes: one line on stderr naming the argument or file,
exit code 2, no traceback, and nothing trained (no checkpoint, no genotype, no report written).

Run through `dfa_ray.cli.main(argv)` in this process (an exception escaping it would fail the
test with a traceback); two of them also through the installed `dfa-ray` console script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfa_ray.cli import main

HUGE = "99999999999999999999"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A place with a file where folders are expected, a finished teacher and a sweep spec."""
    root = tmp_path_factory.mktemp("mistakes")
    (root / "afile").write_text("not a folder")
    (root / "adir").mkdir()
    from dfa_ray.data import load_dataset
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.engine.teacher import train_teacher

    data = load_dataset("digits")
    train_teacher("resnet8", data, get_recipe("quick", {"epochs": 1, "batch_size": 512}), 0, root / "teacher",
                  device="cpu")
    (root / "spec.yaml").write_text(f"name: m\nstorage: {root / 'runs'}\npairs: [{{teacher: resnet14, student: resnet8}}]\n")
    return root


def mistakes(w: Path) -> list[tuple[list[str], str]]:
    """(argv, what the one line must say)"""
    t = ["teacher", "--model", "resnet8", "--epochs", "1"]
    s = ["search", "--teacher", str(w / "teacher"), "--student", "resnet8", "--epochs", "1"]
    d = ["distill", "--teacher", str(w / "teacher"), "--student", "resnet8", "--epochs", "1"]
    unwritable = "/proc/dfa-ray-no-such-place/out"
    return [
        # outputs: checked first, before any data is loaded
        (t + ["--out", str(w / "afile")], "--out .*afile is a file, not a folder"),
        (t + ["--out", str(w / "afile" / "sub")], "afile is a file, so no folder can be made there"),
        (t + ["--out", unwritable], "--out /proc/dfa-ray-no-such-place/out cannot be created"),
        (s + ["--out", str(w / "afile" / "g.json")], "afile is a file, not a folder"),
        (s + ["--out", str(w / "adir")], "--out .*adir is a folder; give a file name"),
        (s + ["--out", unwritable + "/g.json"], "its folder cannot be created"),
        (d + ["--method", "kd", "--out", str(w / "afile")], "--out .*afile is a file"),
        (d + ["--method", "kd", "--out", unwritable], "cannot be created"),
        (["report", str(w / "runs" / "m"), "--out", str(w / "afile")], "--out .*afile is a file"),
        (["report", str(w / "runs" / "m"), "--out", unwritable], "cannot be created"),
        (["import-teacher", str(w / "afile"), "--format", "repdistiller", "--model", "resnet8", "--data", "digits",
          "--out", str(w / "afile")], "--out .*afile is a file"),
        (["import-teacher", str(w / "afile"), "--format", "repdistiller", "--model", "resnet8", "--data", "digits",
          "--storage", unwritable], "--storage .* cannot be created"),
        (["sweep", str(w / "spec.yaml"), "--storage", str(w / "afile")], "storage .*afile is not writable"),
        # devices
        (t + ["--out", str(w / "o1"), "--device", "tpu"], "--device 'tpu' is not a device; use auto, cpu, cuda"),
        (t + ["--out", str(w / "o1"), "--device", "mps"], "--device 'mps': dfa-ray runs on the CPU or CUDA"),
        (t + ["--out", str(w / "o1"), "--device", "cuda:99"], "--device 'cuda:99'"),
        (s + ["--out", str(w / "g.json"), "--device", "tpu"], "--device 'tpu' is not a device"),
        # numbers: the spec's bounds
        (["teacher", "--model", "resnet8", "--out", str(w / "o2"), "--epochs", HUGE], "argument --epochs: .*1 to 100000"),
        (["teacher", "--model", "resnet8", "--out", str(w / "o2"), "--epochs", "0"], "argument --epochs"),
        (["teacher", "--model", "resnet8", "--out", str(w / "o2"), "--epochs", "ten"], "argument --epochs: 'ten'"),
        (t + ["--out", str(w / "o2"), "--seed", "-1"], "argument --seed: '-1' is not a seed"),
        (t + ["--out", str(w / "o2"), "--seed", HUGE], "argument --seed"),
        (["search", "--teacher", str(w / "teacher"), "--student", "resnet8", "--out", str(w / "g.json"),
          "--epochs", HUGE], "argument --epochs"),
        (d + ["--method", "kd", "--out", str(w / "o3"), "--seed", HUGE], "argument --seed"),
        # values
        (t + ["--out", str(w / "o4"), "--data-opt", "x=" + "9" * 5000], "--data-opt x=...: the value is 5002 characters"),
        (t + ["--out", str(w / "o4"), "--set", "lr=" + "9" * 5000], "--set lr=...: the value is"),
        (t + ["--out", str(w / "o4"), "--data-opt", "normalization"], "--data-opt 'normalization': expected KEY=VALUE"),
        (t + ["--out", str(w / "o4"), "--set", "lrate=0.1"], "lrate"),
        (t + ["--out", str(w / "o4"), "--set", "lr=fast"], "lr"),
        (t + ["--out", str(w / "o4"), "--recipe", "crd2"], "unknown recipe 'crd2'"),
        (t + ["--out", str(w / "o4"), "--data", "cifar1000"], "unknown dataset 'cifar1000'"),
        (["teacher", "--model", "resnet9", "--out", str(w / "o4"), "--epochs", "1"], "unknown model 'resnet9'"),
        (d + ["--method", "kdd", "--out", str(w / "o5")], "kdd"),
        (d + ["--method", "dfa", "--out", str(w / "o5")], "--method dfa needs --genotype"),
        (d + ["--method", "dfa", "--genotype", str(w / "nothing.json"), "--out", str(w / "o5")],
         "--genotype .*nothing.json is not a file"),
        (d + ["--method", "kd", "--opt", "w_klx=1", "--out", str(w / "o5")], "w_klx"),
        (s + ["--out", str(w / "g.json"), "--order", "7"], "order"),
        # inputs
        (s[:2] + [str(w / "noteacher")] + s[3:] + ["--out", str(w / "g.json")], "--teacher .*noteacher does not exist"),
        (d[:2] + [str(w / "afile")] + d[3:] + ["--method", "kd", "--out", str(w / "o6")], "afile"),
        (["sweep", str(w / "nospec.yaml")], "spec file .*nospec.yaml does not exist"),
        (["report", str(w / "nosweep")], "nosweep"),
        (["import-teacher", str(w / "nockpt.pth"), "--format", "repdistiller", "--model", "resnet8", "--data",
          "digits", "--out", str(w / "o7")], "checkpoint .*nockpt.pth does not exist"),
        (["import-teacher", str(w / "afile"), "--format", "timm", "--model", "resnet8", "--data", "digits"],
         "argument --format: invalid choice: 'timm'"),
        # plug-ins
        (t + ["--out", str(w / "o8"), "--plugin", "no_such_plugin_module"],
         "--plugin 'no_such_plugin_module': no module of that name"),
        (t + ["--out", str(w / "o8"), "--plugin", "bad name!"], "--plugin 'bad name!': not a module name"),
        # argparse's own mistakes, one line too
        (["teacher", "--model", "resnet8"], "the following arguments are required: --out"),
        (t + ["--out", str(w / "o9"), "--epohcs", "3"], "unrecognized arguments: --epohcs 3"),
        (["train"], "invalid choice: 'train'"),
        ([], "the following arguments are required: command"),
    ]


def test_a_spec_mistake_names_its_field_without_a_traceback(world, capsys):
    """Spec mistakes keep the spec's own form: a header line and one line per problem."""
    assert main(["sweep", str(world / "spec.yaml"), "--set", "search.epochs=0", "--set", "resources.cpu=0"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert lines[0].startswith("dfa-ray sweep: error: invalid sweep spec") and "Traceback" not in err
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == ["resources.cpu", "search.epochs"]
    assert not (world / "runs").exists()


def checkpoints_under(root: Path) -> set[Path]:
    return {p for pattern in ("**/checkpoint.pt", "**/*.json", "**/report.md", "**/state.pt")
            for p in root.glob(pattern)}


def test_every_mistake_is_one_line_exit_2_and_trains_nothing(world, capsys):
    before = checkpoints_under(world)
    assert (world / "teacher" / "checkpoint.pt") in before
    failures = []
    for argv, expected in mistakes(world):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse exits by itself
            rc = exc.code
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        import re

        ok = (rc == 2 and len(lines) == 1 and "Traceback" not in err and lines[0].startswith("dfa-ray")
              and re.search(expected, lines[0]) is not None and not out.strip())
        if not ok:
            failures.append(f"{argv[:6]}...: rc={rc} stdout={out[:200]!r} stderr={err[:400]!r}")
    assert not failures, "\n".join(failures)
    assert checkpoints_under(world) == before  # nothing trained, no genotype or report written
    for name in ("o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8", "o9"):
        assert not list((world / name).glob("*")) if (world / name).exists() else True


def test_the_console_script_gives_the_same_line(world):
    """The installed entry point, as a user runs it (a fresh process: no traceback either)."""
    script = Path(sys.executable).with_name("dfa-ray")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for argv, expected in [(["teacher", "--model", "resnet8", "--out", str(world / "afile")], "is a file"),
                           (["teacher", "--model", "resnet8", "--out", str(world / "o1"), "--device", "tpu"],
                            "is not a device")]:
        proc = subprocess.run([str(script), *argv], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and expected in proc.stderr and "Traceback" not in proc.stderr


def test_version(capsys):
    import dfa_ray

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"dfa-ray {dfa_ray.__version__}"


def test_a_good_command_still_runs(world, capsys):
    """The checks refuse mistakes only: a correct teacher command with --epochs/--seed at the
    spec's bounds' inside passes them and trains (one epoch)."""
    out = world / "good"
    assert main(["teacher", "--model", "resnet8", "--out", str(out), "--epochs", "1", "--seed", "4294967295",
                 "--set", "batch_size=512", "--set", "lr=5e-2", "--quiet", "--device", "cpu"]) == 0
    assert (out / "checkpoint.pt").is_file()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["meta"]["seed"] == 4294967295 and state["meta"]["recipe"]["lr"] == pytest.approx(0.05)
    assert isinstance(state["meta"]["recipe"]["lr"], float)

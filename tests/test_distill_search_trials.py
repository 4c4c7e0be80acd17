"""experiments/distill_search_trials.py: every search trial's genotype is distilled under the
recipe, data and teacher of the sweep's own dfa rows, and its table gives, per trial, the same
accuracy as `dfa-ray distill` of that genotype."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dfa_ray.cli import main as cli  # noqa: E402
from dfa_ray.dfa import pair_groups, reference_genotype
from dfa_ray.engine.recipes import get_recipe
from dfa_ray.models import create_model
from dfa_ray.results import ResultsWriter
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `experiments` is a folder of the repository
from experiments.distill_search_trials import main as probe  # noqa: E402


def _fake_sweep(tmp_path, teacher_dir, teacher):
    """A sweep folder with two finished search trials (genotypes last / average, lambda 2) and
    one dfa row whose config names the recipe, the data and the teacher."""
    student = create_model("resnet8", num_classes=10, in_channels=1)
    pairing = pair_groups(teacher, student, 8)
    sweep = tmp_path / "sweep"
    writer = ResultsWriter(sweep, {"sweep": "s", "pair": "resnet20->resnet8", "teacher": "resnet20",
                                   "student": "resnet8", "dataset": "digits", "seed": 0,
                                   "written_at": datetime.now(timezone.utc)})
    genotypes = {}
    for tid, kind, gamma in [("a_00000", "last", 0.5), ("a_00001", "average", 4.0)]:
        g = reference_genotype(kind, pairing, "resnet20", "resnet8", "digits")
        g = dataclasses.replace(g, options={"lam": 2.0, "gamma_ts": gamma, "preact": True})
        genotypes[tid] = g
        common = {"stage": "search", "trial_id": tid, "method": "search", "config": {}}
        writer.write_epoch({**common, "epoch": 3, "val_acc": 50.0 + gamma})
        writer.write_trial({**common, "status": "completed", "epochs_run": 3, "epochs_planned": 3,
                            "genotype": json.dumps(g.to_dict())})
    recipe = get_recipe("quick", {"epochs": 3, "batch_size": 64, "momentum": 0.8}).model_dump(mode="json")
    config = {"teacher_path": str(teacher_dir), "student": "resnet8", "data_spec.name": "digits",
              **{f"recipe.{k}": v for k, v in recipe.items()}}
    (sweep / "spec.json").write_text(json.dumps({"distill": {"options": {"dfa": {"stage_weights": "halving"}}}}))
    for seed in (0, 1):
        writer.write_trial({"stage": "distill", "trial_id": f"d_{seed}", "method": "dfa", "seed": seed,
                            "config": config, "status": "completed", "epochs_run": 3, "epochs_planned": 3})
    return sweep, genotypes


@pytest.mark.slow
def test_every_search_trial_is_distilled_as_the_cli_would(digits_teacher, tmp_path, capsys):
    teacher_dir, teacher, _ = digits_teacher
    sweep, genotypes = _fake_sweep(tmp_path, teacher_dir, teacher)
    assert probe([str(sweep), "--seeds", "1"]) == 0
    table = capsys.readouterr().out.strip().splitlines()[-2:]
    # by hand: the same genotype through `dfa-ray distill`, seed 1
    path = tmp_path / "g.json"
    path.write_text(json.dumps(genotypes["a_00001"].to_dict()))
    assert cli(["distill", "--teacher", str(teacher_dir), "--student", "resnet8", "--method", "dfa",
                "--genotype", str(path), "--data", "digits", "--recipe", "quick", "--epochs", "3",
                "--set", "batch_size=64", "--set", "momentum=0.8", "--opt", "stage_weights=halving", "--seed", "1", "--quiet", "--out", str(tmp_path / "by_hand")]) == 0
    by_hand = json.loads((tmp_path / "by_hand" / "metrics.json").read_text())
    assert by_hand["options"]["w_feat"] == 2.0  # lambda from the genotype, as in the sweep
    row = next(line for line in table if "a_00001" in line).split()
    assert row[:4] == ["resnet20->resnet8", "a_00001", "2", "4.00"] and row[4] == "54.00%"
    probed = json.loads((sweep / "search_trials_distilled" / "resnet20-to-resnet8" / "a_00001" / "seed1"
                         / "metrics.json").read_text())
    assert probed["final"]["test_acc_last"] == by_hand["final"]["test_acc_last"] > 30.0  # the same run; it learned
    assert probed["options"] == by_hand["options"] and probed["options"]["stage_weights"] == "halving"
    assert probed["recipe"] == by_hand["recipe"] and probed["recipe"]["momentum"] == 0.8
    assert float(row[5]) == pytest.approx(by_hand["final"]["test_acc_last"], abs=0.005)
    assert row[6:8] == ["+-", "nan"]  # one seed: no spread
    assert " ".join(row[8:]) == "0.33 0.33 0.33 | 0.33 0.33 0.33 | 0.33 0.33 0.33"  # average: resnet20's 3 blocks
    assert (sweep / "search_trials_distilled" / "resnet20-to-resnet8" / "a_00000" / "seed1" / "metrics.json").exists()

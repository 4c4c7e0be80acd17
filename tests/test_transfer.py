"""Genotype transfer (the paper's DFA-T: search on one dataset, distil on another): refused by
default with one clear error, accepted with the transfer switch, and recorded with the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dfa_ray.cli import main
from dfa_ray.dfa.genotype import Genotype, reference_genotype
from dfa_ray.dfa.pairing import pair_groups
from dfa_ray.engine.distill import build_distill_run
from dfa_ray.engine.recipes import get_recipe
from dfa_ray.errors import CheckpointError
from dfa_ray.models import create_model


def _foreign_genotype(teacher, data, path: Path, dataset: str = "fashion_mnist") -> Path:
    """A genotype for resnet20 -> resnet8 that says it was searched on `dataset`."""
    student = create_model("resnet8", num_classes=10, in_channels=data.info.in_channels)
    pairing = pair_groups(teacher, student, data.info.image_size, "resnet20", "resnet8")
    g = reference_genotype("average", pairing, "resnet20", "resnet8", dataset)
    doc = g.to_dict()
    doc["kind"] = "search"
    doc["groups"][0]["weights"] = [1.0] + [0.0] * (len(doc["groups"][0]["weights"]) - 1)
    doc["options"] = {"lam": 3.0, "preact": True}
    path.write_text(json.dumps(doc))
    return path


def test_engine_refuses_a_foreign_genotype_unless_told_it_is_a_transfer(digits, digits_teacher, tmp_path):
    folder, teacher, meta = digits_teacher
    path = _foreign_genotype(teacher, digits, tmp_path / "g.json")
    recipe = get_recipe("quick", {"epochs": 1})
    with pytest.raises(CheckpointError, match="searched on fashion_mnist, not on digits.*--transfer"):
        build_distill_run(teacher, "resnet20", "resnet8", digits, recipe, "dfa", 0, genotype=str(path), device="cpu")
    run = build_distill_run(teacher, "resnet20", "resnet8", digits, recipe, "dfa", 0, genotype=str(path),
                            device="cpu", transfer=True)
    assert run.task.genotype.dataset == "fashion_mnist"
    assert run.task.genotype.groups[0].weights[0] == 1.0


def test_transfer_never_crosses_architectures(digits, digits_teacher, tmp_path):
    folder, teacher, meta = digits_teacher
    path = _foreign_genotype(teacher, digits, tmp_path / "g.json")
    doc = json.loads(path.read_text())
    doc["student"] = "resnet14"
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="made for resnet20 -> resnet14 on fashion_mnist, not for resnet20 -> resnet8"):
        build_distill_run(teacher, "resnet20", "resnet8", digits, get_recipe("quick", {"epochs": 1}), "dfa", 0,
                          genotype=str(path), device="cpu", transfer=True)


def test_cli_transfer_switch_and_its_record(digits, digits_teacher, tmp_path, capsys):
    folder, teacher, meta = digits_teacher
    path = _foreign_genotype(teacher, digits, tmp_path / "g.json")
    base = ["distill", "--teacher", str(folder), "--student", "resnet8", "--method", "dfa", "--genotype", str(path),
            "--epochs", "1", "--quiet"]
    out = tmp_path / "run"
    assert main([*base, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "searched on fashion_mnist" in err[0] and "--transfer" in err[0]
    assert not (out / "checkpoint.pt").exists()
    assert main([*base, "--transfer", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    record = metrics.get("transfer") or metrics.get("meta", {}).get("transfer")
    assert record == {"source_dataset": "fashion_mnist", "genotype": str(path)}


def test_sweep_genotype_from_records_the_transfer_in_every_dfa_row(tmp_path, digits, digits_teacher):
    from dfa_ray.spec import parse_spec
    from dfa_ray.sweep import distill_trials, transferred_genotypes
    from dfa_ray.tune.callbacks import trial_identity
    from dfa_ray.tune.configs import to_tune

    folder, teacher, meta = digits_teacher
    source = tmp_path / "source-sweep"
    (source / "genotypes").mkdir(parents=True)
    _foreign_genotype(teacher, digits, source / "genotypes" / "resnet20-to-resnet8.json")
    data = {"name": "t", "storage": str(tmp_path / "runs"), "data": {"name": "digits"},
            "pairs": [{"teacher": "resnet20", "student": "resnet8"}],
            "search": {"enabled": False},
            "distill": {"methods": ["kd", "dfa", "dfa:last"], "seeds": [0, 1],
                        "genotype_from": {"sweep": str(source)}}}
    spec = parse_spec(data)
    genotypes = transferred_genotypes(spec, log=lambda *_: None)
    jobs = distill_trials(spec, spec.pairs[0], folder, list(spec.distill.methods), genotypes["resnet20->resnet8"])
    dfa_jobs = [j for j in jobs if j.method == "dfa"]
    assert len(dfa_jobs) == 2 and all(isinstance(j.genotype, dict) for j in dfa_jobs)
    for job in dfa_jobs:
        assert job.transfer is not None and job.transfer.model_dump() == {
            "source_dataset": "fashion_mnist", "genotype": str(source / "genotypes" / "resnet20-to-resnet8.json")}
        row = trial_identity(to_tune(job))
        assert row["config"]["transfer.source_dataset"] == "fashion_mnist"
        assert "_transfer" not in job.genotype
    # the fair ablation: dfa:last runs with the transferred search's lambda and feature kind
    last = [j for j in jobs if j.method == "dfa:last"]
    assert last and all(j.method_options == {"w_feat": 3.0, "preact": True} and j.genotype is None for j in last)
    assert all(j.transfer is None for j in jobs if j.method == "kd")


def test_spec_genotype_from_problems_are_reported_at_their_field(tmp_path):
    from dfa_ray.errors import ConfigError
    from dfa_ray.spec import parse_spec

    base = {"name": "t", "storage": str(tmp_path), "pairs": [{"teacher": "resnet20", "student": "resnet8"}],
            "search": {"enabled": False}}
    from dfa_ray.sweep import transferred_genotypes

    missing = parse_spec({**base, "distill": {"methods": ["dfa"], "genotype_from": {"sweep": "nope"}}})
    with pytest.raises(ConfigError, match=r"distill.genotype_from: no genotype for resnet20->resnet8 at "
                                          + str(tmp_path / "nope" / "genotypes")):
        transferred_genotypes(missing, log=lambda *_: None)
    two = {**base, "pairs": [{"teacher": "resnet20", "student": "resnet8"}, {"teacher": "resnet20", "student": "resnet14"}]}
    with pytest.raises(ConfigError, match="genotype_from.file.*one genotype file serves one pair"):
        parse_spec({**two, "distill": {"methods": ["dfa"], "genotype_from": {"file": "g.json"}}})
    with pytest.raises(ConfigError, match="exactly one of file"):
        parse_spec({**base, "distill": {"methods": ["dfa"], "genotype_from": {}}})
    with pytest.raises(ConfigError, match="dfa.*search.enabled is false"):
        parse_spec({**base, "distill": {"methods": ["dfa"]}})

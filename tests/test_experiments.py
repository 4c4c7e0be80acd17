"""Every study spec in experiments/ validates, and every pair in it builds its group pairing."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfa_ray.dfa.pairing import pair_groups
from dfa_ray.models import create_model
from dfa_ray.spec import load_spec

EXPERIMENTS = sorted((Path(__file__).resolve().parent.parent / "experiments").glob("*.yaml"))
CLASSES = {"cifar100": 100, "cifar10": 10, "cinic10": 10, "digits": 10, "fashion_mnist": 10, "synthetic": 10}
SIZE = {"digits": 8, "fashion_mnist": 28}


def test_the_study_specs_are_all_there():
    assert {p.name for p in EXPERIMENTS} >= {"quickstart.yaml", "cifar100_dfa_paper.yaml", "cifar100_crd13.yaml",
                                             "cinic10.yaml", "ablation_aggregation.yaml"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_spec_validates_and_its_pairs_build(path: Path, tmp_path: Path):
    spec = load_spec(path, storage=str(tmp_path))
    assert spec.sweep_dir == tmp_path / spec.name
    classes = CLASSES[spec.data.name]
    size = SIZE.get(spec.data.name, 32)
    for pair in spec.pairs:
        teacher = create_model(pair.teacher, num_classes=classes)
        student = create_model(pair.student, num_classes=classes)
        pairing = pair_groups(teacher, student, size, pair.teacher, pair.student)
        assert len(pairing) == student.num_groups


def test_the_paper_and_crd_specs_hold_the_published_pairs():
    crd = load_spec(next(p for p in EXPERIMENTS if p.stem == "cifar100_crd13"))
    assert len(crd.pairs) == 13 and crd.protocol == "crd"
    paper = load_spec(next(p for p in EXPERIMENTS if p.stem == "cifar100_dfa_paper"))
    assert [p.student for p in paper.pairs] == ["wrn_16_4", "wrn_28_2", "wrn_16_2", "resnet56"]
    assert {p.teacher for p in paper.pairs} == {"wrn_28_4"} and paper.protocol == "dfa_author"

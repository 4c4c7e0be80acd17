"""docs/methods.md's worked example is true: its code block, saved as one new module of the
methods package, is a method that the registry, `dfa-ray methods`, `dfa-ray distill`, the spec
and the results all know, with no other file edited."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dfa_ray.engine.methods as methods_pkg
from dfa_ray.cli import main
from dfa_ray.engine.methods import METHODS, build_distiller, import_method_modules
from dfa_ray.errors import ConfigError
from dfa_ray.spec import apply_overrides, parse_spec
from dfa_helpers import batch, tiny_student, tiny_teacher
from test_spec import VALID

DOC = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


@pytest.fixture
def example_method(tmp_path, monkeypatch):
    """The doc's module, found by the package's own discovery; unregistered afterwards."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/methods.md should hold one python example"
    (tmp_path / "logit_mse.py").write_text(blocks[0])
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    monkeypatch.setattr(methods_pkg, "__path__", [*methods_pkg.__path__, str(tmp_path)])
    yield import_method_modules()
    sys.modules.pop("dfa_ray.engine.methods.logit_mse", None)


def test_the_worked_example_is_one_file_that_every_layer_knows(example_method, digits_teacher, tmp_path, capsys):
    assert "logit_mse" in example_method and "logit_mse" in METHODS
    # the method itself: its term is the paper's MSE of the logits, weighted
    d = build_distiller("logit_mse", tiny_teacher(), tiny_student(), {"w_feat": 0.5}, image_size=8)
    x, y = batch(n=4, size=8)
    logits, losses = d.forward_train(x, y)
    with torch.no_grad():
        expected = 0.5 * F.mse_loss(logits, d.teacher(x))
    assert losses["loss_feat"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ConfigError, match="logit_mse option w_feat=-1 is invalid; allowed: a number >= 0"):
        build_distiller("logit_mse", tiny_teacher(), tiny_student(), {"w_feat": -1}, image_size=8)
    # the listing
    assert main(["methods", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "logit_mse")
    assert "Ba & Caruana" in row["paper"]
    assert {o["name"]: o["default"] for o in row["options"]}["w_feat"] == 1.0
    # a spec may list it and set its options; a wrong one names the field
    doc = apply_overrides(VALID, {"distill.methods": ["kd", "logit_mse"], "distill.options": {"logit_mse": {"w_feat": 2}}})
    assert parse_spec(doc).distill.methods == ("kd", "logit_mse")
    bad = apply_overrides(VALID, {"distill.methods": ["logit_mse"], "distill.options": {"logit_mse": {"w_fet": 2}}})
    with pytest.raises(ConfigError, match=r"distill.options.logit_mse.w_fet: unknown option 'w_fet' of method logit_mse"):
        parse_spec(bad)
    # the CLI runs it and records its resolved options
    teacher_dir, _, _ = digits_teacher
    code = main(["distill", "--teacher", str(teacher_dir), "--student", "resnet8", "--method", "logit_mse",
                 "--epochs", "1", "--set", "batch_size=256", "--opt", "w_feat=0.5", "--quiet", "--out", str(tmp_path / "d")])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert metrics["method"] == "logit_mse" and metrics["options"]["w_feat"] == 0.5
    assert metrics["options"]["w_ce"] == 1.0  # the inherited defaults are recorded too


def test_every_module_of_the_package_is_imported():
    import pkgutil

    for m in pkgutil.iter_modules(methods_pkg.__path__):
        if not m.name.startswith("_"):
            assert f"dfa_ray.engine.methods.{m.name}" in sys.modules, m.name

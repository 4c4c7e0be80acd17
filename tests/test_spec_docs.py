"""docs/spec.md is generated from the spec's pydantic models: the committed file must be what
`python -m dfa_ray.spec_docs` writes now, so the reference cannot drift from the validator."""

from __future__ import annotations

from pathlib import Path

from dfa_ray import spec as S
from dfa_ray.spec_docs import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "spec.md"


def test_committed_reference_is_the_generated_one():
    assert DOC.read_text() == render(), "docs/spec.md is stale: run `python -m dfa_ray.spec_docs > docs/spec.md`"


def test_reference_names_every_key_with_its_bounds():
    text = render()
    for model in (S.SweepSpec, S.DataSpec, S.TeachersSpec, S.PairSpec, S.SearchSpec, S.SchedulerSpec, S.DistillSpec,
                  S.ResourcesSpec, S.FastSpec):
        assert f"## {model.__name__}" in text
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in text, (model.__name__, name)
    assert "| `epochs` | int | `6` | >= 1, <= 100000 |" in text  # search.epochs, as the validator bounds it
    assert "| `from` | str or mapping str -> str | `train` |" in text
    assert f"at most\n{S.MAX_SPEC_BYTES} bytes" in text or f"at most {S.MAX_SPEC_BYTES} bytes" in text

"""The torch-free parameter table of `analysis.model_params` matches the model zoo."""

from __future__ import annotations

import pytest

from dfa_ray_analysis.model_params import PARAMS_AT_100_CLASSES, param_count, param_ratio
from dfa_ray.models import MODELS, model_summary


def test_table_lists_every_model_of_the_zoo():
    assert sorted(PARAMS_AT_100_CLASSES) == sorted(MODELS.names())


@pytest.mark.parametrize("name", sorted(MODELS.names()))
def test_parameter_count_matches_model_summary(name):
    assert param_count(name) == model_summary(name)["params"], (
        f"analysis/model_params.py is stale for {name}: regenerate it from `dfa-ray models --json`")


def test_known_counts_and_ratio():
    assert param_count("wrn_40_2") == 2_255_156 and param_count("resnet20") == 278_324  # the CRD benchmark's counts
    assert param_ratio("resnet56", "resnet20") == pytest.approx(861_620 / 278_324)
    assert param_count("no_such_model") is None and param_ratio("resnet56", "no_such_model") is None

"""Shared test set-up: one torch thread (the CI machine has 2 cores and tests run side by side
with Ray workers), and small cached datasets."""

from __future__ import annotations

import pytest
import torch

# prints the reliability table (faults and bad inputs tried, nothing lost) at the end of a run
pytest_plugins = ["reliability_plugin"]

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from dfa_ray.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_teacher(digits, tmp_path_factory):
    """A resnet20 teacher trained briefly on digits: (folder, model, meta)."""
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.engine.teacher import load_teacher, train_teacher

    out = tmp_path_factory.mktemp("teacher-resnet20")
    train_teacher("resnet20", digits, get_recipe("quick", {"epochs": 6}), seed=0, out_dir=out, device="cpu")
    model, meta = load_teacher(out, digits)
    return out, model, meta

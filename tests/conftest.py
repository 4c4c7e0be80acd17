"""Shared test set-up: one torch thread (the CI machine has 2 cores and tests run side by side
with Ray workers), and small cached datasets."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from dfa_ray.data import load_dataset

    return load_dataset("digits")

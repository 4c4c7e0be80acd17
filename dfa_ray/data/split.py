"""Seeded, stratified hold-out splits.

Why: model selection (search, early stopping, ASHA) must use a held-out part of the training
set, never the test set (docs/protocols.md, pitfalls). Stratifying keeps every class's share, so
a small held-out split of a 100-class set still has every class; seeding makes the split part
of the recorded configuration.
"""

from __future__ import annotations

import math

import torch

from dfa_ray.data.base import ImageSet
from dfa_ray.errors import ConfigError


def stratified_split(
    labels: torch.Tensor, holdout_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept indices, held-out indices) of `labels`, both sorted ascending.

    Per class c with n_c samples, floor(n_c * holdout_fraction + 0.5) samples are held out,
    chosen by a permutation from one CPU generator seeded with `seed` (classes visited in
    ascending order), so the result depends only on (labels, fraction, seed).
    The two index sets are disjoint and together cover every position.
    """
    if not 0.0 <= float(holdout_fraction) < 1.0:
        raise ConfigError(
            f"holdout_fraction must be in [0, 1), got {holdout_fraction}; "
            "it is the share of each class moved to the held-out split (e.g. 0.1)"
        )
    labels = torch.as_tensor(labels).detach().cpu()
    if labels.dim() != 1:
        raise ConfigError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    generator = torch.Generator().manual_seed(int(seed))
    held_parts = []
    for cls in torch.unique(labels, sorted=True).tolist():
        members = torch.nonzero(labels == cls, as_tuple=False).flatten()
        n_held = int(math.floor(members.numel() * float(holdout_fraction) + 0.5))
        perm = torch.randperm(members.numel(), generator=generator)
        held_parts.append(members[perm[:n_held]])
    is_held = torch.zeros(labels.numel(), dtype=torch.bool)
    if held_parts:
        is_held[torch.cat(held_parts)] = True
    kept = torch.nonzero(~is_held, as_tuple=False).flatten()
    held = torch.nonzero(is_held, as_tuple=False).flatten()
    return kept, held


def holdout_split(ds: ImageSet, holdout_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(kept, held-out) ImageSets of `ds`, split by `stratified_split` on its labels."""
    kept, held = stratified_split(ds.labels, holdout_fraction, seed)
    return ds.subset(kept), ds.subset(held)

"""The architecture parameters of DFA: one beta vector per paired group, alpha = softmax(beta),
and the aggregate A_g = sum_j alpha_g^j T_g^j of a group's teacher candidates.

Candidates are passed stacked, (N, B, C, H, W), already resized to the student's size:
resizing (pooling or bilinear) is linear, so resizing each candidate once per batch and
weighting afterwards equals resizing the aggregate, and the teacher work is done once per
batch whatever alpha becomes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def aggregate(weights: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
    """sum_j weights[j] * stacked[j] for stacked candidates (N, ...) -> (...)."""
    if weights.shape != stacked.shape[:1]:
        raise ValueError(f"{weights.numel()} weights for {stacked.shape[0]} candidates")
    return torch.tensordot(weights.to(stacked.dtype), stacked, dims=1)


class Aggregation(nn.Module):
    """beta_g for every paired group as an `nn.ParameterList` (so it is in the state dict).

    Initialised to `init_std * randn` from a generator seeded by `seed`, so a trial's start
    is reproducible and independent of the global RNG state.
    """

    def __init__(self, num_candidates: Sequence[int], seed: int = 0, init_std: float = 1e-3) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        self.betas = nn.ParameterList(
            [nn.Parameter(init_std * torch.randn(int(n), generator=gen)) for n in num_candidates]
        )

    def __len__(self) -> int:
        return len(self.betas)

    @property
    def num_candidates(self) -> list[int]:
        return [b.numel() for b in self.betas]

    def alpha(self, g: int, detach: bool = False) -> torch.Tensor:
        beta = self.betas[g]
        return torch.softmax(beta.detach() if detach else beta, dim=0)

    def alphas(self, detach: bool = True) -> list[torch.Tensor]:
        return [self.alpha(g, detach) for g in range(len(self))]

    def forward(self, g: int, stacked: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """A_g from group g's stacked candidates; `detach` holds alpha constant (L_train)."""
        return aggregate(self.alpha(g, detach), stacked)

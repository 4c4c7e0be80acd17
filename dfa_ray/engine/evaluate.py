"""Top-1, top-5 and mean cross-entropy of a network over a loader."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from dfa_ray.engine.runtime import autocast


@torch.no_grad()
def evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    bf16: bool = False,
) -> dict[str, float]:
    """Accuracies in percent and the mean loss; counts stay on the device until the end."""
    correct1 = torch.zeros((), device=device, dtype=torch.long)
    correct5 = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    seen = 0
    for x, y in batches:
        with autocast(device, bf16):
            logits = forward(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
        seen += y.shape[0]
    if seen == 0:
        return {"acc": float("nan"), "top5": float("nan"), "loss": float("nan")}
    return {
        "acc": 100.0 * correct1.item() / seen,
        "top5": 100.0 * correct5.item() / seen,
        "loss": loss_sum.item() / seen,
    }

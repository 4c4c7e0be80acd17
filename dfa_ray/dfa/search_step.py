"""One whole search step, and the optimisers it needs, for the engine's search loop.

`search_step` = architecture step (upper level, on the architecture batch), then the weight
step (SGD on L_train, gradient clipping), then the TS-connector step (SGD on L_TS with the
student's weights excluded), in that order (docs/method.md, stage 1). Epochs,
loaders, the cosine schedule and checkpoints belong to the loop in `dfa_ray.engine`.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from dfa_ray.dfa.architect import Architect
from dfa_ray.dfa.options import SearchOptions
from dfa_ray.dfa.search_net import Metrics, SearchBatch, SearchNet

Batch = tuple[torch.Tensor, torch.Tensor]


def make_weight_optimizer(net: SearchNet) -> torch.optim.SGD:
    """SGD over the student and ST connectors (lr, momentum, weight decay from the options)."""
    o = net.options
    return torch.optim.SGD(net.weight_parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def make_ts_optimizer(net: SearchNet) -> torch.optim.SGD:
    """SGD over the TS connectors, with the same hyper-parameters as the weights (the loop
    should anneal it with the same schedule)."""
    o = net.options
    return torch.optim.SGD(net.ts_parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def make_cosine_scheduler(optimizer: torch.optim.Optimizer, options: SearchOptions, total: int):
    """Cosine from `options.lr` to `options.lr_min` over `total` scheduler steps."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(int(total), 1), eta_min=options.lr_min)


class SearchParts(NamedTuple):
    net: SearchNet
    architect: Architect
    weight_optimizer: torch.optim.SGD
    ts_optimizer: torch.optim.SGD


def build_search(
    teacher: nn.Module,
    student: nn.Module,
    options: SearchOptions | None = None,
    *,
    image_size: int = 32,
    seed: int = 0,
    teacher_name: str | None = None,
    student_name: str | None = None,
) -> SearchParts:
    """Search network, architect and both optimisers for one pair."""
    net = SearchNet(
        teacher, student, options, image_size=image_size, seed=seed,
        teacher_name=teacher_name, student_name=student_name,
    )
    return SearchParts(net, Architect(net), make_weight_optimizer(net), make_ts_optimizer(net))


def search_step(
    net: SearchNet,
    architect: Architect,
    weight_batch: Batch | SearchBatch,
    arch_batch: Batch | SearchBatch,
    weight_optimizer: torch.optim.Optimizer,
    ts_optimizer: torch.optim.Optimizer,
    active_groups: Sequence[int] | None = None,
    lr: float | None = None,
    arch_step: bool = True,
) -> Metrics:
    """Architecture step, weight step, TS-connector step; returns the metrics.

    Batches are (x, y) or already prepared `SearchBatch`es (the teacher runs once per batch).
    `active_groups` defaults to all pairs for `joint` and is required for `groupwise` (use
    `net.active_groups(progress)`). `lr` (the xi of the unrolled step) defaults to the weight
    optimiser's current lr. Metric values are detached 0-dim tensors (no device sync here):
    loss_upper, loss_st, loss_ts, loss_reg, arch_acc (architecture batch, active groups; at
    the virtual weights w' for order 2), loss_train, loss_ce, loss_feat, acc (weight batch,
    all groups), loss_ts_connector. `arch_step=False` (a warm-up step) leaves beta as it is
    and only measures the upper loss on the architecture batch.
    """
    net.train()
    wb = weight_batch if isinstance(weight_batch, SearchBatch) else net.prepare(*weight_batch)
    ab = arch_batch if isinstance(arch_batch, SearchBatch) else net.prepare(*arch_batch)
    if active_groups is None:
        if net.options.schedule != "joint":
            raise ValueError("groupwise search: pass active_groups=net.active_groups(progress)")
        active_groups = list(range(net.num_pairs))
    if lr is None:
        lr = float(weight_optimizer.param_groups[0]["lr"])

    if arch_step:
        metrics = dict(architect.step(wb, ab, weight_optimizer, lr, active_groups))
    else:  # a warm-up step: beta stays; the upper loss is only measured, on copies of the BN
        # buffers as in the architect's step (the architecture split must not feed the
        # running statistics its held-out accuracy is measured with)
        with torch.no_grad():
            _, metrics = net.call("upper_loss", ab, active_groups)

    weight_optimizer.zero_grad(set_to_none=True)
    loss, m = net.weight_loss(wb)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.weight_parameters(), net.options.grad_clip)
    weight_optimizer.step()
    metrics.update(m)

    ts_optimizer.zero_grad(set_to_none=True)
    ts = net.ts_connector_loss(wb)
    ts.backward()
    torch.nn.utils.clip_grad_norm_(net.ts_parameters(), net.options.grad_clip)
    ts_optimizer.step()
    metrics["loss_ts_connector"] = ts.detach()
    return metrics

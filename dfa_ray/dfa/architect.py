"""The architecture (upper-level) step of the DFA search, after DARTS' `cnn/architect.py`.

One public method, `Architect.step`. First order: the gradient of the upper objective at the
current weights. Second order (DARTS unrolled, option `order: 2`):

    w' = w - xi * (mu * buf + grad_w L_train(w, beta) + wd * w)

mirroring the weight optimiser's momentum buffers and weight decay (xi = the current weight
lr), then

    dL/dbeta = d_beta L_up(w', beta) - xi * H v,   v = grad_{w'} L_up(w', beta),
    H v ~ (grad_beta L_train(w + eps v) - grad_beta L_train(w - eps v)) / (2 eps),
    eps = 0.01 / ||v||.

That finite-difference product (option `hvp: finite_difference`, DARTS' choice) is cheap
but can be far off: against the exact unrolled gradient its relative error was 1e-3 on
resnet14 -> resnet8, 4e-2 on resnet14 -> ShuffleV1 and 0.33 on a small-map pair. beta has
only 2-9 entries per group, so option `hvp: exact` (the default) instead differentiates
through the virtual step itself (double backward: w' is built with `create_graph=True` from a
weight loss whose alpha is not detached, and d L_up(w'(beta), beta) / d beta is taken in one
pass). Option `virtual_clip` clips the virtual step's gradient to `grad_clip` as the real
step does; the exact mode differentiates through the clipping too, the finite-difference
mode scales its product by the same factor (the norm's own derivative is left out).

The weights are substituted with `torch.func.functional_call` (via `SearchNet.call`); the
real weights, their grads and BN statistics are not touched. Adam updates the betas; in the
`groupwise` schedule only the active groups' betas get a gradient, and the others keep
`grad = None`, so that Adam (weight decay included) leaves them bit-identical. The computed
hypergradient stays in `beta.grad` until the next step (for inspection and tests).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from dfa_ray.dfa.search_net import Metrics, SearchBatch, SearchNet


class Architect:
    """Owns the betas' Adam optimiser and performs the upper-level step."""

    def __init__(self, net: SearchNet) -> None:
        o = net.options
        self.net = net
        self.optimizer = torch.optim.Adam(
            net.arch_parameters(), lr=o.arch_lr, betas=o.arch_betas, weight_decay=o.arch_weight_decay
        )

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    # -- the step ---------------------------------------------------------------------------
    def step(
        self,
        weight_batch: SearchBatch,
        arch_batch: SearchBatch,
        weight_optimizer: torch.optim.Optimizer,
        lr: float,
        active_groups: Sequence[int],
    ) -> Metrics:
        """Update the betas of `active_groups` on `arch_batch`; returns the upper-level
        metrics (loss_upper, loss_st, loss_ts, loss_reg, arch_acc). `weight_batch`,
        `weight_optimizer` and `lr` are used by the second-order step only."""
        groups = sorted(set(int(g) for g in active_groups))
        if not groups or groups[0] < 0 or groups[-1] >= self.net.num_pairs:
            raise ValueError(f"active groups {list(active_groups)} not in 0..{self.net.num_pairs - 1}")
        betas = [self.net.aggregation.betas[g] for g in groups]
        if self.net.options.order == 1:
            grads, metrics = self._first_order(arch_batch, groups, betas)
        elif self.net.options.hvp == "exact" and lr != 0:
            grads, metrics = self._unrolled_exact(weight_batch, arch_batch, weight_optimizer, lr, groups, betas)
        else:
            grads, metrics = self._unrolled(weight_batch, arch_batch, weight_optimizer, lr, groups, betas)
        for b in self.net.arch_parameters():
            b.grad = None
        for b, g in zip(betas, grads):
            b.grad = g
        self.optimizer.step()
        return metrics

    # -- helpers ------------------------------------------------------------------------------
    def _first_order(
        self, arch_batch: SearchBatch, groups: list[int], betas: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], Metrics]:
        # weights as constants: autograd then only walks the paths that reach beta
        const = {n: p.detach() for n, p in self.net.named_weight_parameters()}
        loss, metrics = self.net.call("upper_loss", arch_batch, groups, params=const)
        return _grads(loss, betas), metrics

    def _virtual_step(
        self,
        names: list[str],
        ws: list[torch.Tensor],
        grads: list[torch.Tensor],
        weight_optimizer: torch.optim.Optimizer,
        xi: float,
    ) -> list[torch.Tensor]:
        """w' = w - xi * (mu * buf + clip(grad) + wd * w), with the weight optimiser's
        momentum and weight decay. Differentiable in `grads` (the exact mode needs that)."""
        group_of = {id(p): grp for grp in weight_optimizer.param_groups for p in grp["params"]}
        scale = self._clip_scale(grads)
        w_virtual = []
        for name, p, g in zip(names, ws, grads):
            grp = group_of.get(id(p))
            if grp is None:
                raise ValueError(
                    f"the weight optimiser does not hold {name}; build it over net.weight_parameters()"
                )
            w = p.detach()
            d = scale * g + grp.get("weight_decay", 0.0) * w
            buf = weight_optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                d = d + grp.get("momentum", 0.0) * buf
            w_virtual.append(w - xi * d)
        return w_virtual

    def _clip_scale(self, grads: list[torch.Tensor]) -> torch.Tensor | float:
        """clip_grad_norm_'s factor min(1, max_norm / (||g|| + 1e-6)) when `virtual_clip`."""
        o = self.net.options
        if not o.virtual_clip:
            return 1.0
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        return torch.clamp(o.grad_clip / (norm + 1e-6), max=1.0)

    def _virtual_weights(
        self, batch: SearchBatch, weight_optimizer: torch.optim.Optimizer, xi: float
    ) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor], torch.Tensor | float]:
        """(names, w, w', clip scale) with w' = w - xi * (mu * buf + clip(grad L_train) + wd * w)."""
        named = self.net.named_weight_parameters()
        names = [n for n, _ in named]
        ws = [p for _, p in named]
        loss, _ = self.net.call("weight_loss", batch)
        grads = _grads(loss, ws)
        with torch.no_grad():
            w_virtual = self._virtual_step(names, ws, grads, weight_optimizer, xi)
            scale = self._clip_scale(grads)
        return names, [p.detach() for p in ws], w_virtual, scale

    def _unrolled_exact(
        self,
        weight_batch: SearchBatch,
        arch_batch: SearchBatch,
        weight_optimizer: torch.optim.Optimizer,
        xi: float,
        groups: list[int],
        betas: list[torch.Tensor],
    ) -> tuple[list[torch.Tensor], Metrics]:
        """d L_up(w'(beta), beta) / d beta by double backward through the virtual step."""
        named = self.net.named_weight_parameters()
        names = [n for n, _ in named]
        ws = [p.detach().requires_grad_() for _, p in named]
        loss, _ = self.net.call("weight_loss", weight_batch, detach_alpha=False, params=dict(zip(names, ws)))
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, ws, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(w) if g is None else g for w, g in zip(ws, grads)]
        else:
            grads = [torch.zeros_like(w) for w in ws]
        # the optimiser's state is keyed by the real parameters: map them to the copies' values
        w_virtual = self._virtual_step(names, [p for _, p in named], grads, weight_optimizer, xi)
        upper, metrics = self.net.call("upper_loss", arch_batch, groups, params=dict(zip(names, w_virtual)))
        return _grads(upper, betas), metrics

    def _unrolled(
        self,
        weight_batch: SearchBatch,
        arch_batch: SearchBatch,
        weight_optimizer: torch.optim.Optimizer,
        xi: float,
        groups: list[int],
        betas: list[torch.Tensor],
    ) -> tuple[list[torch.Tensor], Metrics]:
        names, ws, w_virtual, scale = self._virtual_weights(weight_batch, weight_optimizer, xi)
        w_virtual = [w.requires_grad_() for w in w_virtual]
        loss, metrics = self.net.call("upper_loss", arch_batch, groups, params=dict(zip(names, w_virtual)))
        grads = _grads(loss, betas + w_virtual)
        d_beta, v = grads[: len(betas)], grads[len(betas) :]
        if xi == 0:
            return d_beta, metrics
        implicit = self._hessian_vector_product(weight_batch, names, ws, v, betas)
        return [d - xi * float(scale) * h for d, h in zip(d_beta, implicit)], metrics

    def _hessian_vector_product(
        self,
        batch: SearchBatch,
        names: list[str],
        ws: list[torch.Tensor],
        v: list[torch.Tensor],
        betas: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        """grad^2_{beta,w} L_train(w, beta) . v by central differences, eps = 0.01 / ||v||."""
        norm = torch.sqrt(sum((x.double() ** 2).sum() for x in v))
        if norm == 0:
            return [torch.zeros_like(b) for b in betas]
        eps = 0.01 / norm.item()
        out = []
        for sign in (1.0, -1.0):
            shifted = {n: w + sign * eps * d for n, w, d in zip(names, ws, v)}
            loss, _ = self.net.call("weight_loss", batch, detach_alpha=False, params=shifted)
            out.append(_grads(loss, betas))
        return [(gp - gm) / (2 * eps) for gp, gm in zip(*out)]


def _grads(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d inputs, zeros where the loss does not depend on an input."""
    if not loss.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]

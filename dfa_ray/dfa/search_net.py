"""The DFA search network: student, connectors and aggregation around a frozen teacher.

It owns the losses of the bi-level search (docs/method.md, stage 1):

- `weight_loss`  = L_train = CE(S(x), y) + lam * sum_g ||F_s^g(S_g) - A_g||^2, alpha detached
  (lower level: student weights and ST connectors);
- `ts_connector_loss` = L_TS with the student's weights excluded (trains the TS connectors
  only; the student's objective is not changed by the bridge);
- `bridge_loss`  = gamma_TS * L_TS + gamma_ST * L_ST + rho * R(beta) (upper level), the TS path
  running through `student.forward_from(g, F_t^g(A_g), preact)`;
- `upper_loss`   = `bridge_loss`, or for `objective: student` the ablation CE + lam * L_ST.

The teacher is frozen (eval mode whatever `train()` says, no grad); `prepare(x, y)` runs it
once per batch and the resulting `SearchBatch` is passed to every loss. `call(...)` runs any
of the losses with substituted weights through `torch.func.functional_call` (the architect's
virtual step) while keeping BN running statistics untouched; only the real weight step
updates them.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dfa_ray.dfa.aggregation import Aggregation
from dfa_ray.dfa.options import SearchOptions
from dfa_ray.dfa.pairing import GroupPairing, pair_groups, spatial_size
from dfa_ray.losses import Connector, entropy, feature_l2, resize_to

Metrics = dict[str, torch.Tensor]
_NAN = float("nan")


class SearchBatch(NamedTuple):
    """A batch with the teacher's candidates of every paired group, computed once.

    cands[i] is pair i's candidates stacked (N, B, C, H, W), resized to the student's size.
    """

    x: torch.Tensor
    y: torch.Tensor
    cands: list[torch.Tensor]


def unit_scale(candidate: torch.Tensor) -> torch.Tensor:
    """`candidate` divided by its root mean square over the whole batch (one scalar per
    candidate and batch), so every candidate of a group has second moment 1."""
    return candidate / candidate.detach().pow(2).mean().sqrt().clamp_min(1e-12)


def scaled_candidates(candidates: list[torch.Tensor], mode: str) -> list[torch.Tensor]:
    """The candidates as option `candidate_scale` says: as they are (`none`) or `unit`."""
    return [unit_scale(c) for c in candidates] if mode == "unit" else list(candidates)


def teacher_candidates(
    teacher: nn.Module, student: nn.Module, pairing: GroupPairing, x: torch.Tensor, preact: bool,
    candidate_scale: str = "none",
) -> list[torch.Tensor]:
    """Every block output of each paired teacher group (scaled as `candidate_scale` says),
    stacked and resized to the student's map size. Runs the teacher without grad; the caller
    keeps it in eval mode."""
    with torch.no_grad():
        _, feats = teacher.forward_groups(x, preact=preact)
        h, w = x.shape[-2:]
        out = []
        for p in pairing:
            stride = student.group_info[p.student_group].stride
            size = (spatial_size(h, stride), spatial_size(w, stride))
            st = torch.stack(scaled_candidates(feats[p.teacher_group], candidate_scale))
            if tuple(st.shape[-2:]) != size:
                n, b = st.shape[:2]
                st = resize_to(st.flatten(0, 1), size).unflatten(0, (n, b))
            out.append(st)
    return out


class SearchNet(nn.Module):
    """Stage-1 network. Group indices below are *pair* indices (one pair per student group,
    equal to the student group index)."""

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        options: SearchOptions | None = None,
        *,
        image_size: int = 32,
        seed: int = 0,
        pairing: GroupPairing | None = None,
        teacher_name: str | None = None,
        student_name: str | None = None,
    ) -> None:
        super().__init__()
        self.options = (options or SearchOptions()).validate()
        self.pairing = pairing or pair_groups(teacher, student, image_size, teacher_name, student_name)
        self.student = student
        self.teacher = teacher
        teacher.requires_grad_(False)
        teacher.eval()
        self.st_connectors = nn.ModuleList(
            Connector(p.student_channels, p.teacher_channels) for p in self.pairing
        )
        self.ts_connectors = nn.ModuleList(
            Connector(p.teacher_channels, p.student_channels) for p in self.pairing
        )
        self.aggregation = Aggregation(
            [p.num_candidates for p in self.pairing], seed=seed, init_std=self.options.beta_init_std
        )

    # -- modes and parameter groups -------------------------------------------------------
    def train(self, mode: bool = True) -> "SearchNet":
        super().train(mode)
        self.teacher.eval()  # the teacher's BN must never use batch statistics
        return self

    @property
    def num_pairs(self) -> int:
        return len(self.pairing)

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Lower-level parameters: the student and the ST connectors (names as in state_dict)."""
        return list(self.student.named_parameters(prefix="student")) + list(
            self.st_connectors.named_parameters(prefix="st_connectors")
        )

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]

    def ts_parameters(self) -> list[nn.Parameter]:
        return list(self.ts_connectors.parameters())

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.aggregation.betas)

    def alphas(self) -> list[torch.Tensor]:
        """alpha_g = softmax(beta_g), detached, for every pair."""
        return self.aggregation.alphas(detach=True)

    def active_groups(self, progress: float) -> list[int]:
        """Pairs searched at `progress` in [0, 1] of the search (e.g. epoch / epochs).

        `joint`: all of them. `groupwise`: one at a time in order, each for an equal share of
        the search (pair floor(progress * G), the last one until the end).
        """
        if self.options.schedule == "joint":
            return list(range(self.num_pairs))
        g = int(math.floor(min(max(progress, 0.0), 1.0) * self.num_pairs))
        return [min(g, self.num_pairs - 1)]

    # -- batches --------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> SearchBatch:
        """Run the frozen teacher once for this batch."""
        self.teacher.eval()
        return SearchBatch(
            x, y, teacher_candidates(self.teacher, self.student, self.pairing, x, self.options.preact,
                                     self.options.candidate_scale)
        )

    # -- loss pieces ----------------------------------------------------------------------
    def student_points(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Student logits and S_g (last block output of each paired student group)."""
        logits, feats = self.student.forward_groups(x, preact=self.options.preact)
        return logits, [feats[p.student_group][-1] for p in self.pairing]

    def st_terms(
        self,
        points: Sequence[torch.Tensor],
        cands: Sequence[torch.Tensor],
        groups: Sequence[int],
        detach_alpha: bool,
    ) -> list[torch.Tensor]:
        """||F_s^g(S_g) - A_g||^2 (mean over elements) for each pair g in `groups`."""
        return [
            feature_l2(self.st_connectors[g](points[g]), self.aggregation(g, cands[g], detach_alpha))
            for g in groups
        ]

    def ts_terms(
        self, cands: Sequence[torch.Tensor], y: torch.Tensor, groups: Sequence[int], detach_alpha: bool
    ) -> list[torch.Tensor]:
        """CE(S_{g+1..G}(F_t^g(A_g)), y) for each pair g in `groups`: the aggregate, mapped to
        student channels, replaces the student's group output and runs to the logits."""
        out = []
        for g in groups:
            h = self.ts_connectors[g](self.aggregation(g, cands[g], detach_alpha))
            logits = self.student.forward_from(self.pairing[g].student_group, h, self.options.preact)
            out.append(F.cross_entropy(logits, y))
        return out

    def regulariser(self, groups: Sequence[int]) -> torch.Tensor:
        """R(beta): +/- the summed entropy of alpha over `groups`, or 0 (option `reg`)."""
        reg = self.options.reg
        beta0 = self.aggregation.betas[0]
        if reg == "none" or not groups:
            return beta0.new_zeros(())
        h = sum(entropy(self.aggregation.alpha(g)) for g in groups)
        return h if reg == "entropy" else -h

    # -- the objectives -------------------------------------------------------------------
    def weight_loss(self, batch: SearchBatch, detach_alpha: bool = True) -> tuple[torch.Tensor, Metrics]:
        """L_train over all pairs (alpha detached unless asked: the architect's Hessian term
        needs it attached)."""
        logits, points = self.student_points(batch.x)
        ce = F.cross_entropy(logits, batch.y)
        feat = torch.stack(self.st_terms(points, batch.cands, range(self.num_pairs), detach_alpha)).sum()
        loss = ce + self.options.lam * feat
        return loss, {
            "loss_train": loss.detach(),
            "loss_ce": ce.detach(),
            "loss_feat": feat.detach(),
            "acc": _accuracy(logits, batch.y),
        }

    def ts_loss(self, batch: SearchBatch, groups: Sequence[int], detach_alpha: bool = True) -> torch.Tensor:
        return torch.stack(self.ts_terms(batch.cands, batch.y, groups, detach_alpha)).sum()

    def ts_connector_loss(self, batch: SearchBatch, groups: Sequence[int] | None = None) -> torch.Tensor:
        """L_TS for training the TS connectors: the student's weights enter as constants (no
        gradient reaches them) and its BN running statistics are not updated; alpha is
        detached. Only `ts_parameters()` receive gradient from this loss."""
        groups = range(self.num_pairs) if groups is None else groups
        frozen = {n: p.detach() for n, p in self.student.named_parameters(prefix="student")}
        # the TS connectors' own BN statistics are updated as in any training step
        frozen.update(self.ts_connectors.named_buffers(prefix="ts_connectors"))
        return self.call("ts_loss", batch, list(groups), params=frozen)

    def bridge_loss(self, batch: SearchBatch, groups: Sequence[int]) -> tuple[torch.Tensor, Metrics]:
        """L_bridge = gamma_TS * L_TS + gamma_ST * L_ST + rho * R(beta) over `groups`.

        A path whose gamma is 0 is not computed (its metric is NaN)."""
        o = self.options
        loss = self.regulariser(groups) * o.rho
        metrics: Metrics = {"loss_reg": loss.detach(), "loss_st": _nan(loss), "loss_ts": _nan(loss)}
        metrics["arch_acc"] = _nan(loss)
        if o.gamma_st != 0:
            logits, points = self.student_points(batch.x)
            l_st = torch.stack(self.st_terms(points, batch.cands, groups, False)).sum()
            loss = loss + o.gamma_st * l_st
            metrics["loss_st"] = l_st.detach()
            metrics["arch_acc"] = _accuracy(logits, batch.y)
        if o.gamma_ts != 0:
            l_ts = self.ts_loss(batch, groups, detach_alpha=False)
            loss = loss + o.gamma_ts * l_ts
            metrics["loss_ts"] = l_ts.detach()
        metrics["loss_upper"] = loss.detach()
        return loss, metrics

    def student_objective(self, batch: SearchBatch, groups: Sequence[int]) -> tuple[torch.Tensor, Metrics]:
        """Ablation `objective: student`: the plain student loss CE + lam * L_ST over `groups`
        (+ rho * R) as the upper objective (the paper reports it collapses onto shallow
        candidates)."""
        logits, points = self.student_points(batch.x)
        ce = F.cross_entropy(logits, batch.y)
        l_st = torch.stack(self.st_terms(points, batch.cands, groups, False)).sum()
        reg = self.regulariser(groups) * self.options.rho
        loss = ce + self.options.lam * l_st + reg
        return loss, {
            "loss_reg": reg.detach(),
            "loss_st": l_st.detach(),
            "loss_ts": _nan(loss),
            "arch_acc": _accuracy(logits, batch.y),
            "loss_upper": loss.detach(),
        }

    def upper_loss(self, batch: SearchBatch, groups: Sequence[int]) -> tuple[torch.Tensor, Metrics]:
        """The architecture objective chosen by option `objective`."""
        if self.options.objective == "student":
            return self.student_objective(batch, groups)
        return self.bridge_loss(batch, groups)

    # -- functional entry point -------------------------------------------------------------
    _CALLABLE = ("weight_loss", "ts_loss", "bridge_loss", "student_objective", "upper_loss")

    def forward(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        """Dispatch to one of the losses by name; exists so that `call` (functional_call) can
        run them with substituted weights. Use the methods directly otherwise."""
        if fn not in self._CALLABLE:
            raise ValueError(f"SearchNet.forward: {fn!r} is not one of {self._CALLABLE}")
        return getattr(self, fn)(*args, **kwargs)

    def _own_buffers(self) -> Iterator[tuple[str, torch.Tensor]]:
        for prefix in ("student", "st_connectors", "ts_connectors"):
            yield from getattr(self, prefix).named_buffers(prefix=prefix)

    def call(self, fn: str, *args: Any, params: Mapping[str, torch.Tensor] | None = None, **kwargs: Any) -> Any:
        """Run loss `fn` with `params` (names as in `named_weight_parameters`, any subset)
        substituted for the module's own, on copies of the BN buffers so that running
        statistics stay as the real weight steps left them."""
        tensors = {n: b.clone() for n, b in self._own_buffers()}
        if params:
            tensors.update(params)
        return functional_call(self, tensors, (fn, *args), kwargs, strict=False)


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.detach().argmax(dim=1) == y).float().mean()


def _nan(like: torch.Tensor) -> torch.Tensor:
    return torch.full((), _NAN, dtype=like.dtype, device=like.device)

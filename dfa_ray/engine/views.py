"""What a method asks of the frozen teacher for a batch, and one forward pass that answers it.

Every distiller declares a `TeacherRequest` (the feature kinds, pre-activation and/or
post-ReLU, and whether it needs the pooled embedding or the stem's output); `teacher_outputs`
runs the teacher once, under `no_grad`, and returns a `TeacherOutputs` that each method reads
its own `Views` from. A single run asks with its own request; a shared-teacher group
(`engine.group`) asks once per batch with the union of its members' requests, so the same
teacher forward serves every member. Both call the very same model methods in the same order
(`forward`, `forward_groups`, `forward_groups_both`), which is why a group member's numbers
equal a separate run's bit for bit (docs/shared_teacher.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn


@dataclass(frozen=True)
class TeacherRequest:
    """What one method (or a union of methods) needs of the teacher beyond its logits.

    `features`: the feature kinds wanted (True: pre-activation, False: post-ReLU; both may be
    asked), `embedding`: the classifier's input, `stem`: the stem's output (FSP). The logits
    always come with a request; a method that needs nothing of the teacher has no request (None).
    """

    features: frozenset[bool] = field(default_factory=frozenset)
    embedding: bool = False
    stem: bool = False

    def union(self, other: "TeacherRequest") -> "TeacherRequest":
        return TeacherRequest(features=self.features | other.features, embedding=self.embedding or other.embedding,
                              stem=self.stem or other.stem)

    @staticmethod
    def merge(requests: Iterable["TeacherRequest | None"]) -> "TeacherRequest | None":
        """The union of the requests given (None when none asks for the teacher)."""
        merged: TeacherRequest | None = None
        for r in requests:
            if r is not None:
                merged = r if merged is None else merged.union(r)
        return merged


@dataclass
class TeacherOutputs:
    """One teacher forward's results: logits, the block outputs per feature kind asked, the
    embedding and the stem's output (None when not asked, or for a model whose stem is the
    identity, as `method_modules.forward_with_stem` reports it)."""

    logits: torch.Tensor
    features: dict[bool, list[list[torch.Tensor]]] = field(default_factory=dict)
    embedding: torch.Tensor | None = None
    stem: torch.Tensor | None = None

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor held (the group checks that no member modified one in place)."""
        out = [self.logits] + [t for feats in self.features.values() for group in feats for t in group]
        return out + [t for t in (self.embedding, self.stem) if t is not None]


def _defined_in(cls: type, name: str) -> type | None:
    return next((k for k in cls.__mro__ if name in k.__dict__), None)


def has_joint_features(model: nn.Module) -> bool:
    """Whether `model.forward_groups_both` is the joint form of the model's own
    `forward_groups` (defined by the same class or a subclass of it): a plug-in model that
    overrides `forward_groups` alone gets two passes instead of a wrong joint one."""
    both = _defined_in(type(model), "forward_groups_both")
    single = _defined_in(type(model), "forward_groups")
    return both is not None and single is not None and issubclass(both, single)


def teacher_outputs(teacher: nn.Module, x: torch.Tensor, request: TeacherRequest) -> TeacherOutputs:
    """Run the (eval-mode, frozen) teacher once on `x` with what `request` asks, under no_grad.

    One feature kind is `forward_groups(x, preact)`, the call a method made on its own before
    groups existed; both kinds are `forward_groups_both(x)`, which does the same operations and
    keeps both tensors of every block. The embedding (the classifier's input) and the stem's
    output are read by hooks, as `forward_groups_embedding` and `forward_with_stem` do.
    """
    kinds = sorted(request.features)
    seen_embedding: list[torch.Tensor] = []
    seen_stem: list[torch.Tensor] = []
    handles = []
    if request.embedding:
        handles.append(teacher.get_classifier().register_forward_pre_hook(
            lambda _m, args: seen_embedding.append(args[0])))
    if request.stem and not isinstance(teacher.stem, nn.Identity):
        handles.append(teacher.stem.register_forward_hook(lambda _m, _a, out: seen_stem.append(out)))
    features: dict[bool, list[list[torch.Tensor]]] = {}
    try:
        with torch.no_grad():
            if not kinds:
                logits = teacher(x)
            elif len(kinds) == 1:
                logits, features[kinds[0]] = teacher.forward_groups(x, preact=kinds[0])
            elif has_joint_features(teacher):
                logits, features[True], features[False] = teacher.forward_groups_both(x)
            else:  # a model without a joint pass: one pass per kind (the hooks keep the first's)
                logits, features[False] = teacher.forward_groups(x, preact=False)
                _, features[True] = teacher.forward_groups(x, preact=True)
    finally:
        for h in handles:
            h.remove()
    return TeacherOutputs(logits=logits, features=features,
                          embedding=seen_embedding[0] if seen_embedding else None,
                          stem=seen_stem[0] if seen_stem else None)

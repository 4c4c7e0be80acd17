"""The layer-group contract every model of the zoo keeps (see docs/design.md, Contracts).

A *layer group* is the run of blocks that share one spatial size. DFA needs, per group, the
output of every block (the teacher's aggregation candidates), the last one (the student's
distillation point), the channel count and stride (to size connectors without a dummy
forward pass), and a way to re-enter the network after a group (the teacher-to-student
bridge path). Groups are indexed from 0 in code.

How pre-activation features work: a block computes a *pre-activation* tensor and then applies
its `final_act` (a ReLU, or identity for blocks that end linearly such as pre-activation WRN
blocks and MobileNetV2's linear bottleneck). The tensor that flows into the next block is
`final_act(pre)`. `forward_groups(x, preact=True)` reports the pre-activation tensors;
`forward_from(g, h, preact=True)` accepts such a tensor and applies the missing activation
of group g's last block before running group g+1 onward, so
`forward_from(g, forward_groups(x, p)[1][g][-1], p) == forward(x)` for either p.
A block's `final_act` must not work in place (`nn.ReLU()`, never `nn.ReLU(inplace=True)`):
`forward_groups` keeps the tensor it is applied to as the pre-activation feature, and
`forward_from` applies it to the caller's tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class GroupInfo:
    """Static description of one layer group, known at construction time."""

    channels: int  # channels of every block output in the group
    stride: int  # spatial reduction of the group's outputs relative to the input (1, 2, 4, ...)
    block_names: tuple[str, ...]  # qualified module names of the blocks, in order

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)


class GroupedBlock(nn.Module):
    """A block whose forward is split into the pre-activation part and `final_act`."""

    final_act: nn.Module

    def forward_pre(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self.forward_pre(x))


class GroupedModel(nn.Module):
    """Base class of the zoo. Subclasses build `stem`, `groups` and implement `forward_head`.

    - `stem(x)`: everything before the first group.
    - `groups`: an `nn.ModuleList` of `nn.ModuleList`s of blocks (GroupedBlock, or any module
      for which `final_act` is identity). Any down-sampling between groups belongs to the
      first block of the next group (a pooling layer can be wrapped as a GroupedBlock prefix:
      see `transition` below).
    - `transitions`: optional `nn.ModuleList` (len G) applied to the input of group g before
      its first block (e.g. VGG's max-pool); identity by default.
    - `forward_head(h, pre_logits=False)`: from the (post-activation) output of the last group
      to the logits; with `pre_logits=True` it stops before the classifier and returns the
      pooled embedding [N, D] (timm's exit), whose width D is the classifier's `in_features`.
    - `group_info`: tuple of GroupInfo, one per group; `min_size`: smallest input side length.
    """

    group_info: tuple[GroupInfo, ...]
    min_size: int

    def __init__(self) -> None:
        super().__init__()
        self.stem: nn.Module = nn.Identity()
        self.groups: nn.ModuleList = nn.ModuleList()
        self.transitions: nn.ModuleList | None = None

    # -- subclasses implement -------------------------------------------------------------
    def forward_head(self, h: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def get_classifier(self) -> nn.Linear:
        """The Linear that maps the pre-logits embedding to the logits: the model's last Linear
        in every family of the zoo (override where it is not)."""
        linears = [m for m in self.modules() if isinstance(m, nn.Linear)]
        if not linears:  # pragma: no cover - every zoo model ends in a Linear
            raise TypeError(f"{type(self).__name__} has no Linear classifier")
        return linears[-1]

    def forward_groups_embedding(
        self, x: torch.Tensor, preact: bool = True
    ) -> tuple[torch.Tensor, list[list[torch.Tensor]], torch.Tensor]:
        """`forward_groups(x, preact)` plus the pre-logits embedding (what `forward_head(h,
        pre_logits=True)` returns), in one forward pass.

        The embedding is read as the classifier's input by a forward pre-hook, so a family that
        overrides `forward_groups` (its own feature wiring) gets this exit unchanged.
        """
        seen: list[torch.Tensor] = []
        handle = self.get_classifier().register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            logits, features = self.forward_groups(x, preact=preact)
        finally:
            handle.remove()
        return logits, features, seen[-1]

    # -- shared machinery ------------------------------------------------------------------
    @property
    def num_groups(self) -> int:
        return len(self.groups)

    def _declare_groups(self, channels: Sequence[int], strides: Sequence[int]) -> None:
        """Set `group_info` from the built `groups` and the declared channels and strides.

        Block names are read off the module tree (`groups.<g>.<i>`), so they cannot drift
        from the blocks that `forward_groups` actually reports.
        """
        if not len(channels) == len(strides) == len(self.groups):
            raise ValueError(
                f"{len(self.groups)} groups but {len(channels)} channels and {len(strides)} strides"
            )
        self.group_info = tuple(
            GroupInfo(
                channels=int(c),
                stride=int(s),
                block_names=tuple(f"groups.{g}.{i}" for i in range(len(blocks))),
            )
            for g, (c, s, blocks) in enumerate(zip(channels, strides, self.groups))
        )

    def _transition(self, g: int, h: torch.Tensor) -> torch.Tensor:
        if self.transitions is None:
            return h
        return self.transitions[g](h)

    @staticmethod
    def _final_act(block: nn.Module) -> nn.Module:
        return getattr(block, "final_act", nn.Identity())

    @staticmethod
    def _pre(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
        forward_pre = getattr(block, "forward_pre", None)
        return forward_pre(h) if forward_pre is not None else block(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for g, blocks in enumerate(self.groups):
            h = self._transition(g, h)
            for block in blocks:
                h = block(h)
        return self.forward_head(h)

    def forward_groups(
        self, x: torch.Tensor, preact: bool = True
    ) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """Logits and, per group, the output of every block (pre-activation if `preact`)."""
        h = self.stem(x)
        features: list[list[torch.Tensor]] = []
        for g, blocks in enumerate(self.groups):
            h = self._transition(g, h)
            outs: list[torch.Tensor] = []
            for block in blocks:
                pre = self._pre(block, h)
                h = self._final_act(block)(pre)
                outs.append(pre if preact else h)
            features.append(outs)
        return self.forward_head(h), features

    def forward_groups_both(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, list[list[torch.Tensor]], list[list[torch.Tensor]]]:
        """`forward_groups(x, True)` and `forward_groups(x, False)` in one pass: (logits,
        pre-activation features, post-activation features). The operations are those of
        `forward_groups`, so each list equals that call's bit for bit; a frozen teacher serving
        methods of both kinds (a shared-teacher group, engine/group.py) runs once. A family that
        overrides `forward_groups` overrides this too (engine.views.has_joint_features checks)."""
        h = self.stem(x)
        pre_features: list[list[torch.Tensor]] = []
        post_features: list[list[torch.Tensor]] = []
        for g, blocks in enumerate(self.groups):
            h = self._transition(g, h)
            pres: list[torch.Tensor] = []
            posts: list[torch.Tensor] = []
            for block in blocks:
                pre = self._pre(block, h)
                h = self._final_act(block)(pre)
                pres.append(pre)
                posts.append(h)
            pre_features.append(pres)
            post_features.append(posts)
        return self.forward_head(h), pre_features, post_features

    def forward_from(self, g: int, h: torch.Tensor, preact: bool = True) -> torch.Tensor:
        """Run from the output of group `g` (0-based; the input of group g+1) to the logits.

        `h` has the form `forward_groups(x, preact)` reports for the last block of group g.
        """
        if not 0 <= g < self.num_groups:
            raise IndexError(f"group {g} out of range 0..{self.num_groups - 1}")
        if preact:
            h = self._final_act(self.groups[g][-1])(h)
        for g_next in range(g + 1, self.num_groups):
            h = self._transition(g_next, h)
            for block in self.groups[g_next]:
                h = block(h)
        return self.forward_head(h)

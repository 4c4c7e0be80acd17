"""DFA stage 2: the student distilled towards a fixed aggregation of teacher features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from dfa_ray.dfa.genotype import Genotype
from dfa_ray.dfa.options import DEFAULT_LAMBDA
from dfa_ray.dfa.pairing import spatial_size
from dfa_ray.dfa.search_net import scaled_candidates
from dfa_ray.engine.methods.base import FeatureOptions, Distiller, option, register_method
from dfa_ray.losses import Connector, feature_l2, resize_to, stage_weights


class DFAOptions(FeatureOptions):
    w_feat: float = option(DEFAULT_LAMBDA, "weight of the feature loss (default: the lambda of the genotype's search)",
                           ge=0)
    preact: bool = option(True, "distil pre-activation features (default: as the genotype's search did)")
    stage_weights: Literal["uniform", "halving"] = option(
        "uniform", "per-group weights c_g: all 1 (uniform) or 2^-(G-g) (halving)")
    candidate_scale: Literal["none", "unit"] = option(
        "none", "teacher candidates as they are, or each divided by its RMS over the batch (unit); default: as the "
        "genotype's search did")


def options_from_search(search_options: Mapping[str, Any]) -> dict[str, Any]:
    """The dfa options a genotype's search fixes: its lambda as the feature weight, its
    feature kind and its candidate scaling (docs/method.md: stage 2 starts from the search's)."""
    out: dict[str, Any] = {}
    if "lam" in search_options:
        out["w_feat"] = float(search_options["lam"])
    if "preact" in search_options:
        out["preact"] = bool(search_options["preact"])
    if "candidate_scale" in search_options:
        out["candidate_scale"] = str(search_options["candidate_scale"])
    return out


@register_method
class DFA(Distiller):
    """DFA stage 2 (Guan et al., ECCV 2020): sum_g c_g ||F_s^g(S_g) - A_g||^2 with the
    aggregation weights of a genotype held fixed (constants). Defaults w_ce 1, w_kl 0,
    w_feat = the lambda the genotype's search used (else `DEFAULT_LAMBDA`), `preact` and
    `candidate_scale` as the search did (else true, none), `stage_weights` uniform | halving."""

    name = "dfa"
    paper = "Guan et al., Differentiable Feature Aggregation Search for Knowledge Distillation, ECCV 2020"
    Options = DFAOptions
    uses = frozenset({"features"})
    takes_genotype = True

    @classmethod
    def default_overrides(cls, genotype: Genotype | None) -> dict[str, Any]:
        return {} if genotype is None else options_from_search(genotype.options)

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        genotype = context.genotype
        genotype.check_pairing(self.pairing)
        self.genotype = genotype
        self.connectors = nn.ModuleList(Connector(p.student_channels, p.teacher_channels) for p in self.pairing)
        # Python floats, not tensors: reading them costs no device sync per step
        self.agg_weights = [list(g.weights) for g in genotype.groups]
        self.stage_weights = stage_weights(len(self.pairing), options.stage_weights)

    def _mix(self, i: int, t_feats: list[list[torch.Tensor]]) -> torch.Tensor:
        """A_g of pair i at the teacher's map size: the genotype's weights over the (scaled)
        candidates; candidates with weight 0 are skipped."""
        cands = scaled_candidates(t_feats[self.pairing[i].teacher_group], self.options.candidate_scale)
        return sum(wj * c for wj, c in zip(self.agg_weights[i], cands) if wj != 0)

    def aggregates(self, t_feats: list[list[torch.Tensor]], x: torch.Tensor) -> list[torch.Tensor]:
        """A_g at the student's size."""
        h, w = x.shape[-2:]
        out = []
        for i, p in enumerate(self.pairing):
            stride = self.student.group_info[p.student_group].stride
            out.append(resize_to(self._mix(i, t_feats), (spatial_size(h, stride), spatial_size(w, stride))))
        return out

    def feature_loss(self, s_feats: list[list[torch.Tensor]], t_feats: list[list[torch.Tensor]],
                     x: torch.Tensor) -> torch.Tensor:
        """The unweighted sum_g c_g L2 term (also used by the search's benchmarks)."""
        targets = self.aggregates(t_feats, x)
        total = x.new_zeros((), dtype=targets[0].dtype)
        for i, p in enumerate(self.pairing):
            s = self.connectors[i](s_feats[p.student_group][-1])
            total = total + self.stage_weights[i] * feature_l2(s, targets[i])
        return total

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        total = s.logits.new_zeros(())
        for i, p in enumerate(self.pairing):
            fs = s.features[p.student_group][-1]
            # A_g at the student map's own size (what `aggregates` computes from the input size)
            target = resize_to(self._mix(i, t.features), tuple(fs.shape[-2:]))
            total = total + self.stage_weights[i] * feature_l2(self.connectors[i](fs), target)
        return {"loss_feat": self.options.w_feat * total}

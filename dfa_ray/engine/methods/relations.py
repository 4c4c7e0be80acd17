"""Methods on the relations between the samples of a batch: SP, PKT, RKD, CC.

Each compares B x B matrices built from the student's and the teacher's representations, so
the two may differ in width and spatial size; no pairing is needed. Layers as in the CRD
benchmark: SP the last group's output, PKT / RKD / CC the pooled pre-logits embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from dfa_ray.engine.methods.base import Distiller, FeatureOptions, WeightedOptions, option, register_method
from dfa_ray.losses import cc_loss, pkt_loss, rkd_angle_loss, rkd_distance_loss, sp_loss


class SPOptions(FeatureOptions):
    w_feat: float = option(3000.0, "weight of the similarity-preserving loss", ge=0)


@register_method
class SP(Distiller):
    """Similarity-Preserving KD (Tung & Mori, ICCV 2019) on the last block output of each
    network's last group (CRD's feat[-2]); see `losses.sp_loss`."""

    name = "sp"
    paper = "Tung & Mori, Similarity-Preserving Knowledge Distillation, ICCV 2019"
    Options = SPOptions
    uses = frozenset({"features"})

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        return {"loss_feat": self.options.w_feat * sp_loss(s.features[-1][-1], t.features[-1][-1])}


class PKTOptions(WeightedOptions):
    w_feat: float = option(30000.0, "weight of the PKT loss", ge=0)


@register_method
class PKT(Distiller):
    """Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018) on the pre-logits
    embeddings, cosine kernel; see `losses.pkt_loss`."""

    name = "pkt"
    paper = "Passalis & Tefas, Learning Deep Representations with Probabilistic Knowledge Transfer, ECCV 2018"
    Options = PKTOptions
    uses = frozenset({"embedding"})

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        return {"loss_feat": self.options.w_feat * pkt_loss(s.embedding, t.embedding)}


class RKDOptions(WeightedOptions):
    w_feat: float = option(1.0, "overall weight of the two RKD terms", ge=0)
    w_dist: float = option(25.0, "weight of the distance term", ge=0)
    w_angle: float = option(50.0, "weight of the angle term", ge=0)


@register_method
class RKD(Distiller):
    """Relational KD (Park et al., CVPR 2019), distance and angle terms on the pre-logits
    embeddings; reports them as `loss_rkd_dist` and `loss_rkd_angle` (each already weighted:
    w_feat * w_dist and w_feat * w_angle), so `loss_feat` is 0."""

    name = "rkd"
    paper = "Park, Kim, Lu & Cho, Relational Knowledge Distillation, CVPR 2019"
    Options = RKDOptions
    uses = frozenset({"embedding"})

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        o = self.options
        return {"loss_rkd_dist": o.w_feat * o.w_dist * rkd_distance_loss(s.embedding, t.embedding),
                "loss_rkd_angle": o.w_feat * o.w_angle * rkd_angle_loss(s.embedding, t.embedding)}


class CCOptions(WeightedOptions):
    w_feat: float = option(0.02, "weight of the correlation congruence loss", ge=0)
    gamma: float = option(0.4, "gamma of the Gaussian RBF kernel", gt=0)
    p_order: int = option(2, "order of its Taylor expansion", ge=0, le=10)
    embed_dim: int = option(128, "width of the linear embeddings of both networks' pre-logits vectors", ge=1)


@register_method
class CC(Distiller):
    """Correlation Congruence (Peng et al., ICCV 2019): each network's pre-logits embedding is
    mapped by its own trained Linear to `embed_dim` (as the CRD code), then `losses.cc_loss`."""

    name = "cc"
    paper = "Peng et al., Correlation Congruence for Knowledge Distillation, ICCV 2019"
    Options = CCOptions
    uses = frozenset({"embedding"})

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        dim = options.embed_dim
        self.embed_s = nn.Linear(student.get_classifier().in_features, dim)
        self.embed_t = nn.Linear(teacher.get_classifier().in_features, dim)

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        o = self.options
        loss = cc_loss(self.embed_s(s.embedding), self.embed_t(t.embedding), gamma=o.gamma, p_order=o.p_order)
        return {"loss_feat": o.w_feat * loss}

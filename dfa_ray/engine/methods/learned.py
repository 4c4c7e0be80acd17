"""Methods with state or modules of their own: CRD (memory banks), VID (regressors with a learned
variance), OFD / Overhaul (connectors, margins from the teacher's BNs), AB, FT and FSP (each with
an init stage) and ReviewKD (attention-based fusion).

The losses are the pure functions of `dfa_ray.losses_part2`, the modules those of
`dfa_ray.method_modules`; the classes here only choose which features each loss sees. Layer
choices and defaults are the CRD benchmark's (RepDistiller) and, for OFD and ReviewKD,
mdistiller's; map methods pair groups by index (CRD's zipped feature lists) unless
`pairing: size` is asked for.

Init stages (AB, FT, FSP). The CRD code trains, before the main training, for 30 epochs:
AB's student (all but its classifier) and connectors on the AB loss, FT's paraphraser on
reconstructing the teacher's map, FSP's student (all but its classifier) on the FSP loss; SGD
with the recipe's momentum and weight decay at a constant lr of 0.01 for ResNet and WRN
students, else the run's lr. Here that is one more phase of the trial (`training.InitStage`),
run by the same trainer: `init_epochs` (null: 30 at 240 epochs, scaled with the run's epochs)
and `init_lr` (null: the rule above). After it, AB and FSP train with cross-entropy only (their
`w_feat` defaults to 0, as the CRD code sets their main-phase loss to 0); FT trains with its
factor loss (weight 200) against the now frozen paraphraser.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn

from dfa_ray.engine.methods.base import Distiller, FeatureOptions, Views, WeightedOptions, option, register_method
from dfa_ray.engine.methods.hints import PairedOptions, chosen_pairing
from dfa_ray.engine.training import InitStage
from dfa_ray.engine.views import TeacherOutputs, TeacherRequest, teacher_outputs
from dfa_ray.errors import ConfigError
from dfa_ray.losses import Connector, resize_to
from dfa_ray.losses_part2 import (
    ab_loss, crd_nce_loss, fsp_loss, ft_loss, hcl_loss, linear_warmup, ofd_loss, scaled_epochs, vid_loss,
)
from dfa_ray.method_modules import (
    ABConnector, CRDEmbed, CRDMemory, Paraphraser, ReviewFusion, Translator, VIDRegressor, forward_with_stem,
    stem_channels, teacher_margins,
)

INIT_EPOCHS_AT_240 = 30  # the CRD code's init stage of AB, FT and FSP


def _smaller(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps at the smaller of their two spatial sizes (the larger is average-pooled), as
    the CRD code does for VID and FT."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return resize_to(a, size), resize_to(b, size)


def _zero_terms(like: torch.Tensor) -> dict[str, torch.Tensor]:
    zero = like.new_zeros(())
    return {"loss_ce": zero, "loss_kd": zero, "loss_feat": zero}


# -- CRD ------------------------------------------------------------------------------------
class CRDOptions(WeightedOptions):
    w_feat: float = option(0.8, "weight of the contrastive loss (student and teacher sides)", ge=0)
    feat_dim: int = option(128, "width of the L2-normalised embeddings", ge=1)
    nce_k: int = option(16384, "negatives drawn per sample (from the other classes)", ge=1)
    nce_t: float = option(0.07, "temperature of the critic exp(<.,.>/T)", gt=0)
    nce_momentum: float = option(0.5, "momentum of the memory banks' update", ge=0, lt=1)


@register_method
class CRD(Distiller):
    """Contrastive Representation Distillation (Tian et al., ICLR 2020): 128-d embeddings of
    both pooled pre-logits vectors, two momentum memory banks over the training split, 16384
    negatives of other classes per sample, NCE at T 0.07; weight 0.8, CE 1 (the CRD benchmark).
    The banks are buffers (in every checkpoint), sized from the training split the run uses."""

    name = "crd"
    paper = "Tian, Krishnan & Isola, Contrastive Representation Distillation, ICLR 2020"
    Options = CRDOptions
    uses = frozenset({"embedding"})

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        split = context.split
        if split is None or split.labels is None:
            raise ConfigError(f"method {self.name} needs the training split (its memory banks hold one row per "
                              "training sample): build it with build_distill_run, or pass split= to build_distiller")
        self.embed_s = CRDEmbed(student.get_classifier().in_features, options.feat_dim)
        self.embed_t = CRDEmbed(teacher.get_classifier().in_features, options.feat_dim)
        self.memory = CRDMemory(split.labels, options.feat_dim, options.nce_k, options.nce_t, options.nce_momentum)

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        if index is None:
            raise ValueError(f"{self.name} needs the samples' indices in the training split (forward_train's index)")
        e_s, e_t = self.embed_s(s.embedding), self.embed_t(t.embedding)
        out_s, out_t = self.memory(e_s, e_t, index)
        n = self.memory.n_data
        return {"loss_feat": self.options.w_feat * (crd_nce_loss(out_s, n) + crd_nce_loss(out_t, n))}


class CRDKDOptions(CRDOptions):
    w_kl: float = option(1.0, "weight of Hinton's KD term (CRD+KD: 1)", ge=0)


@register_method
class CRDKD(CRD):
    """CRD with Hinton's KD term on (w_kl 1, T 4), the CRD paper's `CRD+KD`."""

    name = "crd+kd"
    paper = "Tian, Krishnan & Isola, Contrastive Representation Distillation, ICLR 2020 (CRD+KD)"
    Options = CRDKDOptions


# -- VID ------------------------------------------------------------------------------------
class VIDOptions(PairedOptions):
    w_feat: float = option(1.0, "weight of the VID loss (summed over the paired groups)", ge=0)
    init_var: float = option(5.0, "initial variance of every teacher channel", gt=0)


@register_method
class VID(Distiller):
    """Variational Information Distillation (Ahn et al., CVPR 2019) on every paired group's last
    block output (post-ReLU, as CRD): per group a regressor (three 1x1 convs) predicts the
    teacher's map, with a learned per-channel variance (softplus); weight 1."""

    name = "vid"
    paper = "Ahn, Hu, Damianou, Lawrence & Dai, Variational Information Distillation for Knowledge Transfer, CVPR 2019"
    Options = VIDOptions
    uses = frozenset({"features"})

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        self.pairs = chosen_pairing(self)
        self.regressors = nn.ModuleList(
            VIDRegressor(p.student_channels, p.teacher_channels, p.teacher_channels, init_var=options.init_var)
            for p in self.pairs)

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        total = s.logits.new_zeros(())
        for p, reg in zip(self.pairs, self.regressors):
            fs, ft = _smaller(s.features[p.student_group][-1], t.features[p.teacher_group][-1])
            total = total + vid_loss(reg(fs), ft, reg.variance())
        return {"loss_feat": self.options.w_feat * total}


# -- OFD (Overhaul) -------------------------------------------------------------------------
class OFDOptions(PairedOptions):
    w_feat: float = option(0.001, "weight of the partial L2 loss (mdistiller's 0.001 for the CRD protocol)", ge=0)
    preact: bool = option(True, "distil pre-ReLU features (Overhaul's choice; its margin assumes them)")


@register_method
class OFD(Distiller):
    """A Comprehensive Overhaul of Feature Distillation (Heo et al., ICCV 2019; the DFA paper's
    "Margin"): the pre-ReLU output of every paired stage, the student's through a 1x1 conv + BN
    connector, the teacher's raised to a margin computed from the BN before its ReLU; partial
    L2, stage weights 2^-(n-i-1), weight 0.001. A teacher without a BN before the ReLU at a
    stage end (ShuffleNetV2) is refused by name."""

    name = "ofd"
    paper = "Heo, Kim, Yun, Park, Kwak & Choi, A Comprehensive Overhaul of Feature Distillation, ICCV 2019"
    Options = OFDOptions
    uses = frozenset({"features"})

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        self.pairs = chosen_pairing(self)
        margins = teacher_margins(teacher, [p.teacher_group for p in self.pairs], type(teacher).__name__)
        for i, m in enumerate(margins):
            # derived from the teacher's weights: rebuilt with the method, not checkpointed
            self.register_buffer(f"margin{i}", m, persistent=False)
        self.connectors = nn.ModuleList(Connector(p.student_channels, p.teacher_channels) for p in self.pairs)

    def margins(self) -> list[torch.Tensor]:
        return [getattr(self, f"margin{i}") for i in range(len(self.pairs))]

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        fs, ft = [], []
        for p, conn in zip(self.pairs, self.connectors):
            a = conn(s.features[p.student_group][-1])
            fs.append(a)
            ft.append(resize_to(t.features[p.teacher_group][-1], tuple(a.shape[-2:])))
        return {"loss_feat": self.options.w_feat * ofd_loss(fs, ft, self.margins())}


# -- the init stages of AB, FT, FSP ---------------------------------------------------------
class InitOptions(WeightedOptions):
    init_epochs: int | None = option(
        None, "epochs of the init stage (null: 30 at 240 epochs, scaled with the run's epochs; 0: none)",
        allowed="an integer >= 0 or null", ge=0)
    init_lr: float | None = option(
        None, "constant lr of the init stage (null: 0.01 for ResNet/WRN students, else the run's lr)",
        allowed="a number > 0 or null", gt=0)


def _crd_init_lr(student: nn.Module, run_lr: float) -> float:
    from dfa_ray.models.resnet import CifarResNet
    from dfa_ray.models.wrn import WideResNet

    return 0.01 if isinstance(student, (CifarResNet, WideResNet)) else float(run_lr)


class WithInitStage(Distiller):
    """A distiller whose trial starts with an init stage (see the module docstring)."""

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        # what the user asked for (null: the protocol's rule), kept apart from the resolved
        # values that `init_stage` records in the options
        self._asked = (options.init_epochs, options.init_lr)

    def init_parameters(self) -> list[nn.Parameter]:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_request(self) -> TeacherRequest:
        """What the init stage needs of the teacher per batch."""
        return TeacherRequest(features=frozenset({self.preact}))

    def init_forward_with(self, outputs: TeacherOutputs, x, y, index=None
                          ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        raise NotImplementedError  # pragma: no cover - abstract

    def init_forward(self, x, y, index=None) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """One init-stage batch with the teacher run here (a group passes a shared forward to
        `init_forward_with` instead)."""
        return self.init_forward_with(teacher_outputs(self.teacher, x, self.init_request()), x, y, index)

    def init_stage(self, epochs: int, lr: float) -> InitStage | None:
        """Called by the trainer when the run is built; records the resolved epochs and lr."""
        n, init_lr = self._asked
        n = scaled_epochs(INIT_EPOCHS_AT_240, epochs) if n is None else int(n)
        init_lr = _crd_init_lr(self.student, lr) if init_lr is None else init_lr
        self.options = self.options.model_copy(update={"init_epochs": n, "init_lr": float(init_lr)})
        if n == 0:
            return None
        return InitStage(epochs=n, lr=float(init_lr), parameters=self.init_parameters(), forward=self.init_forward,
                         request=self.init_request(), forward_with=self.init_forward_with)


# -- AB -------------------------------------------------------------------------------------
class ABOptions(InitOptions, PairedOptions):
    w_feat: float = option(0.0, "weight of the AB loss after the init stage (the CRD code: 0)", ge=0)
    w_init: float = option(1.0, "weight of the AB loss in the init stage", ge=0)
    margin: float = option(1.0, "margin mu of the activation boundary", ge=0)
    preact: bool = option(True, "transfer pre-ReLU responses (the paper's choice: their sign is the boundary)")


@register_method
class AB(WithInitStage):
    """Activation Boundaries (Heo et al., AAAI 2019): in an init stage (30 of 240 epochs) the
    student's pre-ReLU responses of every paired group, through 1x1 conv + BN connectors, learn
    the teacher's activation boundaries (margin 1); then cross-entropy training, as the CRD code."""

    name = "ab"
    paper = "Heo, Lee, Yun & Choi, Knowledge Transfer via Distillation of Activation Boundaries, AAAI 2019"
    Options = ABOptions
    uses = frozenset({"features"})

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        self.pairs = chosen_pairing(self)
        self.connectors = nn.ModuleList(
            ABConnector(p.student_channels, p.teacher_channels, p.student_size == p.teacher_size) for p in self.pairs)

    def _ab(self, s_feats, t_feats) -> torch.Tensor:
        gs, gt = [], []
        for p, conn in zip(self.pairs, self.connectors):
            target = t_feats[p.teacher_group][-1]
            gs.append(conn(s_feats[p.student_group][-1], tuple(target.shape[-2:])))
            gt.append(target)
        return ab_loss(gs, gt, self.options.margin)

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        return {"loss_feat": self.options.w_feat * self._ab(s.features, t.features)}

    def init_parameters(self) -> list[nn.Parameter]:
        # the student's classifier gets no gradient here, so SGD leaves it alone (no decay either)
        return list(self.student.parameters()) + list(self.connectors.parameters())

    def init_forward_with(self, outputs, x, y, index=None):
        logits, s_feats = self.student.forward_groups(x, preact=self.preact)
        t_feats = outputs.features[self.preact]
        return logits, {**_zero_terms(logits), "loss_init": self.options.w_init * self._ab(s_feats, t_feats)}


# -- FT -------------------------------------------------------------------------------------
class FTOptions(InitOptions, FeatureOptions):
    w_feat: float = option(200.0, "weight of the factor-transfer loss", ge=0)
    rate: float = option(0.5, "paraphrase rate k: the factor's channels per teacher channel", gt=0, le=4)


@register_method
class FT(WithInitStage):
    """Factor Transfer (Kim et al., NeurIPS 2018) on the last group's output: a paraphraser
    (conv auto-encoder, rate 0.5) is first trained alone to reconstruct the teacher's map (the
    init stage, 30 of 240 epochs); then the student's translator learns the paraphraser's factor,
    L1 between normalised factors, weight 200, CE 1."""

    name = "ft"
    paper = "Kim, Park & Kwak, Paraphrasing Complex Network: Network Compression via Factor Transfer, NeurIPS 2018"
    Options = FTOptions
    uses = frozenset({"features"})

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        t_ch, s_ch = teacher.group_info[-1].channels, student.group_info[-1].channels
        self.paraphraser = Paraphraser(t_ch, options.rate)
        self.translator = Translator(s_ch, t_ch, options.rate)

    def trainable_parameters(self) -> list[nn.Parameter]:
        # the paraphraser is trained in the init stage only, then held fixed
        return [p for n, p in self.named_parameters() if not n.startswith(("teacher.", "paraphraser."))]

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            factor_t = self.paraphraser.encoder(t.features[-1][-1])
        factor_s = self.translator(s.features[-1][-1])
        return {"loss_feat": self.options.w_feat * ft_loss(factor_s, factor_t)}

    def init_parameters(self) -> list[nn.Parameter]:
        return list(self.paraphraser.parameters())

    def init_forward_with(self, outputs, x, y, index=None):
        target = outputs.features[self.preact][-1][-1]
        _, rec = self.paraphraser(target)
        # the CRD code's reconstruction loss: MSE
        return None, {**_zero_terms(target), "loss_init": F.mse_loss(rec, target)}


# -- FSP ------------------------------------------------------------------------------------
@dataclass
class StemViews(Views):
    """Views plus the stem's output (FSP's first map)."""

    stem: torch.Tensor | None = None


class FSPOptions(InitOptions, FeatureOptions):
    w_feat: float = option(0.0, "weight of the FSP loss after the init stage (the CRD code: 0)", ge=0)
    w_init: float = option(1.0, "weight of the FSP loss in the init stage", ge=0)


@register_method
class FSP(WithInitStage):
    """The flow of solution procedure (Yim et al., CVPR 2017): in an init stage (30 of 240
    epochs) the student learns the teacher's FSP matrices between consecutive maps (the stem's
    output and every group's), post-ReLU as the CRD code; then cross-entropy training. Pairs
    whose maps differ in channels (so their FSP matrices differ in size) are refused."""

    name = "fsp"
    paper = "Yim, Joo, Bae & Kim, A Gift from Knowledge Distillation: Fast Optimization, Network Minimization " \
            "and Transfer Learning, CVPR 2017"
    Options = FSPOptions
    uses = frozenset({"features"})

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        in_ch = next(m for m in student.modules() if isinstance(m, nn.Conv2d)).in_channels
        size = context.image_size

        def maps(model: nn.Module) -> list[int | None]:
            return [stem_channels(model, in_ch, size)] + [g.channels for g in model.group_info]

        ms, mt = maps(student), maps(teacher)
        if ms != mt:
            def show(m):
                return f"stem {m[0] if m[0] is not None else 'none'}, groups {'/'.join(str(c) for c in m[1:])}"
            raise ConfigError(
                f"method fsp compares FSP matrices (channels x channels of consecutive maps), so the paired maps "
                f"must have the same size; they differ for this pair: teacher {type(teacher).__name__} "
                f"{show(mt)}, student {type(student).__name__} {show(ms)}; use another method for this pair")

    def _views_of(self, model, x):
        if "features" not in self.views:
            return super()._views_of(model, x)
        logits, stem, feats = forward_with_stem(model, x, preact=self.preact)
        return StemViews(logits, feats, stem=stem)

    def teacher_request(self):
        if "features" not in self.views:
            return super().teacher_request()
        return TeacherRequest(features=frozenset({self.preact}), stem=True)

    def teacher_views(self, outputs):
        if "features" not in self.views:
            return super().teacher_views(outputs)
        return StemViews(outputs.logits, outputs.features[self.preact], stem=outputs.stem)

    @staticmethod
    def _maps(stem: torch.Tensor | None, feats) -> list[torch.Tensor]:
        return ([stem] if stem is not None else []) + [g[-1] for g in feats]

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        loss = fsp_loss(self._maps(s.stem, s.features), self._maps(t.stem, t.features))
        return {"loss_feat": self.options.w_feat * loss}

    def init_parameters(self) -> list[nn.Parameter]:
        return list(self.student.parameters())  # the classifier gets no gradient: SGD skips it

    def init_request(self):
        return TeacherRequest(features=frozenset({self.preact}), stem=True)

    def init_forward_with(self, outputs, x, y, index=None):
        logits, s_stem, s_feats = forward_with_stem(self.student, x, preact=self.preact)
        t_stem, t_feats = outputs.stem, outputs.features[self.preact]
        loss = fsp_loss(self._maps(s_stem, s_feats), self._maps(t_stem, t_feats))
        return logits, {**_zero_terms(logits), "loss_init": self.options.w_init * loss}


# -- ReviewKD -------------------------------------------------------------------------------
class ReviewKDOptions(PairedOptions):
    w_feat: float = option(5.0, "weight of the hierarchical context loss (mdistiller's res32x4 -> res8x4: 5)", ge=0)
    warmup: float = option(20.0, "epochs of linear warm-up of the loss at 240 epochs (scaled with the run's "
                           "epoch count; 0: none)", ge=0)
    preact: bool = option(True, "the teacher's pre-ReLU features as targets (mdistiller's choice)")
    student_preact: bool = option(False, "fuse the student's pre-ReLU features (mdistiller: false)")
    max_mid_channels: int = option(512, "upper bound of the fusion width", ge=1)


@register_method
class ReviewKD(Distiller):
    """Knowledge Review (Chen et al., CVPR 2021): the student's group outputs and pooled vector,
    fused from deep to shallow by attention-based fusion (ABF) modules, each level matched to
    the paired teacher level (pre-ReLU; the pooled vector as a 1x1 map) by the hierarchical
    context loss; weight 5 with a 20-epoch warm-up (mdistiller's res32x4 -> res8x4 setting)."""

    name = "reviewkd"
    paper = "Chen, Liu, Zhao & Jia, Distilling Knowledge via Knowledge Review, CVPR 2021"
    Options = ReviewKDOptions
    uses = frozenset({"embedding"})
    # its `_views_of` changes the student's features only (student_preact); the teacher's are
    # the base's (pre-ReLU maps and the embedding), so a shared forward serves it
    shared_teacher = True

    def __init__(self, student, teacher, options, context) -> None:
        super().__init__(student, teacher, options, context)
        self.pairs = chosen_pairing(self)
        s_ch = [p.student_channels for p in self.pairs] + [student.get_classifier().in_features]
        t_ch = [p.teacher_channels for p in self.pairs] + [teacher.get_classifier().in_features]
        self.fusion = ReviewFusion(s_ch, t_ch, options.max_mid_channels)
        self.warm = 1.0  # 1 until the trainer says which epoch runs (unit use: no warm-up)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.warm = linear_warmup(epoch + 1, self.options.warmup * epochs / 240.0)

    def _views_of(self, model, x):
        if "embedding" not in self.views:
            return super()._views_of(model, x)
        preact = self.preact if model is self.teacher else self.options.student_preact
        logits, feats, emb = model.forward_groups_embedding(x, preact=preact)
        return Views(logits, feats, emb)

    def distill_terms(self, s, t, y, index) -> dict[str, torch.Tensor]:
        s_maps = [s.features[p.student_group][-1] for p in self.pairs] + [s.embedding[:, :, None, None]]
        t_maps = [t.features[p.teacher_group][-1] for p in self.pairs] + [t.embedding[:, :, None, None]]
        fused = self.fusion(s_maps, [tuple(m.shape[-2:]) for m in t_maps])
        return {"loss_feat": self.warm * self.options.w_feat * hcl_loss(fused, t_maps)}

"""Group pairing (tiny models), then every teacher-student pair of docs/protocols.md on the real
zoo: pairing, one search step, one distillation step per method, at 32 px, batch 2."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from dfa_ray.dfa import GroupPairing, SearchOptions, build_search, genotype_from_search, pair_groups, search_step
from dfa_ray.engine.methods import METHODS, TrainSplit, build_distiller
from dfa_ray.errors import ConfigError
from dfa_ray.models import create_model
from dfa_ray.models.base import GroupInfo
from dfa_helpers import TinyNet, cross_student, cross_teacher, tiny_student, tiny_teacher


# -- pairing on tiny models ---------------------------------------------------------------
def test_same_family_pairs_group_to_group():
    p = pair_groups(tiny_teacher(), tiny_student(), 8, "tiny_t", "tiny_s")
    assert [(x.student_group, x.teacher_group, x.resize) for x in p] == [(0, 0, "none"), (1, 1, "none"), (2, 2, "none")]
    assert [x.num_candidates for x in p] == [2, 3, 2]
    assert [(x.student_channels, x.teacher_channels) for x in p] == [(4, 4), (4, 6), (6, 8)]
    assert [(x.student_size, x.teacher_size) for x in p] == [(8, 8), (4, 4), (2, 2)]


def test_cross_family_pairs_to_nearest_size_and_resizes():
    p = pair_groups(cross_teacher(), cross_student(), 16, "cross_t", "cross_s")
    # student 16/4/1 px, teacher 8/4/2 px
    assert [(x.student_group, x.teacher_group, x.resize) for x in p] == [
        (0, 0, "upsample"), (1, 1, "none"), (2, 2, "pool")
    ]
    table = str(p)
    assert table.splitlines()[0] == "pairing cross_t -> cross_s at 16px"
    assert "S0" in table and "upsample" in table and "pool" in table
    assert GroupPairing.from_dict(p.to_dict()) == p


class _Shape(nn.Module):
    """Only the static description pairing reads."""

    def __init__(self, strides, num_classes=10, in_channels=3, min_size=1):
        super().__init__()
        self.group_info = tuple(GroupInfo(8, s, ("b0",)) for s in strides)
        self.num_classes, self.in_channels, self.min_size = num_classes, in_channels, min_size


def test_nearest_size_ties_prefer_the_larger_teacher_map():
    # student at 8 px (stride 4); teacher groups at 16 px and 4 px: both one octave away
    p = pair_groups(_Shape((2, 8)), _Shape((4,)), 32)
    assert (p[0].teacher_group, p[0].resize) == (0, "pool")
    # several student groups may share one teacher group
    p = pair_groups(_Shape((1,)), _Shape((1, 2, 4)), 32)
    assert [x.teacher_group for x in p] == [0, 0, 0]


@pytest.mark.parametrize(
    "teacher,student,size,match",
    [
        (_Shape((1, 2)), _Shape((1, 2), num_classes=100), 32, "teacher predicts 10 classes and the student 100"),
        (_Shape((1, 2)), _Shape((1, 2), in_channels=1), 32, "teacher takes 3 input channels and the student 1"),
        (_Shape((1, 2), min_size=32), _Shape((1, 2)), 16, "image size 16px is below the teacher T's minimum of 32px"),
        (_Shape(()), _Shape((1, 2)), 32, "the teacher exposes no layer groups"),
    ],
)
def test_impossible_pairs_raise_config_error(teacher, student, size, match):
    with pytest.raises(ConfigError, match=match) as e:
        pair_groups(teacher, student, size, "T", "S")
    assert "cannot pair teacher T with student S" in str(e.value)


def test_real_models_infer_classes_and_channels():
    with pytest.raises(ConfigError, match="100 classes and the student 10"):
        pair_groups(create_model("resnet20", 100), create_model("resnet8", 10))
    with pytest.raises(ConfigError, match="below the teacher vgg8's minimum"):
        pair_groups(create_model("vgg8", 10), create_model("resnet8", 10), 4, "vgg8", "resnet8")


# -- every pair of the protocol on the real zoo -------------------------------------------
CRD_PAIRS = [
    ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"),
    ("resnet110", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"),
    ("vgg13", "vgg8"), ("vgg13", "MobileNetV2"), ("ResNet50", "MobileNetV2"),
    ("ResNet50", "vgg8"), ("resnet32x4", "ShuffleV1"), ("resnet32x4", "ShuffleV2"),
    ("wrn_40_2", "ShuffleV1"),
]
DFA_PAIRS = [("wrn_28_4", "wrn_16_4"), ("wrn_28_4", "wrn_28_2"), ("wrn_28_4", "wrn_16_2"), ("wrn_28_4", "resnet56")]


@functools.lru_cache(maxsize=None)
def teacher(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, 100).eval()  # frozen by the search / distillers; shared


def test_protocol_lists_every_pair():
    assert len(CRD_PAIRS) == 13 and len(DFA_PAIRS) == 4


def _fsp_maps(model: nn.Module) -> list[int]:
    """Channels of the maps FSP pairs up (every group's output; the stem is checked by the method)."""
    return [g.channels for g in model.group_info]


@pytest.mark.parametrize("pair", CRD_PAIRS + DFA_PAIRS, ids=lambda p: f"{p[0]}->{p[1]}")
def test_pair_searches_and_distils(pair):
    tname, sname = pair
    torch.manual_seed(1)
    t, s = teacher(tname), create_model(sname, 100)
    pairing = pair_groups(t, s, 32, tname, sname)
    assert len(pairing) == s.num_groups
    for p in pairing:  # nearest size: never more than one octave off in these pairs
        assert p.teacher_size in (p.student_size, 2 * p.student_size)
        assert p.num_candidates == t.group_info[p.teacher_group].num_blocks
    gen = torch.Generator().manual_seed(2)
    xs = torch.randn(3, 2, 3, 32, 32, generator=gen)
    ys = torch.randint(0, 100, (3, 2), generator=gen)

    parts = build_search(t, s, SearchOptions(schedule="joint"), image_size=32, teacher_name=tname, student_name=sname)
    m = search_step(parts.net, parts.architect, (xs[0], ys[0]), (xs[1], ys[1]), parts.weight_optimizer, parts.ts_optimizer)
    for k in ("loss_st", "loss_ts", "loss_train", "loss_ts_connector"):
        assert torch.isfinite(m[k]), (k, m[k])
    assert any(not torch.equal(a, torch.full_like(a, 1 / a.numel())) for a in parts.net.alphas())
    # the default groupwise schedule, second order, on the last group
    parts2 = build_search(t, s, SearchOptions(order=2), image_size=32, seed=1)
    m2 = search_step(
        parts2.net, parts2.architect, (xs[0], ys[0]), (xs[1], ys[1]), parts2.weight_optimizer,
        parts2.ts_optimizer, parts2.net.active_groups(1.0),
    )
    assert torch.isfinite(m2["loss_upper"]) and torch.isfinite(m2["loss_train"])
    geno = genotype_from_search(parts.net, tname, sname, "cifar100")
    geno.validate_for(tname, sname, "cifar100", t, s)

    # a training split of 6 samples (the batch is samples 2 and 5), for the methods with memory banks
    split = TrainSplit(num_samples=6, num_classes=100, labels=torch.tensor([0, 1, int(ys[2, 0]), 3, 4, int(ys[2, 1])]))
    index = torch.tensor([2, 5])
    for method in METHODS.names():
        options = {"nce_k": 4} if method.startswith("crd") else {}
        build = functools.partial(build_distiller, method, t, s, options, genotype=geno if method == "dfa" else None,
                                  split=split)
        if method == "fsp" and _fsp_maps(t) != _fsp_maps(s):
            with pytest.raises(ConfigError, match="method fsp compares FSP matrices .* they differ for this pair"):
                build()
            continue
        d = build().train()
        opt = torch.optim.SGD(d.trainable_parameters(), lr=0.01)
        logits, losses = d.forward_train(xs[2], ys[2], index)
        total = sum(losses.values())
        assert logits.shape == (2, 100) and torch.isfinite(total), (method, losses)
        opt.zero_grad()
        total.backward()
        opt.step()
        assert not d.teacher.training

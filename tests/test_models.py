"""The model zoo keeps its promises: CRD architectures, and the layer-group contract DFA uses.

Parametrised over every registered model (timm's `tests/test_models.py` pattern). Spatial
rule checked here: a group of stride s turns an input of side n into ceil(n / s) for models
that down-sample with padded stride-2 convs or pools, and into floor(n / s) for VGG, whose
2x2 max-pools drop an odd row; both are n / s at 32 px.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dfa_ray.errors import ConfigError
from dfa_ray.models import MODELS, GroupedModel, GroupInfo, create_model, model_summary

ALL_MODELS = MODELS.names()

# Every registered model with its family's number of layer groups; a model added to the zoo
# without being added here fails `test_registry_holds_exactly_the_zoo`.
GROUP_COUNTS = {
    **{f"resnet{d}": 3 for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": 3,
    "resnet32x4": 3,
    "ResNet50": 4,
    **{f"wrn_{dk}": 3 for dk in ("16_1", "16_2", "16_4", "28_2", "28_4", "40_1", "40_2")},
    **{f"vgg{d}": 4 for d in (8, 11, 13, 16, 19)},
    "MobileNetV2": 4,
    "ShuffleV1": 3,
    "ShuffleV2": 3,
}
FLOOR_DOWNSAMPLING = {"vgg8", "vgg11", "vgg13", "vgg16", "vgg19"}

# CRD benchmark parameter counts at 100 classes (docs/protocols.md).
PARAM_COUNTS = {
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_40_2": 2_255_156,
    "wrn_16_2": 703_284,
    "resnet56": 861_620,
    "resnet20": 278_324,
}

BLOCK_COUNTS = {
    "resnet56": (9, 9, 9),
    "resnet20": (3, 3, 3),
    "resnet32x4": (5, 5, 5),
    "resnet8x4": (1, 1, 1),
    "wrn_28_4": (4, 4, 4),
    "wrn_16_2": (2, 2, 2),
    "wrn_40_2": (6, 6, 6),
    "ResNet50": (3, 4, 6, 3),
    "vgg8": (1, 1, 1, 2),
    "vgg13": (2, 2, 2, 4),
    "MobileNetV2": (2, 3, 3, 1),
    "ShuffleV1": (4, 8, 4),
    "ShuffleV2": (4, 8, 4),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The CI machine's 2 cores are shared; one thread is faster than contended two.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=ALL_MODELS)
def model(request) -> GroupedModel:
    """Each model once (100 classes, 3 channels), in eval mode; pytest groups tests by it."""
    torch.manual_seed(0)
    m = create_model(request.param)
    m.eval()
    # Non-trivial BN statistics, so pre-activation tensors take both signs everywhere.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=gen) - 0.5)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
    m.name = request.param
    return m


def _inputs(size: int, channels: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(size))


def _sizes(m: GroupedModel) -> list[int]:
    return sorted({32, 28, 8, m.min_size}, reverse=True)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=0.0, atol=1e-6)


# -- registry -------------------------------------------------------------------------------


def test_registry_holds_exactly_the_zoo():
    assert sorted(ALL_MODELS) == sorted(GROUP_COUNTS)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        create_model("nope")
    message = str(err.value)
    assert "'nope'" in message
    for name in ("resnet56", "wrn_40_2", "vgg13", "MobileNetV2", "ShuffleV2", "ResNet50"):
        assert name in message


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, True, "10"])
def test_bad_num_classes_names_the_argument(bad):
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("resnet8", num_classes=bad)


@pytest.mark.parametrize("bad", [0, -1, 1.0])
def test_bad_in_channels_names_the_argument(bad):
    with pytest.raises(ConfigError, match="in_channels"):
        create_model("resnet8", in_channels=bad)


def test_model_summary_resnet56():
    assert model_summary("resnet56") == {
        "name": "resnet56",
        "params": 861_620,
        "groups": [
            {"channels": 16, "blocks": 9, "stride": 1},
            {"channels": 32, "blocks": 9, "stride": 2},
            {"channels": 64, "blocks": 9, "stride": 4},
        ],
        "min_size": 1,
    }


def test_model_summary_vgg13():
    summary = model_summary("vgg13")
    assert summary["groups"] == [
        {"channels": 64, "blocks": 2, "stride": 1},
        {"channels": 128, "blocks": 2, "stride": 2},
        {"channels": 256, "blocks": 2, "stride": 4},
        {"channels": 512, "blocks": 4, "stride": 8},
    ]
    assert summary["min_size"] == 8


# -- architecture ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,expected", sorted(PARAM_COUNTS.items()))
def test_parameter_count_matches_crd(name, expected):
    built = sum(p.numel() for p in create_model(name, num_classes=100).parameters())
    assert built == expected
    assert model_summary(name)["params"] == expected


@pytest.mark.parametrize("name", ALL_MODELS)
def test_group_count_of_family(name):
    assert len(model_summary(name)["groups"]) == GROUP_COUNTS[name]


@pytest.mark.parametrize("name,expected", sorted(BLOCK_COUNTS.items()))
def test_block_counts(name, expected):
    assert tuple(g["blocks"] for g in model_summary(name)["groups"]) == expected


def test_crd_initialisation():
    torch.manual_seed(0)
    vgg = create_model("vgg8")
    assert torch.count_nonzero(vgg.classifier.bias) == 0
    assert 0.008 < vgg.classifier.weight.std().item() < 0.012  # N(0, 0.01)
    conv = vgg.groups[3][0].conv  # 256 -> 512, 3x3: std sqrt(2 / (9 * 512))
    assert abs(conv.weight.std().item() / math.sqrt(2 / (9 * 512)) - 1) < 0.05
    assert torch.count_nonzero(conv.bias) == 0
    wrn = create_model("wrn_16_2")
    assert torch.count_nonzero(wrn.fc.bias) == 0
    conv = wrn.groups[2][1].conv2  # 128 -> 128, 3x3
    assert abs(conv.weight.std().item() / math.sqrt(2 / (9 * 128)) - 1) < 0.05


def test_batchnorm_starts_as_identity(model):
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0)


# -- shapes at every size -------------------------------------------------------------------


@torch.no_grad()
def test_logits_shape_at_every_size(model):
    for size in _sizes(model):
        assert model(_inputs(size)).shape == (2, 100), size


@pytest.mark.parametrize("name", ALL_MODELS)
@torch.no_grad()
def test_other_classes_and_channels(name):
    m = create_model(name, num_classes=10, in_channels=1).eval()
    for size in _sizes(m):
        assert m(_inputs(size, channels=1)).shape == (2, 10), size


@torch.no_grad()
def test_min_size_is_the_smallest(model):
    assert model(_inputs(model.min_size)).shape == (2, 100)
    if model.min_size > 1:
        with pytest.raises(RuntimeError):
            model(_inputs(model.min_size - 1))


# -- the layer-group contract ---------------------------------------------------------------


def test_group_info_is_declared(model):
    assert model.num_groups == len(model.group_info) == GROUP_COUNTS[model.name]
    strides = [info.stride for info in model.group_info]
    assert strides == sorted(strides)
    for g, info in enumerate(model.group_info):
        assert isinstance(info, GroupInfo)
        assert info.num_blocks == len(model.groups[g]) >= 1
        for i, block_name in enumerate(info.block_names):
            assert block_name == f"groups.{g}.{i}"
            assert model.get_submodule(block_name) is model.groups[g][i]


@pytest.mark.parametrize("size", [32, 28])
@pytest.mark.parametrize("preact", [True, False])
@torch.no_grad()
def test_forward_groups_matches_group_info(model, size, preact):
    x = _inputs(size)
    logits, features = model.forward_groups(x, preact=preact)
    assert _close(logits, model(x))
    assert len(features) == len(model.group_info)
    rounding = math.floor if model.name in FLOOR_DOWNSAMPLING else math.ceil
    for feats, info in zip(features, model.group_info):
        assert len(feats) == len(info.block_names)
        side = rounding(size / info.stride)
        for f in feats:
            assert f.shape == (2, info.channels, side, side)


# Families whose pre-activation feature is not "the block before its final_act" (the models'
# docstrings say why): WRN normalises each raw residual sum by the next BN; MobileNetV2's
# linear bottlenecks have no pre-activation tensor at all.
NEXT_BN_PREACT = {n for n in ALL_MODELS if n.startswith("wrn_")}
NO_PREACT = {"MobileNetV2"}


@torch.no_grad()
def test_preact_features_are_before_the_final_activation(model):
    if model.name in NEXT_BN_PREACT:
        return _check_wrn_preact_is_the_next_bn(model)
    x = _inputs(32)
    _, pre = model.forward_groups(x, preact=True)
    _, post = model.forward_groups(x, preact=False)
    for g, blocks in enumerate(model.groups):
        for i, block in enumerate(blocks):
            act = block.final_act
            assert isinstance(act, (nn.ReLU, nn.Identity))
            assert torch.equal(post[g][i], act(pre[g][i]))
            if isinstance(act, nn.ReLU):
                assert not act.inplace
                assert pre[g][i].min() < 0  # really the tensor before the ReLU
            else:
                assert model.name in NO_PREACT, f"{model.name}: preact=True is a no-op here"
                assert torch.equal(pre[g][i], post[g][i])


def _check_wrn_preact_is_the_next_bn(m: GroupedModel) -> None:
    """Block k's pre-activation feature is block k+1's bn1 of its raw sum; the last one's is
    the network's final BN of it (eval mode, the fixture's non-trivial BN statistics)."""
    x = _inputs(16)
    _, pre = m.forward_groups(x, preact=True)
    _, raw = m.forward_groups(x, preact=False)
    blocks = [b for grp in m.groups for b in grp]
    flat_pre = [f for grp in pre for f in grp]
    flat_raw = [f for grp in raw for f in grp]
    for k, (p, r) in enumerate(zip(flat_pre, flat_raw)):
        bn = blocks[k + 1].bn1 if k + 1 < len(blocks) else m.bn
        assert torch.allclose(p, bn(r), atol=1e-6), k
        assert not torch.allclose(p, r, atol=1e-3), k


@pytest.mark.parametrize("name", ["wrn_16_2", "wrn_28_4"])
def test_wrn_preact_candidates_have_unit_second_moment_in_train_mode(name):
    """In train mode at initialisation every pre-activation candidate is BN-normalised by batch
    statistics (second moment 1 per channel), while the raw sums grow with depth."""
    torch.manual_seed(0)
    m = create_model(name, num_classes=10).train()
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, pre = m.forward_groups(x, preact=True)
        _, raw = m.forward_groups(x, preact=False)
    for g, (pg, rg) in enumerate(zip(pre, raw)):
        energies = []
        for i, (p, r) in enumerate(zip(pg, rg)):
            moment = p.pow(2).mean(dim=(0, 2, 3))  # per channel
            assert torch.allclose(moment, torch.ones_like(moment), atol=1e-3), (g, i)
            assert not torch.allclose(p, r, atol=1e-2), (g, i)
            energies.append(r.pow(2).mean().item())
        if len(energies) > 1:
            assert energies[-1] > energies[0], (g, energies)  # the bias preact removes


@pytest.mark.parametrize("preact", [True, False])
@torch.no_grad()
def test_forward_from_reproduces_forward(model, preact):
    x = _inputs(32)
    expected = model(x)
    _, features = model.forward_groups(x, preact=preact)
    for g in range(model.num_groups):
        h = features[g][-1]
        before = h.clone()
        assert _close(model.forward_from(g, h, preact=preact), expected), g
        assert torch.equal(h, before), "forward_from changed its input in place"


def test_forward_from_rejects_bad_group(model):
    with pytest.raises(IndexError):
        model.forward_from(model.num_groups, torch.zeros(1))

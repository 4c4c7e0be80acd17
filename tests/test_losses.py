"""Every loss against numbers computed independently: numpy formulas in this file or the
stored golden values of tests/data/loss_golden.json (made by gen_loss_golden.py, numpy only)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfa_ray.dfa import SearchNet, SearchOptions
from dfa_ray.losses import (
    Connector,
    HintRegressor,
    at_loss,
    attention_map,
    entropy,
    feature_l2,
    kd_loss,
    resize_to,
    stage_weights,
)
from dfa_helpers import batch, tiny_student, tiny_teacher

GOLDEN = json.loads((Path(__file__).parent / "data" / "loss_golden.json").read_text())


def golden_inputs():
    """The input formulas of gen_loss_golden.py, as float64 tensors."""
    a = np.arange(2 * 5, dtype=np.float64).reshape(2, 5)
    s = np.sin(a) * 3.0
    t = np.cos(a * 0.7) * 2.0
    fs = np.sin(np.arange(2 * 3 * 4 * 4, dtype=np.float64).reshape(2, 3, 4, 4) * 0.37)
    ft = np.cos(np.arange(2 * 5 * 4 * 4, dtype=np.float64).reshape(2, 5, 4, 4) * 0.21) - 0.2
    ft_big = np.cos(np.arange(2 * 5 * 8 * 8, dtype=np.float64).reshape(2, 5, 8, 8) * 0.13) + 0.1
    return [torch.from_numpy(v) for v in (s, t, fs, ft, ft_big)]


def test_kd_golden():
    s, t, *_ = golden_inputs()
    assert kd_loss(s, t, 1.0).item() == pytest.approx(GOLDEN["kd_T1"], rel=1e-12)
    assert kd_loss(s, t, 4.0).item() == pytest.approx(GOLDEN["kd_T4"], rel=1e-12)
    assert kd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-12)  # KL(p || p) = 0


def test_attention_golden():
    _, _, fs, ft, ft_big = golden_inputs()
    np.testing.assert_allclose(attention_map(fs, 2).numpy(), GOLDEN["attention_map_p2"], rtol=1e-12)
    assert at_loss([fs], [ft]).item() == pytest.approx(GOLDEN["at_same_size"], rel=1e-12)
    assert at_loss([fs], [ft], p=3).item() == pytest.approx(GOLDEN["at_p3"], rel=1e-12)
    # two groups, the second teacher map 8x8 against a 4x4 student map: pooled to 4x4
    assert at_loss([fs, fs], [ft, ft_big]).item() == pytest.approx(GOLDEN["at_two_groups_resized"], rel=1e-12)


def test_feature_l2_and_entropy_golden():
    _, _, fs, ft, _ = golden_inputs()
    assert feature_l2(fs, ft[:, :3]).item() == pytest.approx(GOLDEN["feature_l2"], rel=1e-12)
    assert feature_l2(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])).item() == 2.5
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    assert entropy(alpha).item() == pytest.approx(GOLDEN["entropy"], rel=1e-12)
    assert entropy(torch.full((4,), 0.25)).item() == pytest.approx(math.log(4), rel=1e-6)


def test_resize_to():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(resize_to(x, (2, 2))[0, 0].numpy(), [[2.5, 4.5], [10.5, 12.5]])
    const = torch.full((1, 2, 2, 2), 3.0)
    assert torch.allclose(resize_to(const, (4, 4)), torch.full((1, 2, 4, 4), 3.0))  # bilinear up
    assert resize_to(x, (4, 4)) is x


def test_stage_weights():
    assert stage_weights(3, "uniform") == [1.0, 1.0, 1.0]
    assert stage_weights(3, "halving") == [0.25, 0.5, 1.0]
    assert stage_weights(4, "halving") == [0.125, 0.25, 0.5, 1.0]


def test_connector_and_regressor_shapes():
    c = Connector(4, 7)
    assert c(torch.randn(2, 4, 3, 3)).shape == (2, 7, 3, 3)
    assert c[0].kernel_size == (1, 1) and c[0].bias is None
    r = HintRegressor(4, 6)
    out = r(torch.randn(2, 4, 8, 8), size=(4, 4))
    assert out.shape == (2, 6, 4, 4) and (out >= 0).all()


# -- L_ST, L_TS, R(beta) on a tiny deterministic search network ------------------------------
def _np_bn(z: np.ndarray) -> np.ndarray:
    """BatchNorm2d in training mode with weight 1, bias 0 (the connectors at init)."""
    mu = z.mean(axis=(0, 2, 3), keepdims=True)
    var = z.var(axis=(0, 2, 3), keepdims=True)  # biased, as BN normalises
    return (z - mu) / np.sqrt(var + 1e-5)


def _np_connector(conn: Connector, z: np.ndarray) -> np.ndarray:
    w = conn[0].weight.detach().numpy()[:, :, 0, 0]
    return _np_bn(np.einsum("oc,nchw->nohw", w, z))


def _np_softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def _np_ce(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    t, s = tiny_teacher().double(), tiny_student().double()
    net = SearchNet(t, s, SearchOptions(schedule="joint"), image_size=8, seed=3).double().train()
    with torch.no_grad():
        for beta, vals in zip(net.aggregation.betas, ([0.3, -0.2], [0.1, 0.5, -0.4], [-0.7, 0.2])):
            beta.copy_(torch.tensor(vals))
    x, y = batch(n=6, size=8, dtype=torch.float64, seed=5)
    return net, net.prepare(x, y)


def _np_aggregates(net, b):
    alphas = [_np_softmax(beta.detach().numpy()) for beta in net.aggregation.betas]
    return [np.tensordot(a, c.numpy(), axes=1) for a, c in zip(alphas, b.cands)]


def test_l_st_matches_numpy(tiny_net):
    net, b = tiny_net
    with torch.no_grad():
        _, feats = net.student.forward_groups(b.x, preact=True)
    aggs = _np_aggregates(net, b)
    expected = sum(
        float(((_np_connector(net.st_connectors[g], feats[g][-1].numpy()) - aggs[g]) ** 2).mean())
        for g in range(3)
    )
    net.options = SearchOptions(schedule="joint", gamma_ts=0.0)  # L_bridge = L_ST
    loss, m = net.bridge_loss(b, [0, 1, 2])
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert m["loss_st"].item() == pytest.approx(expected, rel=1e-10)
    # L_train = CE + lam * the same sum (alpha detached does not change the value)
    with torch.no_grad():
        logits = net.student(b.x)
    ltrain, _ = net.weight_loss(b)
    ce = _np_ce(logits.numpy(), b.y.numpy())
    assert ltrain.item() == pytest.approx(ce + net.options.lam * expected, rel=1e-10)


def test_l_ts_matches_numpy(tiny_net):
    net, b = tiny_net
    aggs = _np_aggregates(net, b)
    y = b.y.numpy()
    expected = []
    for g in range(3):
        h = _np_connector(net.ts_connectors[g], aggs[g])
        if g == 2:  # last group: forward_from is the head: ReLU, global mean, Linear
            pooled = np.maximum(h, 0).mean(axis=(2, 3))
            w, bias = net.student.fc.weight.detach().numpy(), net.student.fc.bias.detach().numpy()
            logits = pooled @ w.T + bias
        else:  # earlier groups: the student's own remaining groups (the model, not the loss)
            with torch.no_grad():
                logits = net.student.forward_from(g, torch.from_numpy(h), True).numpy()
        expected.append(_np_ce(logits, y))
    terms = net.ts_terms(b.cands, b.y, [0, 1, 2], detach_alpha=False)
    np.testing.assert_allclose([t.item() for t in terms], expected, rtol=1e-10)
    net.options = SearchOptions(schedule="joint", gamma_st=0.0, gamma_ts=2.0)
    loss, m = net.bridge_loss(b, [0, 1, 2])
    assert loss.item() == pytest.approx(2.0 * sum(expected), rel=1e-10)
    assert m["loss_ts"].item() == pytest.approx(sum(expected), rel=1e-10)


@pytest.mark.parametrize("reg,sign", [("entropy", 1.0), ("-entropy", -1.0), ("none", 0.0)])
def test_entropy_regulariser_matches_numpy(tiny_net, reg, sign):
    net, b = tiny_net
    net.options = SearchOptions(gamma_st=0.0, gamma_ts=0.0, reg=reg, rho=0.5)
    ent = 0.0
    for g in (0, 2):
        a = _np_softmax(net.aggregation.betas[g].detach().numpy())
        ent += float(-(a * np.log(a)).sum())
    loss, _ = net.bridge_loss(b, [0, 2])
    assert loss.item() == pytest.approx(sign * 0.5 * ent, rel=1e-10, abs=1e-15)

"""The part-1 baseline losses (SP, PKT, RKD, CC, NST, DKD) against golden values computed
independently with numpy from the papers' formulas (tests/data/gen_loss_golden.py, explicit
loops), plus the properties each formula implies."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfa_ray.losses import (
    HintRegressor,
    cc_loss,
    dkd_loss,
    dkd_terms,
    nst_loss,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    sp_loss,
)

GOLDEN = json.loads((Path(__file__).parent / "data" / "loss_golden.json").read_text())


def _generator():
    """tests/data/gen_loss_golden.py (numpy only), the one home of the inputs' formulas."""
    path = Path(__file__).parent / "data" / "gen_loss_golden.py"
    spec = importlib.util.spec_from_file_location("gen_loss_golden", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relation_inputs():
    """gen_loss_golden.py's relation_inputs(), as float64 tensors."""
    return [torch.from_numpy(v) for v in _generator().relation_inputs()]


def test_sp_golden():
    e_s, e_t, m_s, m_t, *_ = relation_inputs()
    assert sp_loss(m_s, m_t).item() == pytest.approx(GOLDEN["sp_maps"], rel=1e-12)
    assert sp_loss(e_s, e_t).item() == pytest.approx(GOLDEN["sp_embeddings"], rel=1e-12)
    assert sp_loss(m_s, 3.0 * m_s).item() == pytest.approx(0.0, abs=1e-15)  # the Gram rows are normalised


def test_pkt_golden():
    e_s, e_t, *_ = relation_inputs()
    assert pkt_loss(e_s, e_t).item() == pytest.approx(GOLDEN["pkt"], rel=1e-10)
    assert pkt_loss(e_t, e_t).item() == pytest.approx(0.0, abs=1e-12)
    assert pkt_loss(e_s, e_t).item() > 0


def test_rkd_golden_and_teacher_side_without_gradient():
    e_s, e_t, *_ = relation_inputs()
    assert rkd_distance_loss(e_s, e_t).item() == pytest.approx(GOLDEN["rkd_distance"], rel=1e-10)
    assert rkd_angle_loss(e_s, e_t).item() == pytest.approx(GOLDEN["rkd_angle"], rel=1e-10)
    assert rkd_loss(e_s, e_t).item() == pytest.approx(GOLDEN["rkd_default"], rel=1e-10)
    assert rkd_loss(e_s, e_t, w_dist=1.0, w_angle=0.0).item() == pytest.approx(GOLDEN["rkd_distance"], rel=1e-10)
    # both terms are invariant to scaling the embedding (distances are mean-normalised)
    assert rkd_loss(e_s, e_s * 7.0).item() == pytest.approx(0.0, abs=1e-12)
    s = e_s.clone().requires_grad_(True)
    t = e_t.clone().requires_grad_(True)
    rkd_loss(s, t).backward()
    assert t.grad is None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_cc_golden():
    e_s, e_t, *_ = relation_inputs()
    other = e_s[:, :4] * 0.5 + e_t
    assert cc_loss(e_s, other).item() == pytest.approx(GOLDEN["cc_default"], rel=1e-10)
    assert cc_loss(e_s, other, gamma=1.0, p_order=3).item() == pytest.approx(GOLDEN["cc_gamma1_p3"], rel=1e-10)
    assert cc_loss(e_s, 2.0 * e_s).item() == pytest.approx(0.0, abs=1e-15)


def test_nst_golden():
    _, _, m_s, m_t, *_ = relation_inputs()
    assert nst_loss(m_s, m_t).item() == pytest.approx(GOLDEN["nst_pooled"], rel=1e-10)  # 8x8 pooled to 4x4
    assert nst_loss(m_s, m_s[:, :2] ** 2).item() == pytest.approx(GOLDEN["nst_same_size"], rel=1e-10)
    assert nst_loss(m_s, m_s).item() == pytest.approx(0.0, abs=1e-12)  # MMD of a set with itself
    t = m_t.clone().requires_grad_(True)
    s = m_s.clone().requires_grad_(True)
    nst_loss(s, t.detach()).backward()
    assert torch.isfinite(s.grad).all()


def test_dkd_golden():
    *_, z_s, z_t, y = relation_inputs()
    tckd, nckd = dkd_terms(z_s, z_t, y, 4.0)
    assert tckd.item() == pytest.approx(GOLDEN["dkd_tckd"], rel=1e-10)
    assert nckd.item() == pytest.approx(GOLDEN["dkd_nckd"], rel=1e-10)
    assert dkd_loss(z_s, z_t, y).item() == pytest.approx(GOLDEN["dkd_default"], rel=1e-10)
    assert dkd_loss(z_s, z_t, y, alpha=2.0, beta=3.0, temperature=1.0).item() == pytest.approx(
        GOLDEN["dkd_T1_a2_b3"], rel=1e-10)
    assert dkd_loss(z_t, z_t, y).item() == pytest.approx(0.0, abs=1e-12)


def test_dkd_decomposes_kd():
    """The paper's identity: KD = TCKD + (1 - p_t^target) NCKD per sample (at T = 1, no T^2)."""
    *_, z_s, z_t, y = relation_inputs()
    for n in range(z_s.shape[0]):
        zs, zt, yn = z_s[n:n + 1], z_t[n:n + 1], y[n:n + 1]
        kd = F.kl_div(F.log_softmax(zs, 1), F.log_softmax(zt, 1), reduction="batchmean", log_target=True)
        tckd, nckd = dkd_terms(zs, zt, yn, 1.0)
        p_target = F.softmax(zt, 1)[0, yn[0]]
        assert kd.item() == pytest.approx((tckd + (1 - p_target) * nckd).item(), rel=1e-10)


def test_dkd_stays_finite_when_the_teacher_is_certain():
    z_s = torch.zeros(2, 100)
    z_t = torch.zeros(2, 100)
    z_t[:, 3] = 500.0  # p_target underflows 1 - p to 0 in float32
    y = torch.tensor([3, 3])
    s = z_s.clone().requires_grad_(True)
    loss = dkd_loss(s, z_t, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_hint_regressor_is_a_1x1_conv_when_the_sizes_match():
    r = HintRegressor(4, 6)
    assert r.conv.kernel_size == (1, 1) and r.conv.padding == (0, 0) and isinstance(r.bn, torch.nn.BatchNorm2d)
    x = torch.randn(2, 4, 5, 5)
    r.eval()
    # a 1x1 conv is a per-pixel linear map: the output at a pixel depends on that pixel only
    x2 = x.clone()
    x2[:, :, 0, 0] += 1.0
    diff = (r(x2) - r(x)).abs().sum(1)[0]
    assert diff[0, 0] > 0 and diff.flatten()[1:].abs().max() == 0
    assert HintRegressor(4, 6, kernel_size=3).conv.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="kernel_size must be 1 or 3"):
        HintRegressor(4, 6, kernel_size=5)

"""Golden values and gradient flow of CRD, VID, OFD, AB, FT, FSP and ReviewKD's losses and
modules. Every expected value is computed here from the paper's formula with explicit loops or
numpy (float64), independently of the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from dfa_ray.errors import ConfigError
from dfa_ray.losses_part2 import (
    ab_loss, crd_nce_loss, crd_scores, fsp_loss, fsp_matrix, ft_loss, hcl_loss, linear_warmup, ofd_loss,
    ofd_margin, ofd_partial_l2, scaled_epochs, vid_loss,
)
from dfa_ray.method_modules import (
    ABConnector, CRDEmbed, CRDMemory, Paraphraser, ReviewFusion, Translator, VIDRegressor, forward_with_stem,
    stage_end_bn, stem_channels, teacher_margins,
)
from dfa_ray.models import create_model


def rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale)


def pool_np(a: np.ndarray, side: int) -> np.ndarray:
    """Average pooling of [B, C, H, W] to side x side when side divides H and W."""
    b, c, h, w = a.shape
    return a.reshape(b, c, side, h // side, side, w // side).mean(axis=(3, 5))


# -- CRD ----------------------------------------------------------------------------------
def test_crd_nce_loss_golden():
    scores = rand(3, 6, seed=1).abs() * 1e-3  # normalised scores are ~1/n_data
    n_data = 500
    s = scores.numpy()
    k = 5
    pn = 1.0 / n_data
    expected = 0.0
    for i in range(3):
        expected -= math.log(s[i, 0] / (s[i, 0] + k * pn + 1e-7))
        for j in range(1, 6):
            expected -= math.log(k * pn / (s[i, j] + k * pn + 1e-7))
    expected /= 3
    assert crd_nce_loss(scores, n_data).item() == pytest.approx(expected, rel=1e-12)


def test_crd_scores_golden():
    e = torch.nn.functional.normalize(rand(2, 4, seed=2), dim=1)
    rows = rand(2, 3, 4, seed=3)
    out = crd_scores(e, rows, 0.07)
    for i in range(2):
        for k in range(3):
            dot = sum(rows[i, k, d].item() * e[i, d].item() for d in range(4))
            assert out[i, k].item() == pytest.approx(math.exp(dot / 0.07), rel=1e-12)


def test_crd_memory_draws_negatives_of_other_classes_only():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2, 2, 1, 0])
    torch.manual_seed(0)
    mem = CRDMemory(labels, dim=8, nce_k=2000)
    index = torch.tensor([0, 1, 6])
    idx = mem.draw(index)
    assert idx.shape == (3, 2001)
    assert torch.equal(idx[:, 0], index)
    for row, i in zip(idx, index):
        neg = row[1:]
        assert (labels[neg] != labels[i]).all()
        # every sample of the other classes is drawn (uniformly: each about 2000/n_other times)
        others = (labels != labels[i]).nonzero().flatten()
        counts = torch.bincount(neg, minlength=10)[others].double()
        assert (counts > 0).all()
        assert counts.max() / counts.min() < 1.5


def test_crd_memory_scores_and_momentum_update_are_the_rule_not_gradients():
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    torch.manual_seed(0)
    mem = CRDMemory(labels, dim=4, nce_k=3, temperature=0.5, momentum=0.5)
    assert mem.bank_s.shape == (6, 4) and mem.bank_t.shape == (6, 4)
    assert {"bank_s", "bank_t", "z_s", "z_t"} <= set(mem.state_dict())
    assert not any(True for _ in mem.parameters())  # nothing for an optimiser to touch
    bound = 1 / math.sqrt(4 / 3)
    assert mem.bank_s.abs().max() <= bound
    before_s, before_t = mem.bank_s.clone(), mem.bank_t.clone()
    e_s = torch.nn.functional.normalize(torch.randn(2, 4), dim=1).requires_grad_()
    e_t = torch.nn.functional.normalize(torch.randn(2, 4), dim=1).requires_grad_()
    index = torch.tensor([1, 4])
    contrast = torch.tensor([[1, 0, 2, 4], [4, 1, 3, 0]])
    out_s, out_t = mem(e_s, e_t, index, contrast)
    # the scores use the banks before the update; Z from this first batch
    raw_s = np.array([[math.exp(float(before_t[c] @ e_s[i].detach()) / 0.5) for c in contrast[i]] for i in range(2)])
    raw_t = np.array([[math.exp(float(before_s[c] @ e_t[i].detach()) / 0.5) for c in contrast[i]] for i in range(2)])
    z_s, z_t = raw_s.mean() * 6, raw_t.mean() * 6
    assert mem.z_s.item() == pytest.approx(z_s, rel=1e-5) and mem.z_t.item() == pytest.approx(z_t, rel=1e-5)
    assert np.allclose(out_s.detach().numpy(), raw_s / z_s, rtol=1e-5)
    assert np.allclose(out_t.detach().numpy(), raw_t / z_t, rtol=1e-5)
    # the momentum rule, row by row; the other rows are untouched
    for bank, old, e in ((mem.bank_s, before_s, e_s), (mem.bank_t, before_t, e_t)):
        for i, row in enumerate(index.tolist()):
            v = 0.5 * old[row].numpy() + 0.5 * e[i].detach().numpy()
            assert np.allclose(bank[row].numpy(), v / np.linalg.norm(v), atol=1e-6)
        others = [r for r in range(6) if r not in index.tolist()]
        assert torch.equal(bank[others], old[others])
    # gradients reach the embeddings, never the banks
    (crd_nce_loss(out_s, 6) + crd_nce_loss(out_t, 6)).backward()
    assert e_s.grad is not None and e_s.grad.abs().sum() > 0 and e_t.grad.abs().sum() > 0
    assert mem.bank_s.grad is None and not mem.bank_s.requires_grad
    # Z is fixed after the first batch
    z_before = mem.z_s.clone()
    mem(e_s.detach(), e_t.detach(), index)
    assert torch.equal(mem.z_s, z_before)


def test_crd_memory_refuses_a_one_class_split():
    with pytest.raises(ConfigError, match="only one class"):
        CRDMemory(torch.zeros(5, dtype=torch.long))


def test_crd_embed_is_unit_norm_with_gradients():
    emb = CRDEmbed(6, 128)
    out = emb(torch.randn(3, 6))
    assert out.shape == (3, 128) and torch.allclose(out.norm(dim=1), torch.ones(3))
    out.sum().backward()
    assert emb.linear.weight.grad is not None


# -- VID ----------------------------------------------------------------------------------
def test_vid_loss_golden_and_regressor_variance():
    mu, t = rand(2, 3, 2, 2, seed=4), rand(2, 3, 2, 2, seed=5)
    var = torch.tensor([0.5, 2.0, 5.0], dtype=torch.float64).view(1, 3, 1, 1)
    m, tt, v = mu.numpy(), t.numpy(), var.flatten().numpy()
    total = 0.0
    for b in range(2):
        for c in range(3):
            for i in range(2):
                for j in range(2):
                    total += 0.5 * ((m[b, c, i, j] - tt[b, c, i, j]) ** 2 / v[c] + math.log(v[c]))
    assert vid_loss(mu, t, var).item() == pytest.approx(total / 24, rel=1e-12)

    reg = VIDRegressor(4, 6, 6)
    assert torch.allclose(reg.variance().flatten(), torch.full((6,), 5.0), atol=1e-6)  # CRD's init
    x = torch.randn(2, 4, 3, 3)
    loss = vid_loss(reg(x), torch.randn(2, 6, 3, 3), reg.variance())
    loss.backward()
    assert reg.alpha.grad is not None and reg.alpha.grad.abs().sum() > 0
    assert all(p.grad is not None for p in reg.mean.parameters())


# -- OFD ----------------------------------------------------------------------------------
def test_ofd_margin_is_the_conditional_mean_of_the_negative_part():
    gamma = torch.tensor([1.0, -0.7, 2.0, 0.3])
    beta = torch.tensor([0.0, 0.4, -1.5, 2.0])  # the last channel is almost never negative
    margin = ofd_margin(gamma, beta)
    for c in range(3):
        s, m = abs(gamma[c].item()), beta[c].item()
        pdf = lambda x: math.exp(-((x - m) ** 2) / (2 * s * s)) / (s * math.sqrt(2 * math.pi))  # noqa: E731
        num = integrate.quad(lambda x: x * pdf(x), -np.inf, 0)[0]
        den = integrate.quad(pdf, -np.inf, 0)[0]
        assert margin[c].item() == pytest.approx(num / den, rel=1e-5)
    assert margin[3].item() == pytest.approx(-3 * 0.3, rel=1e-6)  # P(x < 0) < 1e-3: -3 std
    assert (margin < 0).all()


def test_ofd_partial_l2_and_stage_weights_golden():
    s, t = rand(2, 3, 2, 2, seed=6), rand(2, 3, 2, 2, seed=7)
    margin = torch.tensor([-0.5, -0.2, -1.0], dtype=torch.float64)
    sn, tn, mn = s.numpy(), t.numpy(), margin.numpy()

    def partial(sn, tn):
        total = 0.0
        for idx in np.ndindex(sn.shape):
            tt = max(tn[idx], mn[idx[1]])
            if sn[idx] > tt or tt > 0:
                total += (sn[idx] - tt) ** 2
        return total / sn.shape[0]

    assert ofd_partial_l2(s, t, margin).item() == pytest.approx(partial(sn, tn), rel=1e-12)
    s2, t2 = rand(2, 3, 1, 1, seed=8), rand(2, 3, 1, 1, seed=9)
    expected = partial(sn, tn) / 2 + partial(s2.numpy(), t2.numpy())  # 2^-(n-i-1): the deepest weighs 1
    assert ofd_loss([s, s2], [t, t2], [margin, margin]).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("family, bn_of", [
    ("resnet8", lambda m, g: m.groups[g][-1].bn2),
    ("wrn_16_1", lambda m, g: m.groups[g + 1][0].bn1 if g < 2 else m.bn),
    ("vgg8", lambda m, g: m.groups[g][-1].bn),
    ("MobileNetV2", lambda m, g: m.groups[g][-1].conv[-1]),
    ("ShuffleV1", lambda m, g: m.groups[g][-1].bn3),
    ("ResNet50", lambda m, g: m.groups[g][-1].bn3),
])
def test_stage_end_bn_per_family(family, bn_of):
    model = create_model(family, num_classes=5)
    for g in range(model.num_groups):
        bn = stage_end_bn(model, g, family)
        assert bn is bn_of(model, g)
        assert bn.num_features == model.group_info[g].channels
    margins = teacher_margins(model, range(model.num_groups), family)
    assert [m.shape[0] for m in margins] == [gi.channels for gi in model.group_info]


def test_ofd_refuses_shufflenetv2_by_name():
    model = create_model("ShuffleV2", num_classes=5)
    with pytest.raises(ConfigError, match=r"teacher ShuffleV2 \(ShuffleV2Unit blocks\) has none at stage 0"):
        stage_end_bn(model, 0, "ShuffleV2")


# -- AB -----------------------------------------------------------------------------------
def test_ab_loss_golden():
    s1, t1 = rand(2, 2, 3, 3, seed=10, scale=1.5), rand(2, 2, 3, 3, seed=11)
    s2, t2 = rand(2, 4, 1, 1, seed=12, scale=1.5), rand(2, 4, 1, 1, seed=13)

    def alt(sn, tn, mu=1.0):
        total = 0.0
        for idx in np.ndindex(sn.shape):
            if tn[idx] > 0 and sn[idx] <= mu:
                total += (sn[idx] - mu) ** 2
            elif tn[idx] <= 0 and sn[idx] > -mu:
                total += (sn[idx] + mu) ** 2
        return total / sn.shape[0] * 3 / 1000

    expected = 0.5 * alt(s1.numpy(), t1.numpy()) + 1.0 * alt(s2.numpy(), t2.numpy())
    assert ab_loss([s1, s2], [t1, t2]).item() == pytest.approx(expected, rel=1e-12)
    assert ab_loss([t1.abs() + 1.1], [t1.abs() + 0.1]).item() == 0.0  # beyond the margin on the right side


def test_ab_connector_identity_and_projection():
    same = ABConnector(4, 4, same_size=True)
    x = torch.randn(2, 4, 3, 3)
    assert same.identity and torch.equal(same(x, (3, 3)), x)
    proj = ABConnector(4, 6, same_size=False)
    out = proj(torch.randn(2, 4, 6, 6), (3, 3))
    assert out.shape == (2, 6, 3, 3)
    out.sum().backward()
    assert proj.conv.weight.grad is not None


# -- FT -----------------------------------------------------------------------------------
def test_ft_loss_golden_and_modules():
    fs, ft = rand(2, 3, 4, 4, seed=14), rand(2, 5, 2, 2, seed=15)

    def factor(a):
        v = (a ** 2).mean(axis=1).reshape(a.shape[0], -1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    expected = np.abs(factor(pool_np(fs.numpy(), 2)) - factor(ft.numpy())).mean()  # the larger is pooled
    assert ft_loss(fs, ft).item() == pytest.approx(expected, rel=1e-12)
    expected2 = ((factor(pool_np(fs.numpy(), 2)) - factor(ft.numpy())) ** 2).mean()
    assert ft_loss(fs, ft, p2=2).item() == pytest.approx(expected2, rel=1e-12)

    para, trans = Paraphraser(8), Translator(6, 8)
    factor_t, rec = para(torch.randn(2, 8, 4, 4))
    assert factor_t.shape == (2, 4, 4, 4) and rec.shape == (2, 8, 4, 4)
    factor_s = trans(torch.randn(2, 6, 4, 4))
    assert factor_s.shape == (2, 4, 4, 4)
    ft_loss(factor_s, factor_t.detach()).backward()
    assert all(p.grad is not None for p in trans.parameters())
    assert all(p.grad is None for p in para.parameters())


# -- FSP ----------------------------------------------------------------------------------
def test_fsp_matrix_and_loss_golden():
    a, b = rand(2, 3, 4, 4, seed=16), rand(2, 2, 2, 2, seed=17)
    g = fsp_matrix(a, b)
    assert g.shape == (2, 3, 2)
    ap, bn = pool_np(a.numpy(), 2), b.numpy()
    for n in range(2):
        for i in range(3):
            for j in range(2):
                v = sum(ap[n, i, x, y] * bn[n, j, x, y] for x in range(2) for y in range(2)) / 4
                assert g[n, i, j].item() == pytest.approx(v, rel=1e-12)
    s_maps = [rand(2, 3, 4, 4, seed=18), rand(2, 2, 4, 4, seed=19), rand(2, 5, 2, 2, seed=20)]
    t_maps = [rand(2, 3, 4, 4, seed=21), rand(2, 2, 4, 4, seed=22), rand(2, 5, 2, 2, seed=23)]
    expected = sum(((fsp_matrix(s_maps[i], s_maps[i + 1]) - fsp_matrix(t_maps[i], t_maps[i + 1])) ** 2).mean().item()
                   for i in range(2))
    assert fsp_loss(s_maps, t_maps).item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="FSP matrices 0 differ"):
        fsp_loss(s_maps[:2], [t_maps[0], rand(2, 4, 4, 4)])


def test_forward_with_stem_reads_the_stem_in_the_same_pass():
    model = create_model("resnet8", num_classes=5).eval()
    x = torch.randn(2, 3, 8, 8)
    logits, stem, feats = forward_with_stem(model, x)
    assert torch.equal(stem, model.stem(x)) and torch.equal(logits, model(x)) and len(feats) == 3
    assert stem_channels(model, 3, 8) == 16
    vgg = create_model("vgg8", num_classes=5)
    assert forward_with_stem(vgg.eval(), torch.randn(1, 3, 8, 8))[1] is None and stem_channels(vgg, 3, 8) is None


# -- ReviewKD -----------------------------------------------------------------------------
def test_hcl_loss_golden():
    fs, ft = rand(2, 3, 8, 8, seed=24), rand(2, 3, 8, 8, seed=25)
    gs, gt = rand(2, 2, 2, 2, seed=26), rand(2, 2, 2, 2, seed=27)
    a, b = fs.numpy(), ft.numpy()
    lvl1 = (((a - b) ** 2).mean() + 0.5 * ((pool_np(a, 4) - pool_np(b, 4)) ** 2).mean()
            + 0.25 * ((pool_np(a, 2) - pool_np(b, 2)) ** 2).mean()
            + 0.125 * ((pool_np(a, 1) - pool_np(b, 1)) ** 2).mean()) / 1.875
    c, d = gs.numpy(), gt.numpy()  # 2x2: only the 1x1 level is smaller
    lvl2 = (((c - d) ** 2).mean() + 0.5 * ((pool_np(c, 1) - pool_np(d, 1)) ** 2).mean()) / 1.5
    assert hcl_loss([fs, gs], [ft, gt]).item() == pytest.approx(lvl1 + lvl2, rel=1e-12)


def test_review_fusion_shapes_and_gradients():
    fusion = ReviewFusion([4, 6, 8], [5, 7, 9])
    s_maps = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4), torch.randn(2, 8, 1, 1)]
    outs = fusion(s_maps, [(4, 4), (4, 4), (1, 1)])
    assert [tuple(o.shape) for o in outs] == [(2, 5, 4, 4), (2, 7, 4, 4), (2, 9, 1, 1)]
    assert fusion.abfs[-1].attention is None and fusion.abfs[0].attention is not None
    hcl_loss(outs, [torch.randn_like(o) for o in outs]).backward()
    assert all(p.grad is not None for p in fusion.parameters())


def test_schedules():
    assert scaled_epochs(30, 240) == 30 and scaled_epochs(30, 200) == 25 and scaled_epochs(30, 3) == 1
    assert linear_warmup(1, 20) == pytest.approx(0.05) and linear_warmup(25, 20) == 1.0 and linear_warmup(3, 0) == 1.0

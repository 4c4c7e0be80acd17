"""The DFA search: hypergradients (float64, against finite differences), the TS term, the
groupwise schedule, the search direction, and the options."""

from __future__ import annotations

import pytest
import torch

from dfa_ray.dfa import (
    Architect,
    SearchNet,
    SearchOptions,
    make_ts_optimizer,
    make_weight_optimizer,
    search_step,
)
from dfa_ray.errors import ConfigError
from dfa_helpers import batch, tiny_student, tiny_teacher

ALL = [0, 1, 2]


def make_net(dtype=torch.float64, seed=0, **opts) -> SearchNet:
    torch.manual_seed(seed)
    t, s = tiny_teacher(), tiny_student()
    net = SearchNet(t, s, SearchOptions(**opts), image_size=8, seed=seed).to(dtype).train()
    with torch.no_grad():  # betas away from uniform so every term has a non-trivial gradient
        gen = torch.Generator().manual_seed(seed + 7)
        for b in net.aggregation.betas:
            b.copy_(0.5 * torch.randn(b.shape, generator=gen, dtype=torch.float64))
    return net


def batches(net: SearchNet, dtype=torch.float64):
    wb = net.prepare(*batch(n=6, size=8, dtype=dtype, seed=11))
    ab = net.prepare(*batch(n=6, size=8, dtype=dtype, seed=12))
    return wb, ab


def unrolled_objective(net, wb, ab, xi, opt, groups, clip: float | None = None) -> float:
    """L_up(w - xi * (mu * buf + grad_w L_train(w, beta) + wd * w), beta), written out here
    independently of the architect; `clip` rescales the gradient as clip_grad_norm_ does."""
    named = net.named_weight_parameters()
    loss, _ = net.call("weight_loss", wb)
    grads = torch.autograd.grad(loss, [p for _, p in named])
    if clip is not None:
        total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
        grads = [g * min(1.0, clip / (total + 1e-6)) for g in grads]
    group = opt.param_groups[0]
    virtual = {}
    for (name, p), g in zip(named, grads):
        buf = opt.state.get(p, {}).get("momentum_buffer")
        d = g + group["weight_decay"] * p.detach()
        if buf is not None:
            d = d + group["momentum"] * buf
        virtual[name] = p.detach() - xi * d
    with torch.no_grad():
        up, _ = net.call("upper_loss", ab, groups, params=virtual)
    return up.item()


def fd_gradient(net, fn, h=1e-5) -> list[torch.Tensor]:
    """Central differences of fn() over every beta element."""
    out = []
    for beta in net.aggregation.betas:
        g = torch.zeros_like(beta)
        for i in range(beta.numel()):
            orig = beta.data[i].item()
            beta.data[i] = orig + h
            fp = fn()
            beta.data[i] = orig - h
            fm = fn()
            beta.data[i] = orig
            g[i] = (fp - fm) / (2 * h)
        out.append(g)
    return out


def architect_grads(net, wb, ab, opt, xi, groups) -> list[torch.Tensor]:
    """Run one architecture step; return beta.grad (the hypergradient) and restore beta."""
    saved = [b.detach().clone() for b in net.aggregation.betas]
    Architect(net).step(wb, ab, opt, xi, groups)
    grads = [b.grad.clone() if b.grad is not None else None for b in net.aggregation.betas]
    with torch.no_grad():
        for b, s in zip(net.aggregation.betas, saved):
            b.copy_(s)
    return grads


def rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    a, b = torch.cat(a), torch.cat(b)
    return ((a - b).norm() / b.norm()).item()


def autograd_bridge(net, ab, groups) -> list[torch.Tensor]:
    loss, _ = net.call("bridge_loss", ab, groups)
    return list(torch.autograd.grad(loss, list(net.aggregation.betas), allow_unused=False))


@pytest.mark.parametrize("with_momentum", [False, True])
def test_second_order_hypergradient_matches_finite_differences(with_momentum):
    net = make_net(order=2, schedule="joint", weight_decay=0.2 if with_momentum else 0.0)
    wb, ab = batches(net)
    opt = make_weight_optimizer(net)
    if with_momentum:  # a momentum buffer as after earlier steps
        gen = torch.Generator().manual_seed(3)
        for p in net.weight_parameters():
            opt.state[p]["momentum_buffer"] = 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
    xi = 0.5
    hyper = architect_grads(net, wb, ab, opt, xi, ALL)
    fd = fd_gradient(net, lambda: unrolled_objective(net, wb, ab, xi, opt, ALL))
    first = autograd_bridge(net, ab, ALL)
    # the test can tell the orders apart: the implicit term is far above the tolerance
    assert rel_err(first, fd) > 5e-2
    assert rel_err(hyper, fd) < 1e-2


@pytest.mark.parametrize("clip", [None, 0.05])
def test_exact_hvp_matches_the_brute_force_unrolled_gradient(clip):
    """hvp=exact differentiates through the virtual step: it equals central differences of the
    unrolled objective to < 1e-6 relative in float64 (with and without the virtual clip, which
    at 0.05 is active: the weight gradient's norm is far above it)."""
    kw = {"virtual_clip": True, "grad_clip": clip} if clip is not None else {}
    net = make_net(order=2, schedule="joint", weight_decay=0.2, hvp="exact", **kw)
    wb, ab = batches(net)
    opt = make_weight_optimizer(net)
    gen = torch.Generator().manual_seed(3)
    for p in net.weight_parameters():
        opt.state[p]["momentum_buffer"] = 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
    xi = 0.5
    hyper = architect_grads(net, wb, ab, opt, xi, ALL)
    brute = fd_gradient(net, lambda: unrolled_objective(net, wb, ab, xi, opt, ALL, clip=clip))
    assert rel_err(hyper, brute) < 1e-6
    # the finite-difference product on the same problem is measurably less exact
    fd_net = make_net(order=2, schedule="joint", weight_decay=0.2, hvp="finite_difference", **kw)
    for p, q in zip(fd_net.weight_parameters(), net.weight_parameters()):
        assert torch.equal(p, q)
    fd_opt = make_weight_optimizer(fd_net)
    for p, q in zip(fd_net.weight_parameters(), net.weight_parameters()):
        fd_opt.state[p]["momentum_buffer"] = opt.state[q]["momentum_buffer"]
    approx = architect_grads(fd_net, wb, ab, fd_opt, xi, ALL)
    assert rel_err(approx, brute) > 10 * rel_err(hyper, brute)


def test_second_order_with_zero_lr_is_the_bridge_gradient():
    net = make_net(order=2, schedule="joint")
    wb, ab = batches(net)
    hyper = architect_grads(net, wb, ab, make_weight_optimizer(net), 0.0, ALL)
    expected = autograd_bridge(net, ab, ALL)
    for h, e in zip(hyper, expected):
        torch.testing.assert_close(h, e, rtol=1e-12, atol=1e-14)


def test_first_order_is_the_bridge_gradient_at_current_weights():
    net = make_net(order=1, schedule="joint", gamma_ts=0.7, gamma_st=1.3, reg="entropy", rho=0.2)
    wb, ab = batches(net)
    expected = autograd_bridge(net, ab, ALL)
    fd = fd_gradient(net, lambda: net.call("bridge_loss", ab, ALL)[0].item())
    hyper = architect_grads(net, wb, ab, make_weight_optimizer(net), 0.05, ALL)
    for h, e in zip(hyper, expected):
        torch.testing.assert_close(h, e, rtol=1e-12, atol=1e-14)
    assert rel_err(hyper, fd) < 1e-6


def test_ts_term_trains_only_the_ts_connectors():
    net = make_net()
    wb, _ = batches(net)
    running = {n: b.clone() for n, b in net.student.named_buffers()}
    net.zero_grad(set_to_none=True)
    net.ts_connector_loss(wb).backward()
    assert all(p.grad is None for p in net.student.parameters())
    assert all(p.grad is None for p in net.st_connectors.parameters())
    assert all(b.grad is None for b in net.aggregation.betas)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.ts_connectors.parameters())
    for n, b in net.student.named_buffers():  # BN statistics untouched by the bridge path
        assert torch.equal(b, running[n]), n
    bn = net.ts_connectors[0][1]  # ... while the TS connectors' own BN does learn its statistics
    assert int(bn.num_batches_tracked) == 1


def test_weight_step_is_l_train_only():
    """In a whole search step the student moves exactly as SGD on L_train says: the bridge
    (L_TS) does not reach its weights."""
    net = make_net(schedule="joint")
    wb, ab = batches(net)
    ref = make_net(schedule="joint")
    ref.load_state_dict(net.state_dict())
    w_opt, ts_opt = make_weight_optimizer(net), make_ts_optimizer(net)
    search_step(net, Architect(net), wb, ab, w_opt, ts_opt)
    # reference: one clipped SGD step on L_train with the betas the step ended with
    ref.load_state_dict({k: v for k, v in net.state_dict().items() if k.startswith("aggregation")}, strict=False)
    ref_opt = make_weight_optimizer(ref)
    loss, _ = ref.weight_loss(wb)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(ref.weight_parameters(), ref.options.grad_clip)
    ref_opt.step()
    for (n, p), (_, q) in zip(net.named_weight_parameters(), ref.named_weight_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14, msg=n)
    # and the TS connectors did move
    assert any(
        not torch.equal(p, q) for p, q in zip(net.ts_connectors.parameters(), ref.ts_connectors.parameters())
    )


def test_groupwise_changes_only_the_active_beta():
    net = make_net(order=2, schedule="groupwise")
    wb, ab = batches(net)
    arch, opt = Architect(net), make_weight_optimizer(net)
    for active in (1, 2, 0):
        before = [b.detach().clone() for b in net.aggregation.betas]
        arch.step(wb, ab, opt, 0.025, [active])
        for g, (b, old) in enumerate(zip(net.aggregation.betas, before)):
            if g == active:
                assert not torch.equal(b, old)
            else:  # bit-identical, although Adam (with weight decay) has state for it
                assert torch.equal(b, old), f"beta {g} moved while group {active} was searched"
    assert net.active_groups(0.0) == [0] and net.active_groups(0.5) == [1] and net.active_groups(1.0) == [2]
    assert make_net(schedule="joint").active_groups(0.3) == ALL


def test_search_step_metrics_and_alpha_history():
    net = make_net(dtype=torch.float32, order=2)
    wb, ab = batch(n=4, size=8, seed=1), batch(n=4, size=8, seed=2)
    m = search_step(
        net, Architect(net), wb, ab, make_weight_optimizer(net), make_ts_optimizer(net), net.active_groups(0.0)
    )
    for key in ("loss_st", "loss_ts", "loss_upper", "loss_train", "loss_ce", "loss_feat", "acc", "loss_ts_connector"):
        assert torch.isfinite(m[key]), key
    assert 0 <= m["acc"].item() <= 1
    with pytest.raises(ValueError, match="active_groups"):
        search_step(net, Architect(net), wb, ab, make_weight_optimizer(net), make_ts_optimizer(net))


def _candidate_energy(net, ab, g):
    return [c.pow(2).mean().item() for c in ab.cands[g]]


@pytest.mark.parametrize("gamma_st", [1.0, -1.0])
def test_search_moves_alpha_by_energy_when_only_the_st_path_counts(gamma_st):
    """With gamma_TS = 0 and an untrained ST connector, F_s(S_g) is nearly uncorrelated with
    the candidates, so L_ST ~ ||F_s(S_g)||^2 + ||A_g||^2 - 2 <F_s(S_g), A_g> falls fastest by
    weighting the candidate of least energy. In residual nets (and these tiny ones) the energy
    of the block outputs grows with depth, so gamma_ST > 0 pulls alpha to the shallow end (as
    docs/method.md says L_ST does); the adversarial gamma_ST < 0 pulls it to the deep end."""
    torch.manual_seed(0)
    net = SearchNet(
        tiny_teacher(),
        tiny_student(),
        SearchOptions(gamma_ts=0.0, gamma_st=gamma_st, schedule="joint", arch_lr=0.05),
        image_size=8,
    ).train()
    arch, w_opt, ts_opt = Architect(net), make_weight_optimizer(net), make_ts_optimizer(net)
    probe = net.prepare(*batch(n=8, size=8, seed=99))
    for step in range(6):
        search_step(net, arch, batch(n=8, size=8, seed=2 * step), batch(n=8, size=8, seed=2 * step + 1), w_opt, ts_opt)
    for g in (0, 1, 2):  # every group has >= 2 candidates
        energy = _candidate_energy(net, probe, g)
        assert energy == sorted(energy), f"premise: energy grows with depth in group {g}: {energy}"
        alpha = net.alphas()[g]
        n = alpha.numel()
        target = 0 if gamma_st > 0 else n - 1
        assert int(alpha.argmax()) == target, (g, alpha.tolist())
        assert alpha[target].item() > 1.0 / n + 0.02, (g, alpha.tolist())


def test_student_objective_runs_and_ignores_the_ts_path():
    net = make_net(objective="student", schedule="joint")
    wb, ab = batches(net)
    m = Architect(net).step(wb, ab, make_weight_optimizer(net), 0.025, ALL)
    assert torch.isnan(m["loss_ts"]) and torch.isfinite(m["loss_st"])


# -- options ------------------------------------------------------------------------------
def test_defaults():
    o = SearchOptions()
    assert (o.gamma_ts, o.gamma_st, o.reg, o.rho, o.order) == (1.0, 1.0, "none", 0.0, 1)
    assert (o.arch_lr, o.arch_betas, o.arch_weight_decay, o.beta_init_std) == (3e-4, (0.5, 0.999), 1e-3, 1e-3)
    assert (o.schedule, o.derive, o.preact, o.arch_fraction, o.objective) == ("groupwise", "softmax", True, 0.5, "bridge")
    assert (o.lr, o.lr_min, o.momentum, o.weight_decay, o.grad_clip, o.batch_size) == (0.025, 0.001, 0.9, 3e-4, 5.0, 64)
    assert (o.hvp, o.virtual_clip) == ("exact", False)
    assert SearchOptions.model_validate(o.model_dump(mode="json")) == o


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("order", 3, "1 (first-order) | 2"),
        ("reg", "l1", "none | entropy | -entropy"),
        ("schedule", "random", "groupwise | joint"),
        ("objective", "teacher", "bridge | student"),
        ("derive", "topk:0", "topk:K"),
        ("derive", "top2", "softmax | argmax"),
        ("arch_fraction", 1.0, "strictly between 0 and 1"),
        ("preact", "yes", "true | false"),
        ("batch_size", 0, "integer >= 1"),
        ("lr", -0.1, "> 0"),
        ("gamma_ts", float("nan"), "finite number"),
        ("arch_betas", (0.5, 1.5), "two numbers in [0, 1)"),
        ("momentum", 1.0, "[0, 1)"),
        ("hvp", "fd", "exact | finite_difference"),
        ("virtual_clip", 1, "true | false"),
    ],
)
def test_options_validate_names_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as e:
        SearchOptions(**{field: value})
    msg = str(e.value)
    assert f"{field}={value!r}" in msg and allowed in msg, msg


def test_options_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match=r"unknown search option\(s\) gama_ts.*valid options: gamma_ts"):
        SearchOptions.model_validate({"gama_ts": 1.0})
    assert SearchOptions.model_validate({"arch_betas": [0.9, 0.99], "derive": "topk:2"}).arch_betas == (0.9, 0.99)

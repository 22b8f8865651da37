"""Each method's update against an independent implementation of the paper's update rules (with SGD, the
loop's step is exactly -lr * direction), and first-order direction checks on the MNIST VAE."""

from __future__ import annotations

import math

import pytest
import torch

from genunlearn.loop import UnlearnConfig, unlearn
from genunlearn.methods import METHODS, MethodParams, StepContext, get_method
from genunlearn.objectives import HatTerm, StandardTask
from tests.conftest import mse_objective

ETA = 1e-2
BETA_O, BETA_H, BETA_R, BETA_K = 3.0, 2.0, 0.7, 1.3


def _replace_loss(model):
    """A stand-in replacement term: the model's outputs at fixed inputs pulled towards fixed targets."""
    g = torch.Generator().manual_seed(9)
    z, t = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 3, generator=g, dtype=torch.float64)
    return ((model(z) - t) ** 2).sum()


def _keep_loss(model):
    """A stand-in decoder-keep term (``rep-keep``): outputs at other fixed inputs pulled towards other targets."""
    g = torch.Generator().manual_seed(11)
    z, t = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 3, generator=g, dtype=torch.float64)
    return ((model(z) - t) ** 2).sum()


def _flat_grad(loss, params, create_graph=False):
    gs = torch.autograd.grad(loss, params, create_graph=create_graph, retain_graph=True)
    return torch.cat([g.reshape(-1) for g in gs])


def _hat(tiny_problem_model_dtype=torch.float64):
    z = torch.randn(32, 4, dtype=tiny_problem_model_dtype, generator=torch.Generator().manual_seed(5))
    clf = torch.nn.Linear(3, 3).double()
    torch.nn.init.eye_(clf.weight)
    return HatTerm(
        generate=lambda m, n: m(z[:n]), classifier=clf, forget_classes=[0], num_classes=3, alpha=1e-3, samples=32
    )


def _reference_direction(name, model, br, bf, hat, step):
    """The paper's update rules written out independently on flattened gradients."""
    params = list(model.parameters())
    l_r, l_f = mse_objective(model, br), mse_objective(model, bf)
    h = hat(model) if name in ("s-hat", "uno-hat", "uno-s-hat", "h") else None
    alt = {"a-d": ("a", "d"), "uno-s": ("uno", "s"), "uno-s-hat": ("uno-hat", "s-hat")}
    if name in alt:
        name = alt[name][step % 2]
    if name == "uno-fd":  # an approximation of UNO's exact step (tolerance in the test)
        name = "uno"
    if name == "a":
        return -_flat_grad(l_f, params)
    if name == "d":
        return _flat_grad(l_r, params)
    if name == "h":
        return _flat_grad(l_r + BETA_H * h, params)
    if name in ("rep", "rep-decoded"):  # the same rule; only the replacement targets differ
        return _flat_grad(l_r + BETA_R * _replace_loss(model), params)
    if name in ("rep-keep", "rep-keep-away"):  # the same rule; only the keep term's latents differ
        return _flat_grad(l_r + BETA_R * _replace_loss(model) + BETA_K * _keep_loss(model), params)
    hat_on = name.endswith("-hat")
    gr_loss = l_r + BETA_H * h if hat_on else l_r
    gf_loss = l_f + BETA_H * h if hat_on else l_f
    if name == "s-asc":
        g_r, g_f = _flat_grad(gr_loss, params), _flat_grad(gf_loss, params)
        desc = g_r - (g_r @ g_f) / (g_f @ g_f) * g_f
        asc = g_f - (g_r @ g_f) / (g_r @ g_r) * g_r
        return desc - (desc.norm() / asc.norm()) * asc  # ascent_weight 1, below the cap at the first call
    if name in ("sa", "s", "s-hat"):
        g_r, g_f = _flat_grad(gr_loss, params), _flat_grad(gf_loss, params)
        if name == "sa":
            return -(g_f - (g_r @ g_f) / (g_r @ g_r) * g_r)
        return g_r - (g_r @ g_f) / (g_f @ g_f) * g_f
    g_r = _flat_grad(gr_loss, params, create_graph=True)
    g_f = _flat_grad(gf_loss, params, create_graph=True)
    cos = (g_r @ g_f) / (g_r.norm() * g_f.norm())
    return _flat_grad(gr_loss + BETA_O * cos**2, params)


PAPER_METHODS = sorted(n for n, cls in METHODS.items() if cls.__module__.endswith("algorithms"))  # peers: test_peers


@pytest.mark.parametrize("name", PAPER_METHODS)
@pytest.mark.parametrize("step", [0, 1])
def test_sgd_update_matches_paper_rule(tiny_problem, name, step):
    model, br, bf = tiny_problem
    hat = _hat()
    expected = -ETA * _reference_direction(name, model, br, bf, hat, step).detach()
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    method = get_method(name)
    params = list(model.parameters())
    ctx = StepContext(
        params=params,
        retain_loss=lambda: mse_objective(model, br),
        forget_loss=lambda: mse_objective(model, bf),
        hat_loss=lambda: hat(model),
        replace_loss=lambda: _replace_loss(model),
        step=step,
        hp=MethodParams(beta_o=BETA_O, beta_h=BETA_H, beta_r=BETA_R, keep_weight=BETA_K),
        terms={"keep": lambda: _keep_loss(model), "keep_away": lambda: _keep_loss(model)},
    )
    out = method.compute(ctx)
    opt = torch.optim.SGD(params, lr=ETA)
    for p, d in zip(params, out.direction, strict=True):
        p.grad = d.detach()
    opt.step()
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    if name == "uno-fd":  # finite differences: first-order accurate in the step
        assert float((after - before - expected).norm() / expected.norm()) < 1e-3
    else:
        torch.testing.assert_close(after - before, expected, rtol=1e-9, atol=1e-13)


def test_uno_fd_error_is_first_order_in_its_step(tiny_problem):
    """Forward differences: halving ``fd_eps`` halves the deviation from the exact UNO direction (float64)."""
    model, br, bf = tiny_problem
    params = list(model.parameters())

    def direction(name, eps):
        ctx = StepContext(
            params=params,
            retain_loss=lambda: mse_objective(model, br),
            forget_loss=lambda: mse_objective(model, bf),
            hp=MethodParams(beta_o=BETA_O, fd_eps=eps),
        )
        return torch.cat([x.reshape(-1) for x in get_method(name).compute(ctx).direction]).detach()

    exact = direction("uno", 1.0)
    errs = [float((direction("uno-fd", eps) - exact).norm()) for eps in (2e-3, 1e-3, 5e-4)]
    assert 1.8 < errs[0] / errs[1] < 2.2 and 1.8 < errs[1] / errs[2] < 2.2


def test_uno_fd_replays_the_sampling_noise_of_each_loss(tiny_problem):
    """With losses that draw random noise, the finite-difference HVPs must see the same noise as the gradient
    they difference against (else the difference is noise / eps); the result then matches exact UNO on the
    same noise."""
    model, (xr, yr), (xf, yf) = tiny_problem
    params = list(model.parameters())

    def noisy(x, y):
        return lambda: mse_objective(model, (x + 0.3 * torch.randn_like(x), y))

    torch.manual_seed(3)
    exact = get_method("uno").compute(
        StepContext(params=params, retain_loss=noisy(xr, yr), forget_loss=noisy(xf, yf), hp=MethodParams(beta_o=3.0))
    )
    torch.manual_seed(3)
    approx = get_method("uno-fd").compute(
        StepContext(params=params, retain_loss=noisy(xr, yr), forget_loss=noisy(xf, yf), hp=MethodParams(beta_o=3.0))
    )
    a = torch.cat([x.reshape(-1) for x in approx.direction])
    e = torch.cat([x.reshape(-1) for x in exact.direction])
    assert float((a - e).norm() / e.norm()) < 1e-3
    assert torch.rand(1).item() == pytest.approx(
        (
            torch.manual_seed(3),
            torch.randn(16, 4, dtype=torch.float64),
            torch.randn(16, 4, dtype=torch.float64),
            torch.rand(1),
        )[-1].item()
    )  # the global random stream continues as if only the two losses had been drawn


def test_alternating_methods_start_with_their_first_rule(tiny_problem):
    model, br, bf = tiny_problem
    params = list(model.parameters())
    phases = []
    for step in range(4):
        ctx = StepContext(
            params=params,
            retain_loss=lambda: mse_objective(model, br),
            forget_loss=lambda: mse_objective(model, bf),
            step=step,
        )
        phases.append(get_method("uno-s").compute(ctx).logs["phase"])
    assert phases == [0.0, 1.0, 0.0, 1.0]


def test_loop_with_sgd_applies_exactly_one_paper_step(tiny_problem):
    """The full loop (batches, optimizer) on full-size batches equals one hand-made (UNO) step."""
    model, (xr, yr), (xf, yf) = tiny_problem
    expected = -ETA * _reference_direction("uno", model, (xr, yr), (xf, yf), None, 0).detach()
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    task = StandardTask(lambda m, b: mse_objective(m, (b[:, :4], b[:, 4:])))
    cfg = UnlearnConfig(method="uno", steps=1, lr=ETA, optimizer="sgd", batch_size=16, beta_o=BETA_O, stop_at=None)
    res = unlearn(model, task, torch.cat([xr, yr], 1), torch.cat([xf, yf], 1), cfg, progress=False)
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert res.steps_run == 1
    torch.testing.assert_close(after - before, expected, rtol=1e-9, atol=1e-13)


def test_hat_terms_values():
    probs_model = torch.nn.Identity()
    logits = torch.log(torch.tensor([[1e-12, 0.5, 0.5]]))  # no forget mass at all
    for kind, expected in (("bernoulli", -math.log(1 - 1e-3)), ("uniform-kl", 0.0), ("reference", 0.0)):
        hat = HatTerm(
            generate=lambda m, n: logits.expand(n, 3),
            classifier=torch.nn.Identity(),
            forget_classes=[0],
            num_classes=3,
            kind=kind,
            alpha=1e-3,
            samples=4,
        )
        assert hat(probs_model).item() == pytest.approx(expected, abs=1e-9)
    half = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    hat = HatTerm(
        generate=lambda m, n: half.expand(n, 3),
        classifier=torch.nn.Identity(),
        forget_classes=[0],
        num_classes=3,
        kind="bernoulli",
        alpha=1e-3,
        samples=4,
    )
    p_r = 0.5
    assert hat(probs_model).item() == pytest.approx(p_r * math.log(p_r / (1 - 1e-3)) + 0.5 * math.log(0.5 / 1e-3))


@pytest.fixture(scope="module")
def mnist_vae_batches():
    from genunlearn.data import ForgetSplit, load_dataset
    from genunlearn.models import load_model

    ds = load_dataset("mnist", "train")
    split = ForgetSplit.by_class(ds.labels[:4000], 1)
    x = ds.flat_float(torch.arange(4000))
    vae = load_model("mnist-vae")
    return vae, x[split.retain[:128]], x[split.forget[:128]]


@pytest.mark.parametrize("name", ["a", "a-d", "sa", "s", "uno", "uno-s", "d"])
def test_methods_on_mnist_vae_move_in_documented_direction(mnist_vae_batches, name):
    """One small SGD step on the bundled VAE (eval-mode BatchNorm, fixed noise): ascent methods raise the
    forget loss to first order, descent methods lower the retain loss; S moves orthogonally to g_f and SA
    orthogonally to g_r."""
    from genunlearn.models import vae_loss

    vae, xr, xf = mnist_vae_batches
    model = type(vae)()
    model.load_state_dict(vae.state_dict())
    model.eval()
    nr, nf = torch.randn(128, 2), torch.randn(128, 2)
    params = list(model.parameters())

    def losses():
        return vae_loss(model, xr, noise=nr), vae_loss(model, xf, noise=nf)

    l_r, l_f = losses()
    g_r = _flat_grad(l_r, params)
    g_f = _flat_grad(l_f, params)
    ctx = StepContext(
        params=params,
        retain_loss=lambda: losses()[0],
        forget_loss=lambda: losses()[1],
        step=0,
        hp=MethodParams(beta_o=10.0),
    )
    d = torch.cat([x.reshape(-1) for x in get_method(name).compute(ctx).direction]).detach()
    delta = -1e-4 * d  # the SGD step
    rel = lambda v, g: float(v @ g) / float(v.norm() * g.norm())  # noqa: E731
    if name in ("a", "a-d", "sa"):
        assert rel(delta, g_f) > 0.05  # forget loss rises
    if name in ("s", "uno", "uno-s", "d"):
        assert rel(delta, g_r) < -0.05  # retain loss falls
    if name == "s":
        assert abs(rel(delta, g_f)) < 1e-4
    if name == "sa":
        assert abs(rel(delta, g_r)) < 1e-4


def test_uno_with_zero_beta_o_is_plain_retain_descent(tiny_problem):
    """beta_o = 0 skips the second-order work; the update must equal descent on g_r exactly."""
    model, br, bf = tiny_problem
    params = list(model.parameters())

    def direction(name):
        ctx = StepContext(
            params=params,
            retain_loss=lambda: mse_objective(model, br),
            forget_loss=lambda: mse_objective(model, bf),
            hp=MethodParams(beta_o=0.0),
        )
        return torch.cat([d.reshape(-1) for d in get_method(name).compute(ctx).direction])

    torch.testing.assert_close(direction("uno"), direction("d"), rtol=0, atol=0)


def test_bounded_ascent_stops_at_the_cap(tiny_problem):
    model, br, bf = tiny_problem
    params = list(model.parameters())
    method = get_method("s-asc")
    scale_f = {"v": 1.0}

    def ctx(step):
        return StepContext(
            params=params,
            retain_loss=lambda: mse_objective(model, br),
            forget_loss=lambda: scale_f["v"] * mse_objective(model, bf),
            step=step,
            hp=MethodParams(forget_cap=1.5, ascent_weight=2.0),
        )

    assert method.compute(ctx(0)).logs["ascent_w"] == 2.0
    scale_f["v"] = 1.6  # forget loss now above 1.5x its first value: no more ascent, pure S
    out = method.compute(ctx(1))
    assert out.logs["ascent_w"] == 0.0
    s_dir = get_method("s").compute(ctx(1)).direction
    torch.testing.assert_close(
        torch.cat([d.reshape(-1) for d in out.direction]), torch.cat([d.reshape(-1) for d in s_dir])
    )

"""Issue 10: the defects an independent review found, one test (or more) per item, each failing on the old code.

1. the reference code's hat term ("reference"), 2. a finite Bernoulli gradient near its optimum, 3. the NaN guard
restores buffers, 4. uno-fd moves BatchNorm statistics like uno, 5. every engine option acts, 6. the "batch"
BatchNorm mode, 7. timing excludes monitors and diagnostics; per-phase times, 8. no overflow in the cosine,
9. the hat term evaluates the classifier in eval mode. Plus the strengthened tests the issue lists.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace

import pytest
import torch

from genunlearn.eval.monitor import ForgetMonitor
from genunlearn.loop import UnlearnConfig, unlearn
from genunlearn.methods import METHODS, Method, StepContext, StepOutput, get_method, register
from genunlearn.methods.base import MethodParams
from genunlearn.methods.gradients import cosine, grad, norm, orthogonality_penalty_grad, penalty_vectors, project_out
from genunlearn.objectives import HAT_KINDS, HatTerm, ReplacementTask, StandardTask, hat_divergence
from tests.conftest import TinyNet


def _reference_code_term(logits: torch.Tensor, all_digits: list[int], forget_digit: int) -> torch.Tensor:
    """The reference code's ``uniformity_loss_surgery`` (UNO authors, MNIST vae_loss.py), transcribed."""
    probs = torch.softmax(logits, dim=1).mean(dim=0)
    mask = torch.zeros_like(probs)
    mask[all_digits] = 1.0
    mask[forget_digit] = 0.0
    uniform_target = mask / (len(all_digits) - 1)
    return torch.sum(probs * torch.log((probs + 1e-8) / (uniform_target + 1e-8)))


# --- 1. the reference hat term --------------------------------------------------------------------------------


def test_reference_hat_term_matches_the_reference_code_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=g, dtype=torch.float64, requires_grad=True)
    ours = hat_divergence(logits, [1], kind="reference")
    theirs = _reference_code_term(logits, list(range(10)), 1)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=0)


def test_reference_term_differs_from_uniform_kl_and_pushes_harder_on_the_forget_logit():
    """At a few percent forget mass the reference gradient on the forget logits is several times larger."""
    logits = torch.zeros(128, 10, dtype=torch.float64)
    logits[:, 1] = math.log(0.077 * 9 / (1 - 0.077))  # 7.7% forget mass
    grads = {}
    for kind in ("reference", "uniform-kl"):
        x = logits.clone().requires_grad_(True)
        (grads[kind],) = torch.autograd.grad(hat_divergence(x, [1], kind=kind), x)
    ratio = grads["reference"][:, 1].abs().sum() / grads["uniform-kl"][:, 1].abs().sum()
    assert ratio > 5, float(ratio)


@pytest.mark.parametrize("kind", HAT_KINDS)
def test_hat_term_gradients_match_finite_differences(kind):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 5, generator=g, dtype=torch.float64, requires_grad=True)
    f = lambda x: hat_divergence(x, [2, 3], kind=kind, alpha=1e-3)  # noqa: E731
    (analytic,) = torch.autograd.grad(f(logits), logits)
    numeric = torch.zeros_like(logits)
    h = 1e-6
    for i in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            e = torch.zeros_like(logits)
            e[i, j] = h
            numeric[i, j] = (f(logits.detach() + e) - f(logits.detach() - e)) / (2 * h)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-9)


def test_old_categorical_name_is_refused_with_a_pointer():
    from genunlearn.errors import ConfigError

    with pytest.raises(ConfigError, match="reference.*uniform-kl"):
        hat_divergence(torch.zeros(2, 3), [0], kind="categorical")


# --- 2. Bernoulli hat term near its optimum -----------------------------------------------------------------


@pytest.mark.parametrize("forget_logit", [-10.0, -20.0, -30.0, -50.0, -80.0])
def test_bernoulli_gradient_is_finite_near_the_optimum(forget_logit):
    """Old code: q = 1 - p_r rounded to 0 in float32 and xlogy(0, 0) gave a NaN gradient (35 of 50 seeds)."""
    for seed in range(10):
        logits = torch.randn(128, 10, generator=torch.Generator().manual_seed(seed))  # float32, as in a real run
        logits[:, 1] = forget_logit
        logits.requires_grad_(True)
        value = hat_divergence(logits, [1], kind="bernoulli", alpha=1e-8)
        (g,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value) and torch.isfinite(g).all(), seed
        p = torch.softmax(logits.detach().double(), 1).mean(0)  # KL(Bern(p_r) || Bern(1 - alpha)) in float64
        q = float(p[1])
        expected = (1 - q) * (math.log1p(-q) - math.log1p(-1e-8)) + q * (math.log(q) - math.log(1e-8))
        assert value.item() == pytest.approx(expected, rel=1e-3, abs=1e-6)  # float32 log-sum-exp precision


def test_bernoulli_value_matches_eq9_in_float64():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(32, 4, generator=g, dtype=torch.float64)
    p = torch.softmax(logits, 1).mean(0)
    p_r, q, a = float(p[[0, 2, 3]].sum()), float(p[1]), 1e-3
    expected = p_r * math.log(p_r / (1 - a)) + q * math.log(q / a)
    assert hat_divergence(logits, [1], kind="bernoulli", alpha=a).item() == pytest.approx(expected, rel=1e-12)


# --- 3. the NaN guard restores buffers ----------------------------------------------------------------------


class BNNet(torch.nn.Module):
    """A small MLP with BatchNorm (train-mode forwards move its running statistics)."""

    def __init__(self, d_in: int = 4, hidden: int = 6, d_out: int = 3) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(d_in, hidden)
        self.bn = torch.nn.BatchNorm1d(hidden)
        self.l2 = torch.nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.tanh(self.bn(self.l1(x))))


def _mse(m, b):
    return ((m(b[:, :4]) - b[:, 4:]) ** 2).mean()


def _data(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 7, generator=g, dtype=dtype), torch.randn(32, 7, generator=g, dtype=dtype) + 1.0


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_nan_guard_restores_batchnorm_running_statistics():
    r, f = _data()
    calls = {"n": 0}

    def poisoned(m, b):
        calls["n"] += 1
        x = b[:, :4] * float("nan") if calls["n"] == 3 else b[:, :4]  # the forward writes NaN into BN's stats
        return ((m(x) - b[:, 4:]) ** 2).mean()

    cfg = UnlearnConfig(method="a", steps=5, batch_size=8, seed=1, stop_at=None, bn_mode="train")
    torch.manual_seed(0)
    model = BNNet()
    res = unlearn(model, StandardTask(poisoned), r, f, cfg, progress=False)
    assert res.diverged and res.steps_run == 2
    torch.manual_seed(0)
    ref = BNNet()
    unlearn(ref, StandardTask(_mse), r, f, replace(cfg, steps=2), progress=False)
    got, want = _state(model), _state(ref)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
    model.eval()
    assert torch.isfinite(model(r[:, :4])).all()


# --- 4. uno-fd and BatchNorm; double backward through train-mode BatchNorm ---------------------------------


def test_uno_fd_moves_batchnorm_statistics_like_exact_uno():
    r, f = _data()
    states = {}
    for method in ("uno", "uno-fd"):
        torch.manual_seed(0)
        model = BNNet()
        cfg = UnlearnConfig(method=method, steps=1, batch_size=16, seed=0, stop_at=None, bn_mode="train", beta_o=1.0)
        unlearn(model, StandardTask(_mse), r, f, cfg, progress=False)
        states[method] = {k: v for k, v in _state(model).items() if "running" in k or "num_batches" in k}
    assert len(states["uno"]) == 3
    for k in states["uno"]:
        torch.testing.assert_close(states["uno-fd"][k], states["uno"][k], rtol=0, atol=0, msg=k)


def test_uno_fd_approximates_uno_on_a_batchnorm_model_in_train_mode():
    r, f = _data(dtype=torch.float64)
    directions = {}
    for method in ("uno", "uno-fd"):
        torch.manual_seed(0)
        model = BNNet().double().train()
        params = list(model.parameters())
        ctx = StepContext(
            params=params,
            retain_loss=lambda model=model: _mse(model, r[:16]),
            forget_loss=lambda model=model: _mse(model, f[:16]),
            hp=MethodParams(beta_o=10.0, fd_eps=1e-7),
            buffers=list(model.buffers()),
        )
        directions[method] = torch.cat([d.reshape(-1) for d in get_method(method).compute(ctx).direction])
    rel = (directions["uno-fd"] - directions["uno"]).norm() / directions["uno"].norm()
    assert rel < 1e-4, float(rel)


def test_exact_penalty_gradient_through_train_mode_batchnorm_matches_finite_differences():
    r, f = _data(dtype=torch.float64)
    torch.manual_seed(0)
    model = BNNet().double().train()
    params = list(model.parameters())
    bn = model.bn

    def cos2() -> torch.Tensor:
        g_r = grad(_mse(model, r[:16]), params, create_graph=True)
        g_f = grad(_mse(model, f[:16]), params, create_graph=True)
        return cosine(g_r, g_f) ** 2

    g_r = grad(_mse(model, r[:16]), params, create_graph=True)
    g_f = grad(_mse(model, f[:16]), params, create_graph=True)
    exact, value = orthogonality_penalty_grad(g_r, g_f, params)
    assert value.item() == pytest.approx(cos2().item(), rel=1e-10)
    flat = torch.cat([e.reshape(-1) for e in exact])
    direction = torch.randn(flat.numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h = 1e-6
    saved = [p.detach().clone() for p in params]
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            offset = 0
            for p, s in zip(params, saved, strict=True):
                p.copy_(s + sign * h * direction[offset : offset + p.numel()].reshape(p.shape))
                offset += p.numel()
        with torch.no_grad(), torch.enable_grad():
            values.append(cos2().item())
    with torch.no_grad():
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
    assert bn.training
    assert float(flat @ direction) == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-5)


# --- 5. no engine option is recorded without being applied -------------------------------------------------

# For each field: a value that differs from the base run's, the method under which the field acts, and what the
# base run needs for the field to matter.
_CHANGED = {
    "method": ("s", "uno", {}),
    "steps": (3, "uno", {}),
    "lr": (3e-3, "uno", {}),
    "batch_size": (16, "uno", {}),
    "optimizer": ("sgd", "uno", {}),
    "bn_mode": ("eval", "uno", {}),
    "dropout": ("eval", "uno", {}),
    "beta_o": (50.0, "uno", {}),
    "beta_h": (7.0, "s-hat", {}),
    "orthogonality": ("dot", "uno", {}),
    "ascent_weight": (0.3, "s-asc", {}),
    "forget_cap": (1.0, "s-asc", {}),
    "beta_r": (0.1, "rep", {}),
    "fd_eps": (3e-2, "uno-fd", {}),
    "forget_weight": (0.2, "gdiff", {}),
    "adaptive_step": (False, "ngdiff", {"optimizer": "sgd"}),
    "saliency_fraction": (0.2, "salun", {}),
    "relabel_weight": (0.3, "salun", {}),
    "ewc_lambda": (3.0, "amnesia", {}),
    "replay_weight": (0.2, "amnesia", {}),
    "keep_weight": (3.0, "rep-keep", {}),
    "stop_at": (1.0, "uno", {}),
    "early_stop": (False, "uno", {"stop_at": 1.0}),
    "seed": (5, "uno", {}),
    "precision": ("bf16", "uno", {}),
    "diagnostics": (False, "uno", {}),
    "monitor_every": (2, "uno", {}),
}


class BNDropNet(BNNet):
    """BNNet with dropout after the hidden layer."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.drop(torch.tanh(self.bn(self.l1(x)))))


def _observable_run(config: UnlearnConfig):
    """Weights, status, steps and the logged columns of a small BN+dropout run with a monitor and both terms."""
    r, f = _data()
    torch.manual_seed(0)
    model = BNDropNet()
    clf = torch.nn.Linear(3, 2)
    torch.nn.init.normal_(clf.weight, generator=torch.Generator().manual_seed(4))
    z = torch.randn(32, 4, generator=torch.Generator().manual_seed(5))
    hat = HatTerm(generate=lambda m, n: m(z[:n]), classifier=clf, forget_classes=[1], num_classes=2, samples=32)
    monitor = ForgetMonitor(
        generate=lambda m, zz: m(zz), classifier=clf, latents=z, forget_classes=[1], num_classes=2, batch_size=32
    )
    target = torch.randn(8, 3, generator=torch.Generator().manual_seed(6))

    def replacement(m):
        return ((m(z[:8]) - target) ** 2).sum()

    anchor = {n: p.detach().clone() + 0.1 for n, p in model.named_parameters()}
    terms = {  # stand-ins for the peer methods' terms, each depending on the model
        "relabel": lambda m, br, bf: _mse(m, torch.cat([bf[:, :4], torch.flip(bf[:, 4:], [0])], 1)),
        "surrogate": lambda m, br, bf: ((m(z[:8]) - 0.5) ** 2).sum(),
        "replay": lambda m, br, bf: ((m(z[8:16]) - target) ** 2).sum(),
        "ewc": lambda m, br, bf: sum(((p - anchor[n]) ** 2).sum() for n, p in m.named_parameters()),
        "keep": lambda m, br, bf: ((m(z[16:24]) - target) ** 2).sum(),
    }

    res = unlearn(
        model,
        StandardTask(_mse),
        r,
        f,
        config,
        hat=hat if METHODS[config.method].uses_classifier else None,
        replacement=replacement if METHODS[config.method].uses_replacement else None,
        terms=terms,
        monitor=monitor,
        progress=False,
    )
    cols = sorted({k for row in res.log for k in row if not k.endswith("time_s")})
    readings = tuple("forget_fraction" in row for row in res.log)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]), res.status, res.steps_run, cols, readings


def test_every_engine_option_changes_the_run():
    assert set(_CHANGED) == {f.name for f in fields(UnlearnConfig)}, "a new UnlearnConfig field needs a case here"
    for name, (value, method, needs) in _CHANGED.items():
        base = UnlearnConfig(**{"method": method, "steps": 4, "batch_size": 8, "beta_o": 1.0, "stop_at": None, **needs})
        changed = replace(base, **{name: value})
        a, b = _observable_run(base), _observable_run(changed)
        same = torch.equal(a[0], b[0]) and a[1:] == b[1:]
        assert not same, f"UnlearnConfig.{name} is recorded but changes nothing"


# --- 6. BatchNorm modes -------------------------------------------------------------------------------------


def _first_loss_and_stats(mode: str):
    r, f = _data()
    torch.manual_seed(0)
    model = BNNet()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.3)
        model.bn.running_var.fill_(2.0)
    before = _state(model)
    seen = []

    def objective(m, b):
        loss = _mse(m, b)
        seen.append((loss.detach().clone(), b.detach().clone()))
        return loss

    model.eval()
    cfg = UnlearnConfig(method="d", steps=1, lr=1e-3, batch_size=64, bn_mode=mode, stop_at=None)
    unlearn(model, StandardTask(objective), r, f, cfg, progress=False)
    return before, model, seen[0]


def test_batchnorm_mode_train_updates_running_statistics():
    before, model, _ = _first_loss_and_stats("train")
    assert not torch.equal(model.bn.running_mean, before["bn.running_mean"])
    assert int(model.bn.num_batches_tracked) == 1
    assert not model.training  # the caller's mode comes back


@pytest.mark.parametrize("mode", ["eval", "batch"])
def test_batchnorm_modes_eval_and_batch_leave_running_statistics(mode):
    before, model, _ = _first_loss_and_stats(mode)
    for k in ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
        assert torch.equal(model.state_dict()[k], before[k]), k
    assert model.bn.track_running_stats  # the flag is restored


@pytest.mark.parametrize("mode", ["train", "eval", "batch"])
def test_batchnorm_mode_decides_the_normalisation(mode):
    before, _, (loss, batch) = _first_loss_and_stats(mode)
    ref = BNNet()
    ref.load_state_dict(before)
    ref.train(mode != "eval")
    with torch.no_grad():
        expected = _mse(ref, batch)  # train mode: batch statistics; eval: running statistics
    torch.testing.assert_close(loss, expected)
    ref.eval()
    with torch.no_grad():
        with_running = _mse(ref, batch)
    assert (not torch.allclose(loss, with_running)) == (mode != "eval")


# --- 7. timing ----------------------------------------------------------------------------------------------


class _FakeClock:
    """A clock for the loop: advances 1 microsecond per reading, plus what a fake ``sleep`` adds (no real timing)."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1e-6
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch):
    import types

    import genunlearn.loop as loop

    clock = _FakeClock()
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    return clock


def test_monitor_time_is_not_counted(fake_clock):
    r, f = _data()
    state = {"frac": 1.0}

    class SlowClf(torch.nn.Module):
        def forward(self, x):
            fake_clock.sleep(10.0)  # a monitor reading "takes" 10 s on the loop's clock
            n = x.shape[0]
            k = round(state["frac"] * n)
            out = torch.zeros(n, 2)
            out[:k, 1] = 1.0
            out[k:, 0] = 1.0
            state["frac"] = max(0.0, state["frac"] - 0.25)
            return out

    mon = ForgetMonitor(generate=lambda m, z: z, classifier=SlowClf(), latents=torch.zeros(8, 1), forget_classes=[1])
    res = unlearn(
        TinyNet(),
        StandardTask(_mse),
        r,
        f,
        UnlearnConfig(method="s", steps=20, batch_size=8, stop_at=0.02),
        monitor=mon,
        progress=False,
    )
    assert res.updates_to_unlearn == 4
    assert res.time_to_unlearn_s < 1e-3  # four monitor readings would have added 40 s
    assert res.time_to_unlearn_s == pytest.approx(sum(row.get("step_time_s", 0.0) for row in res.log))


class _SlowDiagnostics(Method):
    """A test method whose diagnostics take 10 s on the loop's clock: they must not be timed."""

    name = "_test-slow-diagnostics"
    summary = "test only"
    clock: _FakeClock | None = None

    def compute(self, ctx: StepContext) -> StepOutput:
        l_r = ctx.retain_loss()

        def diagnostics():
            self.clock.sleep(10.0)
            return {"slow": 1.0}

        return StepOutput(grad(l_r, ctx.params), {"loss_r": l_r.detach()}, diagnostics)


def test_diagnostics_are_outside_the_timed_region_and_optional(fake_clock):
    r, f = _data()
    _SlowDiagnostics.clock = fake_clock
    register(_SlowDiagnostics)
    try:
        for diag in (True, False):
            res = unlearn(
                TinyNet(),
                StandardTask(_mse),
                r,
                f,
                UnlearnConfig(method="_test-slow-diagnostics", steps=3, batch_size=8, stop_at=None, diagnostics=diag),
                progress=False,
            )
            assert res.time_per_step_s < 1e-3
            assert ("slow" in res.log[-1]) == diag
    finally:
        METHODS.pop("_test-slow-diagnostics")


def test_alternating_methods_report_per_phase_times_and_mean():
    r, f = _data()
    res = unlearn(
        TinyNet(),
        StandardTask(_mse),
        r,
        f,
        UnlearnConfig(method="uno-s", steps=6, batch_size=8, stop_at=None),
        progress=False,
    )
    assert set(res.time_per_phase_s) == {"0", "1"}
    times = [row["step_time_s"] for row in res.log[1:]]
    assert res.time_per_step_mean_s == pytest.approx(sum(times) / len(times))
    assert res.time_per_phase_s["0"] == pytest.approx(sorted(times[0::2])[1])
    res_s = unlearn(
        TinyNet(),
        StandardTask(_mse),
        r,
        f,
        UnlearnConfig(method="s", steps=2, batch_size=8, stop_at=None),
        progress=False,
    )
    assert res_s.time_per_phase_s is None


# --- 8. overflow in the cosine ------------------------------------------------------------------------------


def test_cosine_projection_and_penalty_vectors_survive_norms_of_1e20():
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(300, generator=g), torch.randn(7, 5, generator=g)]
    b = [torch.randn(300, generator=g) + 0.5 * a[0], torch.randn(7, 5, generator=g)]
    big_a, big_b = [1e20 * x for x in a], [1e20 * x for x in b]
    c = cosine(a, b)
    assert abs(float(c)) > 0.1
    torch.testing.assert_close(cosine(big_a, big_b), c, rtol=1e-5, atol=0)
    assert float(norm(big_a)) == pytest.approx(1e20 * float(norm(a)), rel=1e-5)
    proj, big_proj = project_out(a, b), project_out(big_a, big_b)
    for x, y in zip(proj, big_proj, strict=True):
        torch.testing.assert_close(y / 1e20, x, rtol=1e-4, atol=1e-5)
    v_r, v_f, factor, value = penalty_vectors(a, b)
    bv_r, bv_f, bfactor, bvalue = penalty_vectors(big_a, big_b)
    torch.testing.assert_close(bvalue, value, rtol=1e-5, atol=0)
    torch.testing.assert_close(bfactor, factor, rtol=1e-5, atol=0)
    for x, y in zip(v_r + v_f, bv_r + bv_f, strict=True):  # v scales as 1/|g|
        torch.testing.assert_close(y * 1e20, x, rtol=1e-4, atol=1e-6)


# --- 9. the hat term's classifier in eval mode --------------------------------------------------------------


def test_hat_term_uses_the_classifier_in_eval_mode_and_restores_its_mode():
    clf = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))
    clf.train()
    before = _state(clf)
    z = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    hat = HatTerm(generate=lambda m, n: z[:n], classifier=clf, forget_classes=[1], num_classes=4, samples=16)
    clf.train()  # the user's mode, whatever it is
    first, second = hat(torch.nn.Identity()), hat(torch.nn.Identity())
    assert torch.equal(first, second)  # no dropout noise, no batch statistics
    assert clf.training
    for k, v in _state(clf).items():
        assert torch.equal(v, before[k]), k
    clf.eval()
    with torch.no_grad():
        expected = hat_divergence(clf(z), [1])
    torch.testing.assert_close(first, expected)


# --- strengthened: bf16, replacement orthogonalisation, CLI lists every method ------------------------------


def test_bf16_precision_really_autocasts():
    r, f = _data()
    seen = []

    def objective(m, b):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return _mse(m, b)

    weights = {}
    for precision in ("fp32", "bf16"):
        seen.clear()
        torch.manual_seed(0)
        model = TinyNet()
        cfg = UnlearnConfig(method="s", steps=2, batch_size=8, stop_at=None, precision=precision)
        unlearn(model, StandardTask(objective), r, f, cfg, progress=False)
        assert all(enabled == (precision == "bf16") for enabled, _ in seen)
        if precision == "bf16":
            assert all(dtype == torch.bfloat16 for _, dtype in seen)
        weights[precision] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert not torch.equal(weights["fp32"], weights["bf16"])


class _CondNet(torch.nn.Module):
    """A class-conditional nonlinear regressor: x -> tanh(W_c x) with one weight matrix per condition."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(0)).double() * 0.5)

    def loss(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        pred = torch.tanh(torch.einsum("bij,bj->bi", self.w[c], x))
        return ((pred - 0.3 * x.flip(1)) ** 2).sum(1).mean()


def test_uno_in_replacement_unlearning_is_not_plain_replacement_descent():
    """One SGD step of UNO on the replacement task equals -lr * grad(L^R + beta_o cos^2(g^R_r, g^R_f)), computed
    independently by double backward on flattened gradients, and differs measurably from descent on L^R."""
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(16, 4, generator=g, dtype=torch.float64)
    x_f = torch.randn(16, 4, generator=g, dtype=torch.float64) + 1.0
    task = ReplacementTask(lambda m, x, c: m.loss(x, c), forget_condition=0, target_condition=1)
    steps = {}
    for method in ("uno", "d"):
        model = _CondNet()
        before = model.w.detach().clone()
        cfg = UnlearnConfig(method=method, steps=1, lr=0.1, optimizer="sgd", batch_size=16, beta_o=5.0, stop_at=None)
        unlearn(model, task, x_t, x_f, cfg, progress=False)
        steps[method] = (model.w.detach() - before).reshape(-1)
    model = _CondNet()
    l_r, l_f = task.retain_loss(model, x_t), task.forget_loss(model, x_f)
    (g_r,) = torch.autograd.grad(l_r, model.w, create_graph=True)
    (g_f,) = torch.autograd.grad(l_f, model.w, create_graph=True)
    cos2 = (g_r.reshape(-1) @ g_f.reshape(-1)) ** 2 / (g_r.pow(2).sum() * g_f.pow(2).sum())
    (full,) = torch.autograd.grad(l_r + 5.0 * cos2, model.w)
    torch.testing.assert_close(steps["uno"], -0.1 * full.reshape(-1), rtol=1e-9, atol=1e-12)
    assert (steps["uno"] - steps["d"]).norm() > 0.05 * steps["d"].norm()


def test_cli_methods_lists_every_registered_method(capsys):
    from tests.test_cli import run

    code, out, _ = run(["methods"], capsys)
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert listed == {name for name in METHODS if not name.startswith("_test")}

"""The unlearning loop: stopping, divergence safety, reproducibility, replacement unlearning, monitor."""

from __future__ import annotations

import csv

import pytest
import torch

from genunlearn.errors import ConfigError, DataError
from genunlearn.eval.monitor import ForgetMonitor, wilson_interval
from genunlearn.loop import UnlearnConfig, unlearn
from genunlearn.objectives import ReplacementTask, StandardTask
from tests.conftest import TinyNet


def _xy_task():
    return StandardTask(lambda m, b: ((m(b[:, :4]) - b[:, 4:]) ** 2).mean())


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 7, generator=g), torch.randn(32, 7, generator=g) + 1.0


def _weights(model):
    return torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])


def test_same_seed_same_result_different_seed_differs():
    r, f = _data()
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(0)
        model = TinyNet()
        unlearn(
            model,
            _xy_task(),
            r,
            f,
            UnlearnConfig(method="uno-s", steps=5, batch_size=8, seed=seed, stop_at=None),
            progress=False,
        )
        runs.append(_weights(model))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    assert not torch.equal(runs[0], runs[2])


def test_non_finite_loss_stops_and_keeps_last_good_weights(tmp_path):
    r, f = _data()
    calls = {"n": 0}

    def objective(m, b):
        loss = ((m(b[:, :4]) - b[:, 4:]) ** 2).mean()
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 3 else loss

    cfg = UnlearnConfig(method="a", steps=10, batch_size=8, seed=1, stop_at=None)
    torch.manual_seed(0)
    model = TinyNet()
    res = unlearn(model, StandardTask(objective), r, f, cfg, progress=False, log_path=tmp_path / "log.csv")
    assert res.diverged and res.steps_run == 2 and "update 3" in res.status
    torch.manual_seed(0)
    ref = TinyNet()
    unlearn(
        ref, _xy_task(), r, f, UnlearnConfig(method="a", steps=2, batch_size=8, seed=1, stop_at=None), progress=False
    )
    torch.testing.assert_close(_weights(model), _weights(ref), rtol=0, atol=0)
    assert all(torch.isfinite(_weights(model)))
    assert len(list(csv.DictReader(open(tmp_path / "log.csv")))) == 3  # initial row + 2 updates


class _Counter:
    """A fake generator + classifier pair: the 'forget fraction' falls by 0.25 per update."""

    def __init__(self):
        self.updates = 0


def test_early_stop_counts_updates_and_time():
    r, f = _data()
    model = TinyNet()
    state = {"frac": 1.0}
    latents = torch.zeros(100, 1)

    def generate(m, z):
        return z

    class Clf(torch.nn.Module):
        def forward(self, x):
            n = x.shape[0]
            k = round(state["frac"] * n)
            out = torch.zeros(n, 2)
            out[:k, 1] = 1.0
            out[k:, 0] = 1.0
            return out

    mon = ForgetMonitor(generate=generate, classifier=Clf(), latents=latents, forget_classes=[1], num_classes=2)

    class Task:
        def retain_loss(self, m, b):
            return ((m(b[:, :4]) - b[:, 4:]) ** 2).mean()

        def forget_loss(self, m, b):
            state["frac"] = max(0.0, state["frac"] - 0.125)  # called once per S step
            return ((m(b[:, :4]) - b[:, 4:]) ** 2).mean()

    res = unlearn(
        model,
        Task(),
        r,
        f,
        UnlearnConfig(method="s", steps=50, batch_size=8, stop_at=0.02),
        monitor=mon,
        progress=False,
    )
    assert res.forget_fraction_initial == 1.0
    assert res.updates_to_unlearn == 8 and res.steps_run == 8 and res.status == "unlearned"
    assert res.time_to_unlearn_s == pytest.approx(sum(row.get("step_time_s", 0.0) for row in res.log))
    assert res.time_per_step_s > 0


def test_monitor_leaves_model_untouched_and_counts():
    from genunlearn.models import MNISTVAE

    vae = MNISTVAE().eval()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    clf = torch.nn.Linear(784, 10)
    for mode in ("train", "eval"):
        mon = ForgetMonitor(
            generate=lambda m, z: m.decode(z),
            classifier=clf,
            latents=torch.randn(64, 2),
            forget_classes=[1, 2],
            mode=mode,
        )
        reading = mon.measure(vae)
        assert reading.n == 64 and sum(reading.class_counts) == 64
        assert reading.count == reading.class_counts[1] + reading.class_counts[2]
        assert reading.ci_low <= reading.fraction <= reading.ci_high
    assert not vae.training
    for k, v in vae.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_monitor_reference_reports_collateral_of_retained_inputs_only():
    # "generator": the model's bias picks each latent's class as argmax(z + bias); the classifier is identity
    class Shift(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(3))

    latents = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    mon = ForgetMonitor(
        generate=lambda m, z: z + m.bias,
        classifier=torch.nn.Identity(),
        latents=latents,
        forget_classes=[1],
        num_classes=3,
    )
    model = Shift()
    assert mon.measure(model).collateral is None  # no reference: no collateral
    assert mon.set_reference(model).tolist() == [0, 1, 2, 2]
    r = mon.measure(model)
    assert (r.collateral, r.changed, r.retained_inputs, r.retained_tv) == (0.0, 0, 3, 0.0)
    with torch.no_grad():
        model.bias.copy_(torch.tensor([0.0, -5.0, 1.5]))  # the 1 (forget) and the 0 both become 2
    r = mon.measure(model)
    assert r.fraction == 0.0 and (r.changed, r.retained_inputs) == (1, 3)  # the forget input does not count
    assert r.collateral == pytest.approx(1 / 3)
    # retained proportions: original 0:1/3, 2:2/3; now 2:1 -> TV 1/3
    assert r.retained_tv == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="reference predictions"):
        ForgetMonitor(lambda m, z: z, torch.nn.Identity(), latents, [1], reference=torch.zeros(3, dtype=torch.long))


def test_wilson_interval_known_value():
    lo, hi = wilson_interval(10, 100)
    assert lo == pytest.approx(0.0552, abs=1e-4) and hi == pytest.approx(0.1744, abs=1e-4)


class CondGauss(torch.nn.Module):
    """A tiny class-conditional model: one mean vector per condition, loss ||x - mu_c||^2."""

    def __init__(self, means):
        super().__init__()
        self.mu = torch.nn.Parameter(means.clone())

    def loss(self, x, c):
        return ((x - self.mu[c]) ** 2).sum(1).mean()


def _replacement_run(method):
    g = torch.Generator().manual_seed(0)
    m_f, m_t, m_other = torch.tensor([3.0, -2.0]), torch.tensor([-1.0, 1.0]), torch.tensor([0.0, 4.0])
    x_f = m_f + 0.3 * torch.randn(200, 2, generator=g)
    x_t = m_t + 0.3 * torch.randn(200, 2, generator=g)
    model = CondGauss(torch.stack([m_f, m_t, m_other]))
    task = ReplacementTask(lambda m, x, c: m.loss(x, c), forget_condition=0, target_condition=1)
    cfg = UnlearnConfig(method=method, steps=300, lr=0.05, batch_size=32, beta_o=1.0, stop_at=None)
    res = unlearn(model, task, x_t, x_f, cfg, progress=False)
    assert not res.diverged
    return model.mu.detach(), m_f, m_t, m_other


@pytest.mark.parametrize("method", ["uno", "uno-s"])
def test_replacement_unlearning_maps_forget_condition_to_target(method):
    mu, m_f, m_t, m_other = _replacement_run(method)
    start = (m_f - m_t).norm()  # 5: the forget condition must end within a tenth of the way (Adam jitters ~lr)
    assert (mu[0] - m_t).norm() < 0.1 * start, mu  # the forget condition now generates target data
    assert (mu[1] - m_t).norm() < 0.1 * start  # the target condition is kept
    assert torch.equal(mu[2], m_other)  # an unrelated condition is untouched


def test_loop_errors():
    r, f = _data()
    with pytest.raises(ConfigError, match="needs a classifier"):
        unlearn(TinyNet(), _xy_task(), r, f, UnlearnConfig(method="h"), progress=False)
    with pytest.raises(DataError, match="empty forget set"):
        unlearn(TinyNet(), _xy_task(), r, f[:0], UnlearnConfig(method="s"), progress=False)
    with pytest.raises(ConfigError, match="optimizer must be"):
        UnlearnConfig(optimizer="rmsprop").validate()
    with pytest.raises(ConfigError, match="unknown method 'zzz'"):
        UnlearnConfig(method="zzz").validate()


def test_surgery_stalls_on_replacement_when_gradients_are_collinear():
    """In this toy the mu_0 parts of g_r^R = 2(mu_0 - x_t) and g_f^R = 2(mu_0 - x_f) are (anti)parallel on
    the way from m_f to m_t, so projecting g_r^R off g_f^R removes almost all of it: S only drifts on
    noise, while UNO's descent on L^R moves mu_0 to the target."""
    mu_s, m_f, m_t, _ = _replacement_run("s")
    mu_uno, *_ = _replacement_run("uno")
    assert (mu_s[0] - m_t).norm() > 0.5 * (m_f - m_t).norm()
    assert (mu_uno[0] - m_t).norm() < 0.25


@pytest.mark.parametrize("method", ["s", "uno"])
def test_bf16_autocast_runs_and_stays_close_to_fp32(method):
    r, f = _data()
    finals = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = TinyNet()
        res = unlearn(
            model,
            _xy_task(),
            r,
            f,
            UnlearnConfig(method=method, steps=3, batch_size=8, stop_at=None, precision=precision, beta_o=1.0),
            progress=False,
        )
        assert not res.diverged and res.steps_run == 3
        finals[precision] = _weights(model)
    torch.manual_seed(0)
    start = _weights(TinyNet())
    moved = (finals["fp32"] - start).norm()
    assert moved > 0
    assert (finals["bf16"] - finals["fp32"]).norm() < 0.2 * moved

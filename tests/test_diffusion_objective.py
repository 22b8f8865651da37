"""The diffusion denoising objective over a diffusers scheduler, and replacement unlearning with it."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from genunlearn.errors import ConfigError
from genunlearn.loop import UnlearnConfig, unlearn
from genunlearn.objectives import DiffusionObjective, ReplacementTask, StandardTask, model_prediction


class TinyDenoiser(torch.nn.Module):
    """A class-conditional per-pixel denoiser: eps_hat = a_c * x_t + b(t) (optionally twice the channels)."""

    def __init__(self, classes: int = 4, learned_sigma: bool = False) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.linspace(0.1, 0.4, classes + 1))
        self.b = torch.nn.Parameter(torch.zeros(1))
        self.learned_sigma = learned_sigma
        self.calls: list[tuple] = []

    def forward(self, x_t, t, labels=None):
        self.calls.append((t.clone(), None if labels is None else labels.clone()))
        a = self.a[labels].view(-1, 1, 1, 1) if labels is not None else self.a[-1]
        out = a * x_t + self.b * t.view(-1, 1, 1, 1) / 1000
        return torch.cat([out, torch.zeros_like(out)], 1) if self.learned_sigma else out


def _sched(prediction="epsilon"):
    return DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction)


def test_epsilon_loss_matches_an_independent_computation():
    sched = _sched()
    model = TinyDenoiser()
    x = torch.rand(6, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    obj = DiffusionObjective(sched, preprocess=lambda v: 2 * v - 1)
    torch.manual_seed(3)
    loss = obj(model, (x, y))
    torch.manual_seed(3)  # replay the draws: timesteps, then noise
    t = torch.randint(0, 1000, (6,))
    noise = torch.randn(6, 1, 4, 4)
    x0 = 2 * x - 1
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    pred = model.a[y].view(-1, 1, 1, 1) * x_t + model.b * t.view(-1, 1, 1, 1) / 1000
    torch.testing.assert_close(loss, ((pred - noise) ** 2).mean())
    assert torch.equal(model.calls[0][1], y)


def test_v_prediction_and_learned_variance_outputs():
    sched = _sched("v_prediction")
    model = TinyDenoiser(learned_sigma=True)
    obj = DiffusionObjective(sched, conditional_model=False)
    x = torch.rand(3, 1, 4, 4)
    torch.manual_seed(0)
    loss = obj(model, x)
    torch.manual_seed(0)
    t = torch.randint(0, 1000, (3,))
    noise = torch.randn_like(x)
    x_t = sched.add_noise(x, noise, t)
    pred = model.a[-1] * x_t + model.b * t.view(-1, 1, 1, 1) / 1000
    torch.testing.assert_close(loss, ((pred - sched.get_velocity(x, noise, t)) ** 2).mean())
    assert model.calls[0][1] is None  # unconditional call
    assert model_prediction(model, x_t, t, None).shape == x.shape  # the variance half is cut


def test_label_dropout_and_errors():
    model = TinyDenoiser()
    obj = DiffusionObjective(_sched(), null_label=4, label_dropout=1.0)
    obj(model, (torch.rand(5, 1, 4, 4), torch.zeros(5, dtype=torch.long)))
    assert torch.equal(model.calls[-1][1], torch.full((5,), 4))
    with pytest.raises(ConfigError, match="null label"):
        DiffusionObjective(_sched(), label_dropout=0.1)
    with pytest.raises(ConfigError, match="labelled batches"):
        DiffusionObjective(_sched())(model, torch.rand(2, 1, 4, 4))
    with pytest.raises(ConfigError, match="prediction type"):
        DiffusionObjective(_sched(), prediction="noise")


def test_replacement_unlearning_on_the_denoiser_moves_only_the_forget_label():
    """Conditional replacement (eqs. 4-8) with the diffusion objective: the forget label's parameter moves
    towards the target's, the target's stays near, others are untouched."""
    torch.manual_seed(0)
    model = TinyDenoiser()
    before = model.a.detach().clone()
    obj = DiffusionObjective(_sched())
    task = ReplacementTask(obj.conditional, forget_condition=1, target_condition=2)
    x_t = torch.rand(64, 1, 4, 4)
    x_f = torch.rand(64, 1, 4, 4) * 0.2
    cfg = UnlearnConfig(method="uno", steps=30, lr=0.02, batch_size=16, beta_o=1.0, stop_at=None)
    res = unlearn(model, task, x_t, x_f, cfg, progress=False)
    assert not res.diverged
    moved = (model.a.detach() - before).abs()
    assert moved[1] > 0.05 and moved[0] == 0 and moved[3] == 0 and moved[4] == 0
    std = unlearn(
        TinyDenoiser(),
        StandardTask(obj),
        (x_t, torch.zeros(64, dtype=torch.long)),
        (x_f, torch.ones(64, dtype=torch.long)),
        UnlearnConfig(method="s", steps=2, batch_size=16, stop_at=None),
        progress=False,
    )
    assert std.steps_run == 2


def test_preserved_labels_get_gradient_and_forgotten_ones_are_refused():
    """ReplacementTask.preserve: the other labels' parameters receive retain gradient only with the term; a
    preserve draw carrying a forget or target label is an error, not a silent change of the task."""
    from genunlearn.errors import DataError
    from genunlearn.objectives import labelled_draws

    obj = DiffusionObjective(_sched())
    x_o = torch.rand(20, 1, 4, 4)
    y_o = torch.tensor([0, 3] * 10)
    batch = torch.rand(8, 1, 4, 4)
    grads = {}
    for name, preserve in (("paper", None), ("preserve", labelled_draws((x_o, y_o)))):
        model = TinyDenoiser()
        task = ReplacementTask(obj.conditional, forget_condition=1, target_condition=2, preserve=preserve)
        task.retain_loss(model, batch).backward()
        grads[name] = model.a.grad.detach().clone()
    assert grads["paper"][0] == 0 and grads["paper"][3] == 0 and grads["paper"][1] != 0
    assert grads["preserve"][0] != 0 and grads["preserve"][3] != 0 and grads["preserve"][4] == 0
    bad = ReplacementTask(obj.conditional, 1, 2, preserve=labelled_draws((x_o, torch.full((20,), 2))))
    with pytest.raises(DataError, match="target labels"):
        bad.retain_loss(TinyDenoiser(), batch)
    with pytest.raises(ConfigError, match="preserve_weight"):
        ReplacementTask(obj.conditional, 1, 2, preserve_weight=-1.0)
    with pytest.raises(ConfigError, match="no examples"):
        labelled_draws((x_o[:0], y_o[:0]))


def test_labelled_draws_reads_datasets_of_labelled_items():
    from genunlearn.objectives import labelled_draws

    data = torch.utils.data.TensorDataset(torch.rand(5, 1, 2, 2), torch.tensor([4, 5, 6, 7, 8]))
    torch.manual_seed(0)
    x, y = labelled_draws(data)(7, torch.device("cpu"))
    assert x.shape == (7, 1, 2, 2) and y.dtype == torch.int64 and set(y.tolist()) <= {4, 5, 6, 7, 8}
    for xi, yi in zip(x, y, strict=True):
        assert torch.equal(xi, data[int(yi) - 4][0])


def test_distillation_is_zero_at_the_frozen_copy_and_the_frozen_predictions_squared_error_otherwise():
    """DiffusionObjective.distillation: the same timestep/noise draws as the loss, the frozen model's prediction as
    the target (no gradient into it); ReplacementTask.preserve_loss puts it in place of the preserved draws' loss."""
    import copy

    from genunlearn.objectives import labelled_draws
    from genunlearn.objectives.diffusion import model_prediction

    obj = DiffusionObjective(_sched())
    model = TinyDenoiser()
    x0, y = torch.rand(8, 1, 4, 4), torch.tensor([0, 3] * 4)
    frozen = copy.deepcopy(model)
    for p in frozen.parameters():
        p.requires_grad_(False)
    loss = obj.distillation(model, frozen, x0, y)
    (g,) = torch.autograd.grad(loss, [model.a])
    assert float(loss) == 0 and float(g.abs().sum()) == 0
    with torch.no_grad():
        model.a.add_(0.3)
    torch.manual_seed(2)
    loss = obj.distillation(model, frozen, x0, y)
    torch.manual_seed(2)  # the draws of DiffusionObjective.loss: t, then the noise
    t = torch.randint(0, obj.num_train_timesteps, (8,))
    x_t = obj.scheduler.add_noise(x0, torch.randn_like(x0), t)
    want = (model_prediction(model, x_t, t, y) - model_prediction(frozen, x_t, t, y)).pow(2).reshape(8, -1).mean(1)
    torch.testing.assert_close(loss, want.mean())
    loss.backward()
    assert frozen.a.grad is None and model.a.grad is not None
    # in a replacement task: the preserved draws take the distillation instead of their denoising loss
    draws = labelled_draws((x0, y))
    calls = []
    distill = obj.conditional_distillation(frozen)
    task = ReplacementTask(
        obj.conditional, 1, 2, preserve=draws, preserve_loss=lambda m, x, c: calls.append(c) or distill(m, x, c)
    )
    task.retain_loss(model, torch.rand(4, 1, 4, 4))
    assert len(calls) == 1 and set(calls[0].tolist()) <= {0, 3}

"""The peer methods (GDiff, NGDiff, SalUn, Selective Amnesia, ESD, SISS): each method's SGD update against an
independent implementation of its paper's rule on a toy, their terms on a toy VAE and a toy conditional denoiser,
and the engine's term mechanism (missing terms, one-off preparation)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from diffusers import DDPMScheduler

from genunlearn.errors import ConfigError
from genunlearn.loop import UnlearnConfig, unlearn
from genunlearn.methods import METHODS, MethodParams, PrepareContext, StepContext, get_method
from genunlearn.methods import peers as peer_module
from genunlearn.objectives import DiffusionObjective, StandardTask, VAEObjective
from genunlearn.objectives.peer_terms import (
    DiffusionRelabel,
    DiffusionReplay,
    DiffusionSurrogate,
    EWCPenalty,
    NegativeGuidance,
    SISSLoss,
    diffusion_fisher,
    diffusion_terms,
    fisher_diagonal,
    generate_pool,
    other_labels,
    vae_terms,
)
from tests.conftest import mse_objective
from tests.test_diffusion_objective import TinyDenoiser

ETA = 1e-2
PEERS = sorted(
    cls.name for cls in METHODS.values() if cls.__module__ == peer_module.__name__ and not cls.__name__.startswith("_")
)


def test_every_peer_is_registered():
    assert PEERS == ["amnesia", "esd", "gdiff", "i2i", "ngdiff", "salun", "siss"]


def _flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _flat_grad(loss, params):
    return _flat(torch.autograd.grad(loss, params, retain_graph=True))


def _sgd(model, method, ctx):
    """Apply ``method``'s direction with one plain SGD step (the loop's update); return the parameter change."""
    before = _flat(model.parameters()).clone()
    out = method.compute(ctx)
    opt = torch.optim.SGD(list(model.parameters()), lr=ETA)
    for p, d in zip(model.parameters(), out.direction, strict=True):
        p.grad = d.detach()
    opt.step()
    return _flat(model.parameters()) - before, out


def _ctx(model, br, bf, hp, **kw):
    return StepContext(
        params=list(model.parameters()),
        retain_loss=lambda: mse_objective(model, br),
        forget_loss=lambda: mse_objective(model, bf),
        hp=hp,
        **kw,
    )


def test_gdiff_descends_retain_minus_weighted_forget(tiny_problem):
    model, br, bf = tiny_problem
    params = list(model.parameters())
    lam = 0.3
    expected = -ETA * _flat_grad(mse_objective(model, br) - lam * mse_objective(model, bf), params)
    delta, _ = _sgd(model, get_method("gdiff"), _ctx(model, br, bf, MethodParams(forget_weight=lam)))
    torch.testing.assert_close(delta, expected, rtol=1e-9, atol=1e-13)


def _unit_difference(model, br, bf):
    params = list(model.parameters())
    g_r, g_f = _flat_grad(mse_objective(model, br), params), _flat_grad(mse_objective(model, bf), params)
    return g_r / g_r.norm() - g_f / g_f.norm()


def _retain_at(model, br, flat_offset):
    twin = copy.deepcopy(model)
    with torch.no_grad():
        start = 0
        for p in twin.parameters():
            p.add_(flat_offset[start : start + p.numel()].reshape(p.shape))
            start += p.numel()
    return float(mse_objective(twin, br).detach())


def test_ngdiff_fixed_step_is_lr_along_the_normalised_difference(tiny_problem):
    model, br, bf = tiny_problem
    d = _unit_difference(model, br, bf)
    hp = MethodParams(adaptive_step=False, lr=ETA)
    delta, out = _sgd(model, get_method("ngdiff"), _ctx(model, br, bf, hp))
    torch.testing.assert_close(delta, -ETA * d, rtol=1e-9, atol=1e-13)
    assert out.logs["step_size"] == ETA


def test_ngdiff_adaptive_step_is_the_generalized_newton_step_on_the_retain_loss(tiny_problem):
    """eta_1 = eta_0 (L+ - L-) / (2 (L+ - 2 L0 + L-)) from probes at +-eta_0 d; the second step starts from eta_1."""
    model, br, bf = tiny_problem
    method = get_method("ngdiff")
    hp = MethodParams(adaptive_step=True, lr=ETA)
    etas = []
    for _ in range(2):
        d = _unit_difference(model, br, bf)
        eta_prev = etas[-1] if etas else ETA
        l0 = float(mse_objective(model, br).detach())
        lp, lm = _retain_at(model, br, eta_prev * d), _retain_at(model, br, -eta_prev * d)
        assert lp - lm > 0 and lp - 2 * l0 + lm > 0  # the rule's branch is the one under test
        eta = eta_prev * (lp - lm) / (2 * (lp - 2 * l0 + lm))
        delta, out = _sgd(model, method, _ctx(model, br, bf, hp))
        torch.testing.assert_close(delta, -eta * d, rtol=1e-6, atol=1e-12)
        assert out.logs["step_size"] == pytest.approx(eta, rel=1e-6)
        etas.append(eta)
    assert etas[0] != pytest.approx(ETA)


def test_saliency_mask_keeps_the_largest_summed_forget_gradients_and_only_they_move(tiny_problem):
    model, br, bf = tiny_problem
    params = list(model.parameters())
    halves = [(bf[0][:8], bf[1][:8]), (bf[0][8:], bf[1][8:])]
    summed = sum(_flat_grad(mse_objective(model, h), params) for h in halves)
    k = math.ceil(0.3 * summed.numel())
    expected_mask = torch.zeros_like(summed)
    expected_mask[summed.abs().argsort(descending=True)[:k]] = 1.0
    method = get_method("salun")
    hp = MethodParams(saliency_fraction=0.3, relabel_weight=0.7)
    logs = method.prepare(
        PrepareContext(params=params, forget_losses=[lambda h=h: mse_objective(model, h) for h in halves], hp=hp)
    )
    assert logs["saliency_kept"] == k
    torch.testing.assert_close(_flat(method.mask), expected_mask, rtol=0, atol=0)

    def relabel():  # a stand-in relabelled-forget loss: forget inputs towards other targets
        return mse_objective(model, (bf[0], torch.flip(bf[1], [0])))

    full = _flat_grad(mse_objective(model, br) + 0.7 * relabel(), params)
    delta, out = _sgd(model, method, _ctx(model, br, bf, hp, terms={"relabel": relabel}))
    torch.testing.assert_close(delta, -ETA * expected_mask * full, rtol=1e-9, atol=1e-13)
    assert bool((delta[expected_mask == 0] == 0).all()) and "loss_relabel" in out.logs


def test_selective_amnesia_descends_surrogate_replay_and_ewc(tiny_problem):
    model, br, bf = tiny_problem
    params = list(model.parameters())
    g = torch.Generator().manual_seed(4)
    fisher = {n: torch.rand(p.shape, generator=g, dtype=p.dtype) for n, p in model.named_parameters()}
    ewc = EWCPenalty.around(model, fisher)
    with torch.no_grad():  # move away from the anchor so that the penalty has a gradient
        for p in params:
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    anchor = {n: a.clone() for n, a in ewc.anchor.items()}

    def surrogate():
        return mse_objective(model, (bf[0], torch.zeros_like(bf[1])))

    def replay():
        return mse_objective(model, br)

    by_hand = sum(
        (fisher[n] * (p - anchor[n]) ** 2).sum() for n, p in model.named_parameters()
    )  # the EWC penalty written out
    assert float(ewc(model).detach()) == pytest.approx(float(by_hand.detach()))
    lam, gamma = 5.0, 0.4
    expected = -ETA * _flat_grad(surrogate() + gamma * replay() + lam * by_hand, params)
    terms = {"surrogate": surrogate, "replay": replay, "ewc": lambda: ewc(model)}
    hp = MethodParams(ewc_lambda=lam, replay_weight=gamma)
    delta, _ = _sgd(model, get_method("amnesia"), _ctx(model, br, bf, hp, terms=terms))
    torch.testing.assert_close(delta, expected, rtol=1e-9, atol=1e-13)


def test_fisher_diagonal_is_the_mean_squared_per_example_gradient(tiny_problem):
    model, (xr, yr), _ = tiny_problem
    xs = torch.cat([xr[:5], yr[:5]], 1)
    fisher = fisher_diagonal(model, lambda m, x: mse_objective(m, (x[:, :4], x[:, 4:])), [xs[:2], xs[2:]])
    params = list(model.parameters())
    per = torch.stack([_flat_grad(mse_objective(model, (xr[i : i + 1], yr[i : i + 1])), params) for i in range(5)])
    torch.testing.assert_close(_flat(fisher.values()), per.pow(2).mean(0))


# --- the VAE versions of the terms ---------------------------------------------------------------------------


class ToyVAE(torch.nn.Module):
    """encode(x) -> (mu, logvar), decode_logits(z): the VAE contract on 6-pixel images, 2-d latents."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Linear(6, 4)
        self.dec = torch.nn.Linear(2, 6)

    def encode(self, x):
        h = self.enc(x.reshape(x.shape[0], -1))
        return h[:, :2], h[:, 2:]

    def decode_logits(self, z):
        return self.dec(z)

    def decode(self, z):
        return torch.sigmoid(self.dec(z))


def test_vae_terms_relabel_surrogate_replay_and_ewc():
    torch.manual_seed(0)
    vae = ToyVAE()
    retain, forget = torch.rand(40, 6) * 0.5, torch.rand(20, 6) * 0.5 + 0.5
    terms = vae_terms(
        ["relabel", "surrogate", "replay", "ewc"], vae, retain, forget, samples=16, fisher_samples=32, reduction="mean"
    )
    # relabel: the forget region decoded towards retained images; surrogate: towards uniform noise
    rel, sur = terms["relabel"], terms["surrogate"]
    mu_f, _ = vae.encode(forget)
    torch.testing.assert_close(rel.mu, mu_f.detach())
    drawn = rel.targets(500, torch.device("cpu"))
    assert all(bool((retain == row).all(1).any()) for row in drawn[:50])
    noise = sur.targets(4000, torch.device("cpu"))
    assert noise.shape == (4000, 6) and 0.45 < float(noise.mean()) < 0.55 and float(noise.min()) >= 0
    # the terms train the decoder only where they are evaluated, and change when the model changes
    torch.manual_seed(1)
    before = float(rel(vae, None, None))
    with torch.no_grad():
        vae.dec.bias.add_(1.0)
    torch.manual_seed(1)
    assert float(rel(vae, None, None)) != before
    # replay: the frozen original's images, the model's ELBO of them (a copy trained away keeps the targets)
    replay = terms["replay"]
    trained = copy.deepcopy(vae)
    torch.manual_seed(3)
    a = replay(vae, None, None)
    torch.manual_seed(3)
    b = replay(trained, None, None)
    torch.testing.assert_close(a, b)
    torch.manual_seed(3)
    i = torch.randint(0, 40, (16,))
    z = replay.mu[i] + replay.std[i] * torch.randn_like(replay.mu[i])
    images = torch.sigmoid(replay.frozen.decode_logits(z))
    torch.testing.assert_close(a, VAEObjective("bernoulli", "mean")(vae, images))
    # ewc: zero at the original weights
    assert float(terms["ewc"](copy.deepcopy(replay.frozen).requires_grad_(True))) == 0.0


def test_decoder_keep_is_zero_at_the_original_and_pulls_a_moved_decoder_back():
    torch.manual_seed(0)
    vae = ToyVAE()
    retain, forget = torch.rand(40, 6) * 0.5, torch.rand(20, 6) * 0.5 + 0.5
    keep = vae_terms(["keep"], vae, retain, forget, samples=16, reduction="mean")["keep"]
    torch.testing.assert_close(keep.mu, vae.encode(retain)[0].detach())  # the retained data's latent region
    model = copy.deepcopy(vae)
    loss = keep(model)
    (g,) = torch.autograd.grad(loss, [model.dec.bias])
    assert abs(float(loss.detach())) < 1e-5 and float(g.norm()) < 1e-5  # KL to itself: 0, and no pull
    with torch.no_grad():
        model.dec.bias.add_(0.5)
    torch.manual_seed(4)
    loss = keep(model)
    (g,) = torch.autograd.grad(loss, [model.dec.bias])
    assert float(loss.detach()) > 0 and bool((g > 0).all())  # descent moves the bias back towards the original's
    # the Bernoulli KL: reconstruction of the original's pixel means minus their entropy
    torch.manual_seed(4)
    i = torch.randint(0, 40, (16,))
    z = keep.mu[i] + keep.std[i] * torch.randn_like(keep.mu[i])
    p, q = torch.sigmoid(vae.decode_logits(z)), torch.sigmoid(model.decode_logits(z))
    kl = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).sum(1).mean()
    torch.testing.assert_close(loss, kl, rtol=1e-4, atol=1e-5)
    assert keep.frozen is not vae and not keep.frozen.dec.bias.requires_grad  # a frozen copy


def test_keep_away_holds_only_the_retained_latents_away_from_the_forget_data():
    from genunlearn.objectives.replacement import encode_all, unambiguous_mask

    torch.manual_seed(0)
    vae = ToyVAE()
    retain, forget = torch.rand(200, 6) * 0.7, torch.rand(30, 6) * 0.6 + 0.4  # overlapping: a border region
    terms = vae_terms(["keep", "keep_away"], vae, retain, forget, samples=16, reduction="mean")
    mu_r, _ = encode_all(vae, retain)
    mu_f, _ = encode_all(vae, forget)
    away = unambiguous_mask(mu_r, mu_f)
    assert 0 < int(away.sum()) < 200
    torch.testing.assert_close(terms["keep"].mu, mu_r)
    torch.testing.assert_close(terms["keep_away"].mu, mu_r[away])
    with pytest.raises(ConfigError, match="away from the forget data"):  # forget data everywhere: nothing to keep
        vae_terms(["keep_away"], vae, retain, retain, samples=16)
    assert METHODS["rep-keep-away"].terms == ("keep_away",)


def test_rep_keep_runs_through_the_loop_and_keeps_retained_outputs_closer_than_rep():
    torch.manual_seed(0)
    vae = ToyVAE()
    retain, forget = torch.rand(64, 6) * 0.5, torch.rand(32, 6) * 0.5 + 0.5
    obj = VAEObjective("bernoulli", "mean")
    from genunlearn.objectives import LatentReplacement

    moved = {}
    for method, weight in (("rep", 0.0), ("rep-keep", 30.0)):
        model = copy.deepcopy(vae)
        rep = LatentReplacement.for_vae(model, retain, forget, max_forget_share=1.0, samples=16, reduction="mean")
        terms = vae_terms(METHODS[method].terms, model, retain, forget, samples=16, reduction="mean")
        cfg = UnlearnConfig(method=method, steps=20, batch_size=16, stop_at=None, keep_weight=weight, seed=0)
        res = unlearn(model, StandardTask(obj), retain, forget, cfg, replacement=rep, terms=terms, progress=False)
        assert res.steps_run == 20 and res.status == "completed"
        z = vae.encode(retain)[0].detach()
        moved[method] = float((model.decode(z) - vae.decode(z)).abs().mean())
    assert "loss_keep" in res.log[-1] and moved["rep-keep"] < moved["rep"]


def test_amnesia_and_salun_run_through_the_loop_on_a_toy_vae():
    torch.manual_seed(0)
    vae = ToyVAE()
    retain, forget = torch.rand(64, 6) * 0.5, torch.rand(32, 6) * 0.5 + 0.5
    obj = VAEObjective("bernoulli", "mean")
    for method in ("amnesia", "salun"):
        model = copy.deepcopy(vae)
        names = METHODS[method].terms
        terms = vae_terms(names, model, retain, forget, samples=16, fisher_samples=16, reduction="mean")
        cfg = UnlearnConfig(method=method, steps=3, batch_size=16, stop_at=None)
        res = unlearn(model, StandardTask(obj), retain, forget, cfg, terms=terms, progress=False)
        assert res.steps_run == 3 and res.status == "completed"
        assert not torch.equal(model.dec.weight, vae.dec.weight)
    assert res.setup_time_s > 0  # salun's mask is prepared, timed, and counted


def test_missing_terms_are_one_line_errors():
    retain, forget = torch.rand(16, 6), torch.rand(16, 6)
    cfg = UnlearnConfig(method="amnesia", steps=1, batch_size=8, stop_at=None)
    with pytest.raises(ConfigError, match=r"method 'amnesia' needs the term 'surrogate' .*provides: none"):
        unlearn(ToyVAE(), StandardTask(VAEObjective()), retain, forget, cfg, progress=False)
    ctx = StepContext(params=[], retain_loss=lambda: torch.zeros(()), forget_loss=lambda: torch.zeros(()))
    with pytest.raises(ConfigError, match="needs the term 'relabel'"):
        get_method("salun").compute(ctx)


def test_prepare_pass_leaves_batchnorm_statistics_alone():
    """SalUn's one-off gradient pass runs forwards in train mode; the run must still start from the original's
    running statistics (the first update then moves them like any method's)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    seen = []

    def objective(m, b):
        seen.append(m[1].running_mean.clone())
        return ((m(b[:, :4]) - b[:, 4:]) ** 2).mean()

    r, f = torch.randn(32, 7), torch.randn(32, 7) + 1
    start = model[1].running_mean.clone()
    cfg = UnlearnConfig(method="salun", steps=1, batch_size=8, stop_at=None)
    terms = {"relabel": lambda m, br, bf: objective(m, bf)}
    unlearn(model, StandardTask(objective), r, f, cfg, terms=terms, progress=False)
    torch.testing.assert_close(seen[4], start)  # 4 forget batches prepared; the first step's retain loss sees the start


# --- the diffusion versions: a toy class-conditional denoiser ------------------------------------------------


def _diffusion(null_label=4):
    return DiffusionObjective(DDPMScheduler(num_train_timesteps=100), null_label=null_label)


def _labelled(n, label, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 2, 2, generator=g), torch.full((n,), label)


def test_esd_trains_the_forget_label_towards_the_negatively_guided_frozen_prediction():
    torch.manual_seed(0)
    model, obj = TinyDenoiser(classes=4), _diffusion()
    frozen = copy.deepcopy(model)
    term = NegativeGuidance(obj, frozen, guidance=2.0)
    batch = _labelled(6, 1, 1)
    torch.manual_seed(5)
    loss = term(model, None, batch)
    torch.manual_seed(5)  # the same draws: timesteps, then noise
    t = torch.randint(0, 100, (6,))
    x_t = obj.scheduler.add_noise(batch[0], torch.randn(6, 1, 2, 2), t)
    e0 = frozen.a[4] * x_t + frozen.b * t.view(-1, 1, 1, 1) / 1000
    ec = frozen.a[1] * x_t + frozen.b * t.view(-1, 1, 1, 1) / 1000
    pred = model.a[1] * x_t + model.b * t.view(-1, 1, 1, 1) / 1000
    torch.testing.assert_close(loss, ((pred - (e0 - 2.0 * (ec - e0))) ** 2).mean())
    # through the loop: only the forget label's parameter (and the shared one) moves, towards the guided target
    a0 = model.a.detach().clone()
    cfg = UnlearnConfig(method="esd", steps=30, lr=0.05, batch_size=6, stop_at=None)
    retain = _labelled(6, 2, 2)
    unlearn(model, StandardTask(obj), retain, batch, cfg, terms={"negative_guidance": term}, progress=False)
    moved = (model.a.detach() - a0).abs() > 1e-6
    assert moved.tolist() == [False, True, False, False, False]
    target_a = frozen.a[4] - 2.0 * (frozen.a[1] - frozen.a[4])  # the guided-away coefficient
    assert abs(float(model.a[1] - target_a)) < abs(float(a0[1] - target_a))


def test_salun_diffusion_relabel_targets_another_labels_prediction_without_gradient():
    torch.manual_seed(0)
    model, obj = TinyDenoiser(classes=4), _diffusion()
    term = DiffusionRelabel(obj, num_classes=4, forget_classes=[1, 3])
    labels = other_labels(torch.full((2000,), 1), 4, [1, 3])
    assert set(labels.tolist()) == {0, 2}
    loss = term(model, None, _labelled(8, 1, 1))
    g = torch.autograd.grad(loss, [model.a])[0]
    assert g[1] != 0 and bool((g[[0, 2, 3, 4]] == 0).all())  # gradient through the forget label's prediction only


def test_siss_matches_its_formula_and_estimates_the_loss_without_the_forget_data():
    """One draw equals the written-out importance-sampled loss; averaged over many draws it estimates
    n/(n-k) L(data) - s k/(n-k) L(forget) = L(retained) + (1 - s) k/(n-k) L(forget): with s = 1 the loss of the
    data without the forget set (naive deletion), the quantity SISS is built to estimate without bias."""
    torch.manual_seed(0)
    obj = DiffusionObjective(DDPMScheduler(num_train_timesteps=10), conditional_model=False)
    model = TinyDenoiser(classes=1)
    term = SISSLoss(obj, n_data=10, n_forget=2, mixture=0.5, forget_scale=0.8)
    x, a = torch.rand(3, 1, 2, 2), torch.rand(3, 1, 2, 2)
    torch.manual_seed(7)
    loss = term(model, x, a)
    torch.manual_seed(7)  # replay: which x are swapped for their forget partner, timesteps, mixture, noise
    x0 = torch.where((torch.rand(3) < 2 / 10).view(-1, 1, 1, 1), a, x)
    t = torch.randint(0, 10, (3,))
    abar = obj.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    pick = (torch.rand(3) < 0.5).view(-1, 1, 1, 1)
    x_t = abar.sqrt() * torch.where(pick, a, x0) + (1 - abar).sqrt() * torch.randn(3, 1, 2, 2)
    ex, ea = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt(), (x_t - abar.sqrt() * a) / (1 - abar).sqrt()
    qx, qa = torch.exp(-(ex**2).sum((1, 2, 3)) / 2), torch.exp(-(ea**2).sum((1, 2, 3)) / 2)
    mix = 0.5 * qx + 0.5 * qa
    pred = model.a[-1] * x_t + model.b * t.view(-1, 1, 1, 1) / 1000
    err_x, err_a = ((pred - ex) ** 2).mean((1, 2, 3)), ((pred - ea) ** 2).mean((1, 2, 3))
    per = 10 / 8 * qx / mix * err_x - 0.8 * 2 / 8 * qa / mix * err_a
    torch.testing.assert_close(loss, per.mean())
    # unbiasedness: many pairs of the same (x, a), a far from x so that L(x) and L(a) differ (0.88 vs 1.49)
    n = 100_000
    xs, as_ = torch.zeros(n, 1, 2, 2), torch.full((n, 1, 2, 2), 2.0)
    with torch.no_grad():
        siss = float(term(model, xs, as_))
        naive_x = float(obj.loss(model, xs, None))
        naive_a = float(obj.loss(model, as_, None))
    expected = naive_x + (1 - 0.8) * 2 / 8 * naive_a  # ~0.95; x drawn from the retained data only would give ~0.80
    assert siss == pytest.approx(expected, rel=0.03)


def test_siss_pairs_forget_examples_with_retained_ones_of_their_class():
    obj = _diffusion()
    term = SISSLoss(obj, n_data=20, n_forget=2)
    model = TinyDenoiser(classes=4)
    retain = (torch.rand(4, 1, 2, 2), torch.tensor([0, 2, 2, 3]))
    forget = (torch.rand(2, 1, 2, 2), torch.tensor([2, 1]))
    term(model, retain, forget)
    assert model.calls[-1][1].tolist() == [2]  # the class-1 forget example has no partner and is dropped


def _label_images(model, noise, labels):
    """A fake sampler: every image of label c is the constant c / 10 (so a pool's images name their labels)."""
    return torch.zeros_like(noise) + labels.view(-1, 1, 1, 1).float() / 10


def _toy_amnesia_terms(model, obj, **kw):
    """Selective Amnesia's three terms for the toy denoiser: 4 labels, forget label 1, a pool of 40 samples."""
    return diffusion_terms(
        ["surrogate", "replay", "ewc"],
        model,
        obj,
        num_classes=4,
        forget_classes=[1],
        n_data=100,
        n_forget=10,
        generate=_label_images,
        noise_shape=(1, 2, 2),
        samples=8,
        pool_samples=40,
        **kw,
    )


def test_amnesia_surrogate_is_the_forget_labels_loss_on_uniform_noise_never_the_forget_images():
    torch.manual_seed(0)
    model, obj = TinyDenoiser(classes=4), _diffusion()
    term = DiffusionSurrogate(obj)
    batch = _labelled(6, 1, 1)
    torch.manual_seed(3)
    loss = term(model, None, batch)
    torch.manual_seed(3)  # the same draws: the noise images, then the objective's timesteps and noise
    expected = obj.loss(model, torch.rand(6, 1, 2, 2), torch.full((6,), 1))
    torch.testing.assert_close(loss, expected)
    torch.manual_seed(3)
    torch.testing.assert_close(term(model, None, (batch[0] + 5.0, batch[1])), loss)  # other images: same loss
    g = torch.autograd.grad(loss, [model.a])[0]
    assert g[1] != 0 and bool((g[[0, 2, 3, 4]] == 0).all())  # through the forget label only


def test_amnesia_replay_pool_holds_only_retained_labels_and_the_fisher_all_of_them():
    torch.manual_seed(0)
    model, obj = TinyDenoiser(classes=4), _diffusion()
    images, labels = generate_pool(_label_images, model, (1, 2, 2), num_classes=4, size=40)
    assert labels.tolist() == [i % 4 for i in range(40)]
    torch.testing.assert_close(images[:, 0, 0, 0], labels.float() / 10)
    terms = _toy_amnesia_terms(model, obj, fisher_timesteps=4)
    replay = terms["replay"]
    assert isinstance(replay, DiffusionReplay) and len(replay.labels) == 30
    assert 1 not in replay.labels.tolist()
    torch.testing.assert_close(replay.images[:, 0, 0, 0], replay.labels.float() / 10)  # images keep their labels
    torch.manual_seed(9)
    loss = replay(model)
    torch.manual_seed(9)
    i = torch.randint(0, 30, (8,))
    torch.testing.assert_close(loss, obj.loss(model, replay.images[i], replay.labels[i]))
    fisher = terms["ewc"].fisher
    assert bool((fisher["a"][:4] > 0).all()) and float(fisher["a"][4]) == 0.0  # every label of the pool, not null
    with pytest.raises(ConfigError, match="need its sampler"):
        diffusion_terms(["replay"], model, obj, num_classes=4, forget_classes=[1], n_data=100, n_forget=10)


def test_diffusion_fisher_is_the_mean_squared_gradient_of_each_samples_stratified_loss():
    torch.manual_seed(0)
    model, obj = TinyDenoiser(classes=4), _diffusion()
    images, labels = torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 3, 1])
    torch.manual_seed(4)
    fisher = diffusion_fisher(model, obj, images, labels, timesteps=4)
    torch.manual_seed(4)  # independent: per sample, one timestep in each quarter of the schedule, its own noise
    squares = []
    for j in range(5):
        t = (torch.arange(4) * 25 + torch.rand(4) * 25).long()
        assert [int(v) // 25 for v in t] == [0, 1, 2, 3]
        noise = torch.randn(4, 1, 2, 2)
        x_t = obj.scheduler.add_noise(images[j : j + 1].expand(4, 1, 2, 2), noise, t)
        pred = model.a[labels[j]] * x_t + model.b * t.view(-1, 1, 1, 1) / 1000
        loss = ((pred - noise) ** 2).mean()
        squares.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, [model.a, model.b])]) ** 2)
    torch.testing.assert_close(torch.cat([fisher["a"], fisher["b"]]), torch.stack(squares).mean(0))


def test_amnesia_on_a_toy_denoiser_moves_the_forget_label_and_ewc_holds_the_rest():
    """Through the loop: the surrogate moves the forget label's coefficient; with a large EWC weight the shared
    parameter moves less than without it (the Fisher of the shared parameter is large)."""
    obj = _diffusion()
    moved = {}
    for lam in (0.0, 1e4):
        torch.manual_seed(0)
        model = TinyDenoiser(classes=4)
        a0, b0 = model.a.detach().clone(), model.b.detach().clone()
        terms = _toy_amnesia_terms(model, obj)
        cfg = UnlearnConfig(method="amnesia", steps=20, lr=0.01, batch_size=8, ewc_lambda=lam, stop_at=None)
        retain, forget = _labelled(8, 2, 2), _labelled(8, 1, 1)
        res = unlearn(model, StandardTask(obj), retain, forget, cfg, terms=terms, progress=False)
        assert res.status == "completed"
        assert abs(float(model.a[1] - a0[1])) > 1e-3
        moved[lam] = (float((model.b - b0).abs()), float((model.a[[0, 2, 3]] - a0[[0, 2, 3]]).abs().sum()))
    assert moved[1e4][0] < moved[0.0][0] and moved[1e4][1] < moved[0.0][1]


def test_diffusion_peers_run_on_the_mnist_dit_through_the_diffusion_objective():
    """ESD, SalUn, SISS and Selective Amnesia on a tiny MnistDiT (diffusers' DiTTransformer2DModel): the terms reach
    the model through DiffusionObjective exactly as for the toy denoiser (SA's pool from the DiT's own sampler)."""
    from genunlearn.methods import METHODS
    from genunlearn.models.mnist_dit import MnistDiT, sample, to_model_space
    from tests.test_dit import _tiny

    dit = _tiny()
    obj = DiffusionObjective(
        dit.make_scheduler(), null_label=dit.null_label, preprocess=lambda x: to_model_space(x, dit)
    )
    g = torch.Generator().manual_seed(0)
    retain = (torch.rand(8, 784, generator=g), torch.tensor([0, 2, 3, 1, 0, 2, 3, 0]))
    forget_class = (torch.rand(4, 784, generator=g), torch.full((4,), 1))
    forget_samples = (torch.rand(4, 784, generator=g), torch.tensor([0, 2, 0, 3]))  # SISS: data unlearning

    def generate(model, noise, labels):
        return sample(model, labels, noise, steps=2).reshape(len(noise), -1)

    for method in ("esd", "salun", "siss", "amnesia"):
        forget = forget_samples if method == "siss" else forget_class
        model = copy.deepcopy(dit)
        assert isinstance(model, MnistDiT)
        terms = diffusion_terms(
            METHODS[method].terms,
            model,
            obj,
            num_classes=10,
            forget_classes=[1],
            n_data=12,
            n_forget=4,
            generate=generate,
            noise_shape=(1, 28, 28),
            samples=4,
            pool_samples=10,
            fisher_timesteps=2,
        )
        before = [p.detach().clone() for p in model.parameters()]
        cfg = UnlearnConfig(method=method, steps=2, batch_size=4, stop_at=None)
        res = unlearn(model, StandardTask(obj), retain, forget, cfg, terms=terms, progress=False)
        assert res.status == "completed"
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)), method

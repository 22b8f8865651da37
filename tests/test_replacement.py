"""The classifier-free latent replacement term (``rep``): targets, BatchNorm safety, wiring, and its effect."""

from __future__ import annotations

import pytest
import torch

from genunlearn.errors import ConfigError
from genunlearn.loop import UnlearnConfig, unlearn
from genunlearn.models import MNISTVAE
from genunlearn.objectives import LatentReplacement, StandardTask, _unambiguous, vae_objective


def test_unambiguous_excludes_retained_points_inside_the_forget_cluster():
    g = torch.Generator().manual_seed(0)
    forget = torch.randn(200, 2, generator=g) * 0.3 + torch.tensor([3.0, 0.0])
    retain = torch.randn(300, 2, generator=g) * 0.3 - torch.tensor([3.0, 0.0])
    intruder = torch.tensor([[3.0, 0.0]])  # a retained example sitting among the forget examples
    mu_r = torch.cat([retain, intruder]).numpy()
    keep = _unambiguous(mu_r, forget.numpy(), 16, 0.0)
    assert not keep[-1]
    assert keep[:-1].mean() > 0.99
    assert _unambiguous(mu_r, forget.numpy(), 16, 1.0).all()  # share 1 keeps everything


def _vae_and_data():
    torch.manual_seed(0)
    vae = MNISTVAE(hidden=16).eval()
    retain = torch.rand(64, 784)
    forget = torch.rand(32, 784) * 0.5
    return vae, retain, forget


def test_for_vae_targets_are_nearest_retained_examples_by_frozen_posterior_mean():
    vae, retain, forget = _vae_and_data()
    rep = LatentReplacement.for_vae(vae, retain, forget, neighbours=3, max_forget_share=1.0, samples=8)
    assert rep.neighbours.shape == (32, 3)
    with torch.no_grad():
        mu_r, mu_f = vae.encode(retain)[0], vae.encode(forget)[0]
    expected = torch.cdist(mu_f, mu_r).topk(3, largest=False).indices
    assert torch.equal(rep.neighbours.sort(1).values, expected.sort(1).values)
    torch.testing.assert_close(rep.mu, mu_f)


def test_replacement_loss_uses_eval_mode_and_restores_the_mode():
    vae, retain, forget = _vae_and_data()
    rep = LatentReplacement.for_vae(vae, retain, forget, max_forget_share=1.0, samples=8)
    vae.train()
    stats = [b.clone() for b in vae.buffers()]
    loss = rep(vae)
    loss.backward()
    assert vae.training
    assert all(torch.equal(a, b) for a, b in zip(stats, vae.buffers(), strict=True))  # BN statistics untouched
    enc = [p.grad for p in vae.encoder.parameters()]
    assert all(g is None for g in enc)  # only the decoder is trained by the term
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.decoder.parameters())


def test_replacement_reduction_and_errors():
    vae, retain, forget = _vae_and_data()
    torch.manual_seed(1)
    total = LatentReplacement.for_vae(vae, retain, forget, max_forget_share=1.0, samples=8, reduction="sum")(vae)
    torch.manual_seed(1)
    mean = LatentReplacement.for_vae(vae, retain, forget, max_forget_share=1.0, samples=8, reduction="mean")(vae)
    torch.testing.assert_close(total, 8 * mean)
    with pytest.raises(ConfigError, match="forget example"):
        LatentReplacement.for_vae(vae, retain, forget[:0])
    with pytest.raises(ConfigError, match="neighbours"):
        LatentReplacement.for_vae(vae, retain, forget, neighbours=0)


def test_rep_without_a_replacement_term_is_a_clear_error():
    vae, retain, forget = _vae_and_data()
    cfg = UnlearnConfig(method="rep", steps=1, stop_at=None)
    with pytest.raises(ConfigError, match="latent replacement"):
        unlearn(vae, StandardTask(vae_objective()), retain, forget, cfg, progress=False)


def test_rep_forgets_digit_one_on_the_bundled_vae():
    """Ten updates of ``rep`` with its defaults (beta_r = 10, Adam lr 1e-3) take the monitor's share of ones
    from ~16% to well under half of that, and leave retain-digit FID close to the original's."""
    from genunlearn.experiments.mnist import MnistSetup, MnistUnlearnSpec

    setup = MnistSetup(MnistUnlearnSpec(forget=(1,), monitor_samples=512))
    model, res = setup.run(UnlearnConfig(method="rep", steps=10, stop_at=None, seed=0), progress=False)
    assert res.forget_fraction_initial > 0.1
    assert res.forget_fraction_final < 0.3 * res.forget_fraction_initial
    fid0 = setup.fid(setup.fresh_model(), 2000)["fid_retain"]
    assert setup.fid(model, 2000)["fid_retain"] < fid0 + 3.0

"""The classifier-free latent replacement term (``rep``): targets, BatchNorm safety, wiring, and its effect."""

from __future__ import annotations

import pytest
import torch

from genunlearn.errors import ConfigError
from genunlearn.loop import UnlearnConfig, unlearn
from genunlearn.models import MNISTVAE
from genunlearn.objectives import LatentReplacement, StandardTask, nearest_unambiguous, vae_objective


@pytest.mark.parametrize("dim", [2, 64])  # KD-tree path and brute-force path
def test_unambiguous_targets_skip_retained_points_inside_the_forget_cluster(dim):
    g = torch.Generator().manual_seed(0)
    centre = torch.zeros(dim)
    centre[0] = 3.0
    forget = torch.randn(200, dim, generator=g) * 0.3 + centre
    retain = torch.randn(300, dim, generator=g) * 0.3 - centre
    intruder = centre.unsqueeze(0)  # a retained example sitting among the forget examples
    mu_r = torch.cat([retain, intruder])
    idx = nearest_unambiguous(mu_r, forget, neighbours=2, purity_neighbours=16, max_forget_share=0.0)
    assert idx.shape == (200, 2)
    assert not (idx == 300).any()  # the intruder is never a target
    everything = nearest_unambiguous(mu_r, forget, neighbours=1, purity_neighbours=16, max_forget_share=1.0)
    assert (everything[:, 0] == 300).float().mean() > 0.5  # without the purity test it is the nearest
    kept = torch.arange(300)  # exact: the nearest unambiguous retained points by Euclidean distance
    expected = kept[torch.cdist(forget, retain).topk(2, largest=False).indices]
    assert torch.equal(idx.sort(1).values, expected.sort(1).values)


def test_brute_force_and_kd_tree_agree_in_low_dimension():
    from genunlearn.objectives import replacement

    g = torch.Generator().manual_seed(3)
    mu_r, mu_f = torch.randn(400, 3, generator=g), torch.randn(60, 3, generator=g) + 0.7
    kd = nearest_unambiguous(mu_r, mu_f, neighbours=2, purity_neighbours=8, max_forget_share=0.25)
    pad = torch.zeros(400, 7), torch.zeros(60, 7)  # same geometry in 10 dimensions: the brute-force path
    bf = nearest_unambiguous(
        torch.cat([mu_r, pad[0]], 1),
        torch.cat([mu_f, pad[1]], 1),
        neighbours=2,
        purity_neighbours=8,
        max_forget_share=0.25,
    )
    assert replacement is not None
    assert torch.equal(kd.sort(1).values, bf.sort(1).values)


@pytest.mark.parametrize("dim", [2, 10])  # KD-tree path and brute-force path
def test_unambiguous_mask_flags_exactly_the_retained_points_with_a_forget_neighbour(dim):
    from genunlearn.objectives.replacement import unambiguous_mask

    g = torch.Generator().manual_seed(5)
    mu_r, mu_f = torch.randn(300, dim, generator=g), torch.randn(40, dim, generator=g) + 1.0
    mask = unambiguous_mask(mu_r, mu_f, purity_neighbours=8, max_forget_share=0.0)
    # the definition, by brute force: none of the 8 nearest other points is a forget point
    d = torch.cdist(mu_r, torch.cat([mu_r, mu_f]))
    d[torch.arange(300), torch.arange(300)] = float("inf")
    expected = ~(d.topk(8, largest=False).indices >= 300).any(1)
    assert torch.equal(mask, expected)
    assert 0 < int(mask.sum()) < 300  # the border is flagged, the far side is kept
    assert bool(unambiguous_mask(mu_r, mu_f, purity_neighbours=8, max_forget_share=1.0).all())


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


def test_decoded_targets_are_the_originals_rendering_of_the_same_neighbours():
    vae, retain, forget = _vae_and_data()
    data = LatentReplacement.for_vae(vae, retain, forget, neighbours=2, max_forget_share=1.0, samples=8)
    dec = LatentReplacement.for_vae(
        vae, retain, forget, neighbours=2, max_forget_share=1.0, samples=8, targets="decoded"
    )
    with torch.no_grad():
        mu_r = vae.encode(retain)[0]
        expected = torch.sigmoid(vae.decode_logits(mu_r)).reshape(retain.shape)
    # the same neighbours, each target the original's decoding at that neighbour's posterior mean
    picked_data = data.targets[data.neighbours]
    picked_dec = dec.targets[dec.neighbours]
    assert torch.equal(picked_data, retain[data.neighbours])
    torch.testing.assert_close(picked_dec, expected[data.neighbours])
    assert len(dec.targets) == len(torch.unique(data.neighbours))  # only the neighbours in use are decoded
    assert not dec.targets.requires_grad
    with pytest.raises(ConfigError, match="replacement targets"):
        LatentReplacement.for_vae(vae, retain, forget, max_forget_share=1.0, targets="images")
    from genunlearn.methods import METHODS

    assert METHODS["rep-decoded"].replacement_targets == "decoded" and METHODS["rep"].replacement_targets == "data"


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


def test_the_session_gives_rep_decoded_the_decoded_targets_and_rep_the_images():
    from genunlearn.experiments.mnist import MnistSetup, MnistUnlearnSpec

    setup = MnistSetup(MnistUnlearnSpec(forget=(1,), monitor_samples=64))
    for method in ("rep", "rep-decoded"):
        setup.run(UnlearnConfig(method=method, steps=1, stop_at=None, seed=0, batch_size=16), progress=False)
    built = {key[-1]: term for key, term in setup._replacements.items()}
    assert set(built) == {"data", "decoded"}
    assert built["data"].targets is setup.retain_data  # rep: the retained images themselves
    dec = built["decoded"]
    assert isinstance(dec.targets, torch.Tensor) and len(dec.targets) == len(torch.unique(built["data"].neighbours))


def test_for_vae_reads_a_dataset_like_a_tensor():
    from torch.utils.data import TensorDataset

    vae, retain, forget = _vae_and_data()
    a = LatentReplacement.for_vae(vae, retain, forget, max_forget_share=1.0, samples=8)
    b = LatentReplacement.for_vae(
        vae, TensorDataset(retain, torch.zeros(64)), TensorDataset(forget), max_forget_share=1.0, samples=8
    )
    assert torch.equal(a.neighbours, b.neighbours)
    torch.manual_seed(2)
    la = a(vae)
    torch.manual_seed(2)
    lb = b(vae)
    torch.testing.assert_close(la, lb)


def test_for_vae_with_squared_error_likelihood_and_image_shaped_data():
    class ConvVAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
            self.dec = torch.nn.Sequential(torch.nn.Linear(5, 3 * 8 * 8), torch.nn.Unflatten(1, (3, 8, 8)))

        def encode(self, x):
            h = self.enc(x)
            return h[:, :5], h[:, 5:]

        def decode(self, z):
            return torch.sigmoid(self.dec(z))

    torch.manual_seed(0)
    vae = ConvVAE()
    retain, forget = torch.rand(40, 3, 8, 8), torch.rand(20, 3, 8, 8)
    rep = LatentReplacement.for_vae(vae, retain, forget, likelihood="mse", max_forget_share=1.0, samples=6)
    loss = rep(vae)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert vae.dec[0].weight.grad is not None and vae.enc[0].weight.grad is None

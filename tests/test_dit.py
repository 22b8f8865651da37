"""The class-conditional MNIST DiT: loss, null label, sampler, double backward, training, bundled weights."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from diffusers.models.embeddings import LabelEmbedding
from safetensors.torch import load_file
from torch.nn.attention import SDPBackend, sdpa_kernel

from genunlearn.models import load_model
from genunlearn.models.mnist_dit import MnistDiT, diffusion_loss, sample
from genunlearn.models.registry import bundled_weights, count_parameters
from genunlearn.train_dit import DiTTrainConfig, train_dit
from tests.test_cli import run
from tests.test_data import _write_tiny_dataset

TINY = {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 8}


def _tiny(dtype: torch.dtype = torch.float32, seed: int = 0) -> MnistDiT:
    """A tiny DiT with every parameter random (the adaLN-Zero init would make the output identically 0)."""
    torch.manual_seed(seed)
    model = MnistDiT(**TINY).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def _batch(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g), torch.arange(n) % 10


def test_default_size_and_null_label_is_diffusers_dropped_label_row():
    model = MnistDiT()
    assert count_parameters(model) == 1_427_856
    assert (model.num_classes, model.null_label, model.sample_size) == (10, 10, 28)
    embeddings = [m for m in model.modules() if isinstance(m, LabelEmbedding)]
    assert len(embeddings) == 4  # one per block in diffusers' DiT
    for emb in embeddings:
        assert emb.embedding_table.num_embeddings == model.num_classes + 1
        assert emb.dropout_prob == 0.0  # no random label dropout inside the network
        # diffusers' own CFG drop maps labels to the row our null label addresses
        dropped = emb.token_drop(torch.tensor([0, 3, 9]), force_drop_ids=torch.ones(3))
        assert dropped.tolist() == [model.null_label] * 3


def test_train_mode_forward_is_deterministic_and_conditions_on_the_label():
    model = _tiny().train()
    x, t = torch.randn(4, 1, 28, 28), torch.tensor([10, 200, 500, 900])
    y = torch.tensor([1, 2, 3, 4])
    a, b = model(x, t, y), model(x, t, y)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # diffusers' in-network dropout would make these differ
    null = model(x, t, torch.full_like(y, model.null_label))
    assert a.shape == x.shape and not torch.allclose(a, null)
    assert torch.equal(model(x, 500, y)[2], model(x, torch.tensor(500), y)[2])


def test_forward_converts_the_transformers_velocity_to_the_noise():
    model = _tiny(torch.float64)
    x, t, y = torch.randn(3, 1, 28, 28, dtype=torch.float64), torch.tensor([0, 400, 999]), torch.tensor([2, 5, 10])
    v = model.transformer(x, timestep=t, class_labels=y, return_dict=False)[0]
    a = model.make_scheduler().alphas_cumprod.double()[t].view(3, 1, 1, 1)
    torch.testing.assert_close(model(x, t, y), a.sqrt() * v + (1 - a).sqrt() * x)
    # the clean-image estimate at the last step is -v, not an error amplified by 1/sqrt(a)
    x0 = (x - (1 - a).sqrt() * model(x, t, y)) / a.sqrt()
    torch.testing.assert_close(x0, a.sqrt() * x - (1 - a).sqrt() * v)
    torch.testing.assert_close(model(x, t, y, prediction="v"), v)
    eps_model = MnistDiT(**TINY, output="eps").double()
    eps_model.load_state_dict(model.state_dict())
    torch.testing.assert_close(eps_model(x, t, y), v)
    with pytest.raises(ValueError, match="output must be"):
        MnistDiT(output="x0")


def test_loss_shapes_reductions_and_backprop():
    model = _tiny()
    x, y = _batch()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    loss = diffusion_loss(model, x, y, generator=g())
    per = diffusion_loss(model, x, y, generator=g(), reduction="none")
    total = diffusion_loss(model, x, y, generator=g(), reduction="sum")
    assert loss.ndim == 0 and torch.isfinite(loss) and per.shape == (6,)
    torch.testing.assert_close(per.mean(), loss)
    torch.testing.assert_close(total, loss * x.numel())
    # any image layout in [0, 1] is accepted
    torch.testing.assert_close(diffusion_loss(model, x.reshape(6, 1, 28, 28), y, generator=g()), loss)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0
    with pytest.raises(ValueError, match="unknown reduction"):
        diffusion_loss(model, x, y, reduction="avg")


def test_fixed_noise_and_timesteps_give_the_epsilon_mse():
    model = _tiny()
    x, y = _batch(3)
    noise, t = torch.randn(3, 1, 28, 28), torch.tensor([0, 499, 999])
    sched = model.make_scheduler()
    ab = sched.alphas_cumprod[t].view(3, 1, 1, 1)
    x_t = ab.sqrt() * (2 * x.view(3, 1, 28, 28) - 1) + (1 - ab).sqrt() * noise
    expected = (model(x_t, t, y) - noise).pow(2).mean()
    torch.testing.assert_close(diffusion_loss(model, x, y, sched, noise=noise, timesteps=t), expected)


def test_v_target_is_the_velocity_mse():
    model = _tiny()
    x, y = _batch(3)
    noise, t = torch.randn(3, 1, 28, 28), torch.tensor([0, 499, 999])
    a = model.make_scheduler().alphas_cumprod[t].view(3, 1, 1, 1)
    x0 = 2 * x.view(3, 1, 28, 28) - 1
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    expected = (model.transformer(x_t, timestep=t, class_labels=y, return_dict=False)[0] - v).pow(2).mean()
    got = diffusion_loss(model, x, y, noise=noise, timesteps=t, target="v")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="unknown target"):
        diffusion_loss(model, x, y, target="x0")


def test_label_dropout_replaces_labels_by_the_null_label():
    model = _tiny()
    x, y = _batch()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    dropped = diffusion_loss(model, x, y, label_dropout=0.999999, generator=g())
    null = diffusion_loss(model, x, torch.full_like(y, model.null_label), generator=g())
    cond = diffusion_loss(model, x, y, generator=g())
    assert float(dropped) == float(null) and float(cond) != float(null)
    # the dropout draw comes after timesteps and noise: a zero rate reproduces the plain loss exactly
    assert float(diffusion_loss(model, x, y, label_dropout=1e-12, generator=g())) == float(cond)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_sampler_is_deterministic_in_range_chunk_invariant_and_restores_mode(sampler):
    model = _tiny().train()
    labels = torch.tensor([0, 1, 2, 7, 9])
    noise = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    a = sample(model, labels, noise, steps=4, guidance_scale=3.0, sampler=sampler)
    b = sample(model, labels, noise, steps=4, guidance_scale=3.0, sampler=sampler, batch_size=2)
    assert model.training  # mode restored
    assert a.shape == (5, 1, 28, 28) and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)  # batched float sums differ by rounding
    c = sample(model, labels, noise, steps=4, guidance_scale=1.0, sampler=sampler)
    assert not torch.allclose(a, c)  # guidance changes the samples
    other = sample(model, labels, torch.randn_like(noise), steps=4, guidance_scale=3.0, sampler=sampler)
    assert not torch.allclose(a, other)
    logits = load_model("mnist-classifier")(a)  # the bundled classifier takes the samples as they are
    assert logits.shape == (5, 10)


def test_sampler_rejects_bad_input():
    model = _tiny()
    with pytest.raises(ValueError, match="2 labels but 3 noise"):
        sample(model, torch.tensor([0, 1]), torch.randn(3, 1, 28, 28))
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(model, torch.tensor([0]), torch.randn(1, 1, 28, 28), sampler="euler")


def _hvp(model: MnistDiT, v: list[torch.Tensor], ctx) -> list[torch.Tensor]:
    x, y = _batch(4)
    params = list(model.parameters())
    with ctx:
        loss = diffusion_loss(model, x.double(), y, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        return list(torch.autograd.grad(grads, params, grad_outputs=v))


def _grad(model: MnistDiT) -> list[torch.Tensor]:
    x, y = _batch(4)
    loss = diffusion_loss(model, x.double(), y, generator=torch.Generator().manual_seed(1))
    return list(torch.autograd.grad(loss, list(model.parameters())))


def test_double_backward_needs_the_math_attention_kernel():
    """UNO's exact gradient takes Hessian-vector products through the model: measured with torch 2.13 on CPU,
    they work under ``sdpa_kernel(SDPBackend.MATH)`` (and agree with finite differences of the gradient) but
    the default fused CPU attention kernel has no double backward."""
    model = _tiny(torch.float64)
    g = torch.Generator().manual_seed(2)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.parameters()]
    hv = _hvp(model, v, sdpa_kernel(SDPBackend.MATH))
    eps = 1e-5
    with torch.no_grad():
        for p, d in zip(model.parameters(), v, strict=True):
            p.add_(eps * d)
    g_plus = _grad(model)
    with torch.no_grad():
        for p, d in zip(model.parameters(), v, strict=True):
            p.sub_(2 * eps * d)
    g_minus = _grad(model)
    fd = [(a - b) / (2 * eps) for a, b in zip(g_plus, g_minus, strict=True)]
    num = sum(float((a - b).pow(2).sum()) for a, b in zip(hv, fd, strict=True)) ** 0.5
    den = sum(float(b.pow(2).sum()) for b in fd) ** 0.5
    assert den > 0 and num / den < 1e-5
    with pytest.raises(RuntimeError, match="flash_attention_for_cpu_backward is not implemented"):
        _hvp(model, v, contextlib.nullcontext())


def _tiny_config(d, **kw) -> DiTTrainConfig:
    base = dict(
        dataset="tiny",
        data_dir=str(d),
        epochs=3,
        batch_size=8,
        warmup_steps=2,
        arch=TINY,
        eval_samples=0,
        val_images=8,
        device="cpu",
    )
    return DiTTrainConfig(**{**base, **kw})


def test_resume_equals_uninterrupted(tmp_path):
    d = _write_tiny_dataset(tmp_path / "tiny", n_train=24, n_test=8, classes=10)
    cfg = _tiny_config(d)
    train_dit(cfg, tmp_path / "a", progress=False, stop_after=1, max_steps_per_epoch=2)
    partial = json.loads((tmp_path / "a" / "record.json").read_text())
    assert partial["epochs_done"] == 1 and not partial["complete"]
    train_dit(cfg, tmp_path / "a", progress=False, max_steps_per_epoch=2)
    record = train_dit(cfg, tmp_path / "b", progress=False, max_steps_per_epoch=2)
    assert record["complete"] and len(record["history"]) == 3 and "diffusers" in record["versions"]
    for name in ("model.safetensors", "raw.safetensors"):
        wa, wb = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    ema, raw = load_file(str(tmp_path / "b" / "model.safetensors")), load_file(str(tmp_path / "b" / "raw.safetensors"))
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # the EMA is not the raw model
    model = load_model("mnist-dit", tmp_path / "b" / "model.safetensors")  # build options from the metadata
    assert isinstance(model, MnistDiT) and model.config.num_layers == 1 and not model.training


def test_resume_refuses_a_different_config(tmp_path):
    from genunlearn.errors import CheckpointError

    d = _write_tiny_dataset(tmp_path / "tiny", n_train=16, n_test=8, classes=10)
    train_dit(_tiny_config(d, epochs=1), tmp_path / "c", progress=False, max_steps_per_epoch=1)
    with pytest.raises(CheckpointError, match="different config"):
        train_dit(_tiny_config(d, epochs=1, lr=1e-3), tmp_path / "c", progress=False, max_steps_per_epoch=1)


def test_train_dit_cli(tmp_path, capsys):
    d = _write_tiny_dataset(tmp_path / "tiny", n_train=16, n_test=8, classes=10)
    argv = ["train", "dit", "--dataset", "tiny", "--data-dir", str(d), "--epochs", "1", "--batch-size", "16"]
    threads = torch.get_num_threads()
    try:
        code, out, err = run([*argv, "--threads", "1", "--out", str(tmp_path / "dit")], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    record = json.loads((tmp_path / "dit" / "record.json").read_text())
    assert record["complete"] and record["config"]["lr"] == 5e-4 and record["parameters"] == 1_427_856
    assert "weights (EMA)" in out
    code, _, err = run([*argv, "--threads", "0", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "--threads must be >= 1" in err


@pytest.mark.skipif(not bundled_weights("mnist-dit").is_file(), reason="DiT weights not bundled")
def test_bundled_dit_generates_the_requested_digits():
    model = load_model("mnist-dit")
    assert isinstance(model, MnistDiT) and not model.training and model.null_label == 10
    labels = torch.arange(10).repeat(3)
    noise = torch.randn(30, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    images = sample(model, labels, noise, steps=10, guidance_scale=2.0, sampler="dpm++")  # the bundle's default
    pred = load_model("mnist-classifier")(images).argmax(1)
    assert float((pred == labels).float().mean()) >= 0.8


def test_quality_evaluation_writes_accuracy_fid_and_grid(tmp_path):
    from genunlearn.data import load_dataset
    from genunlearn.experiments.dit_eval import evaluate_dit, markdown_table, parse_settings

    settings = parse_settings("ddim:2:2,dpm++:2:1,ddim:2:2:4")
    reference = load_dataset("mnist", "train").flat_float(torch.arange(300))
    rows_seen = []
    result = evaluate_dit(
        _tiny(),
        settings,
        samples_per_class=3,
        out=tmp_path,
        progress=False,
        reference_images=reference,
        on_row=lambda rows: rows_seen.append(len(rows)),
    )
    assert [r["setting"] for r in result["settings"]] == ["ddim-2-g2", "dpm++-2-g1", "ddim-2-g2-n4"]
    first, _, big = result["settings"]
    assert first["samples"] == 30 and big["samples"] == 40 and rows_seen == [1, 2, 3]
    assert 0 <= first["accuracy"] <= 1 and len(first["per_class"]) == 10
    assert [r["network_evaluations_per_image"] for r in result["settings"]] == [4, 2, 4]
    assert set(result["references"]) == {"n30", "n40"}
    assert result["fid_reference_images"] == 300 and "| ddim | 2 | 2 | 4 | 30 |" in markdown_table(result)
    # a finished setting is reused, not recomputed
    again = evaluate_dit(
        _tiny(),
        settings[:1],
        samples_per_class=3,
        progress=False,
        reference_images=reference,
        done={"ddim-2-g2": {**first, "fid": -1.0}},
    )
    assert again["settings"][0]["fid"] == -1.0
    from PIL import Image

    with Image.open(tmp_path / "samples.png") as im:
        assert im.width > im.height > 10 * 28


def test_quality_command_reports_a_missing_checkpoint(tmp_path):
    from click.testing import CliRunner

    from genunlearn.experiments.dit_eval import main

    res = CliRunner().invoke(main, ["--checkpoint", str(tmp_path / "none.safetensors"), "--out", str(tmp_path)])
    assert res.exit_code == 1 and "checkpoint not found" in res.output


@pytest.mark.parametrize("output", ["eps", "v"])
@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_sampler_with_an_exact_denoiser_reproduces_its_image(output, sampler):
    """The sampling path (v -> eps conversion, schedulers, guidance) is right when the network is perfect."""
    torch.manual_seed(0)
    m = MnistDiT(num_layers=1, num_attention_heads=2, attention_head_dim=8, output=output)
    x0 = torch.rand(1, 1, 28, 28) * 2 - 1
    alphas = m.alphas_cumprod

    class Exact(torch.nn.Module):  # predicts the true noise (or velocity) for data that is the single image x0
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x_t, timestep, class_labels, return_dict=False):
            a = alphas[timestep.long()].view(-1, 1, 1, 1)
            eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
            return (eps if output == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0,)

    m.transformer = Exact()
    x = sample(m, torch.tensor([3, 3]), torch.randn(2, 1, 28, 28), steps=15, guidance_scale=2.0, sampler=sampler)
    assert (x - (x0 + 1) / 2).abs().max() < 0.05


def test_train_dit_without_a_class_never_sees_it(tmp_path, monkeypatch, capsys):
    """--exclude-class (the retrained gold standard): the left-out class's images never reach the loss, its label
    row keeps its initial value, the record counts the exclusion; a run started before the option resumes."""
    import genunlearn.train_dit as td
    from genunlearn.data import load_dataset

    d = _write_tiny_dataset(tmp_path / "tiny", n_train=30, n_test=8, classes=10)
    seen = []
    real = td.diffusion_loss

    def spy(model, x, y, *a, **kw):
        seen.append(y.detach().clone())
        return real(model, x, y, *a, **kw)

    monkeypatch.setattr(td, "diffusion_loss", spy)
    cfg = _tiny_config(d, epochs=1, exclude_classes=(3,))
    record = train_dit(cfg, tmp_path / "x", progress=False)
    labels = torch.cat(seen[: record["steps_per_epoch"]])  # the training steps (then the validation's)
    n3 = int((load_dataset("tiny", "train", d).labels == 3).sum())
    assert n3 > 0 and record["excluded_examples"] == n3 and len(labels) == 30 - n3 and not (labels == 3).any()
    torch.manual_seed(cfg.seed)
    init = MnistDiT(**cfg.arch).label_embedding(torch.tensor([3, 4]))
    trained = load_model("mnist-dit", tmp_path / "x" / "raw.safetensors").label_embedding(torch.tensor([3, 4]))
    torch.testing.assert_close(trained[0], init[0], rtol=0, atol=0)  # never trained
    assert not torch.equal(trained[1], init[1])
    # a run of the same config started before exclude_classes existed (its state has no such key) resumes
    train_dit(_tiny_config(d, epochs=2), tmp_path / "old", progress=False, stop_after=1)
    state = json.loads((tmp_path / "old" / "state.json").read_text())
    del state["config"]["exclude_classes"]
    (tmp_path / "old" / "state.json").write_text(json.dumps(state))
    assert train_dit(_tiny_config(d, epochs=2), tmp_path / "old", progress=False)["complete"]
    (tmp_path / "ids.txt").write_text("0\n")
    argv = ["train", "dit", "--exclude-ids", str(tmp_path / "ids.txt"), "--out", str(tmp_path / "e")]
    code, _, err = run(argv, capsys)
    assert code == 2 and "dit takes --exclude-class" in err

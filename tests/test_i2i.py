"""Image-to-image unlearning (Li et al., ICLR 2024): the MNIST I2I model, its objectives and the embedding task,
encoder-only training through the engine, the ``i2i`` method, and the trainer (resumable)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from genunlearn.adapters import ModelAdapter
from genunlearn.errors import ConfigError, DataError
from genunlearn.loop import UnlearnConfig, unlearn
from genunlearn.methods import MethodParams, StepContext, get_method
from genunlearn.models.mnist_i2i import MNISTI2I, centre_mask
from genunlearn.objectives import StandardTask
from genunlearn.objectives.i2i import I2IEmbeddingTask, I2IReconstruction, NoiseImages, reconstruction_quality


def _model(task: str = "inpaint") -> MNISTI2I:
    torch.manual_seed(0)
    return MNISTI2I(task, width=8, embed_channels=8)


def _images(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g)


def _cfg(method: str, steps: int = 5, **kw) -> UnlearnConfig:
    return UnlearnConfig(method=method, steps=steps, lr=1e-2, batch_size=8, stop_at=None, **kw)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_masks_hide_the_centre_or_the_ring():
    inpaint, outpaint = centre_mask("inpaint", 14), centre_mask("outpaint", 14)
    assert inpaint[0, 0, 14, 14] == 1 and inpaint[0, 0, 0, 0] == 0
    assert torch.equal(inpaint + outpaint, torch.ones_like(inpaint))
    m = _model("outpaint")
    x = torch.ones(2, 1, 28, 28)
    t = m.transform(x)
    assert t.shape == (2, 2, 28, 28)
    assert t[:, 0].sum() == 2 * 14 * 14  # only the kept centre square is visible
    assert torch.equal(t[:, 1], outpaint[0, 0].expand(2, -1, -1))


def test_model_errors_are_one_line():
    with pytest.raises(ConfigError, match="unknown I2I task 'colorize'"):
        MNISTI2I("colorize")
    with pytest.raises(ConfigError, match="mask size"):
        MNISTI2I("inpaint", mask_size=28)
    with pytest.raises(DataError, match=r"\(B, 1, 28, 28\)"):
        _model()(torch.rand(2, 3, 28, 28))
    with pytest.raises(ConfigError, match="noise std"):
        NoiseImages(std=0.0)
    with pytest.raises(ConfigError, match="loss reduction"):
        I2IReconstruction(reduction="median")


def test_reconstruction_loss_and_quality_agree():
    m, x = _model(), _images(4)
    loss = I2IReconstruction(reduction="sum")(m, x)
    q = reconstruction_quality(m, x)
    assert loss.item() == pytest.approx(q["l2_full"] * 4 * 784, rel=1e-5)
    assert q["psnr_full"] == pytest.approx(-10 * torch.log10(torch.tensor(q["l2_full"])).item(), rel=1e-6)
    assert q["l2_masked"] > 0 and q["l2_full"] > 0


def test_retain_term_is_zero_for_the_original_and_forget_term_is_not():
    m = _model()
    task = I2IEmbeddingTask.from_model(m)
    x = _images(6)
    assert task.retain_loss(m, x).item() == 0.0
    assert task.forget_loss(m, x).item() > 0.0
    assert all(not p.requires_grad for p in task.original.parameters())


def test_forget_target_is_the_original_encoders_embedding_of_masked_noise():
    m = _model()
    noise = NoiseImages(mean=0.1, std=0.3)
    task = I2IEmbeddingTask.from_model(m, noise=noise, reduction="sum")
    x = _images(3)
    torch.manual_seed(5)
    loss = task.forget_loss(m, x)
    torch.manual_seed(5)
    n = 0.1 + 0.3 * torch.randn(3, 1, 28, 28)
    expected = (m.encode(x) - m.encode(n)).pow(2).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_embedding_terms_have_gradients_on_the_encoder_only():
    m = _model()
    task = I2IEmbeddingTask.from_model(m)
    adapter = ModelAdapter(m, frozen=["decoder"])
    params = adapter.trainable_parameters()
    assert {id(p) for p in params} == {id(p) for p in m.encoder.parameters()}
    loss = task.forget_loss(m, _images(4))
    assert loss.grad_fn is not None
    grads = torch.autograd.grad(loss, list(m.parameters()), allow_unused=True)
    named = dict(zip([n for n, _ in m.named_parameters()], grads, strict=True))
    assert all(g is None for n, g in named.items() if n.startswith("decoder."))
    assert any(g is not None and g.abs().sum() > 0 for n, g in named.items() if n.startswith("encoder."))


def test_i2i_method_descends_retain_plus_alpha_forget():
    m = _model()
    task = I2IEmbeddingTask.from_model(m)
    params = list(m.encoder.parameters())
    xr, xf = _images(4, 1), _images(4, 2)
    with torch.no_grad():  # move off the original so that the retain term has a gradient
        params[0].add_(0.05)
    torch.manual_seed(3)
    ctx = StepContext(
        params=params,
        retain_loss=lambda: task.retain_loss(m, xr),
        forget_loss=lambda: task.forget_loss(m, xf),
        hp=MethodParams(forget_weight=0.25),
    )
    direction = get_method("i2i").compute(ctx).direction
    torch.manual_seed(3)
    total = task.retain_loss(m, xr) + 0.25 * task.forget_loss(m, xf)
    expected = torch.autograd.grad(total, params)
    for d, e in zip(direction, expected, strict=True):
        torch.testing.assert_close(d, e, rtol=1e-4, atol=1e-6)


def test_unlearning_moves_forget_embeddings_to_noise_and_leaves_the_decoder():
    m = _model()
    task = I2IEmbeddingTask.from_model(m)
    retain, forget = _images(32, 1), _images(32, 2) * 0.5
    decoder_before = _state(m.decoder)
    g = torch.Generator().manual_seed(9)
    noise = task.noise.mean + task.noise.std * torch.randn(32, 1, 28, 28, generator=g)

    def forget_distance() -> float:
        with torch.no_grad():
            return (m.encode(forget) - task.original.encode(noise)).pow(2).flatten(1).sum(1).mean().item()

    before = forget_distance()
    result = unlearn(ModelAdapter(m, frozen=["decoder"]), task, retain, forget, _cfg("i2i", steps=30), progress=False)
    assert result.status == "completed"
    assert forget_distance() < 0.7 * before
    for k, v in _state(m.decoder).items():
        assert torch.equal(v, decoder_before[k]), k
    assert m.decoder[0][0].weight.requires_grad  # flags restored after the run


@pytest.mark.parametrize("method", ["s", "uno", "gdiff"])
def test_generic_methods_run_on_the_i2i_model_encoder_only(method: str):
    m = _model()
    decoder_before, encoder_before = _state(m.decoder), _state(m.encoder)
    task = StandardTask(I2IReconstruction())
    result = unlearn(
        ModelAdapter(m, frozen=["decoder"]), task, _images(16, 1), _images(16, 2), _cfg(method, 3), progress=False
    )
    assert result.status == "completed" and result.steps_run == 3
    assert all(torch.equal(v, decoder_before[k]) for k, v in _state(m.decoder).items())
    assert any(not torch.equal(v, encoder_before[k]) for k, v in _state(m.encoder).items())


def test_empty_forget_set_is_a_one_line_error():
    m = _model()
    with pytest.raises(DataError, match="empty forget set"):
        unlearn(m, I2IEmbeddingTask.from_model(m), _images(8), torch.empty(0, 1, 28, 28), _cfg("i2i"), progress=False)
    with pytest.raises(DataError, match="no images"):
        I2IEmbeddingTask.from_model(m).forget_loss(m, torch.empty(0, 1, 28, 28))


def test_embedding_task_needs_the_i2i_contract():
    with pytest.raises(ConfigError, match="transform"):
        I2IEmbeddingTask(torch.nn.Linear(2, 2))


def test_training_resumes_to_the_same_weights(tmp_path):
    from genunlearn.checkpoints import load_state
    from genunlearn.train_i2i import I2ITrainConfig, train_i2i

    cfg = I2ITrainConfig(task="outpaint", width=8, embed_channels=8, epochs=2, train_images=64, eval_images=32)
    whole = train_i2i(cfg, tmp_path / "whole", progress=False)
    train_i2i(cfg, tmp_path / "split", progress=False, stop_after=1)
    again = train_i2i(cfg, tmp_path / "split", progress=False)
    assert again["history"] == [
        {**h, "seconds": again["history"][i]["seconds"]} for i, h in enumerate(whole["history"])
    ]
    a, b = load_state(tmp_path / "whole" / "model.safetensors"), load_state(tmp_path / "split" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "record.json").is_file()
    assert whole["final"]["test"]["psnr_full"] > 0
    with pytest.raises(Exception, match="different config"):
        train_i2i(
            I2ITrainConfig(task="inpaint", width=8, epochs=2, train_images=64), tmp_path / "whole", progress=False
        )


def test_bench_writes_table_records_and_grids_and_resumes(tmp_path):
    import json

    from genunlearn.experiments.i2i_bench import I2IBenchSettings, render_table, run_bench
    from genunlearn.train_i2i import I2ITrainConfig, train_i2i

    train_i2i(I2ITrainConfig(width=8, epochs=1, train_images=64, eval_images=16), tmp_path / "m", progress=False)
    weights = str(tmp_path / "m" / "model.safetensors")
    settings = replace(
        I2IBenchSettings.quick(),
        methods=("i2i", "i2i-proxy", "gdiff"),
        checkpoint={"inpaint": weights},
        retrained={"inpaint": weights},
        eval_forget=16,
        eval_retain=16,
        proxy_images=16,
    )
    data = run_bench(settings, tmp_path / "b", progress=False)
    rows = data["tasks"]["inpaint"]["rows"]
    assert list(rows) == ["original", "noise", "retrained", "i2i", "i2i-proxy", "gdiff"]
    assert rows["retrained"]["forget"] == rows["original"]["forget"]  # the same weights measure the same
    assert rows["i2i"]["updates"] == [2, 0.0] and rows["noise"]["retain"] is None
    assert 0 <= rows["i2i"]["forget"]["forget_rate"][0] <= 1
    on_disk = json.loads((tmp_path / "b" / "results.json").read_text())
    assert (tmp_path / "b" / "table.md").read_text() == render_table(on_disk)
    record = json.loads((tmp_path / "b" / "runs" / "inpaint" / "i2i" / "seed0.json").read_text())
    assert record["trainable_parameters"] == sum(p.numel() for p in MNISTI2I(width=8).encoder.parameters())
    assert record["provenance"]["command"]["argv"]
    for side in ("forget", "retain"):
        assert (tmp_path / "b" / "figures" / f"inpaint-{side}.png").stat().st_size > 0
    again = run_bench(settings, tmp_path / "b", progress=False)  # resumed from the records: the same numbers
    assert again["tasks"]["inpaint"]["rows"]["gdiff"] == rows["gdiff"]


def _toy_idx(directory, n_train: int = 200, n_test: int = 120) -> None:
    import numpy as np

    from genunlearn.data import write_idx

    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))


def test_bench_runs_on_another_idx_dataset_with_its_own_classifier(tmp_path):
    from genunlearn.experiments.i2i_bench import I2IBenchSettings, render_table, run_bench
    from genunlearn.models.registry import bundled_weights
    from genunlearn.train_i2i import I2ITrainConfig, train_i2i

    _toy_idx(tmp_path / "toy")
    cfg = I2ITrainConfig(
        width=8, epochs=1, train_images=64, eval_images=16, dataset="toy", data_dir=str(tmp_path / "toy")
    )
    record = train_i2i(cfg, tmp_path / "m", progress=False)
    assert record["training_examples"] == 64
    settings = replace(
        I2IBenchSettings.quick(),
        dataset="toy",
        data_dir=str(tmp_path / "toy"),
        classifier=str(bundled_weights("mnist-classifier")),  # any classifier of the right shape
        forget=3,
        methods=("i2i", "i2i-proxy"),
        checkpoint={"inpaint": str(tmp_path / "m" / "model.safetensors")},
        eval_forget=8,
        eval_retain=16,
        proxy_images=16,
    )
    data = run_bench(settings, tmp_path / "b", progress=False)
    table = render_table(data)
    assert table.startswith("# I2I unlearning on toy: forget class 3\n")
    assert "forget ->3" in table and "8 forget-class and 16 other-class toy test images" in table
    assert data["proxy_description"] == "16 toy test images of the other classes not among the measured ones"
    rows = data["tasks"]["inpaint"]["rows"]
    # every forget image has label 3: the classifier's accuracy on their outputs is the share it calls 3
    assert rows["original"]["forget"]["accuracy"] == rows["original"]["forget"]["forget_rate"]
    assert rows["i2i-proxy"]["updates"] == [2, 0.0]


def test_bench_settings_errors_are_one_line():
    from genunlearn.experiments.i2i_bench import I2IBenchSettings

    with pytest.raises(ConfigError, match="unknown I2I bench method 'rep'"):
        I2IBenchSettings(methods=("rep",)).validate()
    with pytest.raises(ConfigError, match="unknown I2I task"):
        I2IBenchSettings(tasks=("denoise",)).validate()
    with pytest.raises(ConfigError, match="retrained weights for inpaint not found"):
        I2IBenchSettings(retrained={"inpaint": "/nonexistent.safetensors"}).validate()
    with pytest.raises(ConfigError, match=r"dataset fashion-mnist: give the original weights .*missing: inpaint"):
        I2IBenchSettings(dataset="fashion-mnist", tasks=("inpaint",), proxy="mnist").validate()
    with pytest.raises(ConfigError, match="for fashion-mnist's spare test images use 'test'"):
        I2IBenchSettings(dataset="fashion-mnist", proxy="mnist-test").validate()
    with pytest.raises(ConfigError, match="is the bench's own dataset"):
        I2IBenchSettings(proxy="mnist").validate()
    with pytest.raises(ConfigError, match="classifier weights not found"):
        I2IBenchSettings(classifier="/nonexistent.safetensors").validate()


@pytest.mark.parametrize("task", ["inpaint", "outpaint"])
def test_bundled_models_reconstruct_and_their_bundle_trains_the_encoder_only(task: str):
    import json

    from genunlearn.data import load_dataset
    from genunlearn.models.bundle import BuildContext, build_bundle
    from genunlearn.models.registry import i2i_weights

    record = json.loads(i2i_weights(task).with_suffix("").with_suffix(".record.json").read_text())
    assert record["config"]["task"] == task and record["complete"]
    bundle = build_bundle("mnist-i2i", {"task": task, "objective": "embedding"}, BuildContext(torch.device("cpu")))
    model = bundle.adapter.model
    assert {id(p) for p in bundle.adapter.trainable_parameters()} == {id(p) for p in model.encoder.parameters()}
    assert isinstance(bundle.task, I2IEmbeddingTask)
    assert bundle.info["noise"]["mean"] == pytest.approx(0.1307, abs=1e-3)
    assert bundle.info["noise"]["std"] == pytest.approx(0.3081, abs=1e-3)
    test = load_dataset("mnist", "test").flat_float()[:200].reshape(-1, 1, 28, 28)
    assert bundle.task.retain_loss(model, test).item() == 0.0
    q = reconstruction_quality(model, test)
    assert q["psnr_full"] > 15 and q["l2_masked"] < 0.1  # trained: far better than a blank image (~10 dB)


def test_bundle_errors_are_one_line():
    from genunlearn.models.bundle import BuildContext, build_bundle
    from genunlearn.models.registry import i2i_weights

    ctx = BuildContext(torch.device("cpu"))
    with pytest.raises(ConfigError, match="unknown I2I objective 'elbo'"):
        build_bundle("mnist-i2i", {"objective": "elbo"}, ctx)
    with pytest.raises(ConfigError, match="unknown I2I task"):
        build_bundle("mnist-i2i", {"task": "colorize"}, ctx)
    wrong = BuildContext(torch.device("cpu"), checkpoint=str(i2i_weights("outpaint")))
    with pytest.raises(ConfigError, match="an I2I model for outpaint, not inpaint"):
        build_bundle("mnist-i2i", {"task": "inpaint"}, wrong)


def test_cli_unlearns_the_bundled_model_with_the_embedding_task(tmp_path, capsys):
    from genunlearn.checkpoints import load_state, read_metadata
    from genunlearn.models.registry import i2i_weights
    from tests.test_cli import run

    (tmp_path / "run.toml").write_text(
        '[model]\nname = "mnist-i2i"\noptions = { task = "outpaint", objective = "embedding" }\n'
        '[unlearn]\nmethod = "i2i"\nsteps = 3\nbatch_size = 8\n'
    )
    out = tmp_path / "u"
    code, _, err = run(["unlearn", "--config", str(tmp_path / "run.toml"), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert read_metadata(out / "model.safetensors")["build_options"]["task"] == "outpaint"
    before, after = load_state(i2i_weights("outpaint")), load_state(out / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    code, _, err = run(["train", "dit", "--task", "inpaint", "--out", str(tmp_path / "d")], capsys)
    assert code == 2 and "--task and --mask-size apply to the i2i model only" in err

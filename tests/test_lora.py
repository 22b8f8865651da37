"""LoRA adapters through peft (issue 16): exact start, adapter-only training, exact UNO, merged and peft outputs."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from genunlearn.adapters import ModelAdapter
from genunlearn.config import load_config
from genunlearn.errors import ConfigError
from genunlearn.loop import UnlearnConfig, unlearn
from genunlearn.lora import (
    AdapterConfig,
    adapt,
    load_adapter,
    lora_adapter,
    merged,
    resolve_targets,
    resolve_trainable,
)
from genunlearn.methods import MethodParams, StepContext, get_method
from genunlearn.models import MNISTVAE, load_model
from genunlearn.objectives import ReplacementTask, StandardTask, VAEObjective
from tests.test_cli import run

pytest.importorskip("peft")


class SmallConvVAE(torch.nn.Module):
    """Conv + linear layers and BatchNorm: every layer type the adapter meets in the conv VAEs."""

    def __init__(self, latent: int = 3) -> None:
        super().__init__()
        self.latent = latent
        self.enc = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, 2, 1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten()
        )
        self.head = torch.nn.Linear(4 * 4 * 4, 2 * latent)
        self.dec = torch.nn.Sequential(torch.nn.Linear(latent, 32), torch.nn.Tanh(), torch.nn.Linear(32, 64))

    def encode(self, x):
        h = self.head(self.enc(x))
        return h[:, : self.latent], h[:, self.latent :]

    def decode(self, z):
        return torch.sigmoid(self.dec(z)).reshape(-1, 1, 8, 8)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _vae_outputs(model, x, noise):
    obj = VAEObjective("mse", "sum")
    return obj.per_example(model, x, noise)


@pytest.mark.parametrize("train_mode", [False, True])
def test_adapted_model_equals_the_original_before_the_first_update(train_mode):
    torch.manual_seed(0)
    original = SmallConvVAE()
    adapted = lora_adapter(copy.deepcopy(original), AdapterConfig(kind="lora", rank=2)).model
    x, noise = _images(6, 1), torch.randn(6, 3)
    original.train(train_mode)
    adapted.train(train_mode)
    assert torch.equal(_vae_outputs(adapted, x, noise), _vae_outputs(original, x, noise))
    z = torch.randn(5, 3)
    assert torch.equal(adapted.decode(z), original.decode(z))


def test_only_the_adapter_trains_and_the_base_weights_stay_exactly():
    torch.manual_seed(0)
    base = SmallConvVAE()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    adapter = lora_adapter(base, AdapterConfig(kind="lora", rank=2, target_modules=("all",)))
    names = [n for n, p in adapter.model.named_parameters() if p in set(adapter.trainable_parameters())]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert {n.split(".lora_")[0].removeprefix("base_model.model.") for n in names} == {
        "enc.0",
        "head",
        "dec.0",
        "dec.2",
    }
    lora_before = [p.detach().clone() for p in adapter.trainable_parameters()]
    cfg = UnlearnConfig(method="uno", steps=3, batch_size=8, beta_o=10.0, stop_at=None, bn_mode="eval")
    unlearn(adapter, StandardTask(VAEObjective("mse", "sum")), _images(32, 2), _images(32, 3), cfg, progress=False)
    after = adapter.base_model.state_dict()
    for k, v in before.items():
        key = k if k in after else k.replace(k.rsplit(".", 1)[0], k.rsplit(".", 1)[0] + ".base_layer")
        assert torch.equal(after[key], v), k
    moved = [not torch.equal(a, b) for a, b in zip(lora_before, adapter.trainable_parameters(), strict=True)]
    assert any(moved)


def test_uno_exact_gradient_over_lora_parameters_matches_naive_double_backward():
    torch.manual_seed(0)
    model = SmallConvVAE().double()
    adapter = lora_adapter(model, AdapterConfig(kind="lora", rank=2, target_modules=("dec.*", "head")))
    params = adapter.trainable_parameters()
    with torch.no_grad():  # move B off zero: at initialisation every gradient on A vanishes
        for p in params:
            p.add_(0.3 * torch.randn_like(p))
    net = adapter.model.train()
    xr, xf = _images(8, 4).double(), _images(8, 5).double() * 0.5
    nr, nf = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    obj = VAEObjective("mse", "sum")

    def l_r():
        return obj.per_example(net, xr, nr).sum()

    def l_f():
        return obj.per_example(net, xf, nf).sum()

    beta = 7.0
    ctx = StepContext(params=params, retain_loss=l_r, forget_loss=l_f, hp=MethodParams(beta_o=beta))
    ours = get_method("uno").compute(ctx).direction
    lr = l_r()
    g_r = torch.cat([g.reshape(-1) for g in torch.autograd.grad(lr, params, create_graph=True)])
    g_f = torch.cat([g.reshape(-1) for g in torch.autograd.grad(l_f(), params, create_graph=True)])
    cos = (g_r @ g_f) / (g_r.norm() * g_f.norm())
    naive = torch.autograd.grad(lr + beta * cos**2, params)
    assert float(cos.detach() ** 2) > 1e-4  # the penalty term matters
    for a, b in zip(ours, naive, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_target_patterns_suffixes_globs_frozen_parts_and_errors():
    m = SmallConvVAE()
    assert resolve_targets(m, ["all"]) == ["enc.0", "head", "dec.0", "dec.2"]
    assert resolve_targets(m, ["0"]) == ["enc.0", "dec.0"]  # peft's rule: a name or a name suffix
    assert resolve_targets(m, ["dec.*"]) == ["dec.0", "dec.2"]
    assert resolve_targets(m, ["all"], exclude=("enc",)) == ["head", "dec.0", "dec.2"]
    with pytest.raises(ConfigError, match="selects no Linear/Conv"):
        resolve_targets(m, ["attn"])
    adapter = lora_adapter(ModelAdapter(m, frozen=["enc"]), AdapterConfig(kind="lora", rank=1))
    assert adapter.targets == ["head", "dec.0", "dec.2"]
    assert not any("enc." in n for n, p in adapter.model.named_parameters() if p.requires_grad)


def test_adapter_config_from_file_and_options(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[adapter]\nkind = "lora"\nrank = 4\nalpha = 8\ntarget_modules = ["decoder.*"]\nmerge = true\n')
    cfg = load_config(path)
    assert cfg.adapter == AdapterConfig(kind="lora", rank=4, alpha=8.0, target_modules=("decoder.*",), merge=True)
    with pytest.raises(ConfigError, match="merge needs an adapter"):
        load_config(None, {"adapter": {"merge": True}})
    with pytest.raises(ConfigError, match="rank must be >= 1"):
        load_config(None, {"adapter": {"kind": "lora", "rank": 0}})


def _decode(model, n=16):
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model.eval().decode(z)


def test_cli_lora_writes_peft_adapter_or_merged_checkpoint_and_both_reload(tmp_path, capsys):
    common = ["unlearn", "--method", "s", "--steps", "3", "--batch-size", "32", "--monitor-samples", "64"]
    common += ["--adapter", "lora", "--rank", "2", "--lora-alpha", "4", "--target-modules", "decoder.0,decoder.3"]
    code, out, err = run([*common, "--out", str(tmp_path / "a"), "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run([*common, "--merge", "--out", str(tmp_path / "m"), "--quiet"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["outputs"] == ["adapter/"]
    assert summary["trainable_parameters"] == (2 * 2 + 400 * 2) + (2 * 400 + 784 * 2)  # A and B of both layers
    adapter_dir = tmp_path / "a" / "adapter"
    assert (adapter_dir / "adapter_config.json").is_file() and (adapter_dir / "adapter_model.safetensors").is_file()
    assert (adapter_dir / "base_buffers.safetensors").is_file()  # --bn-mode train moved BatchNorm statistics
    assert not (tmp_path / "a" / "model.safetensors").exists()
    # the merged export is a plain checkpoint of the registered model
    plain = load_model("mnist-vae", tmp_path / "m" / "model.safetensors")
    assert isinstance(plain, MNISTVAE)
    # the peft adapter reloads onto the original weights (with the moved buffers) and gives the same model
    reloaded = load_adapter(load_model("mnist-vae"), adapter_dir)
    torch.testing.assert_close(_decode(reloaded), _decode(plain), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(_decode(plain), _decode(load_model("mnist-vae")), atol=1e-6)  # it did move
    torch.testing.assert_close(_decode(merged(reloaded)), _decode(plain), rtol=1e-5, atol=1e-6)
    # with peft alone (no genunlearn), the adapter loads too; the moved buffers are genunlearn's extra file
    from peft import PeftModel

    alone = PeftModel.from_pretrained(load_model("mnist-vae"), str(adapter_dir))
    lora_sd = {k: v for k, v in alone.state_dict().items() if "lora_" in k}
    ours_sd = {k: v for k, v in reloaded.state_dict().items() if "lora_" in k}
    assert lora_sd.keys() == ours_sd.keys() and all(torch.equal(lora_sd[k], ours_sd[k]) for k in lora_sd)


def test_adapter_initialisation_follows_the_seed_not_the_global_random_state():
    def init(seed, noise):
        torch.manual_seed(noise)
        adapter = lora_adapter(SmallConvVAE(), AdapterConfig(kind="lora", rank=2), seed=seed)
        return [p.detach().clone() for p in adapter.trainable_parameters()]

    a, b, c = init(0, 1), init(0, 2), init(1, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_lora_on_a_diffusers_dit_by_name_patterns_runs_exact_uno_with_the_base_frozen():
    """The path is generic: a class-conditional diffusers DiT, attention projections chosen by name suffix."""
    from diffusers import DDPMScheduler, DiTTransformer2DModel

    from genunlearn.objectives import DiffusionObjective, ReplacementTask

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=1,
        out_channels=2,
        num_layers=1,
        sample_size=8,
        patch_size=4,
        num_embeds_ada_norm=3,
        norm_type="ada_norm_zero",
    )

    class Denoiser(torch.nn.Module):  # model(x_t, t, labels) -> prediction, the DiffusionObjective contract
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, t, labels):
            return self.net(x, timestep=t, class_labels=labels).sample

    model = Denoiser(dit).eval()  # eval: diffusers' in-network label dropout would draw at random
    x = torch.rand(4, 1, 8, 8)
    t, labels = torch.tensor([1, 50, 300, 999]), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        before = model(x, t, labels).clone()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = AdapterConfig(kind="lora", rank=2, target_modules=("to_q", "to_k", "to_v", "to_out.0"))
    adapter = lora_adapter(model, cfg)
    assert adapter.targets == [f"net.transformer_blocks.0.attn1.{n}" for n in ("to_q", "to_k", "to_v", "to_out.0")]
    with torch.no_grad():
        assert torch.equal(adapter.model(x, t, labels), before)
    objective = DiffusionObjective(DDPMScheduler(num_train_timesteps=1000), prediction="epsilon")
    task = ReplacementTask(objective.conditional, forget_condition=1, target_condition=2)
    g = torch.Generator().manual_seed(1)
    target_data = torch.rand(8, 1, 8, 8, generator=g)
    forget_data = torch.rand(8, 1, 8, 8, generator=g)
    config = UnlearnConfig(method="uno", steps=2, batch_size=4, beta_o=10.0, stop_at=None)
    # no sdpa_kernel(MATH) here: the loop selects it for UNO's double backward, over the adapter as without one
    result = unlearn(adapter, task, target_data, forget_data, config, progress=False)
    assert result.steps_run == 2 and result.log[-1]["cos2"] > 0
    after = adapter.base_model.state_dict()
    for k, v in base.items():
        key = k if k in after else k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(after[key], v), k


def test_an_interrupted_lora_run_resumes_to_the_uninterrupted_adapter(tmp_path, capsys, monkeypatch):
    """Checkpointing (issue 18) with an adapter: the resumed run rebuilds the same seeded LoRA wrapping, loads the
    adapter, optimizer, BatchNorm buffers and random states, and writes the adapter of the uninterrupted run."""
    from safetensors.torch import load_file

    from tests.test_resume import _cli_args, _interrupt_at

    lora = ["--adapter", "lora", "--rank", "2"]
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert run([*_cli_args(ref), *lora], capsys)[0] == 0
    with monkeypatch.context() as mp:
        _interrupt_at(mp, "s-asc", 5)
        code, _, err = run([*_cli_args(out), *lora, "--checkpoint-every", "2"], capsys)
    assert code == 130 and "checkpoint of update 4" in err
    code, _, err = run([*_cli_args(out), *lora, "--resume"], capsys)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["resumed_from_update"] == 4
    for name in ("adapter_model.safetensors", "base_buffers.safetensors"):
        a, b = load_file(ref / "adapter" / name), load_file(out / "adapter" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    logs = []
    for d in (ref, out):
        rows = [r.split(",") for r in (d / "log.csv").read_text().splitlines()]
        keep = [i for i, c in enumerate(rows[0]) if not c.endswith("time_s")]
        logs.append([[r[i] for i in keep] for r in rows])
    assert logs[0] == logs[1] and len(logs[0]) == 1 + 9  # header, before the first update, 8 updates
    # --overwrite removes the adapter folder with the rest of the run
    code, _, err = run([*_cli_args(out), "--overwrite"], capsys)
    assert code == 0, err
    assert not (out / "adapter").exists() and (out / "model.safetensors").is_file()


def test_a_method_penalising_the_models_own_weights_is_refused_with_an_adapter(tmp_path, capsys):
    """Selective Amnesia's EWC penalty is on the model's own weights, which LoRA freezes: one line, nothing written."""
    args = ["unlearn", "--method", "amnesia", "--adapter", "lora", "--out", str(tmp_path / "a"), "--quiet"]
    code, _, err = run(args, capsys)
    assert code == 2 and "penalises changes of the model's own weights (EWC)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "a").exists()


def test_trainable_patterns_select_parameters_by_dotted_parts_or_globs_and_errors():
    m = SmallConvVAE()
    assert resolve_trainable(m, ["dec"]) == ["dec.0.weight", "dec.0.bias", "dec.2.weight", "dec.2.bias"]
    assert resolve_trainable(m, ["0"]) == ["enc.0.weight", "enc.0.bias", "dec.0.weight", "dec.0.bias"]
    assert resolve_trainable(m, ["*.bias"], exclude=("enc",)) == ["head.bias", "dec.0.bias", "dec.2.bias"]
    assert resolve_trainable(m, ["dec.2.weight", "head"]) == ["head.weight", "head.bias", "dec.2.weight"]
    with pytest.raises(ConfigError, match="'ec' selects no parameter"):  # whole dotted parts, not substrings
        resolve_trainable(m, ["ec"])
    with pytest.raises(ConfigError, match="with --adapter lora the adapter trains"):
        AdapterConfig(kind="lora", trainable=("dec",)).validate()
    with pytest.raises(ConfigError, match="outside its frozen parts"):
        adapt(ModelAdapter(m, frozen=["dec"]), AdapterConfig(trainable=("dec.0",)))


class _Conditional(torch.nn.Module):
    """A toy class-conditional regressor: a label-embedding table and a shared layer (a DiT in miniature)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(4, 3)
        self.body = torch.nn.Linear(3, 3)

    def loss(self, x, c):
        return ((self.body(self.emb(c)) - x) ** 2).mean()


def test_only_the_trainable_parameters_move_and_unused_label_rows_stay_exactly():
    """Surgical replacement: with only the label embeddings trainable, S and UNO move the forget and target
    labels' rows; the shared layer and the other labels' rows stay bit for bit (Adam never moves an unused row)."""
    torch.manual_seed(0)
    task = ReplacementTask(lambda model, x, c: model.loss(x, c), forget_condition=1, target_condition=2)
    for method in ("s", "uno"):
        model = _Conditional()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        adapter = adapt(model, AdapterConfig(trainable=("emb",)))
        assert [p.shape for p in adapter.trainable_parameters()] == [torch.Size([4, 3])]
        cfg = UnlearnConfig(method=method, steps=4, batch_size=4, beta_o=1.0, stop_at=None, lr=1e-2)
        unlearn(adapter, task, torch.randn(8, 3), torch.randn(8, 3), cfg, progress=False)
        after = model.state_dict()
        assert torch.equal(after["body.weight"], before["body.weight"]), method
        assert torch.equal(after["body.bias"], before["body.bias"]), method
        moved = (after["emb.weight"] != before["emb.weight"]).any(1).tolist()
        assert moved == [False, True, True, False], method


def test_cli_trainable_trains_only_the_selected_layers(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["unlearn", "--method", "s", "--steps", "2", "--batch-size", "32", "--monitor-samples", "64"]
    code, _, err = run([*args, "--trainable", "decoder.3", "--bn-mode", "batch", "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trainable_parameters"] == 400 * 784 + 784
    original, unlearned = load_model("mnist-vae").state_dict(), load_model("mnist-vae", out / "model.safetensors")
    changed = {k for k, v in unlearned.state_dict().items() if not torch.equal(v, original[k])}
    assert changed == {"decoder.3.weight", "decoder.3.bias"}
    code, _, err = run([*args, "--trainable", "nothing.here", "--out", str(tmp_path / "x"), "--quiet"], capsys)
    assert code != 0 and "selects no parameter" in err and "Traceback" not in err

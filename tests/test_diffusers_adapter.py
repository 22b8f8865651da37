"""``--model diffusers:<folder>``: a diffusers DiTPipeline from local files, unlearned in latent space (issue 12)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_cli import run


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """A randomly initialised DiT pipeline (learned-sigma transformer, 2-level autoencoder), saved in diffusers
    format, and an image folder with three classes."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    root = tmp_path_factory.mktemp("diffusers")
    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(
        in_channels=4,
        out_channels=8,
        sample_size=4,
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_embeds_ada_norm=3,
        norm_type="ada_norm_zero",
    )
    with torch.no_grad():
        for p in transformer.parameters():
            p.add_(0.02 * torch.randn_like(p))
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=8,
    )
    DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler()).save_pretrained(root / "pipe")
    rng = np.random.default_rng(0)
    for c in (0, 1, 2):
        (root / "images" / str(c)).mkdir(parents=True)
        for i in range(6):
            img = (rng.random((10, 12, 3)) * 80 + 60 * c).astype(np.uint8)
            Image.fromarray(img).save(root / "images" / str(c) / f"{i}.png")
    return root


def test_unlearn_a_local_dit_pipeline_in_latent_space(tiny_pipeline, capsys):
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    out = tiny_pipeline / "out"
    argv = ["unlearn", "--model", f"diffusers:{tiny_pipeline / 'pipe'}", "--data-dir", str(tiny_pipeline / "images")]
    argv += ["--forget", "1", "--replace-with", "2", "--method", "uno", "--steps", "2", "--batch-size", "4"]
    code, stdout, err = run([*argv, "--loss-reduction", "mean", "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_run"] == 2 and summary["forget_fraction_initial"] is None  # no classifier: no monitor
    assert (out / "transformer" / "config.json").is_file() and "transformer" in stdout
    before = DiTTransformer2DModel.from_pretrained(tiny_pipeline / "pipe" / "transformer")
    after = DiTTransformer2DModel.from_pretrained(out / "transformer")
    changed = [k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])]
    assert changed and all("pos_embed.pos_embed" not in k for k in changed)
    vae = AutoencoderKL.from_pretrained(tiny_pipeline / "pipe" / "vae")  # the input pipeline is never touched
    assert not (out / "vae").exists() and vae is not None


def test_missing_or_broken_pipeline_is_one_line(tiny_pipeline, tmp_path, capsys):
    for target, message in (
        (tmp_path / "nothing", "not a local diffusers pipeline folder"),
        (tiny_pipeline / "images", "not a local diffusers pipeline folder"),
    ):
        code, _, err = run(["unlearn", "--model", f"diffusers:{target}", "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    code, _, err = run(
        ["unlearn", "--model", f"diffusers:{tiny_pipeline / 'pipe'}", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "--data-dir" in err


def test_latent_sampler_is_deterministic_given_noise(tiny_pipeline):
    from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
    from genunlearn.experiments.session import UnlearnSession

    s = UnlearnSession(
        ModelConfig(name=f"diffusers:{tiny_pipeline / 'pipe'}", options={"sampler_steps": 3}),
        DataConfig(data_dir=str(tiny_pipeline / "images"), forget=(1,), replace_with=(2,)),
        MonitorConfig(),
        device="cpu",
    )
    sampler = s.bundle.sampler
    z = sampler.draw(2, torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2])
    a, b = sampler.generate(s.fresh_model(), z, labels=labels), sampler.generate(s.fresh_model(), z, labels=labels)
    assert a.shape == (2, 3, 8, 8) and torch.equal(a, b) and float(a.min()) >= 0 and float(a.max()) <= 1


def test_lora_on_a_diffusers_pipeline_merged_and_as_adapter(tiny_pipeline, tmp_path, capsys):
    """A LoRA adapter on the pipeline's attention: ``--merge`` writes a diffusers transformer in which only the
    adapted layers changed; without it the adapter (peft's format) loads onto the original pipeline and, merged,
    gives exactly the transformer the ``--merge`` run wrote (same seed, same run)."""
    from diffusers import DiTTransformer2DModel

    from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
    from genunlearn.experiments.session import UnlearnSession
    from genunlearn.lora import load_adapter

    argv = ["unlearn", "--model", f"diffusers:{tiny_pipeline / 'pipe'}", "--data-dir", str(tiny_pipeline / "images")]
    argv += ["--forget", "1", "--replace-with", "2", "--method", "s", "--steps", "3", "--batch-size", "4"]
    argv += ["--lr", "1e-2", "--adapter", "lora", "--rank", "2", "--target-modules", "to_q,to_k,to_v", "--quiet"]
    code, _, err = run([*argv, "--merge", "--out", str(tmp_path / "merged")], capsys)
    assert code == 0, err
    code, _, err = run([*argv, "--out", str(tmp_path / "adapter")], capsys)
    assert code == 0, err

    before = DiTTransformer2DModel.from_pretrained(tiny_pipeline / "pipe" / "transformer").state_dict()
    after = DiTTransformer2DModel.from_pretrained(tmp_path / "merged" / "transformer").state_dict()
    assert after.keys() == before.keys()  # a plain diffusers transformer: no LoRA matrices left
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.rsplit(".", 2)[-2] in ("to_q", "to_k", "to_v") for k in changed), changed

    assert (tmp_path / "adapter" / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "adapter" / "transformer").exists()
    session = UnlearnSession(
        ModelConfig(name=f"diffusers:{tiny_pipeline / 'pipe'}"),
        DataConfig(data_dir=str(tiny_pipeline / "images"), forget=(1,), replace_with=(2,)),
        MonitorConfig(),
        device="cpu",
    )
    loaded = load_adapter(session.fresh_model(), tmp_path / "adapter" / "adapter", merge=True)
    state = loaded.transformer.state_dict()
    assert state.keys() == after.keys()
    for k in after:
        torch.testing.assert_close(state[k], after[k], rtol=1e-6, atol=1e-7, msg=k)

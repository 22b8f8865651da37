"""Config files, generated CLI options, models from anywhere, any IDX dataset end to end (issue 11)."""

from __future__ import annotations

import json
import sys
import textwrap
from importlib import metadata

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genunlearn.config import RunConfig, field_help, load_config
from genunlearn.data import write_idx
from genunlearn.errors import ConfigError
from genunlearn.loop import UnlearnConfig
from tests.test_cli import run

USER_MODEL = textwrap.dedent(
    '''
    """A user's own model: a small conv VAE on a synthetic dataset (image-shaped, squared-error likelihood)."""
    import torch

    import genunlearn as gu


    class ConvVAE(torch.nn.Module):
        def __init__(self, latent=4):
            super().__init__()
            self.enc = torch.nn.Sequential(
                torch.nn.Conv2d(1, 4, 3, 2, 1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 2 * latent)
            )
            self.dec = torch.nn.Sequential(torch.nn.Linear(latent, 64), torch.nn.Unflatten(1, (1, 8, 8)))
            self.latent = latent

        def encode(self, x):
            h = self.enc(x)
            return h[:, : self.latent], h[:, self.latent :]

        def decode(self, z):
            return torch.sigmoid(self.dec(z))


    def data(n=90, side=8):
        g = torch.Generator().manual_seed(0)
        y = torch.arange(n) % 3
        x = torch.rand(n, 1, side, side, generator=g) * 0.2
        x[y == 1, :, :, : side // 2] += 0.7
        x[y == 2, :, : side // 2, :] += 0.7
        return x.clamp(0, 1), y


    def factory(latent=4, context=None):
        torch.manual_seed(0)
        x, y = data()
        clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        with torch.no_grad():  # a fixed classifier: which half of the image is bright
            clf[1].weight.zero_()
            clf[1].weight[1].view(8, 8)[:, :4] = 1.0
            clf[1].weight[2].view(8, 8)[:4, :] = 1.0
            clf[1].bias[:] = torch.tensor([6.0, 0.0, 0.0])
        return gu.ModelBundle(
            model=ConvVAE(latent),
            objective=gu.VAEObjective("mse", context.loss_reduction if context else "sum"),
            sampler=gu.LatentSampler((latent,)),
            classifier=clf,
            num_classes=3,
            data=gu.TrainingData(x, y, name="synthetic squares"),
            replacement_likelihood="mse",
        )


    def broken(context=None):
        raise RuntimeError("boom")


    def wrong_shape(context=None):
        bundle = factory(context=context)
        bundle.data = gu.TrainingData(torch.rand(90, 1, 10, 10), bundle.data.labels)
        return bundle


    def bare_module(context=None):
        return ConvVAE()
    '''
)

CONDITIONAL_MODEL = textwrap.dedent(
    '''
    """A class-conditional toy generator for replacement unlearning: one mean image per class."""
    import torch

    import genunlearn as gu


    class Means(torch.nn.Module):
        def __init__(self, means):
            super().__init__()
            self.mu = torch.nn.Parameter(means.clone())


    class Sampler:
        def draw(self, n, generator):
            return torch.randn(n, 16, generator=generator)

        def generate(self, model, z, labels=None):
            labels = torch.zeros(len(z), dtype=torch.long) if labels is None else labels
            return model.mu[labels] + 0.1 * z


    def factory(context=None):
        g = torch.Generator().manual_seed(0)
        means = torch.eye(3, 16) * 3.0
        y = torch.arange(300) % 3
        x = means[y] + 0.1 * torch.randn(300, 16, generator=g)
        clf = torch.nn.Linear(16, 3)
        with torch.no_grad():
            clf.weight.copy_(means)
            clf.bias.zero_()

        def cond_loss(model, x, c):
            return ((x - model.mu[c]) ** 2).sum(1).mean()

        return gu.ModelBundle(
            model=Means(means),
            objective=lambda m, b: cond_loss(m, b[0], b[1]),
            conditional_loss=cond_loss,
            sampler=Sampler(),
            classifier=clf,
            num_classes=3,
            data=gu.TrainingData(x, y, name="three means"),
        )
    '''
)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A working directory holding the user's model files (fresh module names for every test)."""
    tag = tmp_path.name.replace("-", "_").replace("[", "_").replace("]", "_")
    (tmp_path / f"umodel_{tag}.py").write_text(USER_MODEL)
    (tmp_path / f"cmodel_{tag}.py").write_text(CONDITIONAL_MODEL)
    monkeypatch.chdir(tmp_path)
    yield tmp_path, f"umodel_{tag}", f"cmodel_{tag}"
    for name in (f"umodel_{tag}", f"cmodel_{tag}"):
        sys.modules.pop(name, None)


def test_config_file_overrides_and_errors(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[unlearn]\nmethod = "rep"\nsteps = 40\n[data]\nforget = [7]\n[monitor]\nsamples = 64\n')
    cfg = load_config(path, {"unlearn": {"steps": 5}})
    assert (cfg.unlearn.method, cfg.unlearn.steps, cfg.data.forget, cfg.monitor.samples) == ("rep", 5, (7,), 64)
    assert cfg.unlearn.lr == UnlearnConfig().lr  # defaults fill the rest
    again = RunConfig.from_dict(__import__("tomllib").loads(cfg.to_toml()))
    assert again == cfg
    for text, message in (
        ('[unlearn]\nmetod = "s"\n', "unknown key 'metod' in [unlearn]"),
        ("[unlern]\nsteps = 3\n", "unknown section 'unlern'"),
        ('[unlearn]\nsteps = "many"\n', "[unlearn] steps: expected an integer"),
        ('[data]\nforget = "one"\n', "[data] forget: expected an integer"),
        ("[unlearn]\nsteps = \n", "not valid TOML"),
        ('[unlearn]\nmethod = "zzz"\n', "unknown method 'zzz'"),
        ("[monitor]\nsamples = 0\n", "samples must be >= 1"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=__import__("re").escape(message)):
            load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_every_config_field_has_help_and_a_cli_option(capsys):
    from genunlearn.config import SECTIONS, cli_name

    code, out, _ = run(["unlearn", "--help"], capsys)
    assert code == 0
    for cls in SECTIONS.values():
        helps = field_help(cls)
        for f in __import__("dataclasses").fields(cls):
            if f.name == "options":
                continue
            assert helps.get(f.name), f"{cls.__name__}.{f.name} has no help text"
            assert f"--{cli_name(f)}" in out, f.name


def test_user_model_from_a_file_runs_and_repeats_from_its_config(user_dir, capsys):
    tmp, umodel, _ = user_dir
    (tmp / "run.toml").write_text(
        f'[model]\nname = "{umodel}:factory"\noptions = {{latent = 3}}\n'
        '[data]\nforget = [1]\n[unlearn]\nmethod = "rep"\nsteps = 4\nbatch_size = 16\nstop_at = 0.0\n'
        '[objective]\nloss_reduction = "mean"\n[monitor]\nsamples = 64\nfid_samples = 60\n'
    )
    code, out, err = run(["unlearn", "--config", "run.toml", "--seed", "2", "--out", "a", "--quiet"], capsys)
    assert code == 0, err
    summary = json.loads((tmp / "a" / "summary.json").read_text())
    assert summary["steps_run"] == 4 and summary["run_config"]["model"]["options"] == {"latent": 3}
    assert summary["objective"]["loss_reduction"] == "mean" and summary["config"]["seed"] == 2
    assert summary["fid_original"] > 0 and summary["forget"] == [1]
    assert "--seed 2" in summary["command"]
    code, _, err = run(["unlearn", "--config", "a/config.toml", "--out", "b", "--quiet"], capsys)
    assert code == 0, err
    wa, wb = load_file(str(tmp / "a" / "model.safetensors")), load_file(str(tmp / "b" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (
        json.loads((tmp / "b" / "summary.json").read_text())["forget_fraction_final"]
        == summary["forget_fraction_final"]
    )


@pytest.mark.parametrize(
    "factory, message",
    [
        ("broken", "the factory raised RuntimeError: boom"),
        ("wrong_shape", "cannot process the retain data (examples of shape (1, 10, 10))"),
        ("bare_module", "return a genunlearn.ModelBundle"),
        ("missing", "has no callable 'missing'"),
    ],
)
def test_user_model_errors_are_one_line(user_dir, capsys, factory, message):
    _, umodel, _ = user_dir
    code, _, err = run(["unlearn", "--model", f"{umodel}:{factory}", "--steps", "1", "--out", "o", "--quiet"], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_module_and_model(user_dir, capsys):
    code, _, err = run(["unlearn", "--model", "no_such_module:f", "--out", "o", "--quiet"], capsys)
    assert code == 2 and "cannot import module 'no_such_module'" in err
    code, _, err = run(["unlearn", "--model", "no-such-model", "--out", "o", "--quiet"], capsys)
    assert code == 2 and "unknown model 'no-such-model'" in err


def test_entry_point_models(user_dir, monkeypatch, capsys):
    tmp, umodel, _ = user_dir
    monkeypatch.syspath_prepend(str(tmp))
    from genunlearn.models import bundle

    ep = metadata.EntryPoint(name="squares", value=f"{umodel}:factory", group=bundle.ENTRY_POINT_GROUP)
    monkeypatch.setattr(bundle, "_entry_points", lambda: {"squares": ep})
    code, _, err = run(
        ["unlearn", "--model", "squares", "--method", "s", "--steps", "2", "--monitor-samples", "16", "--out", "e"],
        capsys,
    )
    assert code == 0, err
    assert json.loads((tmp / "e" / "summary.json").read_text())["steps_run"] == 2


def test_conditional_replacement_through_the_cli(user_dir, capsys):
    tmp, _, cmodel = user_dir
    argv = ["unlearn", "--model", f"{cmodel}:factory", "--forget", "1", "--replace-with", "2", "--method", "uno"]
    argv += ["--steps", "60", "--lr", "0.05", "--beta-o", "1", "--batch-size", "32", "--monitor-samples", "200"]
    code, _, err = run([*argv, "--out", "r", "--quiet"], capsys)
    assert code == 0, err
    s = json.loads((tmp / "r" / "summary.json").read_text())
    assert s["replace_with"] == [2] and s["forget_fraction_initial"] > 0.9  # samples with label 1 were ones
    assert s["status"] == "unlearned" and s["updates_to_unlearn"] is not None
    w = load_file(str(tmp / "r" / "model.safetensors"))["mu"]
    means = torch.eye(3, 16) * 3.0
    assert (w[1] - means[2]).norm() < (w[1] - means[1]).norm()  # label 1 now generates nearer class 2's data
    assert torch.equal(w[0], torch.eye(3, 16)[0] * 3.0)  # an unrelated class is untouched
    code, _, err = run([*argv[:5], "--replace-with", "1", "--out", "r2", "--quiet"], capsys)
    assert code == 2 and "both forgotten and a target" in err


@pytest.fixture(scope="module")
def synthetic_idx(tmp_path_factory):
    """A tiny IDX dataset of 12x12 images in 3 classes, with a VAE and a classifier trained on it."""
    root = tmp_path_factory.mktemp("idx")
    d = root / "synth"
    d.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 240), ("t10k", 60)):
        y = np.arange(n) % 3
        x = (rng.random((n, 12, 12)) * 60).astype(np.uint8)
        x[y == 1, :, :6] += 180
        x[y == 2, :6, :] += 180
        write_idx(d / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(d / f"{split}-labels-idx1-ubyte.gz", y.astype(np.uint8))
    return root, d


def test_any_idx_dataset_end_to_end(synthetic_idx, capsys):
    root, d = synthetic_idx
    for kind in ("vae", "classifier"):
        code, _, err = run(
            ["train", kind, "--dataset", "synth", "--data-dir", str(d), "--epochs", "3", "--out", str(root / kind)],
            capsys,
        )
        assert code == 0, err
    common = ["--dataset", "synth", "--data-dir", str(d), "--checkpoint", str(root / "vae" / "model.safetensors")]
    common += ["--classifier-checkpoint", str(root / "classifier" / "model.safetensors")]
    code, _, err = run(
        [
            *["unlearn", *common, "--forget", "1", "--method", "rep", "--steps", "3", "--monitor-samples", "64"],
            *["--fid-samples", "100", "--batch-size", "32", "--no-early-stop", "--out", str(root / "u"), "--quiet"],
        ],
        capsys,
    )
    assert code == 0, err
    s = json.loads((root / "u" / "summary.json").read_text())
    assert s["forget_set_size"] == 80 and s["steps_run"] == 3 and s["fid_final"] > 0
    code, out, err = run(
        [
            *["bench", "mnist", *common, "--quick", "--seeds", "1", "--methods", "s,rep", "--steps", "3"],
            *["--fid-samples", "100", "--out", str(root / "b")],
        ],
        capsys,
    )
    assert code == 0, err
    assert "synth, forget class 1" in out
    assert (root / "b" / "figures" / "grids.png").is_file()
    code, _, err = run(["unlearn", "--dataset", "synth", "--data-dir", str(d), "--out", str(root / "x")], capsys)
    assert code == 2 and "pass --checkpoint and --classifier-checkpoint" in err


def test_wrong_image_size_for_the_model_is_one_line(synthetic_idx, capsys):
    root, d = synthetic_idx
    code, _, err = run(
        [
            *["unlearn", "--dataset", "synth", "--data-dir", str(d)],
            *["--checkpoint", "src/genunlearn/models/weights/mnist-vae.safetensors"],
            *["--classifier-checkpoint", "src/genunlearn/models/weights/mnist-classifier.safetensors"],
            *["--out", str(root / "never")],
        ],
        capsys,
    )
    assert code == 2 and "144 pixels but the VAE takes 784" in err


def test_package_surface():
    import importlib.resources

    import genunlearn as gu

    assert gu.__version__ and gu.unlearn is __import__("genunlearn.loop").loop.unlearn
    for name in gu.__all__:
        assert getattr(gu, name) is not None, name
    assert (importlib.resources.files("genunlearn") / "py.typed").is_file()
    with pytest.raises(AttributeError):
        gu.no_such_thing  # noqa: B018

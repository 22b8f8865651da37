"""Feature unlearning on the CelebA face VAE through the general engine (issue 13), on tiny synthetic data."""

from __future__ import annotations

import json

import pytest
import torch

from genunlearn.checkpoints import save_weights
from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
from genunlearn.errors import ConfigError
from genunlearn.experiments.session import UnlearnSession
from genunlearn.loop import UnlearnConfig
from genunlearn.models.celeba_classifier import CelebAClassifier
from genunlearn.models.celeba_vae import CelebAVAE
from genunlearn.objectives import ObjectiveConfig
from tests.test_celeba import write_celeba
from tests.test_cli import run


def write_structured_celeba(root, n=48):
    """A tiny CelebA folder whose 'Male' faces are bright and the others dark (so latents separate by it)."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    rows = write_celeba(root, n=n)  # random attributes; images rewritten below
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(root / "images.zip", "w", compression=zipfile.ZIP_STORED) as zf:
        for row in rows:
            base = 200 if row[3 + 1] else 40  # ATTRS = Eyeglasses, Male, Smiling, Young
            img = np.clip(base + rng.integers(-20, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=95)
            zf.writestr(row[0], buf.getvalue())
    return rows  # the attribute CSV written by write_celeba stays


@pytest.fixture(scope="module")
def tiny_celeba(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba-unlearn")
    write_structured_celeba(root / "data")
    torch.manual_seed(0)
    vae = CelebAVAE(latent_dim=8, widths=(4, 8))
    clf = CelebAClassifier(4, widths=(4, 8))
    save_weights(vae, root / "vae.safetensors", metadata={"build_options": {"latent_dim": 8, "widths": [4, 8]}})
    save_weights(clf, root / "clf.safetensors", metadata={"build_options": {"num_attributes": 4, "widths": [4, 8]}})
    return root


def _session(root, attrs=("Male",), mode="any"):
    return UnlearnSession(
        ModelConfig(name="celeba64-vae", checkpoint=str(root / "vae.safetensors"), options={"framing": "all"}),
        DataConfig(data_dir=str(root / "data"), forget_attr=attrs, attr_mode=mode),
        MonitorConfig(classifier_checkpoint=str(root / "clf.safetensors"), samples=16),
        device="cpu",
    )


def test_feature_split_detector_and_monitor(tiny_celeba):
    s = _session(tiny_celeba)
    faces = s.bundle.info["dataset"]
    male = faces.attribute("Male")
    assert s.split.forget.numel() == int(male.sum()) and s.split.retain.numel() == int((~male).sum())
    x = torch.rand(3, 3, 64, 64)
    logits = s.classifier(x)
    full = s.bundle.info["attribute_classifier"](x)
    torch.testing.assert_close(logits[:, 1], full[:, faces.attribute_index("Male")])
    assert torch.equal(logits[:, 0], torch.zeros(3))
    assert s.monitor(0).latents.shape == (16, 8)
    both = _session(tiny_celeba, ("Male", "Eyeglasses"), "all")
    assert both.split.forget.numel() == int((faces.attribute("Male") & faces.attribute("Eyeglasses")).sum())


@pytest.mark.parametrize("method", ["s", "uno", "rep", "s-hat"])
def test_methods_run_on_the_face_vae(tiny_celeba, method):
    s = _session(tiny_celeba)
    before = torch.cat([p.detach().reshape(-1) for p in s.fresh_model().parameters()])
    cfg = UnlearnConfig(method=method, steps=2, batch_size=4, beta_o=1.0, stop_at=None)
    model, res = s.run(cfg, ObjectiveConfig(hat_samples=4), progress=False)
    assert res.steps_run == 2 and not res.diverged
    assert not torch.equal(before, torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert res.forget_fraction_initial is not None


def test_celeba_errors_and_cli(tiny_celeba, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--forget-attr"):
        _session(tiny_celeba, ())
    code, _, err = run(["unlearn", "--forget-attr", "Male", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "not of mnist-vae" in err
    argv = ["unlearn", "--model", "celeba64-vae", "--checkpoint", str(tiny_celeba / "vae.safetensors")]
    argv += ["--classifier-checkpoint", str(tiny_celeba / "clf.safetensors"), "--data-dir", str(tiny_celeba / "data")]
    code, _, err = run([*argv, "--forget-attr", "Bald", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "unknown attribute 'Bald'" in err
    code, _, err = run(
        [
            *[*argv, "--forget-attr", "Male,Smiling", "--attr-mode", "all", "--method", "s", "--steps", "2"],
            *["--batch-size", "4", "--monitor-samples", "8", "--stop-at", "0", "--out", str(tmp_path / "o"), "--quiet"],
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["run_config"]["data"]["forget_attr"] == ["Male", "Smiling"] and summary["steps_run"] == 2


def test_quick_celeba_bench(tiny_celeba, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "celeba64", "--quick", "--attr", "Male", "--methods", "s,rep", "--framing", "all", "--celeba-dir"]
    argv += [str(tiny_celeba / "data"), "--checkpoint", str(tiny_celeba / "vae.safetensors")]
    argv += ["--classifier-checkpoint", str(tiny_celeba / "clf.safetensors")]
    argv += ["--independent-classifier", str(tiny_celeba / "clf.safetensors"), "--fid-samples", "16"]
    argv += ["--monitor-samples", "24"]
    code, stdout, err = run([*argv, "--lr", "1e-4", "--batch-size", "8", "--out", str(out)], capsys)
    assert code == 0, err
    assert "forget Male" in stdout and "What else changed" in stdout and "| REP" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["lr"] == 1e-4 and results["settings"]["batch_size"] == 8
    assert results["settings"]["monitor_samples"] == 24 and "monitor 24 latents" in stdout
    assert "lr 0.0001, batch 8" in stdout
    row = results["rows"][0]
    assert row["forget_fraction_final"][0] == pytest.approx(row["forget_fraction_final_independent"][0])
    assert (out / "figures" / "attribute_rates.png").is_file() and (out / "figures" / "grid-rep.png").is_file()
    assert (out / "figures" / "forget_curves.png").is_file()
    # genunlearn report's `celeba` block renders the same tables from results.json
    from genunlearn.report import run_report

    doc = tmp_path / "doc.md"
    doc.write_text("<!-- begin generated: celeba bench/results.json -->\n<!-- end generated: celeba -->\n")
    run_report(tmp_path, [doc])
    block = doc.read_text()
    table = (out / "table.md").read_text()
    assert table.split("\n", 2)[2].strip() in block and "Data: `bench/results.json`" in block
    assert run_report(tmp_path, [out / "table.md"], check=True) == []  # table.md is derived from results.json
    # a resume with other settings refuses the old records (one line) instead of mixing them into the table
    code, _, err = run([*argv, "--lr", "1e-3", "--batch-size", "8", "--out", str(out)], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error")]  # (the rest: the progress bar)
    assert code == 2 and len(errors) == 1 and "lr = 0.0001" in errors[0] and "another --out" in errors[0]
    # ... and so does a resume with another independent classifier (its sha256), or without one
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other-clf.safetensors"
    with safe_open(str(tiny_celeba / "clf.safetensors"), "pt") as f:
        meta = f.metadata()
    state = load_file(str(tiny_celeba / "clf.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 0.01
    save_file(state, str(other), metadata=meta)
    swapped = [
        str(other) if a == str(tiny_celeba / "clf.safetensors") and argv[i - 1] == "--independent-classifier" else a
        for i, a in enumerate(argv)
    ]
    code, _, err = run([*swapped, "--lr", "1e-4", "--batch-size", "8", "--out", str(out)], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2 and len(errors) == 1 and "independent classifier of sha256" in errors[0], err
    i = argv.index("--independent-classifier")
    without = argv[:i] + argv[i + 2 :]
    code, _, err = run([*without, "--lr", "1e-4", "--batch-size", "8", "--out", str(out)], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2 and len(errors) == 1 and "has an independent classifier's reading" in errors[0], err
    # an audit of the seed-0 models in OUT/audit (here: the committed one of the real bench) joins the table
    import shutil
    from pathlib import Path

    (out / "audit").mkdir()
    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "results/celeba64/male/audit/audit.json", out / "audit" / "audit.json")
    code, stdout, err = run([*argv, "--lr", "1e-4", "--batch-size", "8", "--out", str(out)], capsys)
    assert code == 0, err
    section = stdout[stdout.index("## Audit of the seed-0 models") :]
    assert "`attacked` = the model's own classifier" in section and "forget fractions < 20%" in section
    assert "| Gradient surgery (S) | 17.8% | 100.0% | n/a |" in section and "not bench entries" in section
    assert (out / "table.md").read_text().rstrip() == stdout.rstrip()


def test_celeba_bench_with_a_lora_adapter(tiny_celeba, tmp_path, capsys):
    from genunlearn.checkpoints import load_state

    out = tmp_path / "bench"
    argv = ["bench", "celeba64", "--quick", "--methods", "s", "--framing", "all", "--celeba-dir"]
    argv += [str(tiny_celeba / "data"), "--checkpoint", str(tiny_celeba / "vae.safetensors")]
    argv += ["--classifier-checkpoint", str(tiny_celeba / "clf.safetensors"), "--fid-samples", "0"]
    argv += ["--threshold", "0", "--batch-size", "8", "--lora-rank", "2", "--lora-targets", "fc_mu", "--out", str(out)]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert "LoRA rank 2 on fc_mu (peft, base frozen; measured merged)" in stdout
    before, after = load_state(tiny_celeba / "vae.safetensors"), load_state(out / "runs" / "s" / "seed0.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k]) and "running_" not in k and "batches" not in k}
    assert set(after) == set(before) and changed == {"fc_mu.weight"}, changed  # (BatchNorm statistics: train mode)
    code, _, err = run(argv, capsys)  # the same settings resume (the targets come back from JSON as a list)
    assert code == 0, err


def test_audit_of_a_face_vae(tiny_celeba, tmp_path, capsys):
    """`genunlearn audit --forget-attr`: the detectors are attribute classifiers reduced to 'has the feature';
    the independent one (other widths) is loaded as an attribute classifier, not into the monitor's shape."""
    torch.manual_seed(3)
    other = CelebAClassifier(4, widths=(2, 4))
    save_weights(
        other, tmp_path / "clf2.safetensors", metadata={"build_options": {"num_attributes": 4, "widths": [2, 4]}}
    )
    argv = ["audit", "--model", "celeba64-vae", "--checkpoint", str(tiny_celeba / "vae.safetensors")]
    argv += ["--classifier-checkpoint", str(tiny_celeba / "clf.safetensors"), "--data-dir", str(tiny_celeba / "data")]
    argv += ["--independent-classifier", str(tmp_path / "clf2.safetensors"), "--forget-attr", "Male"]
    argv += ["--unlearned", f"same={tiny_celeba / 'vae.safetensors'}", "--starts", "2", "--search-steps", "2"]
    argv += ["--relearn-at", "1", "--relearn-forget", "0,1", "--relearn-seeds", "1", "--prior-samples", "8"]
    code, stdout, err = run([*argv, "--confidence", "0.5", "--out", str(tmp_path / "a"), "--quiet"], capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert [d["name"] for d in data["detectors"]] == ["attacked", "independent"]
    by_name = {m["name"]: m for m in data["models"]}
    # an 'unlearned' model that is the original reads exactly as the original
    assert by_name["same"]["prior"] == by_name["original"]["prior"]
    code, _, err = run([*argv[:-2], "--forget-attr", "Bald", "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "unknown attribute 'Bald'" in err


def test_grid_latents_lead_with_faces_that_show_the_feature(tiny_celeba):
    """The before/after grids start with faces the original draws with the (possibly rare) feature."""
    from genunlearn.adapters import eval_mode
    from genunlearn.experiments.celeba_figures import grid_latents

    s = _session(tiny_celeba)
    model, clf = s.fresh_model(), s.bundle.info["attribute_classifier"]
    male = s.bundle.info["dataset"].attribute_index("Male")
    pool = s.bundle.sampler.draw(64, torch.Generator().manual_seed(50_000))
    with torch.no_grad(), eval_mode(model):
        faces = model.decode(pool)
        clf.fc2.bias[male] -= clf(faces)[:, male].quantile(0.9)  # the monitor calls ~10% of the pool Male
        pool_called = s.classifier(faces).argmax(1).bool()
    z, k = grid_latents(s, model, n=6, pool=64)
    with torch.no_grad(), eval_mode(model):
        called = s.classifier(model.decode(z)).argmax(1).bool()
    assert 0 < int(pool_called.sum()) < 64 - 6
    assert z.shape == (6, 8) and k == min(3, int(pool_called.sum()))
    assert called[:k].all() and not called[k:].any()
    assert torch.equal(z[0], pool[torch.nonzero(pool_called).flatten()[0]])  # in the pool's order

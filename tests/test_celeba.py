"""CelebA 64x64: the zip+CSV loader on a synthetic folder, the face VAE and classifier, registry, training, FID.

Everything runs on a few random JPEGs written into ``tmp_path``; one test reads real images when the
shared CelebA folder is present (skipped otherwise).
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from genunlearn.data.celeba import CELEBA_ENV, CelebA64, is_test_image, resolve_celeba_dir
from genunlearn.errors import CheckpointError, ConfigError, DataError
from genunlearn.eval.fid import ClassifierFID, face_fid
from genunlearn.models import count_parameters, load_model
from genunlearn.models.celeba_classifier import CelebAClassifier
from genunlearn.models.celeba_vae import CelebAVAE, celeba_vae_loss
from genunlearn.paths import shared_dir
from genunlearn.train_celeba import CelebATrainConfig, train_celeba
from tests.test_cli import run

ATTRS = ["Eyeglasses", "Male", "Smiling", "Young"]


def random_jpeg(rng: np.random.Generator) -> bytes:
    """A random 64x64 RGB JPEG (quality 95)."""
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def write_celeba(
    root,
    n=40,
    attrs=ATTRS,
    seed=0,
    framings=("aligned", "detector-crop"),
    extra_csv_rows=(),
    *,
    ids=None,
    values=None,
    members=None,
):
    """A tiny CelebA folder: an attribute CSV and a stored zip; returns the CSV rows.

    Defaults: ``n`` ids ``000001.jpg``..., random 0/1 ``values`` and a random JPEG per id. ``members`` (name -> bytes)
    replaces the zip's content; ``framings`` cycles over the ids."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"{i + 1:06d}.jpg" for i in range(n)] if ids is None else ids
    rows = []
    with zipfile.ZipFile(root / "images.zip", "w", compression=zipfile.ZIP_STORED) as zf:
        for i, name in enumerate(ids):
            if members is None:
                zf.writestr(name, random_jpeg(rng))
            row = rng.integers(0, 2, len(attrs)).tolist() if values is None else [int(v) for v in values[i]]
            rows.append([name, "synthetic", framings[i % len(framings)], *row])
        for name, raw in (members or {}).items():
            zf.writestr(name, raw)
    with open(root / "attributes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "source", "framing", *attrs])
        w.writerows([*rows, *extra_csv_rows])
    return rows


@pytest.fixture
def celeba_dir(tmp_path):
    root = tmp_path / "celeba"
    write_celeba(root)
    return root


# -- loader ------------------------------------------------------------------------------------------------
def test_items_shapes_ranges_and_attributes(celeba_dir):
    rows = {r[0]: r for r in csv.reader(open(celeba_dir / "attributes.csv"))}
    ds = CelebA64(celeba_dir, split="all", framing="all")
    assert len(ds) == 40 and ds.attribute_names == ATTRS
    image, attrs = ds[3]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0 and float(image.max()) > 0.5
    assert attrs.dtype == torch.float32 and attrs.tolist() == [float(v) for v in rows[ds.image_ids[3]][3:]]
    with zipfile.ZipFile(celeba_dir / "images.zip") as zf:
        expected = np.asarray(Image.open(io.BytesIO(zf.read(ds.image_ids[3]))).convert("RGB"))
    torch.testing.assert_close(image, torch.tensor(expected).permute(2, 0, 1).float() / 255)
    rec = ds.record(3)
    assert rec["image_id"] == ds.image_ids[3] and rec["attributes"]["Male"] == int(rows[ds.image_ids[3]][4])
    assert ds.load_all([3, 0]).dtype == torch.uint8 and torch.equal(ds.load_all([3])[0], ds.image_uint8(3))


def test_splits_are_disjoint_stable_and_by_hash(celeba_dir):
    train = CelebA64(celeba_dir, split="train", framing="all")
    test = CelebA64(celeba_dir, split="test", framing="all")
    assert len(train) + len(test) == 40 and not set(train.image_ids) & set(test.image_ids)
    assert all(is_test_image(i) for i in test.image_ids) and not any(is_test_image(i) for i in train.image_ids)
    assert is_test_image("000001.jpg") == is_test_image("000001.jpg")
    frac = np.mean([is_test_image(f"{i:06d}.jpg") for i in range(1, 20001)])
    assert 0.09 < frac < 0.11


def test_framing_selection(celeba_dir):
    aligned = CelebA64(celeba_dir, split="all", framing="aligned")
    crops = CelebA64(celeba_dir, split="all", framing="detector-crop")
    assert len(aligned) == len(crops) == 20
    assert set(aligned.framings) == {"aligned"} and set(crops.framings) == {"detector-crop"}


def test_forget_splits_by_attribute_union_conjunction_and_negation(celeba_dir):
    ds = CelebA64(celeba_dir, split="all", framing="all")
    male, glasses = ds.attributes[:, 1].bool(), ds.attributes[:, 0].bool()
    s = ds.forget_split("Male")
    assert s.description == "Male" and set(s.forget.tolist()) == set(torch.nonzero(male).flatten().tolist())
    assert sorted(s.forget.tolist() + s.retain.tolist()) == list(range(len(ds)))
    both = ds.forget_split(["Male", "Eyeglasses"], how="all")
    assert both.description == "Male&Eyeglasses"
    assert set(both.forget.tolist()) == set(torch.nonzero(male & glasses).flatten().tolist())
    either = ds.forget_split(["Male", "Eyeglasses"])
    assert set(either.forget.tolist()) == set(torch.nonzero(male | glasses).flatten().tolist())
    female = ds.forget_split("~Male")
    assert set(female.forget.tolist()) == set(s.retain.tolist())


def test_unknown_attribute_lists_the_valid_ones(celeba_dir):
    ds = CelebA64(celeba_dir, split="all", framing="all")
    with pytest.raises(DataError, match=r"unknown attribute 'Bald'; valid: Eyeglasses, Male, Smiling, Young"):
        ds.forget_split("Bald")


def test_missing_folder_and_files(tmp_path, celeba_dir, monkeypatch):
    with pytest.raises(DataError, match="nowhere: CelebA folder not found"):
        CelebA64(tmp_path / "nowhere")
    (celeba_dir / "images.zip").unlink()
    with pytest.raises(DataError, match=r"images\.zip: file not found"):
        CelebA64(celeba_dir)
    monkeypatch.delenv(CELEBA_ENV, raising=False)
    monkeypatch.setenv("GENUNLEARN_SHARED", str(tmp_path / "no-shared"))
    with pytest.raises(DataError, match="pass --celeba-dir or set"):
        resolve_celeba_dir()


def test_location_from_environment(celeba_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(CELEBA_ENV, str(celeba_dir))
    assert len(CelebA64(split="all", framing="all")) == 40
    monkeypatch.delenv(CELEBA_ENV)
    shared = tmp_path / "shared"
    (shared / "data").mkdir(parents=True)
    celeba_dir.rename(shared / "data" / "celeba64")
    monkeypatch.setenv("GENUNLEARN_SHARED", str(shared))
    assert resolve_celeba_dir() == shared / "data" / "celeba64"


def test_corrupt_zip_and_corrupt_jpeg_name_the_file(celeba_dir):
    ds_rows = list(csv.reader(open(celeba_dir / "attributes.csv")))
    zbytes = (celeba_dir / "images.zip").read_bytes()
    (celeba_dir / "images.zip").write_bytes(b"not a zip" + zbytes[:100])
    with pytest.raises(DataError, match=r"images\.zip: not a readable zip file"):
        CelebA64(celeba_dir)
    with zipfile.ZipFile(celeba_dir / "images.zip", "w") as zf:
        for r in ds_rows[1:]:
            zf.writestr(r[0], b"\xff\xd8\xff garbage" if r[0] == "000002.jpg" else _jpeg())
    ds = CelebA64(celeba_dir, split="all", framing="all")
    assert ds[0][0].shape == (3, 64, 64)
    with pytest.raises(DataError, match=r"member 000002\.jpg: cannot decode JPEG"):
        ds[ds.image_ids.index("000002.jpg")]


def _jpeg(size=64):
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (10, 20, 30)).save(buf, "JPEG")
    return buf.getvalue()


def test_wrong_image_size_and_csv_zip_mismatch(tmp_path):
    root = tmp_path / "c"
    write_celeba(root, n=6, extra_csv_rows=[["999999.jpg", "x", "aligned", 0, 1, 0, 1]])
    with pytest.raises(
        DataError, match=r"1 image\(s\) listed in the CSV are not in images\.zip \(first: 999999\.jpg\)"
    ):
        CelebA64(root)
    rows = write_celeba(root, n=6)
    with zipfile.ZipFile(root / "images.zip", "w") as zf:
        for r in rows:
            zf.writestr(r[0], _jpeg(32 if r[0] == "000003.jpg" else 64))
    ds = CelebA64(root, split="all", framing="all")
    with pytest.raises(DataError, match=r"member 000003\.jpg: image is 32x32, expected 64x64"):
        ds[ds.image_ids.index("000003.jpg")]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty attribute file"),
        ("id,source,framing,Male\n", "header must start with image_id,source,framing"),
        ("image_id,source,framing,Male\n000001.jpg,x,aligned,2\n", "line 2: attribute values must be 0 or 1"),
        ("image_id,source,framing,Male\n000001.jpg,x,sideways,1\n", "line 2: unknown framing 'sideways'"),
        ("image_id,source,framing,Male\n000001.jpg,x,aligned\n", "line 2 has 3 fields, expected 4"),
    ],
)
def test_malformed_csv(celeba_dir, content, message):
    (celeba_dir / "attributes.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        CelebA64(celeba_dir)


def test_verify_checks_sha256(celeba_dir):
    with pytest.raises(DataError, match="sha256 mismatch"):
        CelebA64(celeba_dir, verify=True)


def test_cache_pickle_and_dataloader_workers(celeba_dir):
    ds = CelebA64(celeba_dir, split="all", framing="all", cache=True)
    first = ds[5][0]
    assert 5 in ds._cache
    clone = pickle.loads(pickle.dumps(ds))  # the zip handle is not pickled; the copy reopens its own
    torch.testing.assert_close(clone[5][0], first)
    loader = DataLoader(CelebA64(celeba_dir, split="all", framing="all"), batch_size=8, num_workers=2)
    images, attrs = next(iter(loader))
    assert images.shape == (8, 3, 64, 64) and attrs.shape == (8, len(ATTRS))
    torch.testing.assert_close(images[5], first)


# -- models --------------------------------------------------------------------------------------------------
def test_vae_has_the_paper_size_and_batchnorm():
    vae = CelebAVAE()
    assert count_parameters(vae) == 8_742_659  # paper appendix A
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in vae.modules())


def test_tiny_vae_forward_loss_backward():
    vae = CelebAVAE(latent_dim=8, widths=(4, 8))
    x = torch.rand(3, 3, 64, 64)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 8)
    imgs = vae.decode(torch.randn(3, 8)).detach()
    assert imgs.shape == (3, 3, 64, 64) and float(imgs.min()) >= 0 and float(imgs.max()) <= 1
    noise = torch.randn(3, 8)
    vae.eval()
    mu, logvar = vae.encode(x)
    loss = celeba_vae_loss(vae, x, reduction="mean", noise=noise)
    x_mean = vae.decode(mu + torch.exp(0.5 * logvar) * noise)
    manual = ((x_mean - x) ** 2).sum((1, 2, 3)) + 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(1)  # eq. 13
    torch.testing.assert_close(loss, manual.mean())
    torch.testing.assert_close(celeba_vae_loss(vae, x, reduction="sum", noise=noise), manual.sum())
    vae.train()
    celeba_vae_loss(vae, x).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in vae.parameters())
    with pytest.raises(ValueError, match="unknown reduction"):
        celeba_vae_loss(vae, x, reduction="max")


def test_tiny_classifier_forward_features_backward():
    clf = CelebAClassifier(num_attributes=5, widths=(4, 8, 8, 8), hidden=16)
    x = torch.rand(4, 3, 64, 64)
    assert clf(x).shape == (4, 5) and clf.features(x).shape == (4, 16) and clf.num_features == 16
    torch.nn.functional.binary_cross_entropy_with_logits(clf(x), torch.ones(4, 5)).backward()
    assert all(p.grad is not None for p in clf.parameters())


def test_registry_needs_trained_weights_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENUNLEARN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match=r"create them with `genunlearn train vae --dataset celeba64`"):
        load_model("celeba64-vae")
    with pytest.raises(CheckpointError, match=r"`genunlearn train classifier --dataset celeba64`"):
        load_model("celeba64-classifier")


def test_original_report_needs_cached_weights_then_writes_tables_and_figures(celeba_dir, tmp_path, monkeypatch):
    from genunlearn.checkpoints import save_weights
    from genunlearn.experiments.celeba import original_report, render_report

    monkeypatch.setenv("GENUNLEARN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="genunlearn train vae --dataset celeba64"):
        original_report(tmp_path / "out", celeba_dir=celeba_dir, samples=8, progress=False)
    vae, clf = CelebAVAE(latent_dim=4, widths=(4, 8)), CelebAClassifier(len(ATTRS), widths=(4, 8, 8, 8), hidden=6)
    save_weights(vae, tmp_path / "vae.safetensors", {"build_options": {"latent_dim": 4, "widths": [4, 8]}})
    save_weights(clf, tmp_path / "clf.safetensors", {"build_options": {"widths": [4, 8, 8, 8], "num_attributes": 4}})
    with pytest.raises(CheckpointError):  # the classifier's build options do not give hidden=6
        original_report(
            tmp_path / "out",
            vae_checkpoint=tmp_path / "vae.safetensors",
            classifier_checkpoint=tmp_path / "clf.safetensors",
            celeba_dir=celeba_dir,
            samples=8,
            progress=False,
        )
    clf = CelebAClassifier(len(ATTRS), widths=(4, 8, 8, 8))
    save_weights(clf, tmp_path / "clf.safetensors", {"build_options": {"widths": [4, 8, 8, 8], "num_attributes": 4}})
    summary = original_report(
        tmp_path / "out",
        vae_checkpoint=tmp_path / "vae.safetensors",
        classifier_checkpoint=tmp_path / "clf.safetensors",
        celeba_dir=celeba_dir,
        samples=40,
        batch_size=16,
        progress=False,
    )
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"summary.json", "report.md", "classifier.csv", "generated_attributes.csv"} <= files
    assert (tmp_path / "out" / "report.md").read_text() == render_report(
        json.loads((tmp_path / "out" / "summary.json").read_text())
    )
    assert {"samples.png", "reconstructions.png"} <= files and not any(".local." in f for f in files)
    assert Image.open(tmp_path / "out" / "samples.png").size == (2 * (8 * 66 + 2), 2 * (5 * 66 + 2))  # 40 faces
    male = summary["generated"]["eval_mode"]["Male"]
    assert male["n"] == 40 and male["ci_low"] <= male["rate"] <= male["ci_high"]
    assert summary["fid"]["features"] == "classifier-features" and summary["vae"]["test_images"] == 4
    assert "git_commit" in summary and summary["machine"]["cpu_count"] >= 1
    # the command as a user types it, also for summaries that stored the venv's absolute path
    summary["command"] = "/some/venv/bin/genunlearn bench celeba64-original --out 'a b'"
    assert "Regenerate: `genunlearn bench celeba64-original --out 'a b'`" in render_report(summary)


def test_original_report_cli(celeba_dir, tmp_path, monkeypatch, capsys):
    from genunlearn.checkpoints import save_weights

    monkeypatch.setenv("GENUNLEARN_CACHE", str(tmp_path / "cache"))
    argv = ["bench", "celeba64-original", "--celeba-dir", str(celeba_dir), "--samples", "16", "--quiet"]
    code, _, err = run([*argv, "--out", str(tmp_path / "none")], capsys)
    assert code == 2 and "genunlearn train vae --dataset celeba64" in err and len(err.strip().splitlines()) == 1
    save_weights(
        CelebAVAE(latent_dim=4, widths=(4, 8)),
        tmp_path / "v.safetensors",
        {"build_options": {"latent_dim": 4, "widths": [4, 8]}},
    )
    clf = CelebAClassifier(len(ATTRS), widths=(4, 8, 8, 8))
    save_weights(clf, tmp_path / "c.safetensors", {"build_options": {"widths": [4, 8, 8, 8], "num_attributes": 4}})
    argv += [
        "--checkpoint",
        str(tmp_path / "v.safetensors"),
        "--classifier-checkpoint",
        str(tmp_path / "c.safetensors"),
    ]
    argv += ["--independent-classifier", str(tmp_path / "c.safetensors")]
    code, out, err = run([*argv, "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert out.startswith("# The original CelebA 64x64 models") and (tmp_path / "o" / "summary.json").is_file()
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    rec = summary["classifier"]["test_vae_reconstructions"]["Male"]
    assert rec == summary["independent_classifier"]["test_vae_reconstructions"]["Male"]  # the same classifier
    assert summary["independent_classifier"]["generated_eval_mode"] == summary["generated"]["eval_mode"]
    head = out.index("## The classifiers on the VAE's own domain")
    assert head < out.index("## Classifier (") and "| Male |" in out[head:]


# -- training ------------------------------------------------------------------------------------------------
def test_train_vae_cli_writes_cache_and_record_and_loads(celeba_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENUNLEARN_CACHE", str(tmp_path / "cache"))
    args = ["train", "vae", "--dataset", "celeba64", "--celeba-dir", str(celeba_dir), "--epochs", "2"]
    code, out, err = run([*args, "--widths", "4,8", "--batch-size", "8", "--threads", "1"], capsys)
    assert code == 0, err
    out_dir = tmp_path / "cache" / "celeba64-vae"
    record = json.loads((out_dir / "record.json").read_text())
    assert record["complete"] and record["epochs_done"] == 2 and record["config"]["framing"] == "aligned"
    assert len(record["history"]) == 2 and {"loss", "squared_error", "kl"} <= set(record["final"]["test"])
    assert "versions" in record and record["train_images"] + record["test_images"] == 20
    vae = load_model("celeba64-vae")  # from the cache, widths from the checkpoint's metadata
    assert isinstance(vae, CelebAVAE) and vae.widths == (4, 8) and not vae.training


@pytest.mark.parametrize("model, widths", [("vae", (4, 8)), ("classifier", (4, 8, 8, 8))])
def test_resume_mid_epoch_equals_uninterrupted(celeba_dir, tmp_path, model, widths):
    cfg = CelebATrainConfig.defaults(
        model, framing="aligned", epochs=2, batch_size=8, widths=widths, latent_dim=4, checkpoint_every=1
    )
    cfg = CelebATrainConfig(**{**cfg.__dict__, "celeba_dir": str(celeba_dir)})
    partial = train_celeba(cfg, tmp_path / "a", progress=False, stop_after_steps=3)  # 2 steps/epoch: mid-epoch 2
    assert not partial["complete"] and partial["epochs_done"] == 1
    torch.manual_seed(123)  # the global RNG must not matter
    train_celeba(cfg, tmp_path / "a", progress=False)
    train_celeba(cfg, tmp_path / "b", progress=False)
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    ra, rb = (json.loads((tmp_path / d / "record.json").read_text()) for d in "ab")
    assert [h["train_loss"] for h in ra["history"]] == [h["train_loss"] for h in rb["history"]]
    other = CelebATrainConfig(**{**cfg.__dict__, "lr": 0.01})
    with pytest.raises(CheckpointError, match="a run with a different config"):
        train_celeba(other, tmp_path / "a", progress=False)


def test_train_classifier_records_per_attribute_metrics(celeba_dir, tmp_path, capsys):
    args = ["train", "classifier", "--dataset", "celeba64", "--celeba-dir", str(celeba_dir), "--epochs", "1"]
    code, out, err = run([*args, "--widths", "4,8,8,8", "--batch-size", "16", "--out", str(tmp_path / "c")], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "c" / "record.json").read_text())
    final = record["final"]["test"]
    assert set(final) == set(ATTRS) and record["config"]["framing"] == "all"
    assert {"accuracy", "balanced_accuracy", "false_positive_rate", "false_negative_rate"} <= set(final["Male"])
    clf = load_model("celeba64-classifier", tmp_path / "c" / "model.safetensors")
    assert clf.num_attributes == len(ATTRS)


def test_classifier_on_vae_reconstructions(celeba_dir, tmp_path, capsys):
    """--recon-vae: the classifier also trains on a VAE's reconstructions and reports held-out metrics on them;
    with share 0 the run is the plain recipe (same weights), with share 1 it differs; a VAE run refuses it."""
    from genunlearn.checkpoints import save_weights
    from genunlearn.train_celeba import reconstruct

    torch.manual_seed(0)
    vae = CelebAVAE(latent_dim=4, widths=(4, 8))
    save_weights(vae, tmp_path / "v.safetensors", {"build_options": {"latent_dim": 4, "widths": [4, 8]}})
    u8 = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    rec = reconstruct(vae.train(), u8)
    assert rec.dtype == torch.uint8 and rec.shape == u8.shape and vae.training  # eval inside, mode restored
    args = ["train", "classifier", "--dataset", "celeba64", "--celeba-dir", str(celeba_dir), "--epochs", "1"]
    args += ["--widths", "4,8,8,8", "--batch-size", "16", "--threads", "1"]
    weights = {}
    for share in ("0", "1"):
        out = tmp_path / f"c{share}"
        argv = [*args, "--recon-vae", str(tmp_path / "v.safetensors"), "--recon-share", share, "--out", str(out)]
        code, stdout, err = run(argv, capsys)
        assert code == 0, err
        assert "test_recon_accuracy" in stdout
        record = json.loads((out / "record.json").read_text())
        assert set(record["final"]["test_recon"]) == set(ATTRS) and "test_recon_accuracy" in record["history"][0]
        weights[share] = load_file(out / "model.safetensors")
    code, _, err = run([*args, "--out", str(tmp_path / "plain")], capsys)
    assert code == 0, err
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    assert all(torch.equal(plain[k], weights["0"][k]) for k in plain)
    assert not all(torch.equal(plain[k], weights["1"][k]) for k in plain)
    vae_args = ["train", "vae", "--dataset", "celeba64", "--celeba-dir", str(celeba_dir), "--recon-vae", "x"]
    code, _, err = run([*vae_args, "--out", str(tmp_path / "v")], capsys)
    assert code == 2 and "--recon-vae" in err


def test_cli_options_are_checked(celeba_dir, capsys):
    code, _, err = run(["train", "vae", "--dataset", "mnist", "--framing", "aligned", "--out", "x"], capsys)
    assert code == 2 and "--framing applies to --dataset celeba64 only" in err
    code, _, err = run(["train", "vae", "--dataset", "mnist"], capsys)
    assert code == 2 and "Missing option '--out'" in err
    code, _, err = run(["train", "vae", "--dataset", "celeba64", "--celeba-dir", str(celeba_dir / "no")], capsys)
    assert code == 2 and "CelebA folder not found" in err


def test_attribute_metrics_rates():
    from genunlearn.train_celeba import attribute_metrics

    target = torch.tensor([[1], [1], [0], [0], [0]])
    pred = torch.tensor([[True], [False], [True], [False], [False]])
    m = attribute_metrics(pred, target, ["Male"])["Male"]
    assert m["accuracy"] == pytest.approx(3 / 5) and m["false_positive_rate"] == pytest.approx(1 / 3)
    assert m["false_negative_rate"] == pytest.approx(1 / 2)
    assert m["balanced_accuracy"] == pytest.approx(0.5 * (1 / 2 + 2 / 3))
    assert m["prevalence"] == pytest.approx(2 / 5) and m["predicted_rate"] == pytest.approx(2 / 5)


# -- FID -------------------------------------------------------------------------------------------------------
def test_face_fid_uses_classifier_features_or_refuses_missing_inception(tmp_path, monkeypatch):
    clf = CelebAClassifier(widths=(4, 8, 8, 8), hidden=6)
    fid = face_fid(clf)
    assert isinstance(fid, ClassifierFID)
    x = torch.rand(40, 3, 64, 64)
    fid.update_batches(x, real=True)
    fid.update_batches(x, real=False, batch_size=16)
    assert abs(float(fid.compute())) < 1e-3
    with pytest.raises(CheckpointError, match="Inception weights not found"):
        face_fid(clf, inception_weights=tmp_path / "pt_inception.pth")
    monkeypatch.setenv("GENUNLEARN_INCEPTION_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointError, match=r"missing\.pth: Inception weights not found"):
        face_fid(clf)
    monkeypatch.delenv("GENUNLEARN_INCEPTION_WEIGHTS")
    with pytest.raises(ConfigError):
        face_fid(None)


# -- the real data, when present -------------------------------------------------------------------------------
def test_real_celeba_reads_a_few_images():
    root = shared_dir()
    if root is None or not (root / "data" / "celeba64" / "images.zip").is_file():
        pytest.skip("shared CelebA folder not found (set GENUNLEARN_SHARED)")
    ds = CelebA64(root / "data" / "celeba64", split="all", framing="all")
    assert len(ds) == 32_618 and len(ds.attribute_names) == 40
    counts = ds.attribute_counts()
    assert counts["Male"] == 12_254 and counts["Eyeglasses"] == 1_853  # the shared README's numbers
    for i in (0, len(ds) // 2, len(ds) - 1):
        image, attrs = ds[i]
        assert image.shape == (3, 64, 64) and 0 <= float(image.min()) <= float(image.max()) <= 1
    aligned = CelebA64(root / "data" / "celeba64", split="test", framing="aligned")
    assert len(aligned) == 1_587  # documented in docs/celeba64.md

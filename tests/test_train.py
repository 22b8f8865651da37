"""Training on a small local IDX dataset through the CLI; resuming equals an uninterrupted run."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from genunlearn.train import TrainConfig, train
from tests.test_cli import run
from tests.test_data import _write_tiny_dataset


def test_train_classifier_cli_on_local_idx(tmp_path, capsys):
    d = _write_tiny_dataset(tmp_path / "tiny", n_train=64, n_test=16, classes=10)
    code, out, err = run(
        [
            "train",
            "classifier",
            "--dataset",
            "tiny",
            "--data-dir",
            str(d),
            "--epochs",
            "2",
            "--out",
            str(tmp_path / "clf"),
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads((tmp_path / "clf" / "record.json").read_text())
    assert record["complete"] and record["epochs_done"] == 2 and 0 <= record["final"]["test_accuracy"] <= 1
    assert record["config"]["lr_schedule"] == "cosine" and "versions" in record


def test_resume_equals_uninterrupted(tmp_path):
    d = _write_tiny_dataset(tmp_path / "tiny", n_train=40, n_test=8, classes=10)
    cfg = TrainConfig(model="vae", dataset="tiny", data_dir=str(d), epochs=3, batch_size=16, device="cpu")
    train(cfg, tmp_path / "a", progress=False, stop_after=1)
    partial = json.loads((tmp_path / "a" / "record.json").read_text())
    assert partial["epochs_done"] == 1 and not partial["complete"]
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False)
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)


def test_resume_refuses_a_different_config(tmp_path, capsys):
    d = _write_tiny_dataset(tmp_path / "tiny", n_train=40, n_test=8, classes=10)
    base = ["train", "classifier", "--dataset", "tiny", "--data-dir", str(d), "--out", str(tmp_path / "c")]
    assert run([*base, "--epochs", "1"], capsys)[0] == 0
    code, _, err = run([*base, "--epochs", "1", "--lr", "0.01"], capsys)
    assert code == 2 and "a run with a different config is in this directory" in err


def test_exclusions_train_without_the_forget_data(tmp_path, capsys, monkeypatch):
    """--exclude-class / --exclude-ids: the same recipe on fewer examples; the left-out examples never reach it."""
    d = _write_tiny_dataset(tmp_path / "tiny", n_train=30, n_test=6, classes=3)
    base = ["train", "vae", "--dataset", "tiny", "--data-dir", str(d), "--epochs", "1", "--batch-size", "8"]
    assert run([*base, "--exclude-class", "1", "--out", str(tmp_path / "c")], capsys)[0] == 0
    record = json.loads((tmp_path / "c" / "record.json").read_text())
    assert record["training_examples"] == 20 and record["excluded_examples"] == 10
    assert record["config"]["exclude_classes"] == [1]
    ids = tmp_path / "ids.txt"
    ids.write_text("# forget these\n0\n5\n7\n")
    seen = []
    import genunlearn.train as tr

    real = tr.vae_loss

    def spy(model, x, **kw):
        seen.append(x.detach().clone())
        return real(model, x, **kw)

    monkeypatch.setattr(tr, "vae_loss", spy)
    assert run([*base, "--exclude-ids", str(ids), "--out", str(tmp_path / "i")], capsys)[0] == 0
    record = json.loads((tmp_path / "i" / "record.json").read_text())
    assert record["training_examples"] == 27 and record["provenance"]["inputs"]["exclude_ids"]["sha256"]
    from genunlearn.data import load_dataset

    x = load_dataset("tiny", "train", d).flat_float()
    trained_on = torch.cat(seen[:4])  # the epoch's batches: 8 + 8 + 8 + 3 examples (then the evaluation's)
    assert len(trained_on) == 27
    for i in (0, 5, 7):
        assert not (trained_on == x[i]).all(1).any()
    assert (trained_on == x[1]).all(1).any()
    ids.write_text("0\n5\n")  # resuming with a changed ids file is refused
    code, _, err = run([*base, "--exclude-ids", str(ids), "--out", str(tmp_path / "i")], capsys)
    assert code == 2 and "excluded-ids file changed" in err
    code, _, err = run([*base, "--exclude-class", "9", "--out", str(tmp_path / "e")], capsys)
    assert code == 2 and "exclude class 9 does not exist" in err

"""The paper's models: exact sizes, strict loading of the authors' weights, bundled weights, bad checkpoints."""

from __future__ import annotations

import pytest
import torch

from genunlearn.checkpoints import load_into, read_metadata, save_weights
from genunlearn.data import load_dataset
from genunlearn.errors import CheckpointError
from genunlearn.models import MNISTVAE, MNISTClassifier, count_parameters, load_model
from genunlearn.train import evaluate_classifier, evaluate_vae


def test_parameter_counts_match_the_paper():
    assert count_parameters(MNISTVAE()) == 632_788
    assert sum(b.numel() for b in MNISTVAE().buffers() if b.dtype.is_floating_point) + 632_788 == 634_388
    assert count_parameters(MNISTClassifier()) == 159_410


def test_authors_vae_loads_strictly_and_generates(authors_vae):
    from safetensors.torch import load_file

    model = MNISTVAE()
    model.load_state_dict(load_file(str(authors_vae)), strict=True)
    model.eval()
    x = model.sample(torch.randn(8, 2))
    assert x.shape == (8, 784) and float(x.min()) >= 0 and float(x.max()) <= 1


def test_authors_classifier_bn_modes(authors_classifier):
    test = load_dataset("mnist", "test")
    skip = evaluate_classifier(load_model("mnist-classifier", authors_classifier, use_bn=False), test)
    apply = evaluate_classifier(load_model("mnist-classifier", authors_classifier, use_bn=True), test)
    assert skip == pytest.approx(0.970, abs=0.003)  # the anchor: 97.0% as published (bn1 skipped)
    assert apply == pytest.approx(0.982, abs=0.003)  # 98.2% with bn1 applied


def test_bundled_models_load_and_perform():
    test = load_dataset("mnist", "test")
    clf = load_model("mnist-classifier")
    assert clf.use_bn is True  # stored in the checkpoint's metadata
    assert evaluate_classifier(clf, test) >= 0.98
    vae = load_model("mnist-vae")
    assert evaluate_vae(vae, test) < 160.0


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model("mnist-vae", tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_model("mnist-vae", tmp_path / "junk.safetensors")
    wrong = MNISTVAE(hidden=300)
    save_weights(wrong, tmp_path / "wrong.safetensors")
    with pytest.raises(
        CheckpointError, match=r"shape mismatch for decoder.0.bias: checkpoint \(300,\), model \(400,\)"
    ):
        load_into(MNISTVAE(), tmp_path / "wrong.safetensors")
    with pytest.raises(CheckpointError, match="keys do not match MNISTVAE"):
        load_into(MNISTVAE(), _classifier_file(tmp_path))


def _classifier_file(tmp_path):
    return save_weights(MNISTClassifier(), tmp_path / "clf.safetensors", metadata={"build_options": {"use_bn": True}})


def test_pt_checkpoints_load_with_weights_only(tmp_path):
    model = MNISTClassifier()
    torch.save(model.state_dict(), tmp_path / "c.pt")
    loaded = load_model("mnist-classifier", tmp_path / "c.pt")
    torch.testing.assert_close(loaded.fc1.weight, model.fc1.weight)
    assert read_metadata(_classifier_file(tmp_path)) == {"build_options": {"use_bn": True}}

"""IDX reader, bundled MNIST, other IDX datasets from a directory, and retain/forget splits."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from genunlearn.data import ForgetSplit, load_dataset, parse_idx, read_idx, write_idx
from genunlearn.data.datasets import DATA_DIR_ENV
from genunlearn.errors import DataError


def _write_tiny_dataset(directory, n_train=30, n_test=10, classes=3, gz=True):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", (np.arange(n) % classes).astype(np.uint8))
    return directory


def test_roundtrip_raw_and_gzip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(read_idx(tmp_path / name, ndim=3, item_shape=(3, 4)), arr)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX element type"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "trailing bytes"),
    ],
)
def test_parse_rejects_corrupt_bytes(data, message):
    with pytest.raises(DataError, match=message):
        parse_idx(data, name="f.idx")


def test_truncated_gzip_names_the_file(tmp_path):
    good = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 100]) + bytes(100))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_wrong_shape_and_missing_file(tmp_path):
    write_idx(tmp_path / "x.gz", np.zeros((2, 5, 5), dtype=np.uint8))
    with pytest.raises(DataError, match=r"x\.gz: expected items of shape \(28, 28\)"):
        read_idx(tmp_path / "x.gz", item_shape=(28, 28))
    with pytest.raises(DataError, match="x.gz: expected 1 dimensions"):
        read_idx(tmp_path / "x.gz", ndim=1)
    with pytest.raises(DataError, match="nope.gz: file not found"):
        read_idx(tmp_path / "nope.gz")


def test_checksum_mismatch(tmp_path):
    write_idx(tmp_path / "x.gz", np.zeros((1,), dtype=np.uint8))
    with pytest.raises(DataError, match="checksum mismatch"):
        read_idx(tmp_path / "x.gz", sha256="0" * 64)


def test_bundled_mnist_loads_and_is_verified():
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape[1:]) == (28, 28)
    assert train.classes == list(range(10))
    assert int((train.labels == 1).sum()) == 6742
    x = test.flat_float(torch.arange(5))
    assert x.shape == (5, 784) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_other_idx_dataset_from_dir_and_env(tmp_path, monkeypatch):
    d = _write_tiny_dataset(tmp_path / "tiny-mnist")
    ds = load_dataset("tiny-mnist", "train", data_dir=d)
    assert len(ds) == 30 and ds.classes == [0, 1, 2]
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert len(load_dataset("tiny-mnist", "test")) == 10
    raw = _write_tiny_dataset(tmp_path / "raw", gz=False)
    assert len(load_dataset("raw", "test", data_dir=raw)) == 10


def test_missing_dataset_and_mismatched_counts(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DataError, match="dataset 'fashion-zzz' not found"):
        load_dataset("fashion-zzz")
    d = _write_tiny_dataset(tmp_path / "bad")
    write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    with pytest.raises(DataError, match="30 images but train-labels-idx1-ubyte.gz has 7 labels"):
        load_dataset("bad", "train", data_dir=d)


def test_split_by_class_mask_and_ids():
    labels = torch.tensor([0, 1, 2, 1, 0, 7])
    s = ForgetSplit.by_class(labels, [1, 7])
    assert s.forget.tolist() == [1, 3, 5] and s.retain.tolist() == [0, 2, 4]
    assert s.description == "class 1,7"
    m = ForgetSplit.by_mask(torch.tensor([True, False, False]))
    assert m.forget.tolist() == [0]
    i = ForgetSplit.by_ids(5, [4, 2])
    assert i.forget.tolist() == [2, 4] and i.retain.tolist() == [0, 1, 3]


def test_split_errors():
    labels = torch.tensor([0, 1, 2])
    with pytest.raises(DataError, match="forget class 5 does not exist"):
        ForgetSplit.by_class(labels, 5)
    with pytest.raises(DataError, match="forget class 12 does not exist"):
        ForgetSplit.by_class(torch.tensor([0, 12]), 12, num_classes=10)
    with pytest.raises(DataError, match="empty forget set"):
        ForgetSplit.by_mask(torch.zeros(3, dtype=torch.bool))
    with pytest.raises(DataError, match="empty retain set"):
        ForgetSplit.by_mask(torch.ones(3, dtype=torch.bool))
    with pytest.raises(DataError, match="sample ids must lie in"):
        ForgetSplit.by_ids(3, [3])

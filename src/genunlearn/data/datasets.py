"""Image datasets in IDX format: MNIST (bundled) and any other IDX dataset from a directory.

MNIST ships inside the package (the four gzip files of LeCun, Cortes and Burges, CC BY-SA 3.0) and is
verified against its sha256 on load, so the demo and the tests run offline. Any other IDX dataset with
the usual file names (``train-images-idx3-ubyte[.gz]`` ...) loads from, in order: the ``data_dir``
argument (CLI ``--data-dir``), ``$GENUNLEARN_DATA_DIR/<name>``, and Debian's ``/usr/share/datasets/<name>``
(``apt-get install dataset-fashion-mnist`` puts Fashion-MNIST there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from genunlearn.data.idx import read_idx
from genunlearn.errors import DataError

Split = Literal["train", "test"]

#: sha256 of the bundled MNIST files, byte-identical to the files the UNO paper's authors used.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
}
_PREFIX = {"train": "train", "test": "t10k"}
DATA_DIR_ENV = "GENUNLEARN_DATA_DIR"
DEBIAN_DATASETS = Path("/usr/share/datasets")

#: Display names of IDX datasets and of their classes (datasets not listed: the name, "class <k>").
DATASET_TITLES: dict[str, str] = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}


def class_label(dataset: str, c: int) -> str:
    """How tables name class ``c`` of ``dataset``.

    >>> class_label("mnist", 1), class_label("fashion-mnist", 1), class_label("other", 3)
    ('digit 1', 'class 1 (Trouser)', 'class 3')
    """
    if dataset == "mnist":
        return f"digit {c}"
    names = CLASS_NAMES.get(dataset)
    if names is not None and 0 <= c < len(names):
        return f"class {c} ({names[c]})"
    return f"class {c}"


@dataclass(frozen=True)
class ImageDataset:
    """Images and integer labels held in memory.

    Attributes:
        name: dataset name (``"mnist"``, ``"fashion-mnist"`` ...).
        split: ``"train"`` or ``"test"``.
        images: uint8 tensor of shape ``(N, H, W)``.
        labels: int64 tensor of shape ``(N,)``.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def classes(self) -> list[int]:
        """Sorted list of the labels present."""
        return sorted(int(c) for c in torch.unique(self.labels))

    def flat_float(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Images as float32 in [0, 1], flattened to ``(N, H*W)`` (optionally a subset)."""
        imgs = self.images if index is None else self.images[index]
        return imgs.reshape(imgs.shape[0], -1).float().div_(255.0)


def bundled_mnist_dir() -> Path:
    """Directory of the MNIST files shipped with the package."""
    return Path(str(resources.files("genunlearn") / "data" / "files" / "mnist"))


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory / stem}[.gz]: file not found")


def resolve_data_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """Directory holding the IDX files of dataset ``name`` (see module docstring for the search order)."""
    if data_dir is not None:
        path = Path(data_dir)
        if not path.is_dir():
            raise DataError(f"{path}: data directory not found")
        return path
    if name == "mnist":
        return bundled_mnist_dir()
    candidates = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        candidates.append(Path(env) / name)
    candidates.append(DEBIAN_DATASETS / name)
    for c in candidates:
        if c.is_dir():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(f"dataset {name!r} not found (looked in {tried}); pass --data-dir or set ${DATA_DIR_ENV}")


@lru_cache(maxsize=8)
def _load_cached(name: str, split: str, directory: str) -> tuple[np.ndarray, np.ndarray]:
    d = Path(directory)
    prefix = _PREFIX[split]
    img_stem, lab_stem = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    bundled = d == bundled_mnist_dir()
    img_path, lab_path = _find(d, img_stem), _find(d, lab_stem)
    images = read_idx(img_path, ndim=3, sha256=MNIST_SHA256[img_path.name] if bundled else None)
    labels = read_idx(lab_path, ndim=1, sha256=MNIST_SHA256[lab_path.name] if bundled else None)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_path}: {images.shape[0]} images but {lab_path.name} has {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise DataError(f"{img_path}: no images")
    return images, labels


def load_dataset(name: str = "mnist", split: Split = "train", data_dir: str | Path | None = None) -> ImageDataset:
    """Load an IDX image dataset into memory.

    Args:
        name: ``"mnist"`` (bundled) or the directory name of another IDX dataset (``"fashion-mnist"``).
        split: ``"train"`` or ``"test"``.
        data_dir: directory with the four IDX files; overrides the default search.

    Example:
        >>> ds = load_dataset("mnist", "test")
        >>> len(ds), tuple(ds.images.shape[1:])
        (10000, (28, 28))
    """
    if split not in _PREFIX:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    directory = resolve_data_dir(name, data_dir)
    images, labels = _load_cached(name, split, str(directory.resolve()))
    return ImageDataset(
        name=name,
        split=split,
        images=torch.from_numpy(images.copy()),
        labels=torch.from_numpy(labels.astype(np.int64)),
    )

"""Datasets (IDX reader, bundled MNIST, CelebA 64x64 from a zip) and retain/forget splits."""

from genunlearn.data.celeba import CelebA64
from genunlearn.data.datasets import ImageDataset, load_dataset
from genunlearn.data.idx import parse_idx, read_idx, write_idx
from genunlearn.data.splits import ForgetSplit

__all__ = ["CelebA64", "ForgetSplit", "ImageDataset", "load_dataset", "parse_idx", "read_idx", "write_idx"]

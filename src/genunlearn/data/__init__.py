"""Datasets (IDX reader, bundled MNIST) and retain/forget splits."""

from genunlearn.data.datasets import ImageDataset, load_dataset
from genunlearn.data.idx import parse_idx, read_idx, write_idx
from genunlearn.data.splits import ForgetSplit

__all__ = ["ForgetSplit", "ImageDataset", "load_dataset", "parse_idx", "read_idx", "write_idx"]

"""Endless, seeded, reshuffled batches from tensors, datasets or data loaders, moved to the device per batch.

- A **tensor** (first dimension = examples), or a tuple of tensors ``(x, y, ...)`` indexed together, is indexed
  directly (the fast path).
- A **dataset** (``torch.utils.data.Dataset``: in memory or reading files lazily) is read through a
  ``DataLoader`` whose batch sampler draws the same permutations as the tensor path from the same seeded
  generator: a ``TensorDataset`` gives exactly the tensor path's batches, whatever ``num_workers`` processes
  decode ahead while the step computes.

Each stream (retain, forget) has its own generator (:func:`stream_generators`), so prefetching one stream
cannot change the other's order. ``part=(start, stop)`` keeps rows ``[start, stop)`` of every batch (a
data-parallel rank's part, :mod:`genunlearn.distributed`): the permutation is the same, only those examples
are read.
- A **data loader** is used as it is and restarted when exhausted (its order is its own sampler's business:
  give it a seeded generator for reproducible runs).

A batch may be a tensor, a tuple/list ``(x, y, ...)`` or a dict; every tensor in it is moved to the device
(``non_blocking`` from pinned memory on CUDA).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from genunlearn.errors import DataError

Data = torch.Tensor | tuple[torch.Tensor, ...] | Dataset | DataLoader


def _tensor_tuple(data: Any) -> bool:
    return isinstance(data, tuple) and bool(data) and all(isinstance(t, torch.Tensor) for t in data)


def data_length(data: Data) -> int:
    """Number of examples (a tensor's first dimension, a tuple of such tensors, a dataset, a loader's dataset)."""
    if _tensor_tuple(data):
        lengths = {len(t) for t in data}  # type: ignore[union-attr]
        if len(lengths) != 1:
            raise DataError(f"the tensors of a (x, y, ...) tuple hold different numbers of examples: {sorted(lengths)}")
        return lengths.pop()
    if isinstance(data, DataLoader):
        return len(data.dataset)  # type: ignore[arg-type]
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(f"cannot tell how many examples a {type(data).__name__} holds (it needs __len__)") from None


def to_device(batch: Any, device: torch.device, *, non_blocking: bool = False) -> Any:
    """Move every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, non_blocking=non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(to_device(v, device, non_blocking=non_blocking) for v in batch)
    if isinstance(batch, list):
        return [to_device(v, device, non_blocking=non_blocking) for v in batch]
    return batch


def stream_generators(seed: int, streams: int = 2) -> list[torch.Generator]:
    """Independent generators for the data streams of a run with ``seed`` (numpy ``SeedSequence.spawn``)."""
    import numpy as np

    return [
        torch.Generator().manual_seed(int(child.generate_state(1, dtype=np.uint64)[0] >> 1))
        for child in np.random.SeedSequence(seed).spawn(streams)
    ]


def epoch_permutations(
    n: int, batch_size: int, generator: torch.Generator, part: tuple[int, int] | None = None
) -> Iterator[torch.Tensor]:
    """Index batches without replacement within each pass over ``n`` examples, forever (last partial batch dropped).

    With ``part=(start, stop)`` only rows ``[start, stop)`` of each batch are yielded (same permutation).
    """
    b = min(batch_size, n)
    lo, hi = part if part is not None else (0, b)
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - b + 1, b):
            yield perm[start + lo : start + hi]


class EpochBatchSampler(Sampler[list[int]]):
    """The batch sampler of :func:`epoch_permutations` for a ``DataLoader`` (infinite)."""

    def __init__(
        self, n: int, batch_size: int, generator: torch.Generator, part: tuple[int, int] | None = None
    ) -> None:
        self.n, self.batch_size, self.generator, self.part = n, batch_size, generator, part

    def __iter__(self) -> Iterator[list[int]]:
        for idx in epoch_permutations(self.n, self.batch_size, self.generator, self.part):
            yield idx.tolist()


def infinite_batches(
    data: Data,
    batch_size: int,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    collate_fn: Any = None,
    part: tuple[int, int] | None = None,
) -> Iterator[Any]:
    """Endless batches of ``data`` on ``device`` (see the module docstring); ``part``: rows of each batch kept."""
    device = torch.device(device)
    n = data_length(data)
    if n == 0:
        raise DataError("cannot draw batches from an empty set")
    non_blocking = device.type == "cuda"
    if part is not None and isinstance(data, DataLoader):
        raise DataError("a data loader cannot be split over processes; pass the dataset (genunlearn splits batches)")
    if isinstance(data, torch.Tensor):
        for idx in epoch_permutations(n, batch_size, generator, part):
            batch = data[idx.to(data.device)]
            yield batch if batch.device == device else batch.to(device, non_blocking=non_blocking)
        return
    if _tensor_tuple(data):  # (x, y, ...) tensors indexed together: the fast path with labels
        for idx in epoch_permutations(n, batch_size, generator, part):
            yield tuple(t[idx.to(t.device)].to(device, non_blocking=non_blocking) for t in data)  # type: ignore[union-attr]
        return
    if isinstance(data, DataLoader):
        while True:
            empty = True
            for batch in data:
                empty = False
                yield to_device(batch, device, non_blocking=non_blocking)
            if empty:
                raise DataError("the data loader yielded no batch")
    loader = DataLoader(
        data,
        batch_sampler=EpochBatchSampler(n, batch_size, generator, part),
        num_workers=num_workers,
        pin_memory=non_blocking,
        persistent_workers=num_workers > 0,
        **({"collate_fn": collate_fn} if collate_fn is not None else {}),
    )
    for batch in loader:
        yield to_device(batch, device, non_blocking=non_blocking)


class LazyTensorFiles(Dataset):
    """A dataset of examples stored one per ``.pt`` file (``weights_only``), read only when asked for.

    A minimal larger-than-memory dataset (used in the tests and benchmarks): ``items[i]`` is the path of
    example ``i``; each file holds a tensor or a tuple of tensors.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        return torch.load(self.paths[i], weights_only=True)

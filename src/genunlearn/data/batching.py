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
    return iter(IndexStream(n, batch_size, generator, part))


class IndexStream:
    """The index batches of :func:`epoch_permutations`, with an exact, resumable position.

    Each pass draws ``randperm(n)`` from ``generator`` and hands out its ``n // b`` full batches of size
    ``b = min(batch_size, n)``. The generator's state *before* each pass's permutation is remembered, so the
    position after any number of batches (:meth:`state_at`) is a small dict — the pass, the offset in it and
    that state — from which :meth:`load_state_dict` continues with bit-identical batches. With
    ``part=(start, stop)`` each batch is rows ``[start, stop)`` of the full batch (a data-parallel rank's part);
    the position counts full batches, so it is the same on every rank.
    """

    def __init__(
        self, n: int, batch_size: int, generator: torch.Generator, part: tuple[int, int] | None = None
    ) -> None:
        if n <= 0:
            raise DataError("cannot draw batches from an empty set")
        self.n, self.b, self.generator = n, min(batch_size, n), generator
        self.lo, self.hi = part if part is not None else (0, self.b)
        self.per_pass = n // self.b
        self.drawn = 0  # batches handed out (a DataLoader's sampler may run ahead of the batches consumed)
        self._pass = -1
        self._perm: torch.Tensor | None = None
        self._pass_states: dict[int, torch.Tensor] = {}

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next_indices()

    def next_indices(self) -> torch.Tensor:
        """The next batch of indices."""
        p, off = divmod(self.drawn, self.per_pass)
        if p != self._pass:
            self._pass_states[p] = self.generator.get_state()
            self._perm = torch.randperm(self.n, generator=self.generator)
            self._pass = p
        self.drawn += 1
        assert self._perm is not None
        return self._perm[off * self.b + self.lo : off * self.b + self.hi]

    def state_at(self, consumed: int) -> dict[str, Any]:
        """The position after ``consumed`` batches (at most the batches drawn so far), as plain data and a tensor."""
        p, off = divmod(consumed, self.per_pass)
        if p in self._pass_states:
            state = self._pass_states[p]
        elif p == self._pass + 1 and consumed == self.drawn:  # the next pass has not started: its state is current
            state = self.generator.get_state()
        else:
            raise RuntimeError(f"batch position {consumed} is no longer known (drawn: {self.drawn})")
        return {"pass": p, "offset": off, "generator": state.clone(), "n": self.n, "batch_size": self.b}

    def forget_before(self, consumed: int) -> None:
        """Drop remembered states of passes before the one holding batch ``consumed`` (keeps memory bounded)."""
        p = consumed // self.per_pass
        for q in [q for q in self._pass_states if q < p]:
            del self._pass_states[q]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position returned by :meth:`state_at` (for the same ``n`` and batch size)."""
        if int(state["n"]) != self.n or int(state["batch_size"]) != self.b:
            raise DataError(
                f"the saved batch position is for {state['n']} examples in batches of {state['batch_size']}, "
                f"this data has {self.n} in batches of {self.b}"
            )
        p, off = int(state["pass"]), int(state["offset"])
        self.generator.set_state(state["generator"])
        self._pass_states = {p: self.generator.get_state()}
        self._perm = torch.randperm(self.n, generator=self.generator)
        self._pass = p
        self.drawn = p * self.per_pass + off


class EpochBatchSampler(Sampler[list[int]]):
    """The batch sampler of :func:`epoch_permutations` for a ``DataLoader`` (infinite)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator | IndexStream) -> None:
        self.stream = generator if isinstance(generator, IndexStream) else IndexStream(n, batch_size, generator)
        self.n, self.batch_size, self.generator = n, batch_size, self.stream.generator

    def __iter__(self) -> Iterator[list[int]]:
        for idx in self.stream:
            yield idx.tolist()


class BatchStream(Iterator[Any]):
    """Endless batches of ``data`` on ``device`` (see the module docstring) whose position can be saved and restored.

    ``state_dict()`` after ``k`` batches, given to :meth:`load_state_dict` of a new stream over the same data,
    batch size and generator seed, continues with exactly the batches ``k + 1, k + 2, ...`` (resumable runs).
    A ``DataLoader`` passed as data is replayed instead: its first ``k`` batches are drawn and dropped (exact
    only if its own order is seeded).
    """

    def __init__(
        self,
        data: Data,
        batch_size: int,
        generator: torch.Generator,
        *,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
        collate_fn: Any = None,
        part: tuple[int, int] | None = None,
    ) -> None:
        self.data, self.device = data, torch.device(device)
        self.num_workers, self.collate_fn = num_workers, collate_fn
        n = data_length(data)
        if n == 0:
            raise DataError("cannot draw batches from an empty set")
        if part is not None and isinstance(data, DataLoader):
            raise DataError(
                "a data loader cannot be split over processes; pass the dataset (genunlearn splits batches)"
            )
        self.index = None if isinstance(data, DataLoader) else IndexStream(n, batch_size, generator, part)
        self.consumed = 0
        self._it: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self._it is None:
            self._it = self._batches()
        batch = next(self._it)
        self.consumed += 1
        if self.index is not None and self.consumed % self.index.per_pass == 0:
            self.index.forget_before(self.consumed)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The position: batches consumed, and the index stream's pass, offset and generator state."""
        out: dict[str, Any] = {"consumed": self.consumed}
        if self.index is not None:
            out["index"] = self.index.state_at(self.consumed)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a stream over the same data (before the first batch is drawn)."""
        if self._it is not None:
            raise RuntimeError("load_state_dict must come before the first batch")
        self.consumed = int(state["consumed"])
        if self.index is not None:
            self.index.load_state_dict(state["index"])
        else:
            self._it = self._batches()
            for _ in range(self.consumed):  # a user's DataLoader: replay its order
                next(self._it)

    def _batches(self) -> Iterator[Any]:
        data, device = self.data, self.device
        non_blocking = device.type == "cuda"
        if isinstance(data, DataLoader):
            while True:
                empty = True
                for batch in data:
                    empty = False
                    yield to_device(batch, device, non_blocking=non_blocking)
                if empty:
                    raise DataError("the data loader yielded no batch")
        assert self.index is not None
        if isinstance(data, torch.Tensor):
            for idx in self.index:
                batch = data[idx.to(data.device)]
                yield batch if batch.device == device else batch.to(device, non_blocking=non_blocking)
        if _tensor_tuple(data):  # (x, y, ...) tensors indexed together: the fast path with labels
            for idx in self.index:
                yield tuple(t[idx.to(t.device)].to(device, non_blocking=non_blocking) for t in data)  # type: ignore[union-attr]
        loader = DataLoader(
            data,  # type: ignore[arg-type]
            batch_sampler=EpochBatchSampler(self.index.n, self.index.b, self.index),
            num_workers=self.num_workers,
            pin_memory=non_blocking,
            persistent_workers=self.num_workers > 0,
            # its own generator (for the workers' seeds): creating the iterator must not draw from the global
            # random state, or a resumed run, which creates it later, would diverge from an uninterrupted one
            generator=torch.Generator().manual_seed(self.index.generator.initial_seed()),
            **({"collate_fn": self.collate_fn} if self.collate_fn is not None else {}),
        )
        for batch in loader:
            yield to_device(batch, device, non_blocking=non_blocking)


def infinite_batches(
    data: Data,
    batch_size: int,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    collate_fn: Any = None,
    part: tuple[int, int] | None = None,
) -> BatchStream:
    """Endless batches of ``data`` on ``device`` (see the module docstring); a resumable :class:`BatchStream`.

    ``part``: the rows of each batch kept (a data-parallel rank's part).
    """
    return BatchStream(
        data, batch_size, generator, device=device, num_workers=num_workers, collate_fn=collate_fn, part=part
    )


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

"""Data parallelism across processes (torch.distributed): every rank holds a part of each batch, methods see
the global gradients.

With a default process group of more than one process (``torchrun --nproc-per-node N -m genunlearn unlearn
...``, or your own ``torch.distributed.init_process_group``), :func:`genunlearn.loop.unlearn` runs data
parallel. All communication lives here and in the two gradient helpers that call it
(:func:`genunlearn.methods.gradients.grad` and
:func:`~genunlearn.methods.gradients.orthogonality_penalty_grad`); the methods are unchanged.

- **Batches.** Every rank draws the same seeded permutation and takes its contiguous part of each global batch
  (:meth:`DataParallel.part`): rank ``k`` of ``W`` holds rows ``[k B/W, (k+1) B/W)`` of the batch the
  single-process run draws (sizes differ by at most one), and reads only those examples (a lazy dataset stays
  lazy). The union of the ranks' batches is the single-process batch.
- **Losses.** Each rank evaluates its part and weights it so that the shares add up to the global loss: 1 for
  a loss summed over the batch, ``n_k / B`` for a mean (:meth:`DataParallel.share`); a term every rank computes
  whole (the classifier term) is weighted ``1/W`` (:meth:`DataParallel.replicated`). The value a method sees
  is the global loss (one scalar all-reduce); its autograd graph is the rank's share.
- **Gradients.** ``grad`` all-reduces (sum) the shares' gradients in one flat buffer: ``g_r``, ``g_f`` are the
  global gradients, bit-identical on every rank. With ``create_graph`` the returned tensor has the global
  value and the local graph (``G + (g - g.detach())``), so a Hessian-vector product taken through it is the
  rank's share ``H_k v``; ``orthogonality_penalty_grad`` all-reduces those (one more gradient-sized all-reduce)
  to the global ``H v``, with ``v`` built from the global gradients.
- **Random draws inside losses** (reparameterisation noise, diffusion timesteps, ``rep``'s latent samples):
  every rank has the same random state (the run seeds it) and draws the noise of the *whole* batch, keeping its
  rows (:func:`per_example_randn_like`, :func:`per_example_randint`, :func:`per_example_rand`), so the noise of
  an example is the one the single-process run gives it and the random states stay equal on all ranks.
  Objectives that draw per-example noise must draw it through these helpers for a data-parallel run to equal the
  single-process run (genunlearn's VAE, diffusion and latent-replacement terms do).

Communication per update (gradient-sized all-reduces; each loss evaluation adds one scalar all-reduce):
``a``, ``d``: 1; ``s``, ``sa``, ``s-asc``, ``rep``, ``h``: 2; ``uno``: 3 (``g_r``, ``g_f``, ``H_r v_r + H_f v_f``);
``uno-s``: 3 and 2 alternately; ``uno-fd``: 4 (two gradients at the perturbed parameters); ``s-hat``: 3;
``uno-hat``: 4. Measured in ``docs/scale.md``.

BatchNorm in ``--bn-mode train`` normalises with each rank's part of the batch (as DDP without SyncBatchNorm),
so such a run does not equal the single-process run; the running statistics are averaged over the ranks after
every update so that all replicas stay equal. ``--bn-mode eval`` or ``batch`` (or a model without BatchNorm)
give the single-process result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from genunlearn.errors import ConfigError, GenUnlearnError


@dataclass(frozen=True)
class BatchPart:
    """Rows ``[start, stop)`` of a global batch of ``total`` examples: what this rank evaluates."""

    start: int
    stop: int
    total: int

    @property
    def size(self) -> int:
        """Number of rows this rank holds."""
        return self.stop - self.start


_PART: ContextVar[BatchPart | None] = ContextVar("genunlearn_batch_part", default=None)
_ACTIVE: ContextVar[DataParallel | None] = ContextVar("genunlearn_data_parallel", default=None)


def batch_part() -> BatchPart | None:
    """The part of the global batch the loss being evaluated holds (``None`` outside a data-parallel loss)."""
    return _PART.get()


@contextmanager
def holding(part: BatchPart | None) -> Iterator[None]:
    """Evaluate a loss on ``part`` of a global batch (per-example random draws follow the global batch)."""
    token = _PART.set(part)
    try:
        yield
    finally:
        _PART.reset(token)


def _rows(full: torch.Tensor, n: int, what: str) -> torch.Tensor:
    part = batch_part()
    assert part is not None
    if n != part.size:
        raise GenUnlearnError(
            f"{what}: drawn for {n} examples, but this rank holds {part.size} of the batch of {part.total}"
        )
    return full[part.start : part.stop]


def per_example_randn_like(x: torch.Tensor) -> torch.Tensor:
    """``torch.randn_like(x)`` for a batch ``x`` (first dimension = examples), data-parallel aware.

    Inside a data-parallel loss the noise of the whole global batch is drawn and this rank's rows returned, so
    every example gets the noise the single-process run gives it.
    """
    part = batch_part()
    if part is None:
        return torch.randn_like(x)
    full = torch.randn((part.total, *x.shape[1:]), dtype=x.dtype, device=x.device, layout=x.layout)
    return _rows(full, x.shape[0], "per_example_randn_like")


def per_example_randint(low: int, high: int, n: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """``torch.randint(low, high, (n,))`` for ``n`` examples, data-parallel aware (:func:`per_example_randn_like`)."""
    part = batch_part()
    if part is None:
        return torch.randint(low, high, (n,), device=device)
    return _rows(torch.randint(low, high, (part.total,), device=device), n, "per_example_randint")


def per_example_rand(n: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """``torch.rand(n)`` for ``n`` examples, data-parallel aware (see :func:`per_example_randn_like`)."""
    part = batch_part()
    if part is None:
        return torch.rand(n, device=device)
    return _rows(torch.rand(part.total, device=device), n, "per_example_rand")


@dataclass
class CommStats:
    """Collectives issued by the data-parallel layer: all-reduces, the floats they carried, seconds spent."""

    gradient_allreduces: int = 0
    scalar_allreduces: int = 0
    other: int = 0
    floats: int = 0
    seconds: float = 0.0

    def snapshot(self) -> dict[str, float]:
        """The counters as a dict (for per-step logs)."""
        return {
            "comm_grad_allreduces": self.gradient_allreduces,
            "comm_scalar_allreduces": self.scalar_allreduces,
            "comm_other": self.other,
            "comm_floats": self.floats,
            "comm_s": self.seconds,
        }


@dataclass
class DataParallel:
    """The data-parallel layer over a process group (default: the default group).

    Attributes:
        group: the process group (``None``: the default one).
        rank, world: this process's rank and the number of processes in the group.
        stats: collectives issued so far.
    """

    group: Any = None
    rank: int = field(init=False)
    world: int = field(init=False)
    stats: CommStats = field(default_factory=CommStats)

    def __post_init__(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError("data parallelism needs an initialised torch.distributed process group")
        self.rank = dist.get_rank(self.group)
        self.world = dist.get_world_size(self.group)

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the rank that monitors, measures and writes)."""
        return self.rank == 0

    # --- batches ----------------------------------------------------------------------------------------------
    def part(self, total: int) -> BatchPart:
        """This rank's contiguous rows of a global batch of ``total`` (sizes differ by at most one)."""
        if total < self.world:
            raise ConfigError(f"a batch of {total} cannot be split over {self.world} processes (raise --batch-size)")
        base, extra = divmod(total, self.world)
        start = self.rank * base + min(self.rank, extra)
        return BatchPart(start, start + base + (1 if self.rank < extra else 0), total)

    # --- collectives ------------------------------------------------------------------------------------------
    def _all_reduce(self, flat: torch.Tensor, kind: str) -> None:
        t0 = time.perf_counter()
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        self.stats.seconds += time.perf_counter() - t0
        self.stats.floats += flat.numel()
        if kind == "gradient":
            self.stats.gradient_allreduces += 1
        elif kind == "scalar":
            self.stats.scalar_allreduces += 1
        else:
            self.stats.other += 1

    def all_reduce(self, tensors: Sequence[torch.Tensor], kind: str = "gradient") -> list[torch.Tensor]:
        """The element-wise sums over the ranks of ``tensors`` (new tensors), in one flat all-reduce."""
        ts = [t.detach() for t in tensors]
        if not ts:
            return []
        flat = ts[0].reshape(-1).clone() if len(ts) == 1 else torch.cat([t.reshape(-1) for t in ts])
        self._all_reduce(flat, kind)
        out, i = [], 0
        for t in ts:
            out.append(flat[i : i + t.numel()].view_as(t))
            i += t.numel()
        return out

    def reduce_gradient(self, grads: Sequence[torch.Tensor], *, keep_graph: bool = False) -> list[torch.Tensor]:
        """The global gradient from the ranks' shares; with ``keep_graph`` its value is global, its graph local."""
        total = self.all_reduce(grads, "gradient")
        if not keep_graph:
            return total
        return [t + (g - g.detach()) if g.requires_grad else t for t, g in zip(total, grads, strict=True)]

    def _global_value(self, local: torch.Tensor) -> torch.Tensor:
        (total,) = self.all_reduce([local.reshape(1)], "scalar")
        total = total.reshape(local.shape)
        return total + (local - local.detach()) if local.requires_grad else total

    # --- losses -----------------------------------------------------------------------------------------------
    def share(self, loss: Callable[[], torch.Tensor], *, part: BatchPart, reduction: str) -> Callable[[], torch.Tensor]:
        """A closure: this rank's share of the global loss (graph) carrying the global loss value."""
        if reduction not in ("sum", "mean"):
            raise ConfigError(f"unknown loss reduction {reduction!r}; use 'sum' or 'mean'")
        weight = 1.0 if reduction == "sum" else part.size / part.total

        def closure() -> torch.Tensor:
            with holding(part):
                value = loss()
            return self._global_value(value * weight if weight != 1.0 else value)

        return closure

    def replicated(self, loss: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        """A closure for a term every rank computes whole (same random state, same value): weighted ``1/W``."""

        def closure() -> torch.Tensor:
            return self._global_value(loss() / self.world)

        return closure

    # --- run-level helpers ------------------------------------------------------------------------------------
    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for monitor readings, outside the timed region)."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=dist.get_global_rank(self.group, 0) if self.group else 0, group=self.group)
        self.stats.other += 1
        return box[0]

    def average_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the ranks (BatchNorm running statistics)."""
        ts = list(tensors)
        if not ts:
            return
        totals = self.all_reduce(ts, "other")
        with torch.no_grad():
            for t, s in zip(ts, totals, strict=True):
                t.copy_(s / self.world)

    def check_replicas(self, tensors: Sequence[torch.Tensor]) -> None:
        """Raise if the ranks' copies of ``tensors`` differ (a float64 checksum per tensor, compared on rank 0)."""
        sums = torch.stack([t.detach().double().sum() for t in tensors] + [torch.zeros((), dtype=torch.float64)])
        sums = sums.to(tensors[0].device if tensors else "cpu")
        gathered = [torch.empty_like(sums) for _ in range(self.world)]
        dist.all_gather(gathered, sums, group=self.group)
        self.stats.other += 1
        if not all(torch.equal(g, gathered[0]) for g in gathered):
            raise GenUnlearnError("data-parallel replicas diverged: the ranks' parameters differ after the run")


def current() -> DataParallel | None:
    """The data-parallel layer of the run in progress (``None`` outside a data-parallel run)."""
    return _ACTIVE.get()


@contextmanager
def active(dp: DataParallel | None) -> Iterator[DataParallel | None]:
    """Make ``dp`` the layer the gradient helpers communicate through, for the block."""
    token = _ACTIVE.set(dp)
    try:
        yield dp
    finally:
        _ACTIVE.reset(token)


def default_group_world() -> int:
    """Processes in the default group (1 if torch.distributed is not initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: str = "auto") -> tuple[bool, str]:
    """Under torchrun (``WORLD_SIZE`` > 1) initialise the default process group if nobody did.

    Returns ``(initialised_here, device)``: the backend is NCCL for CUDA devices (each rank on
    ``cuda:LOCAL_RANK``) and gloo otherwise.
    """
    if env_world_size() <= 1 or not dist.is_available():
        return False, device
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if dist.is_initialized():
        return False, device
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True, device


def finish(started: bool) -> int:
    """This process's rank; destroys the default process group if :func:`init_from_env` created it."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if started:
        dist.destroy_process_group()
    return rank


def on_main(fn: Callable[[], Any]) -> Any:
    """``fn()`` run on rank 0 only, its result (or its :class:`GenUnlearnError`) on every rank of the default group.

    Without a process group of more than one process, simply ``fn()``. The other ranks wait for rank 0, so a
    refusal there (an output folder holding another run) stops every rank with the same one-line error instead
    of leaving them in a collective.
    """
    if default_group_world() <= 1:
        return fn()
    box: list[Any] = [None]
    failure: Exception | None = None
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as exc:  # every rank must leave the broadcast: share the failure, re-raise it here
            failure = exc
            cls = type(exc) if isinstance(exc, GenUnlearnError) else GenUnlearnError
            box[0] = ("error", cls, str(exc) if isinstance(exc, GenUnlearnError) else f"rank 0: {exc!r}")
    dist.broadcast_object_list(box, src=0)
    if failure is not None:
        raise failure
    if box[0][0] == "error":
        raise box[0][1](box[0][2])
    return box[0][1]


def resolve(setting: bool | None) -> DataParallel | None:
    """The layer for a run: ``None`` (auto) uses the default group when it has more than one process."""
    if setting is False:
        return None
    if default_group_world() > 1:
        return DataParallel()
    if setting:
        raise ConfigError("data_parallel=True needs an initialised process group of more than one process")
    return None

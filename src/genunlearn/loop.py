"""The unlearning loop: one place for optimizer, batches, timing, stopping, logging and numerical safety.

Timing follows the paper: only the loss, gradient and update computation of each step is timed
(synchronised on CUDA). Not timed: drawing batches, the snapshot of the model's state kept for the NaN
guard, the finiteness checks, per-step diagnostics (gradient norms, cos^2) and their host synchronisation,
monitoring (generation + classification) and logging.

With a torch.distributed process group of more than one process the run is data parallel
(:mod:`genunlearn.distributed`): each rank evaluates its part of every batch, methods see the global losses
and gradients, the timed step includes the communication, and rank 0 alone monitors (its readings are
broadcast, so every rank stops at the same update) and writes the log. Monitoring never changes the run's
random state (it runs in a forked random state), so a monitor that samples does not shift the draws of the
losses. Data-parallel runs are not checkpointed (no resume).
"""

from __future__ import annotations

import contextlib
import math
import signal
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from genunlearn import distributed
from genunlearn.adapters import BN_MODES, DROPOUT_MODES, ModelAdapter, as_adapter
from genunlearn.checkpoints import atomic_write, atomic_write_csv, safe_torch_load
from genunlearn.data.batching import Data, data_length, infinite_batches, stream_generators
from genunlearn.errors import CheckpointError, ConfigError, DataError
from genunlearn.eval.monitor import ForgetMonitor
from genunlearn.methods import MethodParams, PrepareContext, StepContext, get_method, missing_term_message
from genunlearn.methods.gradients import all_finite
from genunlearn.objectives import HatTerm, Task
from genunlearn.objectives.tasks import task_reduction

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: A named extra term: ``term(model, retain_batch, forget_batch) -> scalar loss`` on this step's batches
#: (``retain_batch`` is ``None`` without retain data); see :data:`genunlearn.methods.TERMS`.
Term = Callable[[nn.Module, Any, Any], torch.Tensor]


@dataclass(frozen=True)
class UnlearnConfig:
    """Every option the engine applies (recorded with every run).

    Options of the model-side terms (loss reduction, classifier term, replacement targets) are not here: they
    are applied where the task and terms are built (:class:`~genunlearn.objectives.ObjectiveConfig`).
    Where the UNO paper and its reference code disagree, both are available:

    Attributes:
        method: registered method name (``genunlearn methods``).
        steps: maximum number of updates (paper MNIST: K = 530).
        lr: learning rate (paper: 1e-3).
        batch_size: retain and forget batch size (paper: 128).
        optimizer: ``"adam"`` (reference code) or ``"sgd"`` (the paper's update rules).
        bn_mode: BatchNorm while the losses are computed: ``"train"`` (reference code: batch statistics,
            running statistics updated by every retain and forget batch), ``"eval"`` (running statistics
            used and kept), or ``"batch"`` (batch statistics in the forward, running statistics untouched).
            Applies to the trainable part of the model (frozen parts are always in eval mode).
        dropout: dropout of the trainable part while the losses are computed: ``"train"`` (active, as in
            training) or ``"eval"`` (off).
        beta_o: weight of the orthogonality term (UNO methods, paper eq. 3).
        beta_h: weight of the classifier term (hat methods, paper eq. 9).
        orthogonality: ``"cos"`` (squared cosine, eq. 3) or ``"dot"`` (squared dot product, appendix I).
        ascent_weight: ``s-asc``: norm of the forget ascent relative to the retain part.
        forget_cap: ``s-asc``: ascent stops once the forget loss exceeds this multiple of its first value.
        beta_r: weight of the latent replacement term (``rep``).
        fd_eps: ``uno-fd``: relative finite-difference step of the Hessian-vector products.
        forget_weight: ``gdiff``: weight lambda of the forget loss in ``L_r - lambda L_f``; ``i2i``: weight alpha
            of the (descended) forget loss in ``L_r + alpha L_f``.
        adaptive_step: ``ngdiff``: step size by the generalized Newton rule on the retain loss (NGDiff's
            automatic learning rate; acts with ``optimizer = "sgd"``, Adam normalises the scale away).
        saliency_fraction: ``salun``: fraction of the weights with the largest forget-gradient magnitude that
            train (SalUn: 0.5).
        relabel_weight: ``salun``: weight of the relabelled-forget loss next to the retain loss.
        ewc_lambda: ``amnesia``: weight of the EWC penalty (Selective Amnesia: 100).
        replay_weight: ``amnesia``: weight of the generative replay loss (Selective Amnesia: 1).
        keep_weight: ``rep-keep``: weight beta_k of the decoder-keep (distillation) term.
        stop_at: forget-fraction threshold of "unlearned" (paper: 0.02); 0 (or ``None``) disables it.
        early_stop: stop at the first monitor reading below ``stop_at`` (else run all ``steps``).
        seed: seeds initial RNG state and batch order.
        precision: ``"fp32"``, or ``"bf16"``/``"fp16"`` autocast of the losses and gradients (weights and
            optimizer state stay float32; fp16 is meant for CUDA).
        diagnostics: log gradient norms and cos^2 of g_r and g_f every update (computed after the timed region).
        monitor_every: read the monitors before the first update and after every ``monitor_every``-th one
            (generation is expensive for diffusion models); "updates to unlearn" then has this resolution.
    """

    method: str = "uno"
    steps: int = 530
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    bn_mode: str = "train"
    dropout: str = "train"
    beta_o: float = 1e3
    beta_h: float = 1e3
    orthogonality: str = "cos"
    ascent_weight: float = 1.0
    forget_cap: float = 1.5
    beta_r: float = 10.0
    fd_eps: float = 3e-4
    forget_weight: float = 1.0
    adaptive_step: bool = True
    saliency_fraction: float = 0.5
    relabel_weight: float = 1.0
    ewc_lambda: float = 100.0
    replay_weight: float = 1.0
    keep_weight: float = 10.0
    stop_at: float | None = 0.02
    early_stop: bool = True
    seed: int = 0
    precision: str = "fp32"
    diagnostics: bool = True
    monitor_every: int = 1

    def validate(self) -> UnlearnConfig:
        """Check every field; raises :class:`ConfigError` with one line."""
        get_method(self.method)
        checks = [
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.batch_size >= 2, f"batch size must be >= 2 (BatchNorm), got {self.batch_size}"),
            (self.optimizer in ("adam", "sgd"), f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}"),
            (self.bn_mode in BN_MODES, f"bn mode must be one of {', '.join(BN_MODES)}, got {self.bn_mode!r}"),
            (
                self.dropout in DROPOUT_MODES,
                f"dropout mode must be one of {', '.join(DROPOUT_MODES)}, got {self.dropout!r}",
            ),
            (
                self.orthogonality in ("cos", "dot"),
                f"orthogonality must be 'cos' or 'dot', got {self.orthogonality!r}",
            ),
            (self.beta_o >= 0 and self.beta_h >= 0 and self.beta_r >= 0, "beta_o, beta_h and beta_r must be >= 0"),
            (self.fd_eps > 0, f"fd_eps must be > 0, got {self.fd_eps}"),
            (
                0 < self.saliency_fraction <= 1,
                f"saliency_fraction must lie in (0, 1], got {self.saliency_fraction}",
            ),
            (
                min(self.forget_weight, self.relabel_weight, self.ewc_lambda, self.replay_weight, self.keep_weight)
                >= 0,
                "forget_weight, relabel_weight, ewc_lambda, replay_weight and keep_weight must be >= 0",
            ),
            (self.monitor_every >= 1, f"monitor_every must be >= 1, got {self.monitor_every}"),
            (self.precision in _DTYPES, f"precision must be one of {', '.join(_DTYPES)}, got {self.precision!r}"),
            (
                self.stop_at is None or 0 <= self.stop_at <= 1,
                f"stop_at must lie in [0, 1], got {self.stop_at}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        return self

    @property
    def method_params(self) -> MethodParams:
        """The hyperparameters handed to the method."""
        return MethodParams(
            beta_o=self.beta_o,
            beta_h=self.beta_h,
            orthogonality=self.orthogonality,
            ascent_weight=self.ascent_weight,
            forget_cap=self.forget_cap,
            beta_r=self.beta_r,
            fd_eps=self.fd_eps,
            forget_weight=self.forget_weight,
            adaptive_step=self.adaptive_step,
            saliency_fraction=self.saliency_fraction,
            relabel_weight=self.relabel_weight,
            ewc_lambda=self.ewc_lambda,
            replay_weight=self.replay_weight,
            keep_weight=self.keep_weight,
            lr=self.lr,
        )


@dataclass
class UnlearnResult:
    """What a run did.

    ``updates_to_unlearn`` is the number of updates after which the monitor first read below
    ``stop_at`` (``None`` if never); ``time_to_unlearn_s`` the compute time of those updates.
    ``time_per_step_s`` is the median step time, ``time_per_step_mean_s`` the mean; for alternating methods
    (``a-d``, ``uno-s`` ...) ``time_per_phase_s`` holds the median of each phase (``"0"``: even steps,
    ``"1"``: odd steps), since the median of an even/odd mix is one phase's cost or a midpoint.
    ``trainable_parameters`` counts the parameters the run updated (LoRA: the adapter matrices).
    ``setup_time_s`` is the method's one-off work before the first update (SalUn's saliency mask; 0 for most
    methods), counted in the compute time and so in ``time_to_unlearn_s``.
    """

    status: str
    steps_run: int
    updates_to_unlearn: int | None
    time_to_unlearn_s: float | None
    time_per_step_s: float | None
    forget_fraction_initial: float | None
    forget_fraction_final: float | None
    time_per_step_mean_s: float | None = None
    time_per_phase_s: dict[str, float] | None = None
    trainable_parameters: int | None = None
    setup_time_s: float = 0.0
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        """True if the run stopped on a non-finite loss, gradient or weight."""
        return self.status.startswith("diverged")

    def summary(self) -> dict[str, Any]:
        """Everything but the per-step log."""
        d = asdict(self)
        d.pop("log")
        return d


CHECKPOINT_FORMAT = "genunlearn-unlearn-checkpoint"


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often :func:`unlearn` saves its resumable state (not part of :class:`UnlearnConfig`).

    A checkpoint never changes what a run computes, so it is not an engine option: a run resumed from one gives
    the weights, log and summary of the uninterrupted run (on CPU, bit for bit; only the measured times differ).
    It holds the model's state (parameters and buffers), the optimizer's state, the update count, the random
    states (torch CPU and CUDA, and the retain/forget batch streams' positions), the method's state (e.g.
    ``s-asc``'s first forget loss), the log so far and the monitor's bookkeeping, in one file written atomically
    (a ``torch.save`` of tensors and plain data, read back with ``weights_only=True``).

    Attributes:
        path: the checkpoint file.
        every: save after every ``every`` updates (0: only when the run ends or is interrupted); saving happens
            outside the timed region.
        resume: continue from ``path`` if it exists (its engine config must equal the run's).
        on_interrupt: on the first SIGINT (Ctrl-C) finish the current update, save, then raise
            ``KeyboardInterrupt`` (main thread only; a second SIGINT interrupts at once).
    """

    path: str | Path
    every: int = 50
    resume: bool = True
    on_interrupt: bool = True

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ConfigError(f"checkpoint interval must be >= 0, got {self.every}")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an unlearning checkpoint (``weights_only=True``); one-line error if it is not one."""
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a genunlearn unlearning checkpoint")
    return state


class _DeferredInterrupt:
    """Turn the first SIGINT into a flag read at the next update boundary (a second one interrupts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self, enabled: bool):
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, self._previous)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam (reference code, default betas) or plain SGD (the paper's update rules)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ConfigError(f"unknown optimizer {name!r}")


def attention_kernels(double_backward: bool):
    """``sdpa_kernel(SDPBackend.MATH)`` for steps that differentiate through gradients (the fused CPU and flash
    kernels have no second derivative), and no restriction otherwise (first-order steps keep the fast kernels)."""
    if not double_backward:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def check_data_parallel(method: str, *, checkpoint: bool = False) -> None:
    """Refuse (one line) what a data-parallel run does not support: checkpoints, and methods with extra terms or a
    one-off preparation (the peer methods' terms are not split over the ranks)."""
    if checkpoint:
        raise ConfigError("data-parallel runs cannot be checkpointed or resumed; run without a checkpoint")
    m = get_method(method)
    if m.terms or m.prepares:
        raise ConfigError(
            f"method {method!r} (extra terms or a one-off preparation) does not run data parallel yet; "
            "run it in one process"
        )


def _finite_scalar(v: Any) -> bool:
    return isinstance(v, str) or math.isfinite(float(v))


def unlearn(
    model: nn.Module | ModelAdapter,
    task: Task,
    retain_data: Data,
    forget_data: Data,
    config: UnlearnConfig,
    *,
    hat: HatTerm | None = None,
    replacement: Callable[[nn.Module], torch.Tensor] | None = None,
    monitor: ForgetMonitor | None = None,
    extra_monitors: Mapping[str, ForgetMonitor] | None = None,
    log_path: str | Path | None = None,
    progress: bool = True,
    num_workers: int = 0,
    checkpoint: Checkpointing | None = None,
    data_parallel: bool | None = None,
    terms: Mapping[str, Term] | None = None,
) -> UnlearnResult:
    """Run unlearning on ``model`` in place and return what happened.

    Args:
        model: any ``nn.Module`` (every parameter with ``requires_grad`` is updated), or a
            :class:`~genunlearn.adapters.ModelAdapter` saying which parameters train and which parts stay frozen.
        task: turns batches into retain and forget losses (:class:`~genunlearn.objectives.StandardTask`,
            :class:`~genunlearn.objectives.ReplacementTask`, or your own).
        retain_data, forget_data: tensors (first dimension = examples), datasets or data loaders;
            batches (a tensor, ``(x, y)`` or a dict) are drawn endlessly with a generator seeded by
            ``config.seed`` and moved to the model's device one at a time
            (:func:`~genunlearn.data.batching.infinite_batches`).
        config: the options (validated here).
        hat: the classifier term, required by classifier-assisted methods.
        replacement: the latent replacement term (:class:`~genunlearn.objectives.LatentReplacement`),
            required by ``rep`` methods.
        monitor: measures the forget fraction before the first and after every update (drives stopping); with
            a reference (``ForgetMonitor.set_reference``) its readings also log ``collateral`` and ``retained_tv``.
        extra_monitors: further monitors, logged as ``forget_fraction_<name>`` (not used for stopping).
        log_path: if given, the per-step log is written there as CSV.
        progress: show a progress bar.
        num_workers: ``DataLoader`` worker processes for dataset inputs (results do not depend on it).
        checkpoint: save the run's state periodically and resume from it (:class:`Checkpointing`); the model
            passed in must then be the original model (the checkpoint's weights are loaded into it). Not
            available in data-parallel runs.
        terms: named extra terms (:data:`genunlearn.methods.TERMS`) for methods that declare them (``salun``:
            ``relabel``; ``amnesia``: ``surrogate``, ``replay``, ``ewc``; ``esd``: ``negative_guidance``; ``siss``:
            ``siss``); :mod:`genunlearn.objectives.peer_terms` builds them for VAEs and diffusion models. Methods
            with extra terms or one-off preparation run in one process only (not data parallel).
        data_parallel: ``None`` (default): data parallel when a torch.distributed default process group of more
            than one process is initialised (``torchrun``); ``False``: never; ``True``: require it. Every rank
            calls ``unlearn`` with the same arguments (the whole data; each rank reads its part of each batch).

    On a non-finite loss, gradient or weight the run stops, the parameters *and buffers* (BatchNorm running
    statistics) of the last finite step are restored and ``status`` says so (``result.diverged``). The
    train/eval flags of every submodule and the frozen parts' ``requires_grad`` flags are restored when the
    run ends.
    """
    config.validate()
    adapter = as_adapter(model)
    net = adapter.model
    method = get_method(config.method)
    if method.uses_classifier and hat is None:
        raise ConfigError(f"method {config.method!r} needs a classifier (hat term)")
    if method.uses_replacement and replacement is None:
        raise ConfigError(f"method {config.method!r} needs a latent replacement term")
    for name in method.terms:
        if name not in (terms or {}):
            raise ConfigError(missing_term_message(name, terms or {}, config.method))
    if data_length(forget_data) == 0:
        raise DataError("empty forget set")
    has_retain = data_length(retain_data) > 0
    if method.uses_retain and not has_retain:
        raise DataError("empty retain set")
    dp = distributed.resolve(data_parallel)
    if dp is not None:
        check_data_parallel(config.method, checkpoint=checkpoint is not None)
    with adapter.run_scope(), distributed.active(dp):  # the gradient helpers communicate through dp
        params = adapter.trainable_parameters()
        if not params:
            raise ConfigError("the model has no trainable parameters")
        if any(type(p).__name__ == "DTensor" for p in params):
            raise ConfigError(
                "the trainable parameters are sharded (FSDP/DTensor): torch.autograd.grad does not reach them "
                "(the gradients would be zero); shard only frozen parts, e.g. the base of a LoRA adapter "
                "(docs/scale.md)"
            )
        return _run(
            adapter,
            net,
            params,
            method,
            task,
            retain_data if has_retain else None,
            forget_data,
            config,
            hat=hat,
            replacement=replacement,
            monitor=monitor,
            extra_monitors=extra_monitors,
            log_path=log_path,
            progress=progress,
            num_workers=num_workers,
            checkpoint=checkpoint,
            dp=dp,
            terms=dict(terms or {}),
        )


def _bn_statistics(adapter: ModelAdapter) -> list[torch.Tensor]:
    """Running means and variances of the trainable part's BatchNorm layers (averaged over data-parallel ranks)."""
    out = []
    for m in adapter.trainable_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None:
            out += [m.running_mean, m.running_var]
    return out


def _run(
    adapter: ModelAdapter,
    net: nn.Module,
    params: list[nn.Parameter],
    method: Any,
    task: Task,
    retain_data: Data | None,
    forget_data: Data,
    config: UnlearnConfig,
    *,
    hat: HatTerm | None,
    replacement: Callable[[nn.Module], torch.Tensor] | None,
    monitor: ForgetMonitor | None,
    extra_monitors: Mapping[str, ForgetMonitor] | None,
    log_path: str | Path | None,
    progress: bool,
    num_workers: int,
    checkpoint: Checkpointing | None,
    dp: distributed.DataParallel | None,
    terms: dict[str, Term],
) -> UnlearnResult:
    model = net
    buffers = list(net.buffers())
    device = params[0].device
    main = dp is None or dp.is_main
    torch.manual_seed(config.seed)
    gen_r, gen_f = stream_generators(config.seed)
    part_r = part_f = part_p = None
    reduction = None
    if dp is not None:  # this rank's rows of every global batch, and how its losses add up to the global ones
        reduction = task_reduction(task)
        if reduction is None:
            raise ConfigError(
                "a data-parallel run must know whether the losses sum or average over the batch: give the task "
                "or its objective a 'reduction' attribute ('sum' or 'mean')"
            )
        if retain_data is not None:
            part_r = dp.part(min(config.batch_size, data_length(retain_data)))
        part_f = dp.part(min(config.batch_size, data_length(forget_data)))
        if replacement is not None and getattr(replacement, "batch_examples", None):
            part_p = dp.part(int(replacement.batch_examples))  # type: ignore[attr-defined]

    def rows(part: distributed.BatchPart | None) -> tuple[int, int] | None:
        return None if part is None else (part.start, part.stop)

    def share(fn: Callable[[], torch.Tensor], part: distributed.BatchPart | None, red: str | None = None):
        if dp is None:
            return fn
        if part is None:
            return dp.replicated(fn)
        return dp.share(fn, part=part, reduction=red or reduction)  # type: ignore[arg-type]

    retain_it = (
        infinite_batches(
            retain_data, config.batch_size, gen_r, device=device, num_workers=num_workers, part=rows(part_r)
        )
        if retain_data is not None
        else None
    )
    forget_it = infinite_batches(
        forget_data, config.batch_size, gen_f, device=device, num_workers=num_workers, part=rows(part_f)
    )
    bn_stats = _bn_statistics(adapter) if dp is not None and config.bn_mode == "train" else []
    opt = make_optimizer(config.optimizer, params, config.lr)
    hp = config.method_params
    state = params + buffers
    snapshot = [t.detach().clone() for t in state]

    log: list[dict[str, Any]] = []
    step_times: list[float] = []
    phase_times: dict[str, list[float]] = {}
    compute = 0.0
    updates_to_unlearn: int | None = None
    time_to_unlearn: float | None = None
    first_fraction: float | None = None
    fraction: float | None = None
    status = "completed"
    rng_devices = [device] if device.type == "cuda" else []
    setup_time = 0.0

    def observe(step: int, row: dict[str, Any]) -> None:
        nonlocal fraction, first_fraction, updates_to_unlearn, time_to_unlearn
        if step % config.monitor_every != 0:
            log.append({"step": step, "compute_time_s": compute, **row})
            return
        readings: dict[str, Any] = {}
        if main and (monitor is not None or extra_monitors):
            with torch.random.fork_rng(devices=rng_devices):  # monitoring leaves the run's random state alone
                if monitor is not None:
                    r = monitor.measure(model)
                    readings.update(forget_fraction=r.fraction, ff_ci_low=r.ci_low, ff_ci_high=r.ci_high)
                    if r.collateral is not None:
                        readings.update(collateral=r.collateral, retained_tv=r.retained_tv)
                for name, extra in (extra_monitors or {}).items():
                    readings[f"forget_fraction_{name}"] = extra.measure(model).fraction
        if dp is not None and (monitor is not None or extra_monitors):
            readings = dp.broadcast(readings)  # every rank stops at the same update
        if "forget_fraction" in readings:
            fraction = readings["forget_fraction"]
            if first_fraction is None:
                first_fraction = fraction
            if config.stop_at is not None and updates_to_unlearn is None and fraction < config.stop_at:
                updates_to_unlearn, time_to_unlearn = step, compute
        row.update(readings)
        log.append({"step": step, "compute_time_s": compute, **row})

    amp = _DTYPES[config.precision]
    start = 0
    finished = False
    saved_at: int | None = None
    if checkpoint is not None and checkpoint.resume and Path(checkpoint.path).is_file():
        ck = read_checkpoint(checkpoint.path)
        if ck["config"] != asdict(config):
            diff = sorted(k for k in asdict(config) if ck["config"].get(k) != asdict(config)[k])
            raise CheckpointError(
                f"{checkpoint.path}: holds a run with a different engine config ({', '.join(diff) or 'fields'} differ)"
            )
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        method.load_state_dict(ck["method"])
        if retain_it is not None:
            retain_it.load_state_dict(ck["streams"]["retain"])
        forget_it.load_state_dict(ck["streams"]["forget"])
        torch.set_rng_state(ck["rng"]["cpu"])
        if ck["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
        b = ck["loop"]
        log, step_times, compute = b["log"], b["step_times"], b["compute"]
        phase_times, setup_time = b["phase_times"], b.get("setup_time", 0.0)
        updates_to_unlearn, time_to_unlearn = b["updates_to_unlearn"], b["time_to_unlearn"]
        first_fraction, fraction, status = b["first_fraction"], b["fraction"], b["status"]
        start = saved_at = ck["step"]
        finished = b["finished"]
    else:
        if method.prepares:  # one-off work (SalUn's mask), timed and counted in the compute time
            setup_time = compute = _prepare(
                adapter, model, params, buffers, method, task, forget_data, config, num_workers
            )
        observe(0, {})

    def save(step: int, done: bool) -> None:
        nonlocal saved_at
        if checkpoint is None or (saved_at == step and not done):
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "config": asdict(config),
            "step": step,
            "model": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            "optimizer": opt.state_dict(),
            "method": method.state_dict(),
            "streams": {
                "retain": retain_it.state_dict() if retain_it is not None else None,
                "forget": forget_it.state_dict(),
            },
            "rng": {
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            },
            "loop": {
                "log": log,
                "step_times": step_times,
                "phase_times": phase_times,
                "compute": compute,
                "setup_time": setup_time,
                "updates_to_unlearn": updates_to_unlearn,
                "time_to_unlearn": time_to_unlearn,
                "first_fraction": first_fraction,
                "fraction": fraction,
                "status": status,
                "finished": done,
            },
        }
        atomic_write(checkpoint.path, lambda tmp: torch.save(state, tmp))
        saved_at = step

    steps_run = start
    bar = tqdm(
        range(start, config.steps if not finished else start),
        desc=f"unlearn {config.method}",
        disable=not (progress and main) or finished,
        leave=False,
        initial=start,
        total=config.steps,
    )
    interrupt = _DeferredInterrupt()
    with interrupt.installed(checkpoint is not None and checkpoint.on_interrupt and not finished):
        for k in bar:
            if config.early_stop and updates_to_unlearn is not None:
                status = "unlearned"
                break
            xb_r = next(retain_it) if retain_it is not None else None
            xb_f = next(forget_it)
            ctx = StepContext(
                params=params,
                retain_loss=share(lambda xb_r=xb_r: task.retain_loss(model, xb_r), part_r),
                forget_loss=share(lambda xb_f=xb_f: task.forget_loss(model, xb_f), part_f),
                hat_loss=share(lambda: hat(model), None) if hat is not None else None,
                replace_loss=(
                    share(lambda: replacement(model), part_p, getattr(replacement, "reduction", None))
                    if replacement is not None
                    else None
                ),
                step=k,
                hp=hp,
                buffers=buffers,
                terms={
                    name: (lambda t=t, xb_r=xb_r, xb_f=xb_f: t(model, xb_r, xb_f))
                    for name, t in terms.items()
                    if name in method.terms
                },
            )
            comm_before = dp.stats.snapshot() if dp is not None else None
            with torch.no_grad():  # the last finite state, kept outside the timed region
                torch._foreach_copy_(snapshot, [t.detach() for t in state])
            with adapter.step_modes(config.bn_mode, config.dropout):  # set outside the timed region
                _sync(device)
                t0 = time.perf_counter()
                with (
                    torch.autocast(device.type, dtype=amp, enabled=amp is not None),
                    attention_kernels(method.needs_double_backward(ctx)),
                ):
                    out = method.compute(ctx)
                for p, d in zip(params, out.direction, strict=True):
                    p.grad = d.detach()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if bn_stats:  # each rank normalised with its part of the batch: keep the replicas equal
                    dp.average_(bn_stats)  # type: ignore[union-attr]
                _sync(device)
                dt = time.perf_counter() - t0
            row = {key: (v if isinstance(v, str) else float(v)) for key, v in out.logs.items()}
            if dp is not None and comm_before is not None:
                row.update({k: v - comm_before[k] for k, v in dp.stats.snapshot().items()})
            finite = (
                all_finite(out.direction)
                and all(_finite_scalar(v) for v in row.values())
                and all_finite([t.detach() for t in state if t.is_floating_point()])
            )
            if not finite:
                with torch.no_grad():
                    torch._foreach_copy_(state, snapshot)
                status = f"diverged: non-finite loss, gradient or weight at update {k + 1}; weights of update {k} kept"
                break
            if config.diagnostics and out.diagnostics is not None:
                row.update(out.diagnostics())
            del out, ctx
            steps_run = k + 1
            compute += dt
            step_times.append(dt)
            if "phase" in row:
                phase_times.setdefault(str(int(row["phase"])), []).append(dt)
            observe(steps_run, {"step_time_s": dt, **row})
            if fraction is not None:
                bar.set_postfix(forget=f"{fraction:.3f}")
            if checkpoint is not None and (
                interrupt.requested or (checkpoint.every and steps_run % checkpoint.every == 0)
            ):
                save(steps_run, False)  # outside the timed region
                if interrupt.requested:
                    bar.close()
                    raise KeyboardInterrupt(f"interrupted after update {steps_run} (checkpoint saved)")
        else:
            if config.early_stop and updates_to_unlearn is not None and not finished:
                status = "unlearned"
    bar.close()
    if not finished:
        save(steps_run, True)
    if dp is not None:
        dp.check_replicas([t.detach() for t in params])
    if log_path is not None and main:
        write_log(log, log_path)
    return UnlearnResult(
        status=status,
        steps_run=steps_run,
        updates_to_unlearn=updates_to_unlearn,
        time_to_unlearn_s=time_to_unlearn,
        time_per_step_s=statistics.median(step_times) if step_times else None,
        forget_fraction_initial=first_fraction,
        forget_fraction_final=fraction,
        time_per_step_mean_s=statistics.fmean(step_times) if step_times else None,
        time_per_phase_s={ph: statistics.median(ts) for ph, ts in sorted(phase_times.items())} or None,
        trainable_parameters=sum(p.numel() for p in params),
        setup_time_s=setup_time,
        log=log,
    )


def _prepare(
    adapter: ModelAdapter,
    model: nn.Module,
    params: list[nn.Parameter],
    buffers: list[torch.Tensor],
    method: Any,
    task: Task,
    forget_data: Data,
    config: UnlearnConfig,
    num_workers: int,
) -> float:
    """The method's one-off work (SalUn's mask) on one seeded pass over the forget data; returns its time.

    Only a fresh run prepares (a resumed run restores the method's state from its checkpoint). The pass draws
    from a third stream of the run's seed, so the retain and forget streams are unchanged, and it does not move
    BatchNorm statistics: the first update starts from the original model.
    """
    device = params[0].device
    amp = _DTYPES[config.precision]
    gen_p = stream_generators(config.seed, streams=3)[2]
    n_f = data_length(forget_data)
    passes = infinite_batches(forget_data, config.batch_size, gen_p, device=device, num_workers=num_workers)
    batches = [next(passes) for _ in range(max(1, n_f // min(config.batch_size, n_f)))]
    saved = [b.detach().clone() for b in buffers]
    with adapter.step_modes(config.bn_mode, config.dropout):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            method.prepare(
                PrepareContext(
                    params=params,
                    forget_losses=[lambda b=b: task.forget_loss(model, b) for b in batches],
                    hp=config.method_params,
                    buffers=buffers,
                )
            )
        _sync(device)
        setup_time = time.perf_counter() - t0
    with torch.no_grad():
        for b, v in zip(buffers, saved, strict=True):
            b.copy_(v)
    return setup_time


def write_log(log: list[dict[str, Any]], path: str | Path) -> None:
    """Write the per-step log as CSV (columns: the union of all rows' keys, in first-seen order)."""
    atomic_write_csv(path, log)

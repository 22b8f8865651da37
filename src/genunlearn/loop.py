"""The unlearning loop: one place for optimizer, batches, timing, stopping, logging and numerical safety.

Timing follows the paper: only the loss, gradient and update computation of each step is timed
(synchronised on CUDA); drawing batches, monitoring (generation + classification) and logging are not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from genunlearn.checkpoints import atomic_write_csv
from genunlearn.errors import ConfigError, DataError
from genunlearn.eval.monitor import ForgetMonitor
from genunlearn.methods import MethodParams, StepContext, get_method
from genunlearn.methods.gradients import all_finite
from genunlearn.objectives import HatTerm, Task

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class UnlearnConfig:
    """Every option of an unlearning run (recorded with every run).

    Where the UNO paper and its reference code disagree, both are available:

    Attributes:
        method: registered method name (``genunlearn methods``).
        steps: maximum number of updates (paper MNIST: K = 530).
        lr: learning rate (paper: 1e-3).
        batch_size: retain and forget batch size (paper: 128).
        optimizer: ``"adam"`` (reference code) or ``"sgd"`` (the paper's update rules).
        loss_reduction: ``"sum"`` over batch and pixels (reference code) or ``"mean"`` over the batch
            (paper equations); changes the weight of beta_o relative to the retain loss.
        bn_mode: ``"train"`` (reference code: BatchNorm batch statistics, running stats updated) or
            ``"eval"`` (frozen running statistics) while computing losses.
        beta_o, beta_h, orthogonality, ascent_weight, forget_cap, beta_r, fd_eps: see
            :class:`~genunlearn.methods.MethodParams`.
        hat_kind: ``"bernoulli"`` (paper eq. 9) or ``"categorical"`` (reference code).
        alpha: threshold of eq. 9.
        hat_samples: samples generated per step for the hat term (paper: N_g = B).
        replace_neighbors: ``rep`` methods: retained neighbours per forget example (targets of ``L_rep``).
        stop_at: forget-fraction threshold of "unlearned" (paper: 0.02); ``None`` disables it.
        early_stop: stop at the first monitor reading below ``stop_at`` (else run all ``steps``).
        seed: seeds initial RNG state and batch order.
        precision: ``"fp32"``, or ``"bf16"``/``"fp16"`` autocast of the losses and gradients (weights and
            optimizer state stay float32; fp16 is meant for CUDA).
    """

    method: str = "uno"
    steps: int = 530
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    loss_reduction: str = "sum"
    bn_mode: str = "train"
    beta_o: float = 1e3
    beta_h: float = 1e3
    orthogonality: str = "cos"
    ascent_weight: float = 1.0
    forget_cap: float = 1.5
    beta_r: float = 10.0
    replace_neighbors: int = 1
    fd_eps: float = 3e-4
    hat_kind: str = "bernoulli"
    alpha: float = 1e-8
    hat_samples: int = 128
    stop_at: float | None = 0.02
    early_stop: bool = True
    seed: int = 0
    precision: str = "fp32"

    def validate(self) -> UnlearnConfig:
        """Check every field; raises :class:`ConfigError` with one line."""
        get_method(self.method)
        checks = [
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.batch_size >= 2, f"batch size must be >= 2 (BatchNorm), got {self.batch_size}"),
            (self.optimizer in ("adam", "sgd"), f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}"),
            (
                self.loss_reduction in ("sum", "mean"),
                f"loss reduction must be 'sum' or 'mean', got {self.loss_reduction!r}",
            ),
            (self.bn_mode in ("train", "eval"), f"bn mode must be 'train' or 'eval', got {self.bn_mode!r}"),
            (
                self.orthogonality in ("cos", "dot"),
                f"orthogonality must be 'cos' or 'dot', got {self.orthogonality!r}",
            ),
            (
                self.hat_kind in ("bernoulli", "categorical"),
                f"hat kind must be 'bernoulli' or 'categorical', got {self.hat_kind!r}",
            ),
            (self.beta_o >= 0 and self.beta_h >= 0 and self.beta_r >= 0, "beta_o, beta_h and beta_r must be >= 0"),
            (self.replace_neighbors >= 1, f"replace_neighbors must be >= 1, got {self.replace_neighbors}"),
            (self.fd_eps > 0, f"fd_eps must be > 0, got {self.fd_eps}"),
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
        )


@dataclass
class UnlearnResult:
    """What a run did.

    ``updates_to_unlearn`` is the number of updates after which the monitor first read below
    ``stop_at`` (``None`` if never); ``time_to_unlearn_s`` the compute time of those updates.
    """

    status: str
    steps_run: int
    updates_to_unlearn: int | None
    time_to_unlearn_s: float | None
    time_per_step_s: float | None
    forget_fraction_initial: float | None
    forget_fraction_final: float | None
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


def batches(data: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless random batches without replacement within each pass over ``data``."""
    n = data.shape[0]
    if n == 0:
        raise DataError("cannot draw batches from an empty set")
    while True:
        perm = torch.randperm(n, generator=generator).to(data.device)
        for start in range(0, n - min(batch_size, n) + 1, min(batch_size, n)):
            yield data[perm[start : start + batch_size]]


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


def unlearn(
    model: nn.Module,
    task: Task,
    retain_data: torch.Tensor,
    forget_data: torch.Tensor,
    config: UnlearnConfig,
    *,
    hat: HatTerm | None = None,
    replacement: Callable[[nn.Module], torch.Tensor] | None = None,
    monitor: ForgetMonitor | None = None,
    extra_monitors: Mapping[str, ForgetMonitor] | None = None,
    log_path: str | Path | None = None,
    progress: bool = True,
) -> UnlearnResult:
    """Run unlearning on ``model`` in place and return what happened.

    Args:
        model: any ``nn.Module``; its parameters with ``requires_grad`` are updated.
        task: turns batches into retain and forget losses (:class:`~genunlearn.objectives.StandardTask`,
            :class:`~genunlearn.objectives.ReplacementTask`, or your own).
        retain_data, forget_data: tensors whose first dimension indexes examples (on the model's device).
        config: the options (validated here).
        hat: the classifier term, required by classifier-assisted methods.
        replacement: the latent replacement term (:class:`~genunlearn.objectives.LatentReplacement`),
            required by ``rep`` methods.
        monitor: measures the forget fraction before the first and after every update (drives stopping).
        extra_monitors: further monitors, logged as ``forget_fraction_<name>`` (not used for stopping).
        log_path: if given, the per-step log is written there as CSV.
        progress: show a progress bar.

    On a non-finite loss, gradient or weight the run stops, the weights of the last finite step are
    restored and ``status`` says so (``result.diverged``).
    """
    config.validate()
    method = get_method(config.method)
    if method.uses_classifier and hat is None:
        raise ConfigError(f"method {config.method!r} needs a classifier (hat term)")
    if method.uses_replacement and replacement is None:
        raise ConfigError(f"method {config.method!r} needs a latent replacement term")
    if len(forget_data) == 0:
        raise DataError("empty forget set")
    if method.uses_retain and len(retain_data) == 0:
        raise DataError("empty retain set")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    device = params[0].device
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    retain_it = batches(retain_data, config.batch_size, gen) if len(retain_data) else None
    forget_it = batches(forget_data, config.batch_size, gen)
    opt = make_optimizer(config.optimizer, params, config.lr)
    hp = config.method_params
    snapshot = [p.detach().clone() for p in params]

    log: list[dict[str, Any]] = []
    step_times: list[float] = []
    compute = 0.0
    updates_to_unlearn: int | None = None
    time_to_unlearn: float | None = None
    first_fraction: float | None = None
    fraction: float | None = None
    status = "completed"

    def observe(step: int, row: dict[str, Any]) -> None:
        nonlocal fraction, first_fraction, updates_to_unlearn, time_to_unlearn
        if monitor is not None:
            r = monitor.measure(model)
            fraction = r.fraction
            row.update(forget_fraction=r.fraction, ff_ci_low=r.ci_low, ff_ci_high=r.ci_high)
            if first_fraction is None:
                first_fraction = r.fraction
            if config.stop_at is not None and updates_to_unlearn is None and r.fraction < config.stop_at:
                updates_to_unlearn, time_to_unlearn = step, compute
        for name, extra in (extra_monitors or {}).items():
            row[f"forget_fraction_{name}"] = extra.measure(model).fraction
        log.append({"step": step, "compute_time_s": compute, **row})

    observe(0, {})
    bar = tqdm(range(config.steps), desc=f"unlearn {config.method}", disable=not progress, leave=False)
    steps_run = 0
    for k in bar:
        if config.early_stop and updates_to_unlearn is not None:
            status = "unlearned"
            break
        xb_r = next(retain_it) if retain_it is not None else None
        xb_f = next(forget_it)
        model.train(config.bn_mode == "train")
        ctx = StepContext(
            params=params,
            retain_loss=lambda xb_r=xb_r: task.retain_loss(model, xb_r),
            forget_loss=lambda xb_f=xb_f: task.forget_loss(model, xb_f),
            hat_loss=(lambda: hat(model)) if hat is not None else None,
            replace_loss=(lambda: replacement(model)) if replacement is not None else None,
            step=k,
            hp=hp,
        )
        _sync(device)
        t0 = time.perf_counter()
        torch._foreach_copy_(snapshot, [p.detach() for p in params])
        amp = _DTYPES[config.precision]
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = method.compute(ctx)
        finite = all_finite(out.direction) and all(v == v and abs(v) != float("inf") for v in out.logs.values())
        if finite:
            for p, d in zip(params, out.direction, strict=True):
                p.grad = d.detach()
            opt.step()
            opt.zero_grad(set_to_none=True)
            finite = all_finite([p.detach() for p in params])
        _sync(device)
        dt = time.perf_counter() - t0
        if not finite:
            with torch.no_grad():
                torch._foreach_copy_(params, snapshot)
            status = f"diverged: non-finite loss, gradient or weight at update {k + 1}; weights of update {k} kept"
            break
        steps_run = k + 1
        compute += dt
        step_times.append(dt)
        observe(steps_run, {"step_time_s": dt, **out.logs})
        if fraction is not None:
            bar.set_postfix(forget=f"{fraction:.3f}")
    else:
        if config.early_stop and updates_to_unlearn is not None:
            status = "unlearned"
    bar.close()
    model.eval()
    if log_path is not None:
        write_log(log, log_path)
    return UnlearnResult(
        status=status,
        steps_run=steps_run,
        updates_to_unlearn=updates_to_unlearn,
        time_to_unlearn_s=time_to_unlearn,
        time_per_step_s=statistics.median(step_times) if step_times else None,
        forget_fraction_initial=first_fraction,
        forget_fraction_final=fraction,
        log=log,
    )


def write_log(log: list[dict[str, Any]], path: str | Path) -> None:
    """Write the per-step log as CSV (columns: the union of all rows' keys, in first-seen order)."""
    atomic_write_csv(path, log)

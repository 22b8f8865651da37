"""One loaded unlearning problem: a model bundle, its retain/forget data, monitors, terms and metrics.

:class:`UnlearnSession` is what ``genunlearn unlearn``, the benches, the demo and the sweeps share: it builds
the model through its factory (:func:`~genunlearn.models.bundle.build_bundle`), splits the data by class
(or into forget and target data for conditional replacement), and hands out fresh copies of the original
model, forget monitors with inputs fixed by a seed, the classifier term, the latent replacement term, FID,
and :meth:`UnlearnSession.run`. :func:`run_to_dir` runs one job and writes its outputs.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genunlearn import distributed
from genunlearn.adapters import ModelAdapter, as_adapter, eval_mode
from genunlearn.checkpoints import atomic_write_json, atomic_write_text
from genunlearn.config import DataConfig, ModelConfig, MonitorConfig, RunConfig
from genunlearn.data.batching import data_length
from genunlearn.data.splits import ForgetSplit
from genunlearn.errors import ConfigError, DataError
from genunlearn.eval.fid import ClassifierFID
from genunlearn.eval.monitor import ForgetMonitor
from genunlearn.loop import (
    Checkpointing,
    UnlearnConfig,
    UnlearnResult,
    check_data_parallel,
    read_checkpoint,
    unlearn,
)
from genunlearn.lora import AdapterConfig, adapt, save_unlearned
from genunlearn.methods import METHODS
from genunlearn.models.bundle import BuildContext, ModelBundle, build_bundle, forget_classes_exist
from genunlearn.objectives import (
    HatTerm,
    LatentReplacement,
    ObjectiveConfig,
    ReplacementTask,
    StandardTask,
    Task,
    batch_inputs,
    labelled_draws,
)
from genunlearn.outputs import prepare_run_dir
from genunlearn.provenance import record_start, run_record
from genunlearn.runinfo import resolve_device, versions


def _with_reduction(objective: Any, reduction: str) -> Any:
    """The objective with ``reduction`` over the batch (dataclass objectives with a ``reduction`` field)."""
    if getattr(objective, "reduction", reduction) == reduction:
        return objective
    try:
        return replace(objective, reduction=reduction)
    except TypeError:
        raise ConfigError(f"this model's objective does not take loss_reduction={reduction!r}") from None


class UnlearnSession:
    """Loaded data and models for unlearning runs (reusable across seeds, methods and objective options).

    Args:
        model: ``[model]`` options (name, checkpoint, factory options).
        data: ``[data]`` options (dataset, forget classes, replacement targets).
        monitor: ``[monitor]`` options (classifier, monitor size and mode).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        loss_reduction: the objective's reduction the model is built with (runs may ask for the other one).
    """

    def __init__(
        self,
        model: ModelConfig,
        data: DataConfig,
        monitor: MonitorConfig,
        *,
        device: str = "auto",
        loss_reduction: str = "sum",
    ) -> None:
        self.model_config, self.data_config, self.monitor_config = model, data, monitor
        self.device = resolve_device(device)
        context = BuildContext(
            device=self.device,
            checkpoint=model.checkpoint,
            loss_reduction=loss_reduction,
            dataset=data.dataset,
            data_dir=data.data_dir,
            classifier_checkpoint=monitor.classifier_checkpoint,
            classifier_bn=monitor.classifier_bn,
            forget_attr=tuple(data.forget_attr),
            attr_mode=data.attr_mode,
            allow_pickle=model.allow_pickle,
        )
        self.bundle: ModelBundle = build_bundle(model.name, model.options, context)
        if self.bundle.data is None:
            raise ConfigError(f"--model {model.name} brings no training data; name one with --dataset")
        self.data = self.bundle.data
        labels = self.data.labels
        self.sample_level = data.forget_ids is not None
        self.forget_classes = () if self.sample_level else tuple(data.forget)
        if not self.sample_level:
            forget_classes_exist(labels, self.forget_classes, self.data.name)
        self.classifier = self.bundle.classifier
        if self.classifier is not None:
            for p in self.classifier.parameters():
                p.requires_grad_(False)
            self.classifier.eval()
        self.conditional = bool(data.replace_with)
        if self.conditional:
            targets = tuple(data.replace_with) * (len(self.forget_classes) if len(data.replace_with) == 1 else 1)
            forget_classes_exist(labels, targets, self.data.name, "target class")
            self.targets = targets
            f_idx = torch.nonzero(torch.isin(labels, torch.tensor(self.forget_classes))).reshape(-1)
            t_idx = torch.nonzero(torch.isin(labels, torch.tensor(sorted(set(targets))))).reshape(-1)
            self.split = ForgetSplit(retain=t_idx, forget=f_idx, description=f"replace {self.forget_classes}")
            self.retain_data = self._labelled(t_idx)
            self.forget_data = self._labelled(f_idx)
        else:
            self.targets = ()
            if self.sample_level:
                from genunlearn.train import read_ids

                self.split = ForgetSplit.by_ids(len(labels), read_ids(data.forget_ids))  # type: ignore[arg-type]
            else:
                self.split = ForgetSplit.by_class(labels, self.forget_classes)
            pick = self._labelled if self.bundle.labelled else self.data.subset
            self.retain_data = pick(self.split.retain)
            self.forget_data = pick(self.split.forget)
        # classes a conditional model should keep generating (the others': neither forgotten nor replaced)
        self.kept_classes = tuple(c for c in sorted(set(labels.tolist())) if c not in self.forget_classes)
        self._original = copy.deepcopy(self.bundle.model)
        self._fid: dict[str, ClassifierFID] = {}
        self._replacements: dict[tuple, LatentReplacement] = {}
        self._terms: dict[tuple, dict[str, Any]] = {}
        self.terms_setup_s: dict[str, float] = {}

    def _labelled(self, index: torch.Tensor) -> Any:
        """Examples at ``index`` with their labels: a ``(x, y)`` tensor pair or a subset of the dataset."""
        examples = self.data.subset(index)
        if isinstance(examples, torch.Tensor):
            return (examples, self.data.labels[index].to(examples.device))
        return examples

    # --- models ----------------------------------------------------------------------------------------------

    def fresh_adapter(self) -> ModelAdapter:
        """A new copy of the original model, as an adapter (frozen parts as the factory declared them)."""
        fresh = self.bundle.load_fresh() if self.bundle.load_fresh is not None else copy.deepcopy(self._original)
        return as_adapter(fresh)

    def fresh_model(self) -> nn.Module:
        """A new copy of the original model (eval mode)."""
        return self.fresh_adapter().model.eval()

    # --- measuring -------------------------------------------------------------------------------------------

    @property
    def conditional_sampler(self) -> bool:
        """Whether the model generates under a class label: the sampler's ``conditional`` attribute, or, when it
        does not say, whether this is a conditional replacement run."""
        return bool(getattr(self.bundle.sampler, "conditional", self.conditional))

    def _generate(self, labels: int | None = None):
        sampler = self.bundle.sampler
        if sampler is None:
            return None
        if labels is None:
            return lambda m, z: sampler.generate(m, z)
        return lambda m, z: sampler.generate(m, z, labels=torch.full((len(z),), labels, device=z.device))  # type: ignore[call-arg]

    def monitor(self, seed: int, n: int | None = None, mode: str | None = None) -> ForgetMonitor | None:
        """Forget monitor with generator inputs fixed by ``seed`` (``None`` without sampler or classifier).

        A class-conditional model generates with the (first) forget label, and the monitor counts that class
        (its class counts then also say what the forget label generates instead: the target's share).
        """
        sampler = self.bundle.sampler
        if sampler is None or self.classifier is None or self.sample_level:
            return None  # sample unlearning: no class to count
        g = torch.Generator().manual_seed(10_000 + seed)
        latents = sampler.draw(n or self.monitor_config.samples, g).to(self.device)
        label = self.forget_classes[0] if self.conditional_sampler else None
        return ForgetMonitor(
            generate=self._generate(label),
            classifier=self.classifier,
            latents=latents,
            forget_classes=self.forget_classes[:1] if self.conditional_sampler else self.forget_classes,
            mode=mode or self.monitor_config.mode,
            num_classes=self.bundle.num_classes,
        )

    def hat(self, objective: ObjectiveConfig) -> HatTerm:
        """The classifier term with ``objective``'s kind, alpha and sample count."""
        if self.sample_level:
            raise ConfigError("classifier-assisted methods count forget classes; with forget_ids there is none")
        sampler = self.bundle.sampler
        if sampler is None or self.classifier is None:
            raise ConfigError("classifier-assisted methods need a model with a sampler and a classifier")
        if not getattr(sampler, "differentiable", True):
            raise ConfigError("classifier-assisted methods need a differentiable sampler; this model's is not")

        def generate(model: nn.Module, n: int) -> torch.Tensor:
            return sampler.generate(model, sampler.draw(n, None).to(self.device))  # type: ignore[arg-type]

        return HatTerm(
            generate=generate,
            classifier=self.classifier,
            forget_classes=self.forget_classes,
            num_classes=self.bundle.num_classes,
            kind=objective.hat_kind,
            alpha=objective.alpha,
            samples=objective.hat_samples,
        )

    def replacement(self, objective: ObjectiveConfig, batch_size: int, targets: str = "data") -> LatentReplacement:
        """The latent replacement term (built once per neighbours/reduction/batch size/targets from the original).

        ``targets``: ``"data"`` (``rep``: the nearest unambiguous retained images) or ``"decoded"``
        (``rep-decoded``: the frozen original's decoding of them).
        """
        if self.bundle.replacement_likelihood is None:
            raise ConfigError("rep needs an encoder-decoder model (a VAE with encode/decode); this model has none")
        key = (objective.replace_neighbors, objective.loss_reduction, batch_size, targets)
        if key not in self._replacements:
            t0 = time.perf_counter()
            self._replacements[key] = LatentReplacement.for_vae(
                self.fresh_model(),
                self.retain_data,
                self.forget_data,
                likelihood=self.bundle.replacement_likelihood,
                neighbours=objective.replace_neighbors,
                samples=batch_size,
                reduction=objective.loss_reduction,
                device=self.device,
                targets=targets,
            )
            self.terms_setup_s["rep"] = time.perf_counter() - t0
        return self._replacements[key]

    def terms(self, names: tuple[str, ...], objective: ObjectiveConfig, batch_size: int) -> dict[str, Any]:
        """The peer methods' extra terms (:mod:`genunlearn.objectives.peer_terms`), built once per options.

        The bundle's own ``peer_terms(names, objective, batch_size)`` is used when it has one; otherwise encoder-
        decoder models (``replacement_likelihood`` set) get the VAE versions and models trained with a
        :class:`~genunlearn.objectives.DiffusionObjective` the diffusion versions. The seconds each build took
        are in :attr:`terms_setup_s` (SA's Fisher estimate is the expensive one).
        """
        from genunlearn.objectives.diffusion import DiffusionObjective
        from genunlearn.objectives.peer_terms import diffusion_terms, vae_terms

        if not names:
            return {}
        key = (names, objective, batch_size)
        if key not in self._terms:
            t0 = time.perf_counter()
            obj = _with_reduction(self.bundle.objective, objective.loss_reduction)
            custom = getattr(self.bundle, "peer_terms", None)
            if custom is not None:
                built = dict(custom(names, objective, batch_size))
            elif self.bundle.replacement_likelihood is not None:
                built = vae_terms(
                    names,
                    self.fresh_model(),
                    _inputs(self.retain_data),
                    _inputs(self.forget_data),
                    likelihood=self.bundle.replacement_likelihood,
                    reduction=objective.loss_reduction,
                    samples=batch_size,
                    fisher_samples=objective.fisher_samples,
                    device=self.device,
                )
            elif isinstance(obj, DiffusionObjective):
                sampler = self.bundle.sampler
                generate = noise_shape = None
                if sampler is not None and getattr(sampler, "conditional", False):
                    noise_shape = tuple(sampler.draw(1, None).shape[1:])

                    def generate(model: nn.Module, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                        return sampler.generate(model, noise, labels=labels)  # type: ignore[call-arg]

                built = diffusion_terms(
                    names,
                    self.fresh_model(),
                    obj,
                    num_classes=self.bundle.num_classes,
                    forget_classes=self.forget_classes,
                    n_data=len(self.data.labels),
                    n_forget=int(self.split.forget.numel()),
                    guidance=objective.guidance,
                    siss_mixture=objective.siss_mixture,
                    siss_forget_scale=objective.siss_forget_scale,
                    generate=generate,
                    noise_shape=noise_shape,
                    samples=batch_size,
                    pool_samples=objective.fisher_samples,
                    device=self.device,
                )
            else:
                raise ConfigError(
                    f"the terms {', '.join(names)} need a VAE (encode/decode) or a diffusion model, or a bundle "
                    "with peer_terms(names, objective, batch_size)"
                )
            missing = [n for n in names if n not in built]
            if missing:
                raise ConfigError(f"this model provides no term {missing[0]!r}")
            self._terms[key] = built
            self.terms_setup_s[",".join(names)] = time.perf_counter() - t0
        return self._terms[key]

    def _fid_reference(self, key: str) -> Any:
        """Real examples FID compares with: all training data (``fid``), or the retained data (``fid_retain``);
        for a class-conditional model the latter is the data of the classes it keeps generating."""
        if key == "fid":
            return self.data.examples
        if self.conditional_sampler:
            keep = torch.nonzero(torch.isin(self.data.labels, torch.tensor(self.kept_classes))).reshape(-1)
            return self.data.subset(keep)
        return self.retain_data[0] if isinstance(self.retain_data, tuple) else self.retain_data

    def fid_metric(self, first: torch.Tensor) -> ClassifierFID:
        """A FID metric on the session classifier's features, sized by one example ``first`` ``(1, ...)`` (its real
        statistics survive ``reset()``: feed a reference once, then compare many generated sets)."""
        if self.classifier is None:
            raise ConfigError("FID needs a classifier (its features)")
        with torch.no_grad():
            fn = getattr(self.classifier, "features", self.classifier)
            width = int(fn(first.to(self.device)).reshape(1, -1).shape[1])
        return ClassifierFID(self.classifier, num_features=width).to(self.device)

    def fid_between(self, reference: torch.Tensor, generated: torch.Tensor) -> float:
        """FID (the session classifier's features) between two sets of samples, e.g. an unlearned and a retrained
        model's from identical inputs (:meth:`samples`)."""
        metric = self.fid_metric(reference[:1])
        metric.update_batches(reference, real=True)
        metric.update_batches(generated, real=False)
        return max(0.0, float(metric.compute()))  # identical sets: 0 up to rounding (which can go below 0)

    def _real_fid(self, key: str) -> ClassifierFID:
        if key not in self._fid:
            examples = self._fid_reference(key)
            first = batch_inputs(examples[:1] if isinstance(examples, torch.Tensor) else examples[0])
            if not isinstance(examples, torch.Tensor):
                first = first.unsqueeze(0)
            metric = self.fid_metric(first)
            if isinstance(examples, torch.Tensor):
                metric.update_batches(examples, real=True)
            else:
                loader = torch.utils.data.DataLoader(examples, batch_size=500, shuffle=False)
                metric.update_batches((batch_inputs(b) for b in loader), real=True)
            self._fid[key] = metric
        return self._fid[key]

    @torch.no_grad()
    def samples(self, model: nn.Module, n: int, seed: int = 0, chunk: int = 5000) -> torch.Tensor:
        """``n`` samples from inputs fixed by ``seed`` (eval mode); a class-conditional model generates the
        classes it keeps (cycling through them)."""
        sampler = self.bundle.sampler
        if sampler is None:
            raise ConfigError("this model has no sampler")
        g = torch.Generator().manual_seed(20_000 + seed)
        out = []
        with eval_mode(model):
            for i in range(0, n, chunk):
                z = sampler.draw(min(chunk, n - i), g).to(self.device)
                if self.conditional_sampler:
                    kept = torch.tensor(self.kept_classes, device=self.device)
                    labels = kept[torch.arange(i, i + len(z), device=self.device) % len(kept)]
                    out.append(sampler.generate(model, z, labels=labels))  # type: ignore[call-arg]
                else:
                    out.append(sampler.generate(model, z))
        return torch.cat(out)

    @torch.no_grad()
    def class_accuracy(self, model: nn.Module, n_per_class: int, seed: int = 0) -> dict[str, Any]:
        """For a class-conditional model: per label, the classes the classifier sees in ``n_per_class`` samples
        from inputs fixed by ``seed`` (identical for every model, so before/after compare sample by sample).

        Returns ``{"accuracy": {label: share classified as that label}, "counts": {label: [count per class]}}``.
        """
        return self.class_accuracies(model, n_per_class, seed)[0]

    @torch.no_grad()
    def class_accuracies(
        self, model: nn.Module, n_per_class: int, seed: int = 0, others: Sequence[nn.Module] = ()
    ) -> list[dict[str, Any]]:
        """:meth:`class_accuracy` by the session's classifier, then by each of ``others`` (e.g. an independent
        classifier) on the very same samples (generated once)."""
        sampler = self.bundle.sampler
        if sampler is None or self.classifier is None or not self.conditional_sampler:
            raise ConfigError("per-class accuracy needs a class-conditional model with a classifier")
        classifiers = [self.classifier, *others]
        results: list[dict[str, Any]] = [
            {"accuracy": {}, "counts": {}, "n_per_class": n_per_class} for _ in classifiers
        ]
        with eval_mode(model), ExitStack() as stack:
            for clf in others:
                stack.enter_context(eval_mode(clf))
            for c in sorted(set(self.data.labels.tolist())):
                g = torch.Generator().manual_seed(30_000 + 97 * seed + c)
                z = sampler.draw(n_per_class, g).to(self.device)
                labels = torch.full((n_per_class,), c, dtype=torch.long, device=self.device)
                samples = sampler.generate(model, z, labels=labels)  # type: ignore[call-arg]
                for out, clf in zip(results, classifiers, strict=True):
                    cnt = torch.bincount(clf(samples).argmax(1).cpu(), minlength=self.bundle.num_classes)
                    out["accuracy"][str(c)] = float(cnt[c]) / n_per_class
                    out["counts"][str(c)] = [int(v) for v in cnt]
        return results

    def fid(
        self, model: nn.Module, n: int, seed: int = 0, keys: tuple[str, ...] = ("fid", "fid_retain")
    ) -> dict[str, float]:
        """FID of ``n`` samples (eval mode) against all training examples (``fid``) and the retained ones."""
        generated = self.samples(model, n, seed)
        out = {}
        for key in keys:
            metric = self._real_fid(key)
            metric.reset()
            metric.update_batches(generated, real=False)
            out[key] = float(metric.compute())
        return out

    # --- running ---------------------------------------------------------------------------------------------

    def task(self, objective: ObjectiveConfig) -> Task:
        """The task: class unlearning with the bundle's task or objective, or conditional replacement."""
        if objective.preserve_weight > 0 and not self.conditional:
            raise ConfigError("--preserve-weight applies to conditional replacement (--replace-with) only")
        if not self.conditional and self.bundle.task is not None:
            return self.bundle.task
        obj = _with_reduction(self.bundle.objective, objective.loss_reduction)
        if not self.conditional:
            return StandardTask(obj)
        cond = getattr(obj, "conditional", None) or self.bundle.conditional_loss
        if cond is None:
            raise ConfigError("--replace-with needs a conditional model (its factory gives no conditional loss)")
        preserve = None
        if objective.preserve_weight > 0:
            others = [c for c in self.kept_classes if c not in self.targets]
            if not others:
                raise ConfigError("--preserve-weight: no class is neither forgotten nor a target")
            index = torch.nonzero(torch.isin(self.data.labels, torch.tensor(others))).reshape(-1)
            preserve = labelled_draws(self._labelled(index))
        preserve_loss = None
        if preserve is not None and objective.preserve_target == "original":
            distill = getattr(obj, "conditional_distillation", None)
            if distill is None:
                raise ConfigError("--preserve-target original needs a diffusion objective (a DiffusionObjective)")
            from genunlearn.objectives.peer_terms import frozen_copy

            preserve_loss = distill(frozen_copy(self.fresh_model()))
        forget, targets = list(self.forget_classes), list(self.targets)
        return ReplacementTask(
            cond,
            forget,
            targets,
            preserve=preserve,
            preserve_weight=objective.preserve_weight,
            preserve_loss=preserve_loss,
        )

    def run(
        self,
        config: UnlearnConfig,
        objective: ObjectiveConfig | None = None,
        *,
        monitor: ForgetMonitor | None = None,
        extra_monitors: dict[str, ForgetMonitor] | None = None,
        log_path: str | Path | None = None,
        progress: bool = True,
        checkpoint: Checkpointing | None = None,
        adapter: AdapterConfig | None = None,
    ) -> tuple[nn.Module, UnlearnResult]:
        """Unlearn with ``config`` (engine) and ``objective`` (terms) on a fresh copy of the original model.

        The monitor defaults to this session's, with inputs fixed by the seed. With ``checkpoint`` the run saves
        its state periodically and continues from a saved one (:class:`~genunlearn.loop.Checkpointing`). With an
        ``adapter`` config of kind ``lora`` the copy is wrapped with peft LoRA (initialised from the seed, so a
        resumed run rebuilds the same adapter) and only the adapter trains; the returned model is then the
        ``peft.PeftModel`` (:mod:`genunlearn.lora`).
        """
        objective = (objective or ObjectiveConfig()).validate()
        method = METHODS[config.validate().method]
        check_adapter_method(adapter, config.method)
        adapter_ = adapt(self.fresh_adapter(), adapter, seed=config.seed)
        result = unlearn(
            adapter_,
            self.task(objective),
            self.retain_data,
            self.forget_data,
            config,
            hat=self.hat(objective) if method.uses_classifier else None,
            replacement=(
                self.replacement(objective, config.batch_size, method.replacement_targets)
                if method.uses_replacement
                else None
            ),
            terms=self.terms(method.terms, objective, config.batch_size),
            monitor=monitor or self.monitor(config.seed),
            extra_monitors=extra_monitors,
            log_path=log_path,
            progress=progress,
            num_workers=self.data_config.num_workers,
            checkpoint=checkpoint,
        )
        return adapter_.model.eval(), result

    def check_batch(self, objective: ObjectiveConfig) -> None:
        """Evaluate the task once on one example of each set: a model/data mismatch becomes one clear line."""
        task = self.task(objective)
        for name, data, fn in (
            ("retain", self.retain_data, task.retain_loss),
            ("forget", self.forget_data, task.forget_loss),
        ):
            if data_length(data) == 0:
                continue
            batch = _first_two(data, self.device)
            model = self.fresh_model()
            try:
                with torch.no_grad():
                    loss = fn(model, batch)
            except (DataError, ConfigError):
                raise
            except Exception as exc:  # the model could not process the data
                shape = tuple(batch_inputs(batch).shape[1:])
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DataError(
                    f"the model cannot process the {name} data (examples of shape {shape}): {msg}"
                ) from None
            if loss.ndim != 0:
                raise DataError(f"the objective returned a loss of shape {tuple(loss.shape)}, expected a scalar")


def _inputs(data: Any) -> Any:
    """The examples of a data set without labels: ``x`` of an ``(x, y)`` pair, else the data itself."""
    return data[0] if isinstance(data, tuple) else data


def check_adapter_method(adapter: AdapterConfig | None, method: str) -> None:
    """Refuse (one line) a method that cannot train through the adapter: EWC penalises the model's own weights."""
    if adapter is not None and adapter.enabled and "ewc" in METHODS[method].terms:
        raise ConfigError(
            f"method {method!r} penalises changes of the model's own weights (EWC), which a LoRA adapter leaves "
            "frozen; run it without --adapter"
        )


def _first_two(data: Any, device: torch.device) -> Any:
    from genunlearn.data.batching import to_device

    if isinstance(data, torch.Tensor):
        return data[:2].to(device)
    if isinstance(data, tuple):
        return tuple(t[:2].to(device) for t in data)
    return to_device(torch.utils.data.default_collate([data[0], data[min(1, len(data) - 1)]]), device)


def run_to_dir(
    cfg: RunConfig,
    out: str | Path,
    *,
    progress: bool = True,
    command: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_every: int = 50,
) -> dict[str, Any]:
    """Run one unlearning job and write ``summary.json``, ``config.toml``, ``log.csv`` and the model
    (``model.safetensors``, the bundle's own format, or with a LoRA adapter ``adapter/``).

    The output directory is checked first (:func:`~genunlearn.outputs.prepare_run_dir`: writable, and holding no
    other run unless ``overwrite``). The run saves ``checkpoint.pt`` every ``checkpoint_every`` updates (and on
    Ctrl-C); ``resume`` continues an unfinished run of the same config from it, with the result of the
    uninterrupted run. ``summary.json`` is written last and the checkpoint is removed after it.

    Under torch.distributed (``torchrun``) every rank runs the job data parallel; rank 0 alone checks the output
    directory, measures FID and writes the outputs (the other ranks return the summary without writing). Such
    runs save no checkpoint, and ``resume`` is refused.
    """
    record_start()
    cfg.validate()
    world = distributed.default_group_world()
    main = world == 1 or torch.distributed.get_rank() == 0
    if world > 1:
        if resume:
            raise ConfigError("--resume is not supported for data-parallel (torchrun) runs: they save no checkpoint")
        check_data_parallel(cfg.unlearn.method)
    check_adapter_method(cfg.adapter, cfg.unlearn.method)
    out = Path(out)
    if (
        cfg.model.checkpoint is not None
        and (out / "model.safetensors").resolve() == Path(cfg.model.checkpoint).resolve()
    ):
        raise ConfigError(f"{out / 'model.safetensors'}: refusing to overwrite the input checkpoint")
    if checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    protected = (cfg.model.checkpoint,) if cfg.model.checkpoint is not None else ()
    state = distributed.on_main(
        lambda: prepare_run_dir(out, cfg, resume=resume, overwrite=overwrite, protected=protected)
    )
    if state == "complete":
        return json.loads((out / "summary.json").read_text())
    ck_path = out / "checkpoint.pt"
    resumed_from = read_checkpoint(ck_path)["step"] if state == "resume" and ck_path.is_file() else None
    t0 = time.perf_counter()
    session = UnlearnSession(
        cfg.model, cfg.data, cfg.monitor, device=cfg.run.device, loss_reduction=cfg.objective.loss_reduction
    )
    session.check_batch(cfg.objective)
    if main:
        atomic_write_text(out / "config.toml", cfg.to_toml())
    n_fid = cfg.monitor.fid_samples if main else 0
    fid_before = session.fid(session.fresh_model(), n_fid, cfg.unlearn.seed) if n_fid > 0 else {}
    checkpointing = Checkpointing(ck_path, every=checkpoint_every, resume=state == "resume") if world == 1 else None
    try:
        model, result = session.run(
            cfg.unlearn,
            cfg.objective,
            log_path=out / "log.csv",
            progress=progress,
            checkpoint=checkpointing,
            adapter=cfg.adapter,
        )
    except KeyboardInterrupt:
        if checkpointing is None:
            raise
        step = read_checkpoint(ck_path)["step"] if ck_path.is_file() else None
        where = f"the checkpoint of update {step}" if step is not None else "the start (no checkpoint yet)"
        raise KeyboardInterrupt(f"{out}: interrupted; `--resume` continues from {where}") from None
    fid_after = session.fid(model, n_fid, cfg.unlearn.seed) if n_fid > 0 else {}
    written: list[str] = []
    if main:
        written = save_unlearned(
            model,
            out,
            config=cfg.adapter,
            original=session.fresh_model(),
            metadata={"run_config": cfg.to_dict()},
            save=session.bundle.save,
        )
    inputs = dict(session.bundle.info.get("inputs") or {})
    if cfg.data.forget_ids is not None:
        inputs["forget_ids"] = cfg.data.forget_ids
    summary: dict[str, Any] = {
        "method": cfg.unlearn.method,
        "seed": cfg.unlearn.seed,
        **result.summary(),
        "fid_original": fid_before.get("fid"),
        "fid_final": fid_after.get("fid"),
        "fid_retain_original": fid_before.get("fid_retain"),
        "fid_retain_final": fid_after.get("fid_retain"),
        "model": session.bundle.description or cfg.model.name,
        "forget": list(session.forget_classes),
        "replace_with": list(session.targets),
        "forget_set_size": int(session.split.forget.numel()),
        "terms_setup_s": session.terms_setup_s.get(
            "rep" if METHODS[cfg.unlearn.method].uses_replacement else ",".join(METHODS[cfg.unlearn.method].terms)
        ),
        "retain_set_size": int(session.split.retain.numel()),
        "config": asdict(cfg.unlearn),
        "objective": asdict(cfg.objective),
        "run_config": cfg.to_dict(),
        "outputs": written,  # relative to the run folder
        "data_parallel": (
            {"world_size": world, "backend": str(torch.distributed.get_backend())} if world > 1 else None
        ),
        "command": command,
        "wall_time_s": time.perf_counter() - t0,
        "resumed_from_update": resumed_from,
        "versions": versions(),
        "provenance": run_record(cfg.to_dict(), inputs=inputs),
    }
    if main:
        atomic_write_json(out / "summary.json", summary)
        ck_path.unlink(missing_ok=True)  # the run is complete: summary.json marks it
    return summary

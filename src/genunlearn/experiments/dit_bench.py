"""``genunlearn bench mnist-dit``: the paper's conditional replacement experiment (section 4.4) on the MNIST DiT.

The paper replaces ImageNet class 207 by 208 in DiT-XL/2 (100 updates, batch 10, lr 1e-4, beta_o 2e-2; S, UNO,
UNO-S). Here the class-conditional MNIST DiT (bundled, ``mnist-dit``) replaces digit ``forget`` by ``target``
with every applicable method of the engine, over seeds, and measures what a user asks:

- how many updates and seconds of compute until samples generated with the forget label are no longer
  classified as the forget class (monitor: ``monitor_samples`` fixed initial noises per seed, read every
  ``monitor_every`` updates, Wilson intervals), and what share of them now look like the target;
- whether the *other* classes still generate themselves: per-class accuracy before and after from identical
  noises (the collateral damage), and FID (classifier features) of the kept classes' samples;
- with ``--independent-classifier``, a second MNIST classifier's reading of the very same final samples (the
  forget label's share still its own class and the target's share, the other labels' accuracy), for the original
  and every run: a forgetting claim holds only where both classifiers show it;
- time per step (compute only) and, once per method, the peak memory of live tensors in one step;
- with ``--retrained FILE`` (a DiT trained without the forget label: ``genunlearn train dit --exclude-class``), the
  gold standard of forgetting: that model measured like the original, and for every run its distance to it: the
  FID between the two models' kept-label samples from identical noises and labels, and the total-variation
  distance between the class histograms of their forget-label samples (identical monitor noises).

Outputs in ``--out``: ``table.md``/``table.csv``, ``results.json`` (aggregates, per-class accuracies, provenance),
``runs/<method>/seed<k>.json`` (compact per-seed records with curves), ``figures/`` (before/after grids from
identical noise and labels = paper figure 4, per-class accuracy bars, the forget label's class histogram,
forget-fraction curves). Resumable like the MNIST bench.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from genunlearn.checkpoints import atomic_write_csv, atomic_write_text, load_into, save_weights
from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
from genunlearn.errors import ConfigError
from genunlearn.eval.collateral import histogram_tv
from genunlearn.eval.memory import peak_live_tensor_bytes
from genunlearn.eval.monitor import wilson_interval
from genunlearn.experiments.bench import first_below, held_below, read_bench_audit, render_audit_section, stays_below
from genunlearn.experiments.records import check_resumed as _check_resumed
from genunlearn.experiments.records import dumps_compact, read_seed_record, weight_inputs, write_seed_record
from genunlearn.experiments.session import UnlearnSession
from genunlearn.loop import UnlearnConfig
from genunlearn.lora import AdapterConfig, adapt, merged
from genunlearn.methods import METHODS, StepContext
from genunlearn.objectives import ObjectiveConfig
from genunlearn.provenance import file_fingerprint, record_start, run_record, summarise_provenance

#: The methods of the DiT bench: the paper's three, genunlearn's approximate UNO, the ascent baselines, and plain
#: replacement fine-tuning (descent on L^R of eq. 4 alone: what orthogonalisation must beat).
DIT_METHODS: dict[str, str] = {
    "s": "Gradient surgery (S)",
    "uno": "UNO",
    "uno-s": "UNO-S",
    "uno-fd": "UNO-FD (finite-difference HVPs, genunlearn)",
    "a": "Gradient ascent (A)",
    "sa": "Surgery ascent (SA)",
    "d": "Replacement fine-tuning (descent on L^R)",
}


@dataclass(frozen=True)
class DiTBenchSettings:
    """Settings of the DiT bench (defaults: the paper's Table 2 ImageNet row where it has one).

    Attributes:
        seeds: number of seeds (0..seeds-1).
        steps: updates per run (paper: K = 100).
        lr: learning rate (paper: 1e-4).
        batch_size: retain (target) and forget batch size (paper: 10).
        beta_o: orthogonality weight (paper: 2e-2 for the DiT).
        loss_reduction: the denoising loss's reduction (the reference code's DiT loss is a mean).
        forget, target: replace digit ``forget`` by digit ``target``.
        threshold: forget fraction that counts as replaced (paper: 0.02).
        monitor_samples: fixed initial noises of the monitor (generated with the forget label).
        monitor_every: updates between monitor readings.
        sampler_steps, guidance_scale, sampler: the monitor's and the measures' sampler.
        class_samples: samples per class for per-class accuracy before/after (identical noises).
        fid_samples: samples of the kept classes for FID after each run (0: skip).
        grid_per_class: samples per class in the before/after grids (seed 0).
        measure_memory: measure each method's peak live-tensor memory in one step (the CPU profiler is slow).
        preserve_weight: weight of genunlearn's retain term over the other labels (their denoising loss on
            their own data, :class:`~genunlearn.objectives.ReplacementTask`); 0: the paper's L^R.
        preserve_target: ``"data"`` (that term is the other labels' denoising loss) or ``"original"`` (their
            predictions held to the frozen original's: a distillation).
        early_stop: stop each run at the first monitor reading below the threshold (what a user would do;
            the measures are then of the model at that update, and "held" cannot be decided).
        lora_rank: train a LoRA adapter of this rank (peft; base frozen; measured and saved merged) instead of the
            model's own weights; 0: full fine-tuning (the paper's).
        lora_targets: the layers the adapter adapts (:class:`~genunlearn.lora.AdapterConfig`'s ``target_modules``).
        trainable: train only the parameters these patterns select, the rest of the DiT unchanged
            (:class:`~genunlearn.lora.AdapterConfig`'s ``trainable``; e.g. ``class_embedder``: the label-embedding
            tables); empty: every parameter (the paper's).
        ewc_lambda, replay_weight: ``amnesia``'s EWC weight lambda and replay weight gamma (the engine's defaults,
            100 and 1, are Selective Amnesia's MNIST values; what lambda means depends on the loss's scale).
        retrained: weights of the same DiT trained without the forget label (the gold standard; ``None``: none).
        independent_classifier: weights of a second MNIST classifier that re-reads the final samples (``None``: the
            bundled classifier's readings only); a resume with another file (sha256) is refused, not its path.
        independent_classifier_sha256: that file's sha256 (filled in by the bench; a given one must match).
        independent_classifier_bn: whether it applies ``bn1``; ``None``: as the file records, and applied when the
            file does not say (the UNO authors' classifier: their own forward skips it and is poorly calibrated,
            docs/audit.md). The bench records the resolved value.
    """

    seeds: int = 3
    steps: int = 100
    lr: float = 1e-4
    batch_size: int = 10
    beta_o: float = 2e-2
    loss_reduction: str = "mean"
    forget: int = 1
    target: int = 7
    threshold: float = 0.02
    monitor_samples: int = 200
    monitor_every: int = 5
    sampler_steps: int = 10
    guidance_scale: float = 2.0
    sampler: str = "dpm++"
    class_samples: int = 100
    fid_samples: int = 1000
    grid_per_class: int = 6
    measure_memory: bool = True
    preserve_weight: float = 0.0
    preserve_target: str = "data"
    early_stop: bool = False
    lora_rank: int = 0
    lora_targets: tuple[str, ...] = ("all",)
    trainable: tuple[str, ...] = ()
    ewc_lambda: float = 100.0
    replay_weight: float = 1.0
    retrained: str | None = None
    independent_classifier: str | None = None
    independent_classifier_sha256: str | None = None
    independent_classifier_bn: bool | None = None

    @classmethod
    def quick(cls) -> DiTBenchSettings:
        """A smoke-test setting (minutes on a CPU with the bundled DiT)."""
        return cls(
            seeds=1,
            steps=4,
            monitor_samples=16,
            monitor_every=2,
            sampler_steps=4,
            class_samples=8,
            fid_samples=64,
            measure_memory=False,
        )


def make_session(settings: DiTBenchSettings, checkpoint: str | None, device: str = "auto") -> UnlearnSession:
    """The replacement session (digit ``forget`` -> ``target``) with the bench's sampler settings."""
    options = {
        "sampler_steps": settings.sampler_steps,
        "guidance_scale": settings.guidance_scale,
        "sampler": settings.sampler,
    }
    return UnlearnSession(
        ModelConfig(name="mnist-dit", checkpoint=checkpoint, options=options),
        DataConfig(forget=(settings.forget,), replace_with=(settings.target,)),
        MonitorConfig(samples=settings.monitor_samples),
        device=device,
        loss_reduction=settings.loss_reduction,
    )


def _config(method: str, s: DiTBenchSettings, seed: int) -> UnlearnConfig:
    return UnlearnConfig(
        method=method,
        steps=s.steps,
        lr=s.lr,
        batch_size=s.batch_size,
        beta_o=s.beta_o,
        ewc_lambda=s.ewc_lambda,
        replay_weight=s.replay_weight,
        stop_at=s.threshold,
        early_stop=s.early_stop,
        seed=seed,
        monitor_every=s.monitor_every,
    ).validate()


def _objective(s: DiTBenchSettings) -> ObjectiveConfig:
    return ObjectiveConfig(
        loss_reduction=s.loss_reduction, preserve_weight=s.preserve_weight, preserve_target=s.preserve_target
    ).validate()


def _adapter(s: DiTBenchSettings) -> AdapterConfig | None:
    if s.trainable:
        if s.lora_rank:
            raise ConfigError("--trainable restricts the DiT's own weights; it does not combine with --lora-rank")
        return AdapterConfig(trainable=tuple(s.trainable)).validate()
    if not s.lora_rank:
        return None
    return AdapterConfig(kind="lora", rank=s.lora_rank, target_modules=tuple(s.lora_targets)).validate()


def resolve_independent(s: DiTBenchSettings) -> DiTBenchSettings:
    """``s`` with its independent classifier's sha256 and ``bn1`` use filled in (unchanged without one)."""
    from genunlearn.experiments.audit import independent_bn

    path = s.independent_classifier
    if path is None:
        if s.independent_classifier_sha256 is not None or s.independent_classifier_bn is not None:
            raise ConfigError("an independent classifier's sha256 or bn1 use needs --independent-classifier")
        return s
    if not Path(path).is_file():
        raise ConfigError(f"{path}: independent classifier not found")
    sha = (file_fingerprint(path) or {})["sha256"]
    if s.independent_classifier_sha256 not in (None, sha):
        raise ConfigError(f"{path}: sha256 {sha}, the settings ask for {s.independent_classifier_sha256}")
    use_bn = independent_bn(path, s.independent_classifier_bn)
    return replace(s, independent_classifier_sha256=sha, independent_classifier_bn=use_bn)


def load_independent(session: UnlearnSession, s: DiTBenchSettings) -> Any | None:
    """The independent classifier of resolved settings ``s`` (weights only, no pickles), or ``None``."""
    from genunlearn.experiments.audit import _independent

    if s.independent_classifier is None:
        return None
    return _independent(session, s.independent_classifier, s.independent_classifier_bn, allow_pickle=False)


def independent_reading(
    reading: Any, accuracy: dict[str, Any], s: DiTBenchSettings, kept: list[str], final: bool
) -> dict[str, Any]:
    """The independent classifier's fields of a run's record (``final``: ``forget_fraction_final_independent``
    ...) or of the original (``forget_fraction_independent`` ...): the forget label's share still called the
    forget class (with its Wilson interval), the target's share, the class counts, the per-class accuracy and the
    other labels' mean accuracy, named like the session classifier's with ``_independent`` appended."""

    def name(base: str, tail: str = "") -> str:
        return f"{base}{'_final' if final else ''}{tail}_independent"

    return {
        name("forget_fraction"): reading.fraction,
        name("forget_fraction", "_ci"): [reading.ci_low, reading.ci_high],
        name("target_share"): reading.class_counts[s.target] / reading.n,
        name("class_counts"): list(reading.class_counts),
        name("class_accuracy"): accuracy,
        name("accuracy_other_classes"): statistics.fmean(accuracy["accuracy"][c] for c in kept),
    }


def run_one(
    session: UnlearnSession,
    method: str,
    s: DiTBenchSettings,
    seed: int,
    independent: Any | None = None,
    gold: Gold | None = None,
) -> tuple[dict[str, Any], Any]:
    """One (method, seed): the JSON-able record and the model (with a LoRA adapter: merged into its weights).

    ``independent``: a second classifier (:func:`load_independent`) re-reading the final samples (after the timed
    run, from the very same samples the session's classifier reads); ``gold``: the retrained model's references
    (:class:`Gold`), whose distances to the final model join the record."""
    cfg = _config(method, s, seed)
    objective = _objective(s)
    monitor = session.monitor(seed)
    model, result = session.run(cfg, objective, monitor=monitor, progress=False, adapter=_adapter(s))
    model = merged(model).eval()
    log = result.log
    ff = [row.get("forget_fraction", math.nan) for row in log]
    times = [row["compute_time_s"] for row in log]
    others = [] if independent is None else [independent]
    final, *final_ind = monitor.measure_with(model, others)
    accuracy, *accuracy_ind = session.class_accuracies(model, s.class_samples, seed=0, others=others)
    kept = [str(c) for c in session.kept_classes if c != s.target]
    monitored = [v for v in ff if not math.isnan(v)]
    every = s.monitor_every

    def update_of(reading: int | None) -> int | None:
        return None if reading is None else reading * every

    first_r, stay_r = first_below(monitored, s.threshold), stays_below(monitored, s.threshold)
    u = update_of(first_r)
    record = {
        "method": method,
        "label": DIT_METHODS.get(method, method),
        "seed": seed,
        "status": result.status,
        "steps_run": result.steps_run,
        "updates_to_unlearn": u,
        "time_to_unlearn_s": None if u is None else times[u],
        "updates_to_stay": update_of(stay_r),
        "held": held_below(monitored, s.threshold, max(1, 20 // every)),
        "time_per_step_s": result.time_per_step_s,
        "time_per_step_mean_s": result.time_per_step_mean_s,
        "time_per_phase_s": result.time_per_phase_s,
        "forget_fraction_initial": ff[0],
        "forget_fraction_final": final.fraction,
        "forget_fraction_final_ci": [final.ci_low, final.ci_high],
        "target_share_final": final.class_counts[s.target] / final.n,
        "class_counts_final": list(final.class_counts),
        "class_accuracy_final": accuracy,
        "fid_kept_final": session.fid(model, s.fid_samples, seed)["fid_retain"] if s.fid_samples else None,
        "curve": {"forget_fraction": ff, "compute_time_s": times},
        "config": asdict(cfg),
        "objective": asdict(objective),
        "provenance": run_record(
            {"method": method, "settings": asdict(s)}, inputs=weight_inputs(session, s.independent_classifier)
        ),
    }
    if independent is not None:
        record.update(independent_reading(final_ind[0], accuracy_ind[0], s, kept, final=True))
    if gold is not None:
        record.update(gold.distances(session, model, seed, [r.class_counts for r in (final, *final_ind)]))
    return record, model


@dataclass
class Gold:
    """The retrained model (trained without the forget label) and its references per seed, for distances.

    Per seed: the class histogram of its forget-label samples from the monitor's noises (by the session's
    classifier and, with one, the independent classifier) and its kept-label samples from the FID noises.
    """

    model: Any
    others: list[Any]
    fid_samples: int
    _refs: dict[int, tuple[list[tuple[int, ...]], Any]] = field(default_factory=dict)

    def reference(self, session: UnlearnSession, seed: int) -> tuple[list[tuple[int, ...]], Any]:
        if seed not in self._refs:
            readings = session.monitor(seed).measure_with(self.model, self.others)  # type: ignore[union-attr]
            samples = session.samples(self.model, self.fid_samples, seed) if self.fid_samples else None
            self._refs[seed] = ([r.class_counts for r in readings], samples)
        return self._refs[seed]

    def distances(
        self, session: UnlearnSession, model: Any, seed: int, histograms: Sequence[Sequence[int]]
    ) -> dict[str, Any]:
        """``model``'s distances to the retrained model on seed ``seed``'s noises; ``histograms``: the class counts of
        the model's forget-label samples on those monitor noises, as already measured (session classifier first,
        then the independent one's)."""
        counts, gold_samples = self.reference(session, seed)
        out: dict[str, Any] = {"tv_forget_label_to_retrained": histogram_tv(histograms[0], counts[0])}
        if len(histograms) > 1 and len(counts) > 1:
            out["tv_forget_label_to_retrained_independent"] = histogram_tv(histograms[1], counts[1])
        if gold_samples is not None:
            samples = session.samples(model, self.fid_samples, seed)
            out["fid_kept_to_retrained"] = session.fid_between(gold_samples, samples)
        return out


def step_memory(session: UnlearnSession, method: str, s: DiTBenchSettings) -> int:
    """Peak bytes of live tensors in one step of ``method`` (the update direction computed, not applied)."""
    from genunlearn.data.batching import infinite_batches, stream_generators
    from genunlearn.loop import attention_kernels

    adapter = adapt(session.fresh_adapter(), _adapter(s))
    model = adapter.model
    params = adapter.trainable_parameters()
    cfg = _config(method, s, 0)
    task = session.task(_objective(s))
    g_r, g_f = stream_generators(0)
    xr = next(infinite_batches(session.retain_data, s.batch_size, g_r, device=session.device))
    xf = next(infinite_batches(session.forget_data, s.batch_size, g_f, device=session.device))
    m = METHODS[method]()
    ctx = StepContext(
        params=params,
        retain_loss=lambda: task.retain_loss(model, xr),
        forget_loss=lambda: task.forget_loss(model, xf),
        hp=cfg.method_params,
        buffers=list(model.buffers()),
    )

    def step():
        with adapter.step_modes(), attention_kernels(m.needs_double_backward(ctx)):
            return m.compute(ctx).direction

    return peak_live_tensor_bytes(step, session.device)


#: Settings a resumed record may differ in: they do not change a (method, seed) record's numbers (the independent
#: classifier's path neither: its sha256 and bn1 use are checked).
RESUME_FREE = ("seeds", "measure_memory", "independent_classifier")


def check_resumed(record: dict[str, Any], s: DiTBenchSettings, path: Path) -> None:
    """Refuse to reuse a per-seed record made with other settings (:func:`.records.check_resumed`)."""
    _check_resumed(record, s, path, RESUME_FREE)


def _ms(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _f(ms: tuple[float | None, float | None], spec: str = ".3f", scale: float = 1.0) -> str:
    m, sd = ms
    return "—" if m is None else f"{m * scale:{spec}} ({(sd or 0.0) * scale:{spec}})"


def aggregate(records: dict[str, list[dict]], original: dict[str, Any], memory: dict[str, int]) -> list[dict]:
    """Per-method means and standard deviations over seeds (updates and times over the seeds that reached)."""
    rows = []
    for method in records:
        recs = records[method]
        reached = [r for r in recs if r["updates_to_unlearn"] is not None]
        kept = [str(c) for c in original["kept_classes"] if c != original["target"]]
        acc_other = [statistics.fmean(r["class_accuracy_final"]["accuracy"][c] for c in kept) for r in recs]
        acc_target = [r["class_accuracy_final"]["accuracy"][str(original["target"])] for r in recs]
        independent = {}
        if any(r.get("forget_fraction_final_independent") is not None for r in recs):
            independent = {
                f"{key}_independent": _ms([r.get(f"{key}_independent") for r in recs])
                for key in ("forget_fraction_final", "target_share_final", "accuracy_other_classes_final")
            }
        rows.append(
            {
                "method": method,
                "label": recs[0]["label"],
                "seeds": len(recs),
                "reached": len(reached),
                "held": sum(r["held"] is True for r in recs),
                "updates_to_unlearn": _ms([r["updates_to_unlearn"] for r in reached]),
                "time_to_unlearn_s": _ms([r["time_to_unlearn_s"] for r in reached]),
                "forget_fraction_final": _ms([r["forget_fraction_final"] for r in recs]),
                "target_share_final": _ms([r["target_share_final"] for r in recs]),
                "accuracy_other_classes": _ms(acc_other),
                "accuracy_target": _ms(acc_target),
                **independent,
                "fid_kept": _ms([r["fid_kept_final"] for r in recs]),
                **{
                    key: _ms([r.get(key) for r in recs])
                    for key in (
                        "fid_kept_to_retrained",
                        "tv_forget_label_to_retrained",
                        "tv_forget_label_to_retrained_independent",
                    )
                    if any(r.get(key) is not None for r in recs)
                },
                "time_per_step_s": _ms([r["time_per_step_s"] for r in recs]),
                "peak_memory_mib": memory.get(method, 0) / 2**20 if memory.get(method) else None,
                "per_seed_updates": [r["updates_to_unlearn"] for r in recs],
            }
        )
    return rows


def render_table(
    rows: list[dict],
    original: dict[str, Any],
    s: DiTBenchSettings,
    title: str,
    audit: dict[str, Any] | None = None,
    retrained: dict[str, Any] | None = None,
) -> str:
    """Markdown: one row per method (mean (std) over seeds), and the audit of the seed-0 models when ``OUT/audit``
    holds one (``genunlearn audit`` on ``runs/<method>/seed0.safetensors``). With an independent classifier
    (``s.independent_classifier``) its readings of the same samples join as three more columns; with a retrained
    model (``retrained``: :func:`measure_reference` of it) the distances to it, and the original and the retrained
    model as the first two rows."""
    f, t = original["forget"], original["target"]
    lo, hi = original["forget_fraction_ci"]
    indep = s.independent_classifier is not None
    ind_head = (
        f"| {f} -> {f} after, independent | {f} -> {t} after, independent | accuracy, other classes, independent "
        if indep
        else ""
    )
    out = [
        f"# {title}",
        "",
        f"Original model: samples with label {f} classified as {f}: {original['forget_fraction']:.3f} "
        f"(95% CI {lo:.3f}-{hi:.3f}, {original['monitor_n']} samples, seed 0's noises); as {t}: "
        f"{original['target_share']:.3f}. Per-class accuracy of the other classes "
        f"{original['accuracy_other_classes']:.3f}, of class {t} {original['accuracy_target']:.3f} "
        f"({s.class_samples} samples per class); FID of the kept classes' samples "
        f"{_opt(original.get('fid_kept'), '.2f')} ({s.fid_samples} samples, classifier features). "
        f"{s.seeds} seeds, K = {s.steps} updates, batch {s.batch_size}, lr {s.lr:g}, beta_o {s.beta_o:g}, "
        f"{s.loss_reduction} loss{_amnesia_note(s, rows)}{_preserve_note(s)}{_lora_note(s)}{_stop_note(s)}; "
        f"monitor: {s.monitor_samples} noises per seed, read every "
        f"{s.monitor_every} updates; sampler {s.sampler} {s.sampler_steps} steps, guidance {s.guidance_scale:g}. "
        "Mean (std) over seeds; updates and time over the seeds that reached the threshold. Held: below the "
        "threshold for the next 20 updates after first reaching it. Memory: live tensors of one step (profiler), "
        "one measurement."
        f"{_independent_note(original, s) if indep else ''}",
        "",
        f"| method | updates to < {s.threshold:g} | time to unlearn (s) | reached · held | {f} -> {f} after "
        f"| {f} -> {t} after | accuracy, other classes | accuracy, class {t} {ind_head}| FID kept classes "
        f"{_gold_head(f, indep) if retrained else ''}| time per step (ms) | peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|"
        + ("---|---|---|" if indep else "")
        + (("---|" * (3 if indep else 2)) if retrained else ""),
    ]
    if retrained is not None:
        out[2] += _retrained_note(retrained, original, s, indep)
        out += _reference_rows(original, retrained, s, indep)
    for r in rows:
        mem = "—" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.1f}"
        ind = ""
        if indep:
            keys = ("forget_fraction_final", "target_share_final", "accuracy_other_classes_final")
            ind = "".join(f"| {_f(r.get(f'{k}_independent') or (None, None))} " for k in keys)
        gold = ""
        if retrained is not None:
            keys = ("fid_kept_to_retrained", "tv_forget_label_to_retrained")
            keys += ("tv_forget_label_to_retrained_independent",) if indep else ()
            gold = "".join(f"| {_f(r.get(k) or (None, None), '.2f' if k.startswith('fid') else '.3f')} " for k in keys)
        out.append(
            f"| {r['label']} | {_f(r['updates_to_unlearn'], '.1f')} | {_f(r['time_to_unlearn_s'], '.2f')} "
            f"| {r['reached']}/{r['seeds']} · {r['held']}/{r['seeds']} | {_f(r['forget_fraction_final'])} "
            f"| {_f(r['target_share_final'])} | {_f(r['accuracy_other_classes'])} | {_f(r['accuracy_target'])} "
            f"{ind}| {_f(r['fid_kept'], '.2f')} {gold}| {_f(r['time_per_step_s'], '.0f', 1e3)} | {mem} |"
        )
    if audit is not None:
        entries = [{"entry": r["method"], "label": r["label"], "fidelity": True} for r in rows]
        out += ["", *render_audit_section(audit, entries)]
    return "\n".join(out).rstrip("\n")


def _gold_head(f: int, indep: bool) -> str:
    head = f"| FID kept classes to retrained | label {f} histogram TV to retrained "
    return head + (f"| label {f} histogram TV to retrained, independent " if indep else "")


def _retrained_note(retrained: dict[str, Any], original: dict[str, Any], s: DiTBenchSettings, indep: bool) -> str:
    f = s.forget
    hist = ", ".join(f"{c}: {n}" for c, n in enumerate(retrained["class_counts"]) if n)
    return (
        f" Gold standard: the DiT retrained without label {f} (`{s.retrained}`), measured like the original (first "
        f"rows; its label-{f} samples are classified as {hist} of {retrained['monitor_n']}: the retrained model never "
        f"saw label {f}, whose embedding keeps its initialisation). Distances to it, per seed on that seed's noises: "
        f"the FID between the two models' samples of the kept labels ({s.fid_samples} samples, identical noises "
        f"and labels; classifier features) and the total-variation distance between the class histograms of "
        f"their label-{f} samples ({s.monitor_samples} monitor noises)"
        + (", also by the independent classifier" if indep else "")
        + ". A method that replaces the label by another digit is not aiming at the retrained model's label "
        f"{f}: for it the histogram distance says how far that replacement is from 'never learned'."
    )


def _reference_rows(original: dict[str, Any], retrained: dict[str, Any], s: DiTBenchSettings, indep: bool) -> list[str]:
    rows = []
    to = original.get("to_retrained") or {}
    for label, ref, dist in (
        ("original (before unlearning)", original, to),
        (f"retrained without label {s.forget} (gold)", retrained, None),
    ):
        ind = ""
        if indep:
            keys = ("forget_fraction", "target_share", "accuracy_other_classes")
            ind = "".join(f"| {_opt(ref.get(f'{k}_independent'), '.3f')} " for k in keys)
        if dist is None:
            gold = "| 0 " * (3 if indep else 2)
        else:
            gold = f"| {_opt(dist.get('fid_kept_to_retrained'), '.2f')} "
            gold += f"| {_opt(dist.get('tv_forget_label_to_retrained'), '.3f')} "
            gold += f"| {_opt(dist.get('tv_forget_label_to_retrained_independent'), '.3f')} " if indep else ""
        rows.append(
            f"| {label} | — | — | — | {ref['forget_fraction']:.3f} | {ref['target_share']:.3f} "
            f"| {ref['accuracy_other_classes']:.3f} | {ref['accuracy_target']:.3f} {ind}"
            f"| {_opt(ref.get('fid_kept'), '.2f')} {gold}| — | — |"
        )
    return rows


def _independent_note(original: dict[str, Any], s: DiTBenchSettings) -> str:
    f, t = original["forget"], original["target"]
    sha = s.independent_classifier_sha256 or ""
    bn = {True: "bn1 applied", False: "bn1 skipped"}.get(s.independent_classifier_bn, "bn1 as recorded")
    head = (
        f" Independent classifier `{s.independent_classifier}` (sha256 {sha[:12]}, {bn}) re-reads the very same "
        "final samples (the three independent columns): a forgetting claim holds only where both classifiers show it"
    )
    if original.get("forget_fraction_independent") is None:
        return head + "."
    lo, hi = original["forget_fraction_ci_independent"]
    return (
        f"{head}; on the original model it reads label {f} as {f}: {original['forget_fraction_independent']:.3f} "
        f"(95% CI {lo:.3f}-{hi:.3f}), as {t}: {original['target_share_independent']:.3f}, other classes' accuracy "
        f"{original['accuracy_other_classes_independent']:.3f}."
    )


def _amnesia_note(s: DiTBenchSettings, rows: list[dict]) -> str:
    if not any(r["method"] == "amnesia" for r in rows):
        return ""
    return f", amnesia: EWC lambda {s.ewc_lambda:g}, replay weight {s.replay_weight:g}"


def _stop_note(s: DiTBenchSettings) -> str:
    if not s.early_stop:
        return ""
    return (
        "; each run stops at the first monitor reading below the threshold (the after-columns measure the model "
        "there; held cannot be decided)"
    )


def _lora_note(s: DiTBenchSettings) -> str:
    if s.trainable:
        return f", only the parameters {','.join(s.trainable)} select trained (the rest of the DiT unchanged)"
    if not s.lora_rank:
        return ""
    return f", LoRA rank {s.lora_rank} on {','.join(s.lora_targets)} (peft, base frozen; measured merged)"


def _preserve_note(s: DiTBenchSettings) -> str:
    if not s.preserve_weight:
        return ""
    if s.preserve_target == "original":
        return (
            f", plus a retain term over the other labels (their predictions on their own noised data held to the "
            f"frozen original's, weight {s.preserve_weight:g}; genunlearn, not the paper's L^R)"
        )
    return (
        f", plus a retain term over the other labels (their denoising loss on their own data, weight "
        f"{s.preserve_weight:g}; genunlearn, not the paper's L^R)"
    )


def csv_rows(rows: list[dict]) -> list[dict]:
    """The rows of ``table.csv``: means only (``(mean, std)`` pairs, tuples or JSON lists, give their mean)."""
    return [
        {k: (v[0] if isinstance(v, tuple | list) else v) for k, v in r.items() if k != "per_seed_updates"} for r in rows
    ]


def settings_from(data: dict[str, Any]) -> DiTBenchSettings:
    """The settings a ``results.json`` of this bench records (unknown keys ignored)."""
    from dataclasses import fields

    names = {f.name for f in fields(DiTBenchSettings)}
    given = {k: v for k, v in data["settings"].items() if k in names}
    for key in ("lora_targets", "trainable"):
        if key in given:
            given[key] = tuple(given[key])
    return DiTBenchSettings(**given)


def _opt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def measure_reference(
    session: UnlearnSession, model: Any, s: DiTBenchSettings, independent: Any | None = None
) -> dict[str, Any]:
    """A model measured before any unlearning (the original, or the retrained gold standard): the forget label's
    samples on seed 0's monitor noises, per-class accuracy, FID of the kept labels, the independent readings."""
    others = [] if independent is None else [independent]
    reading, *reading_ind = session.monitor(0).measure_with(model, others)  # type: ignore[union-attr]
    acc0, *acc0_ind = session.class_accuracies(model, s.class_samples, seed=0, others=others)
    kept = [str(c) for c in session.kept_classes if c != s.target]
    ref = {
        "forget": s.forget,
        "target": s.target,
        "kept_classes": list(session.kept_classes),
        "forget_fraction": reading.fraction,
        "forget_fraction_ci": list(wilson_interval(reading.count, reading.n)),
        "monitor_n": reading.n,
        "target_share": reading.class_counts[s.target] / reading.n,
        "class_counts": list(reading.class_counts),
        "class_accuracy": acc0,
        "accuracy_other_classes": statistics.fmean(acc0["accuracy"][c] for c in kept),
        "accuracy_target": acc0["accuracy"][str(s.target)],
        "fid_kept": session.fid(model, s.fid_samples, 0)["fid_retain"] if s.fid_samples else None,
    }
    if independent is not None:
        ref.update(independent_reading(reading_ind[0], acc0_ind[0], s, kept, final=False))
    return ref


def run_dit_bench(
    out: str | Path,
    *,
    settings: DiTBenchSettings,
    checkpoint: str | None = None,
    methods: list[str] | None = None,
    device: str = "auto",
    title: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the DiT bench and write tables, JSON, per-seed records and figures into ``out``.

    ``settings.independent_classifier``: a second MNIST classifier re-reads the final samples of the original and
    of every run (:func:`resolve_independent` fills in its sha256 and ``bn1`` use); without one, a warning."""
    from genunlearn.experiments import dit_figures

    chosen = methods or list(DIT_METHODS)
    bad = [m for m in chosen if m not in METHODS]
    if bad:
        raise ConfigError(f"unknown methods {bad}")
    record_start()
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    s = resolve_independent(settings)
    if s.retrained is not None and not Path(s.retrained).is_file():
        raise ConfigError(f"retrained model not found: {s.retrained} (genunlearn train dit --exclude-class ...)")
    title = title or f"MNIST DiT: replace digit {s.forget} by {s.target}"
    for method in chosen:  # before any work: a resume with other settings is refused, not mixed in
        for seed in range(s.seeds):
            path = out / "runs" / method / f"seed{seed}.json"
            if path.is_file():
                check_resumed(read_seed_record(path), s, path)
    if s.independent_classifier is None:
        import click

        click.echo("warning: no independent classifier (--independent-classifier): one classifier's readings", err=True)
    session = make_session(s, checkpoint, device)
    independent = load_independent(session, s)
    others = [] if independent is None else [independent]
    original_model = session.fresh_model()
    original = measure_reference(session, original_model, s, independent)
    gold = retrained = None
    if s.retrained is not None:
        gold = Gold(load_into(session.fresh_model(), s.retrained).eval(), others, s.fid_samples)
        retrained = measure_reference(session, gold.model, s, independent)
        histograms = [original["class_counts"]] + ([original["class_counts_independent"]] if independent else [])
        original["to_retrained"] = gold.distances(session, original_model, 0, histograms)  # seed 0's readings above
    memory = {m: step_memory(session, m, s) for m in chosen} if s.measure_memory else {}
    records: dict[str, list[dict]] = {}
    models_seed0: dict[str, Any] = {}
    jobs = [(m, seed) for m in chosen for seed in range(s.seeds)]
    t0 = time.perf_counter()
    for method, seed in tqdm(jobs, desc="bench mnist-dit", disable=not progress):
        path = out / "runs" / method / f"seed{seed}.json"
        if path.is_file():
            rec = read_seed_record(path)
        else:
            rec, model = run_one(session, method, s, seed, independent, gold)
            write_seed_record(path, rec, {"forget_fraction": s.monitor_samples})
            if seed == 0:
                save_weights(model, path.with_suffix(".safetensors"))
        if seed == 0 and path.with_suffix(".safetensors").is_file():
            models_seed0[method] = load_into(session.fresh_model(), path.with_suffix(".safetensors")).eval()
        records.setdefault(method, []).append(rec)
    rows = aggregate(records, original, memory)
    table = render_table(rows, original, s, title, audit=read_bench_audit(out), retrained=retrained)
    atomic_write_text(out / "table.md", table + "\n")
    atomic_write_csv(out / "table.csv", csv_rows(rows))
    atomic_write_text(
        out / "results.json",
        dumps_compact(
            {
                "title": title,
                "settings": asdict(s),
                "checkpoint": checkpoint,
                "independent_classifier": file_fingerprint(s.independent_classifier),
                "original": original,
                "retrained": retrained,
                "retrained_file": file_fingerprint(s.retrained),
                "peak_memory_bytes": memory,
                "rows": rows,
                "wall_time_this_session_s": time.perf_counter() - t0,
                "provenance": run_record(
                    {"title": title, "methods": chosen, "settings": asdict(s), "checkpoint": checkpoint},
                    inputs=weight_inputs(session, s.independent_classifier),
                ),
                "run_provenance": summarise_provenance([r.get("provenance") for rs in records.values() for r in rs]),
            }
        ),
    )
    dit_figures.make_all(
        out / "figures",
        session,
        records,
        original,
        models_seed0,
        s,
        rows,
        retrained,
        None if gold is None else gold.model,
    )
    return {"rows": rows, "original": original, "table": table}


def quick_settings(**overrides: Any) -> DiTBenchSettings:
    """``DiTBenchSettings.quick()`` with overrides (for the CLI's --quick)."""
    return replace(DiTBenchSettings.quick(), **overrides)

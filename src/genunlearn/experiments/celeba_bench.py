"""``genunlearn bench celeba64 --attr Male``: the paper's feature-unlearning experiment (section 4.3, appendix F).

The face VAE (``celeba64-vae``, trained here: ``genunlearn train vae --dataset celeba64``) forgets a feature —
faces with the attribute(s) are the forget set — with the paper's CelebA methods (S, UNO, UNO-S and the
classifier-assisted S^, UNO^, UNO^-S^, H) and genunlearn's (``rep``, ``uno-fd``), over seeds, and measures:

- updates and seconds of compute until the share of generated faces the attribute classifier calls the feature
  falls below the threshold (monitor: ``monitor_samples`` latents fixed per seed, read every
  ``monitor_every`` updates; runs stop there or after ``steps`` updates, the paper's K being 659);
- the final share with its Wilson interval, by the monitor's classifier and, when given, by an independent one;
- **what else changed**: the rates of other attributes (Eyeglasses, Smiling, Young, Blond_Hair ...) among the
  same generated faces before and after, next to what removing the feature implies (their rates among the
  original model's faces *without* the feature);
- FID with the attribute classifier's features (not comparable with Inception FID) against the training faces
  and the retained ones; time per step (compute only).

Outputs in ``--out``: ``table.md``/``table.csv``, ``results.json`` (provenance), compact per-seed records in
``runs/``, ``figures/`` (before/after grids from identical latents = paper figures 3, 9, 10; attribute rates).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from genunlearn.adapters import eval_mode
from genunlearn.checkpoints import atomic_write_csv, atomic_write_text, load_into, save_weights
from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
from genunlearn.errors import ConfigError
from genunlearn.eval.monitor import wilson_interval
from genunlearn.experiments.bench import read_bench_audit, render_audit_section
from genunlearn.experiments.records import (
    check_inputs,
    check_resumed,
    dumps_compact,
    read_seed_record,
    weight_inputs,
    write_seed_record,
)
from genunlearn.experiments.session import UnlearnSession
from genunlearn.loop import UnlearnConfig
from genunlearn.lora import AdapterConfig, merged
from genunlearn.methods import METHODS
from genunlearn.objectives import ObjectiveConfig
from genunlearn.provenance import file_fingerprint, record_start, run_record, summarise_provenance

CELEBA_METHODS: dict[str, str] = {
    "s": "Gradient surgery (S)",
    "uno": "UNO",
    "uno-s": "UNO-S",
    "s-hat": "S^",
    "uno-hat": "UNO^",
    "uno-s-hat": "UNO^-S^",
    "h": "H",
    "rep": "REP: latent replacement (genunlearn)",
    "uno-fd": "UNO-FD (genunlearn, approximate)",
}
REPORTED_ATTRIBUTES = ("Male", "Eyeglasses", "Smiling", "Young", "Blond_Hair")


@dataclass(frozen=True)
class CelebABenchSettings:
    """Settings of the CelebA bench (the paper's Table 2 CelebA rows where they exist).

    Attributes:
        attributes: the feature to forget (one attribute, or several with ``attr_mode``).
        attr_mode: ``any`` or ``all`` of ``attributes``.
        seeds: number of seeds.
        steps: cap on the updates (paper: K = 659; runs stop at the threshold).
        lr, batch_size, beta_o, beta_h, alpha: Table 2 (1e-3, 128, 1e3, 1e3, 1e-8).
        loss_reduction, bn_mode: the reference code's (``sum``, ``train``).
        threshold: forget fraction that counts as forgotten (justify it from the classifier's false-positive rate).
        monitor_samples, monitor_every: the monitor's latents per seed, and updates between readings.
        fid_samples: generated faces for FID after each run (0: skip).
        framing: training faces (``aligned``: the VAE's training framing).
        lora_rank: train a LoRA adapter of this rank (peft; base frozen; measured and saved merged) instead of the
            VAE's own weights; 0: full fine-tuning (the paper's).
        lora_targets: the layers the adapter adapts (:class:`~genunlearn.lora.AdapterConfig`'s ``target_modules``).
    """

    attributes: tuple[str, ...] = ("Male",)
    attr_mode: str = "any"
    seeds: int = 3
    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 128
    beta_o: float = 1e3
    beta_h: float = 1e3
    alpha: float = 1e-8
    loss_reduction: str = "sum"
    bn_mode: str = "train"
    threshold: float = 0.05
    monitor_samples: int = 1024
    monitor_every: int = 5
    fid_samples: int = 2000
    framing: str = "aligned"
    lora_rank: int = 0
    lora_targets: tuple[str, ...] = ("all",)

    @classmethod
    def quick(cls, **kw: Any) -> CelebABenchSettings:
        """A smoke-test setting."""
        base = {"seeds": 1, "steps": 3, "monitor_samples": 32, "monitor_every": 1, "fid_samples": 64}
        return cls(**{**base, **kw})


def make_session(
    s: CelebABenchSettings,
    checkpoint: str | None,
    classifier: str | None,
    celeba_dir: str | None,
    device: str = "auto",
) -> UnlearnSession:
    """The feature-unlearning session of the bench."""
    return UnlearnSession(
        ModelConfig(name="celeba64-vae", checkpoint=checkpoint, options={"framing": s.framing}),
        DataConfig(data_dir=celeba_dir, forget_attr=s.attributes, attr_mode=s.attr_mode),
        MonitorConfig(classifier_checkpoint=classifier, samples=s.monitor_samples),
        device=device,
        loss_reduction=s.loss_reduction,
    )


@torch.no_grad()
def attribute_rates(session: UnlearnSession, model: torch.nn.Module, latents: torch.Tensor) -> dict[str, Any]:
    """Rates of the reported attributes among the faces decoded from ``latents`` (eval mode), and the same
    rates among those the monitor's classifier does *not* call the forgotten feature."""
    clf = session.bundle.info["attribute_classifier"]
    names = session.bundle.info["attribute_names"]
    idx = [names.index(a) for a in REPORTED_ATTRIBUTES if a in names]
    with eval_mode(model):
        faces = torch.cat([model.decode(z) for z in latents.split(512)])  # type: ignore[operator]
    probs = torch.sigmoid(clf(faces))
    has = probs > 0.5
    feature = session.classifier(faces).argmax(1).bool()
    n = len(faces)
    rates = {names[i]: float(has[:, i].float().mean()) for i in idx}
    without = {names[i]: float(has[~feature, i].float().mean()) if (~feature).any() else None for i in idx}
    return {"n": n, "rates": rates, "rates_without_feature": without, "feature_share": float(feature.float().mean())}


def run_one(
    session: UnlearnSession,
    method: str,
    s: CelebABenchSettings,
    seed: int,
    independent: Any | None,
    independent_path: str | None = None,
) -> tuple[dict[str, Any], Any]:
    """One (method, seed): record and model (``independent_path``: the independent classifier's file, fingerprinted
    in the record's provenance)."""
    cfg = UnlearnConfig(
        method=method,
        steps=s.steps,
        lr=s.lr,
        batch_size=s.batch_size,
        beta_o=s.beta_o,
        beta_h=s.beta_h,
        bn_mode=s.bn_mode,
        stop_at=s.threshold,
        early_stop=True,
        seed=seed,
        monitor_every=s.monitor_every,
    ).validate()
    objective = ObjectiveConfig(loss_reduction=s.loss_reduction, alpha=s.alpha, hat_samples=s.batch_size)
    monitor = session.monitor(seed)
    adapter = (
        AdapterConfig(kind="lora", rank=s.lora_rank, target_modules=tuple(s.lora_targets)).validate()
        if s.lora_rank
        else None
    )
    model, result = session.run(cfg, objective, monitor=monitor, progress=False, adapter=adapter)
    model = merged(model).eval()
    final = monitor.measure(model)
    record: dict[str, Any] = {
        "method": method,
        "label": CELEBA_METHODS.get(method, method),
        "seed": seed,
        "status": result.status,
        "steps_run": result.steps_run,
        "updates_to_unlearn": result.updates_to_unlearn,
        "time_to_unlearn_s": result.time_to_unlearn_s,
        "time_per_step_s": result.time_per_step_s,
        "time_per_step_mean_s": result.time_per_step_mean_s,
        "forget_fraction_initial": result.forget_fraction_initial,
        "forget_fraction_final": final.fraction,
        "forget_fraction_final_ci": [final.ci_low, final.ci_high],
        "forget_fraction_final_independent": (
            None if independent is None else _replace_classifier(monitor, independent).measure(model).fraction
        ),
        "attributes_final": attribute_rates(session, model, monitor.latents),
        "fid_final": session.fid(model, s.fid_samples, seed) if s.fid_samples else None,
        "curve": {
            "forget_fraction": [row.get("forget_fraction", math.nan) for row in result.log],
            "compute_time_s": [row["compute_time_s"] for row in result.log],
        },
        "config": asdict(cfg),
        "objective": asdict(objective),
        "provenance": run_record(
            {"method": method, "settings": asdict(s)}, inputs=weight_inputs(session, independent_path)
        ),
    }
    return record, model


def _replace_classifier(monitor, classifier):
    from dataclasses import replace

    return replace(monitor, classifier=classifier)


def _ms(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _f(ms: tuple[float | None, float | None], spec: str = ".3f", scale: float = 1.0) -> str:
    m, sd = ms
    return "—" if m is None else f"{m * scale:{spec}} ({(sd or 0.0) * scale:{spec}})"


def aggregate(records: dict[str, list[dict]]) -> list[dict]:
    """Per-method means (std) over seeds."""
    rows = []
    for method, recs in records.items():
        reached = [r for r in recs if r["updates_to_unlearn"] is not None]
        row: dict[str, Any] = {
            "method": method,
            "label": recs[0]["label"],
            "seeds": len(recs),
            "reached": len(reached),
            "updates_to_unlearn": _ms([r["updates_to_unlearn"] for r in reached]),
            "time_to_unlearn_s": _ms([r["time_to_unlearn_s"] for r in reached]),
            "forget_fraction_final": _ms([r["forget_fraction_final"] for r in recs]),
            "forget_fraction_final_independent": _ms([r["forget_fraction_final_independent"] for r in recs]),
            "fid": _ms([(r["fid_final"] or {}).get("fid") for r in recs]),
            "fid_retain": _ms([(r["fid_final"] or {}).get("fid_retain") for r in recs]),
            "time_per_step_s": _ms([r["time_per_step_s"] for r in recs]),
            "per_seed_updates": [r["updates_to_unlearn"] for r in recs],
        }
        for a in recs[0]["attributes_final"]["rates"]:
            row[f"rate_{a}"] = _ms([r["attributes_final"]["rates"].get(a) for r in recs])
        rows.append(row)
    return rows


def render_table(
    rows: list[dict],
    original: dict[str, Any],
    s: CelebABenchSettings,
    title: str,
    audit: dict[str, Any] | None = None,
) -> str:
    """Two markdown tables: forgetting/quality/time, and what else changed; and the audit of the seed-0 models when
    ``OUT/audit`` holds one (``genunlearn audit`` on ``runs/<method>/seed0.safetensors``)."""
    feat = ("|" if s.attr_mode == "any" else "&").join(s.attributes)
    lo, hi = original["forget_fraction_ci"]
    others = [a for a in original["attributes"]["rates"] if a not in s.attributes]
    out = [
        f"# {title}",
        "",
        f"Original model: faces called {feat}: {original['forget_fraction']:.3f} (95% CI {lo:.3f}-{hi:.3f}, "
        f"{original['n']} latents of seed 0); FID {_opt(original.get('fid'))} (all training faces), "
        f"{_opt(original.get('fid_retain'))} (retained faces) with the attribute classifier's features "
        f"({s.fid_samples} samples; not comparable with Inception FID). {s.seeds} seeds, at most {s.steps} updates "
        f"(stop at the first reading below {s.threshold:g}), lr {s.lr:g}, batch {s.batch_size}, beta_o {s.beta_o:g}, "
        f"beta_h {s.beta_h:g}, {s.loss_reduction} loss, BatchNorm {s.bn_mode}; monitor {s.monitor_samples} latents "
        f"per seed every {s.monitor_every} updates{_lora_note(s)}. Mean (std) over seeds; updates and time over the "
        "seeds that reached the threshold; final fractions at the end of each run.",
        "",
        f"| method | updates to < {s.threshold:g} | time to unlearn (s) | reached | {feat} after "
        "| independent classifier | FID (all) | FID (retained) | time per step (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['label']} | {_f(r['updates_to_unlearn'], '.1f')} | {_f(r['time_to_unlearn_s'], '.1f')} "
            f"| {r['reached']}/{r['seeds']} | {_f(r['forget_fraction_final'])} "
            f"| {_f(r['forget_fraction_final_independent'])} | {_f(r['fid'], '.2f')} | {_f(r['fid_retain'], '.2f')} "
            f"| {_f(r['time_per_step_s'], '.0f', 1e3)} |"
        )
    before = original["attributes"]["rates"]
    implied = original["attributes"]["rates_without_feature"]
    out += [
        "",
        f"What else changed: rates of other attributes among the faces decoded from the same latents. 'Implied' = "
        f"their rates among the original model's faces that the classifier does not call {feat} (what removing "
        "the feature alone would give).",
        "",
        "| | " + " | ".join(others) + " |",
        "|---|" + "---|" * len(others),
        "| original | " + " | ".join(f"{before[a]:.3f}" for a in others) + " |",
        "| implied by removing the feature | " + " | ".join(_opt(implied[a], ".3f") for a in others) + " |",
    ]
    for r in rows:
        out.append(f"| {r['label']} | " + " | ".join(_f(r[f"rate_{a}"]) for a in others) + " |")
    if audit is not None:
        entries = [{"entry": r["method"], "label": r["label"], "fidelity": True} for r in rows]
        out += ["", *render_audit_section(audit, entries)]
    return "\n".join(out).rstrip("\n")


def render_results(data: dict[str, Any], audit: dict[str, Any] | None = None) -> str:
    """:func:`render_table` from a bench's ``results.json`` (``genunlearn report``'s ``celeba`` block, which
    leaves out the audit; ``table.md`` has it)."""
    fields = {f for f in CelebABenchSettings.__dataclass_fields__}
    settings = {k: v for k, v in data["settings"].items() if k in fields}
    s = CelebABenchSettings(
        **{
            **settings,
            "attributes": tuple(settings["attributes"]),
            **({"lora_targets": tuple(settings["lora_targets"])} if "lora_targets" in settings else {}),
        }
    )
    return render_table(data["rows"], data["original"], s, data["title"], audit=audit)


def _lora_note(s: CelebABenchSettings) -> str:
    if not s.lora_rank:
        return ""
    return f"; LoRA rank {s.lora_rank} on {','.join(s.lora_targets)} (peft, base frozen; measured merged)"


def _opt(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def run_celeba_bench(
    out: str | Path,
    *,
    settings: CelebABenchSettings,
    checkpoint: str | None = None,
    classifier: str | None = None,
    independent_classifier: str | None = None,
    celeba_dir: str | None = None,
    methods: list[str] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the CelebA bench and write tables, JSON, records and figures into ``out``."""
    from genunlearn.experiments import celeba_figures
    from genunlearn.models import load_model
    from genunlearn.models.builtin import AttributeDetector

    chosen = methods or list(CELEBA_METHODS)
    bad = [m for m in chosen if m not in METHODS]
    if bad:
        raise ConfigError(f"unknown methods {bad}")
    record_start()
    s = settings
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    feat = ("|" if s.attr_mode == "any" else "&").join(s.attributes)
    title = f"CelebA 64x64: forget {feat}"
    session = make_session(s, checkpoint, classifier, celeba_dir, device)
    independent = None
    if independent_classifier:
        clf2 = load_model("celeba64-classifier", independent_classifier, device=session.device)
        names = session.bundle.info["attribute_names"]
        independent = AttributeDetector(clf2, [names.index(a) for a in s.attributes], s.attr_mode).eval()
    original_model = session.fresh_model()
    mon0 = session.monitor(0)
    reading = mon0.measure(original_model)
    fid0 = session.fid(original_model, s.fid_samples, 0) if s.fid_samples else {}
    original = {
        "forget_fraction": reading.fraction,
        "forget_fraction_ci": list(wilson_interval(reading.count, reading.n)),
        "forget_fraction_independent": None
        if independent is None
        else _replace_classifier(mon0, independent).measure(original_model).fraction,
        "n": reading.n,
        "attributes": attribute_rates(session, original_model, mon0.latents),
        "fid": fid0.get("fid"),
        "fid_retain": fid0.get("fid_retain"),
    }
    records: dict[str, list[dict]] = {}
    models_seed0: dict[str, Any] = {}
    fingerprints = {k: file_fingerprint(v) for k, v in weight_inputs(session, independent_classifier).items()}
    t0 = time.perf_counter()
    for method, seed in tqdm(
        [(m, k) for m in chosen for k in range(s.seeds)], desc="bench celeba64", disable=not progress
    ):
        path = out / "runs" / method / f"seed{seed}.json"
        if path.is_file():
            rec = read_seed_record(path)
            check_resumed(rec, s, path)
            check_inputs(rec, fingerprints, path)
            if (rec.get("forget_fraction_final_independent") is None) != (independent is None):
                has = "has no" if independent is not None else "has an"
                raise ConfigError(
                    f"{path} {has} independent classifier's reading, this run is "
                    f"{'with' if independent is not None else 'without'} one: resume as it was made or write to "
                    "another --out"
                )
        else:
            rec, model = run_one(session, method, s, seed, independent, independent_classifier)
            write_seed_record(path, rec, {"forget_fraction": s.monitor_samples})
            if seed == 0:
                save_weights(model, path.with_suffix(".safetensors"))
        if seed == 0 and path.with_suffix(".safetensors").is_file():
            models_seed0[method] = load_into(session.fresh_model(), path.with_suffix(".safetensors")).eval()
        records.setdefault(method, []).append(rec)
    rows = aggregate(records)
    table = render_table(rows, original, s, title, audit=read_bench_audit(out))
    atomic_write_text(out / "table.md", table + "\n")
    atomic_write_csv(
        out / "table.csv",
        [{k: (v[0] if isinstance(v, tuple) else v) for k, v in r.items() if k != "per_seed_updates"} for r in rows],
    )
    atomic_write_text(
        out / "results.json",
        dumps_compact(
            {
                "title": title,
                "settings": asdict(s),
                "checkpoint": checkpoint,
                "classifier": classifier,
                "independent_classifier": independent_classifier,
                "original": original,
                "rows": rows,
                "wall_time_this_session_s": time.perf_counter() - t0,
                "provenance": run_record(
                    {"title": title, "methods": chosen, "settings": asdict(s)}, inputs=session.bundle.info.get("inputs")
                ),
                "run_provenance": summarise_provenance([r.get("provenance") for rs in records.values() for r in rs]),
            }
        ),
    )
    celeba_figures.make_all(out / "figures", session, records, original, models_seed0, s)
    return {"rows": rows, "original": original, "table": table}

"""``genunlearn bench mnist``: the paper's MNIST experiment (Tables 1 and 3) over seeds, resumable.

Every entry runs the full K updates (no early stop) so that the table can say both when the forget
fraction first drops below the threshold and when it stays below. Two monitors are logged every update:

- ``ref``: the reference code's setting — 128 latents fixed per run, generator in train mode;
- ``robust``: 1,024 latents fixed per seed, generator in eval mode.

A finished (entry, seed) is stored as ``runs/<entry>/seed<k>.json`` (curves in the compact, exact encoding of
:mod:`genunlearn.experiments.records`, with the run's provenance) and never recomputed. ``results.json``
records the provenance of the session that wrote it and of the per-seed runs, and per entry the medians,
ranges and per-seed values of every measured quantity (``stats``).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from genunlearn.checkpoints import atomic_write_csv, atomic_write_text, load_into, save_weights
from genunlearn.errors import ConfigError
from genunlearn.experiments.mnist import MnistSetup, MnistUnlearnSpec
from genunlearn.experiments.records import (
    dumps_compact,
    mnist_inputs,
    read_seed_record,
    seed_stats,
    write_seed_record,
)
from genunlearn.loop import UnlearnConfig
from genunlearn.objectives import ObjectiveConfig
from genunlearn.provenance import record_start, run_record, summarise_provenance
from genunlearn.runinfo import versions


@dataclass(frozen=True)
class BenchEntry:
    """One row of the benchmark table: a method and the options that differ from Table 2's defaults."""

    key: str
    label: str
    method: str
    table: int
    overrides: dict[str, Any] = field(default_factory=dict)


#: The paper's Table 1 and Table 3 rows, plus the configurations that actually produced the published rows.
ENTRIES: tuple[BenchEntry, ...] = (
    BenchEntry("a", "Gradient ascent (A)", "a", 1),
    BenchEntry("a-d", "Ascent-descent (A-D)", "a-d", 1),
    BenchEntry("s", "Gradient surgery (S)", "s", 1),
    BenchEntry("uno", "UNO", "uno", 1),
    BenchEntry("uno-s", "UNO-S", "uno-s", 1),
    BenchEntry("h", "H", "h", 3),
    BenchEntry("s-hat", "S^", "s-hat", 3),
    BenchEntry("uno-hat", "UNO^", "uno-hat", 3),
    BenchEntry("uno-s-hat", "UNO^-S^", "uno-s-hat", 3),
    BenchEntry(
        "uno-published",
        "'UNO' as published (beta_o=0, reference hat term beta_h=1e3)",
        "uno-hat",
        1,
        {"beta_o": 0.0, "hat_kind": "reference"},
    ),
    BenchEntry(
        "uno-s-published",
        "'UNO-S' as published (beta_o=0, reference hat term beta_h=1e3)",
        "uno-s-hat",
        1,
        {"beta_o": 0.0, "hat_kind": "reference"},
    ),
    BenchEntry("h-published", "'H' as published (retain-only fine-tuning)", "d", 3),
    BenchEntry("uno-fd", "UNO-FD: UNO with finite-difference HVPs (genunlearn, approximate)", "uno-fd", 1),
    BenchEntry("rep", "REP: latent replacement (genunlearn, no classifier, beta_r=10)", "rep", 1),
    BenchEntry("gdiff", "GDiff: gradient difference L_r - L_f", "gdiff", 4),
    BenchEntry(
        "ngdiff", "NGDiff: normalized gradient difference, adaptive step (SGD)", "ngdiff", 4, {"optimizer": "sgd"}
    ),
    BenchEntry("salun", "SalUn: saliency mask 0.5, forget latents -> random retained images", "salun", 4),
    BenchEntry("amnesia", "Selective Amnesia: noise surrogate + replay + EWC (lambda=100)", "amnesia", 4),
)

#: Section titles of the bench tables.
TABLE_TITLES = {
    1: "classifier-free and published configurations",
    3: "classifier-assisted",
    4: "peer methods of other papers, docs/peers.md",
}


@dataclass(frozen=True)
class BenchSettings:
    """The paper's Table 2 settings for MNIST, and measurement sizes.

    Attributes:
        seeds: number of seeds (0..seeds-1).
        steps: K updates per run (paper: 530).
        fid_samples: generated samples for FID (paper: 25,000).
        ref_monitor_samples / robust_monitor_samples: latents of the two monitors.
        threshold: forget fraction that counts as unlearned (paper: 0.02).
        fidelity_margin: the fidelity mark is given when the mean retain-digit FID is within this of the
            original model's.
    """

    seeds: int = 10
    steps: int = 530
    lr: float = 1e-3
    batch_size: int = 128
    beta_o: float = 1e3
    beta_h: float = 1e3
    alpha: float = 1e-8
    fid_samples: int = 25_000
    ref_monitor_samples: int = 128
    robust_monitor_samples: int = 1024
    threshold: float = 0.02
    fidelity_margin: float = 3.0
    hold: int = 100

    @classmethod
    def quick(cls) -> BenchSettings:
        """A small smoke-test setting."""
        return cls(seeds=2, steps=12, fid_samples=1000, robust_monitor_samples=256)


def first_below(values: list[float], threshold: float) -> int | None:
    """Index of the first value below ``threshold`` (``None`` if none)."""
    return next((i for i, v in enumerate(values) if v < threshold), None)


def stays_below(values: list[float], threshold: float) -> int | None:
    """First index from which every later value is below ``threshold`` (``None`` if the last is not)."""
    if not values or values[-1] >= threshold:
        return None
    i = len(values)
    while i > 0 and values[i - 1] < threshold:
        i -= 1
    return i


def held_below(values: list[float], threshold: float, window: int) -> bool | None:
    """Whether every value from the first one below ``threshold`` through ``window`` further updates stays below.

    ``None`` if the values never go below, or if the run ended before the window closed (undecided).
    """
    first = first_below(values, threshold)
    if first is None or len(values) <= first + window:
        return None
    return all(v < threshold for v in values[first : first + window + 1])


def entry_config(entry: BenchEntry, s: Any, seed: int) -> tuple[UnlearnConfig, ObjectiveConfig]:
    """The engine config and the objective config of one (entry, seed); overrides go to the one that has the field.

    ``s`` holds ``steps``, ``lr``, ``batch_size``, ``beta_o``, ``beta_h``, ``alpha`` and ``threshold``
    (:class:`BenchSettings`, or the settings of ``bench compare`` and its sample-level runs).
    """
    cfg = UnlearnConfig(
        method=entry.method,
        steps=s.steps,
        lr=s.lr,
        batch_size=s.batch_size,
        beta_o=s.beta_o,
        beta_h=s.beta_h,
        stop_at=s.threshold,
        early_stop=False,
        seed=seed,
    )
    objective = ObjectiveConfig(alpha=s.alpha)
    engine_fields = {f.name for f in fields(UnlearnConfig)}
    cfg = replace(cfg, **{k: v for k, v in entry.overrides.items() if k in engine_fields})
    objective = replace(objective, **{k: v for k, v in entry.overrides.items() if k not in engine_fields})
    return cfg.validate(), objective.validate()


def run_one(setup: MnistSetup, entry: BenchEntry, s: BenchSettings, seed: int) -> tuple[dict[str, Any], Any]:
    """Run one (entry, seed); returns the JSON-able record and the unlearned model."""
    cfg, objective = entry_config(entry, s, seed)
    ref = setup.monitor(seed + 1000, n=s.ref_monitor_samples, mode="train")
    robust = setup.monitor(seed, n=s.robust_monitor_samples, mode="eval")
    robust.set_reference(setup.fresh_model())  # every robust reading also measures the collateral change
    model, result = setup.run(cfg, objective, monitor=robust, extra_monitors={"ref": ref}, progress=False)
    log = result.log
    ff_robust = [row.get("forget_fraction", math.nan) for row in log]
    ff_ref = [row.get("forget_fraction_ref", math.nan) for row in log]
    collateral = [row.get("collateral", math.nan) for row in log]
    times = [row["compute_time_s"] for row in log]
    fids = setup.fid(model, s.fid_samples, seed)
    final = robust.measure(model)
    final_counts = final.class_counts

    def at(i: int | None, curve: list[float] = times) -> float | None:
        return None if i is None else curve[i]

    u_ref, u_rob = first_below(ff_ref, s.threshold), first_below(ff_robust, s.threshold)
    st_ref, st_rob = stays_below(ff_ref, s.threshold), stays_below(ff_robust, s.threshold)
    record = {
        "entry": entry.key,
        "label": entry.label,
        "seed": seed,
        "status": result.status,
        "steps_run": result.steps_run,
        "updates_to_unlearn_ref": u_ref,
        "time_to_unlearn_ref_s": at(u_ref),
        "updates_to_unlearn_robust": u_rob,
        "time_to_unlearn_robust_s": at(u_rob),
        "updates_to_stay_ref": st_ref,
        "updates_to_stay_robust": st_rob,
        "time_per_step_s": result.time_per_step_s,
        "time_per_step_mean_s": result.time_per_step_mean_s,
        "time_per_phase_s": result.time_per_phase_s,
        "forget_fraction_initial_robust": ff_robust[0],
        "forget_fraction_final_robust": ff_robust[-1],
        "forget_fraction_initial_ref": ff_ref[0],
        "forget_fraction_final_ref": ff_ref[-1],
        "fid_final": fids["fid"],
        "fid_retain_final": fids["fid_retain"],
        "class_counts_final_robust": list(final_counts),
        "collateral_at_unlearn_robust": at(u_rob, collateral),
        "collateral_final_robust": final.collateral,
        "retained_tv_final_robust": final.retained_tv,
        "collateral_retained_inputs": final.retained_inputs,
        "curve": {
            "forget_fraction_robust": ff_robust,
            "forget_fraction_ref": ff_ref,
            "collateral_robust": collateral,
            "compute_time_s": times,
        },
        "config": asdict(cfg),
        "objective": asdict(objective),
        "provenance": run_record(
            {"entry": entry.key, "settings": asdict(s), "spec": asdict(setup.spec)}, inputs=mnist_inputs(setup.spec)
        ),
    }
    return record, model


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _ms(ms: tuple[float | None, float | None] | list) -> tuple[float | None, float | None]:
    """Seconds -> milliseconds for a (mean, std) pair."""
    return tuple(None if v is None else 1e3 * v for v in ms)  # type: ignore[return-value]


def _fmt(ms: tuple[float | None, float | None], spec: str = ".3f") -> str:
    m, sd = ms
    return "—" if m is None else f"{m:{spec}} ({sd:{spec}})"


def aggregate(records: dict[str, list[dict]], original: dict[str, Any], s: BenchSettings) -> list[dict[str, Any]]:
    """Per-entry means and standard deviations over seeds (time/updates over the seeds that reached)."""
    rows = []
    for entry in ENTRIES:
        recs = records.get(entry.key)
        if not recs:
            continue
        n = len(recs)
        row: dict[str, Any] = {"entry": entry.key, "label": entry.label, "table": entry.table, "seeds": n}
        for mon in ("ref", "robust"):
            reached = [r for r in recs if r[f"updates_to_unlearn_{mon}"] is not None]
            stayed = [r for r in recs if r[f"updates_to_stay_{mon}"] is not None]
            row[f"reached_{mon}"] = len(reached)
            row[f"stayed_{mon}"] = len(stayed)
            row[f"time_to_unlearn_{mon}_s"] = _mean_std([r[f"time_to_unlearn_{mon}_s"] for r in reached])
            row[f"updates_to_unlearn_{mon}"] = _mean_std([r[f"updates_to_unlearn_{mon}"] for r in reached])
            row[f"updates_to_stay_{mon}"] = _mean_std([r[f"updates_to_stay_{mon}"] for r in stayed])
            row[f"forget_fraction_final_{mon}"] = _mean_std([r[f"forget_fraction_final_{mon}"] for r in recs])
        for key in ("collateral_at_unlearn_robust", "collateral_final_robust", "retained_tv_final_robust"):
            row[key] = _mean_std([r.get(key) for r in recs])  # (None, None) for records made before collateral
        row["held_robust"] = sum(
            held_below(r["curve"]["forget_fraction_robust"], s.threshold, s.hold) is True for r in recs
        )
        row["fid"] = _mean_std([r["fid_final"] for r in recs])
        row["fid_retain"] = _mean_std([r["fid_retain_final"] for r in recs])
        row["time_per_step_s"] = _mean_std([r["time_per_step_s"] for r in recs])
        row["time_per_step_mean_s"] = _mean_std([r.get("time_per_step_mean_s") for r in recs])
        phases = sorted({ph for r in recs for ph in (r.get("time_per_phase_s") or {})})
        row["time_per_phase_s"] = {
            ph: _mean_std([(r.get("time_per_phase_s") or {}).get(ph) for r in recs]) for ph in phases
        } or None
        row["stats"] = seed_stats(
            recs, [held_below(r["curve"]["forget_fraction_robust"], s.threshold, s.hold) for r in recs]
        )
        fid_r = row["fid_retain"][0]
        row["fidelity"] = fid_r is not None and fid_r <= original["fid_retain"] + s.fidelity_margin
        rows.append(row)
    return rows


def _collateral(row: dict[str, Any]) -> str:
    """``at first below · final; TV`` in percent (mean (std)), ``—`` where not recorded."""

    def percent(ms: Any) -> tuple[float | None, float | None]:
        return tuple(None if v is None else 100 * v for v in (ms or (None, None)))  # type: ignore[return-value]

    pct = [
        _fmt(percent(row.get(k)), ".1f")
        for k in ("collateral_at_unlearn_robust", "collateral_final_robust", "retained_tv_final_robust")
    ]
    return "—" if all(p == "—" for p in pct) else f"{pct[0]} · {pct[1]}; {pct[2]}"


AUDIT_FILE = Path("audit") / "audit.json"


def read_bench_audit(out: str | Path) -> dict[str, Any] | None:
    """The audit of a bench's seed-0 models (``OUT/audit/audit.json``, made by ``genunlearn audit``), if any."""
    import json

    path = Path(out) / AUDIT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable audit ({e})") from e


def audit_table(audit: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table lines: one row per audited model (the original first), in the order of the bench's rows.

    Values are the audit's checks (``docs/audit.md``): the prior forget fraction and the relearning after the
    most retain-only updates are the largest over the detectors; the input search and the prior mass count
    samples confident under every detector; relearning with forget examples is the attacked detector's reading.
    A model that passes but misses the bench's fidelity mark reads "pass, fidelity ✗": it forgot more than the
    class.
    """
    from genunlearn.experiments.audit import audit_headline

    models = {m["name"]: m for m in audit["models"]}
    k, most = max(audit["settings"]["relearn_at"]), max(audit["settings"]["relearn_forget"])
    emb = _has_embedding_search(audit)
    out = [
        f"| algorithm | prior | input search |{' embedding search |' if emb else ''} prior mass "
        f"| relearn, retain only (k = {k}) | relearn, {most} forget examples (k = {k}) | pass |",
        "|---|---|---|---|---|---|---|" + ("---|" if emb else ""),
    ]

    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    fidelity = {r["entry"]: r["fidelity"] for r in rows}
    order = [("original", "original"), ("retrained", "retrained without the class (gold standard)")]
    order += [(r["entry"], r["label"]) for r in rows]
    for name, label in order:
        m = models.get(name)
        if m is None:
            continue
        c, h = m["verdict"]["checks"], audit_headline(m)
        if m["kind"] in ("original", "retrained"):
            verdict = "reference" if m["kind"] == "original" else "gold standard"
        elif not m["verdict"]["pass"]:
            verdict = "fail"
        else:
            verdict = "**pass**" if fidelity.get(name, True) else "pass, fidelity ✗"
        embedding = f"{pct(c.get('embedding_search', {}).get('value'))} | " if emb else ""
        out.append(
            f"| {label} | {pct(c['prior']['value'])} | {pct(c['input_search']['value'])} | {embedding}"
            f"{pct(c['prior_mass']['value'])} | {pct(c['relearn_retain']['value'])} | {pct(h['relearn_forget'])} "
            f"| {verdict} |"
        )
    missing = sorted(set(models) - {n for n, _ in order})
    if missing:
        out += ["", f"Audited models that are not bench entries (in `audit/audit.md`): {', '.join(missing)}."]
    return out


def _has_embedding_search(audit: dict[str, Any]) -> bool:
    return any(m["verdict"]["checks"].get("embedding_search", {}).get("value") is not None for m in audit["models"])


def audit_legend(audit: dict[str, Any]) -> str:
    """What the columns of :func:`audit_table` mean, with the audit's settings and detectors."""
    set_ = audit["settings"]
    k, most = max(set_["relearn_at"]), max(set_["relearn_forget"])
    own = "the model's own classifier"
    detectors = ", ".join(
        f"`{d['name']}` = {Path(d['checkpoint']).name if d.get('checkpoint') else own}"
        f"{' (bn1 applied)' if d.get('use_bn') else ''}"
        for d in audit["detectors"]
    )
    return (
        "`genunlearn audit` on each entry's seed-0 model after K updates, on the original and on a model retrained "
        "without the class where one was given (`audit/audit.md`, "
        f"`audit/audit.json`; detectors: {detectors}). Prior: forget fraction of {set_['prior_samples']} prior "
        f"samples (largest over the detectors). Input search: share of {set_['starts']} starts whose best input "
        f"(within the ball holding {set_['quantile']:.1%} of the prior's mass) decodes to a sample every detector "
        f"calls the forgotten class with p >= {set_['confidence']}. "
        + (
            f"Embedding search: the same for {set_['embedding_starts']} starts in the label-embedding space (within "
            f"{set_['embedding_radius']:g} x the largest real label embedding's norm). "
            if _has_embedding_search(audit)
            else ""
        )
        + "Prior mass: share of the prior's mass decoding to such a sample (2-d grid; n/a without one). "
        f"Relearn: forget fraction after {k} Adam updates (lr {set_['relearn_lr']}, "
        f"mean of {set_['relearn_seeds']} seeds) on retained data only (largest over the detectors) and with "
        f"{most} forget examples in every batch (attacked detector). Pass: every check within its limit "
        f"(forget fractions < {100 * set_['fraction_threshold']:g}%, search shares and prior mass <= "
        f"{100 * set_['share_margin']:g}%; docs/audit.md); "
        + (
            "relearning with forget examples passes when it brings the class back no faster than in the model "
            f"retrained without it (within {100 * set_['fraction_threshold']:g} points after every k; the other "
            "limits are raised by the retrained model's own readings)"
            if any(m["kind"] == "retrained" for m in audit["models"])
            else "there is no retrained model here, so relearning with forget examples is reported, not judged"
        )
        + '; "pass, fidelity ✗": the model also lost the retained classes.'
    )


def render_audit_section(audit: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The ``table.md`` section of the audit of a bench's seed-0 models (heading, legend, table)."""
    return ["## Audit of the seed-0 models", "", audit_legend(audit), "", *audit_table(audit, rows), ""]


def render_table(
    rows: list[dict[str, Any]],
    original: dict[str, Any],
    s: BenchSettings,
    title: str,
    audit: dict[str, Any] | None = None,
) -> str:
    """Markdown in the layout of the paper's Tables 1 and 3 (mean (std) over seeds).

    ``audit``: the audit of the seed-0 models (:func:`read_bench_audit`), rendered as a last section.
    """
    head = (
        "| algorithm | time to unlearn (s), ref monitor | updates to unlearn, ref | updates to unlearn, robust "
        "| updates until it stays < thr., robust | reached ref · robust · stayed · held | FID (all digits) "
        "| FID (retain digits) | fidelity | collateral (%): at first < thr. · final; retained TV (%) "
        "| time per step (ms): median · mean |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    out = [
        f"# {title}",
        "",
        f"Original model: forget fraction {original['forget_fraction_ref']:.3f} (ref monitor) / "
        f"{original['forget_fraction_robust']:.3f} (robust monitor); FID {original['fid']:.2f} (all digits), "
        f"{original['fid_retain']:.2f} (retain digits). {s.seeds} seeds, K = {s.steps} updates, threshold "
        f"{s.threshold}, FID from {s.fid_samples} samples. Mean (std) over seeds; time and updates over the "
        f"seeds that reached the threshold. Fidelity ✓: mean retain-digit FID within +{s.fidelity_margin} "
        f"of the original's. Held: seeds whose robust reading stayed below the threshold for the {s.hold} updates "
        "after it first got there (no rebound). Time per step: per-seed median and mean step time, mean (std) over "
        "seeds; alternating methods also give the median of their even / odd steps (e.g. UNO / S for UNO-S). "
        "Collateral: on the robust monitor's latents, the share of those whose original sample was a retained "
        "digit that now decode to another digit (ideal 0), at the first reading below the threshold (seeds that "
        "reached) and after the last update; retained TV: total-variation distance of the retained digits' "
        "proportions from the original's after the last update (— for runs made before it was recorded).",
        "",
    ]
    for table, heading in TABLE_TITLES.items():
        sel = [r for r in rows if r["table"] == table]
        if not sel:
            continue
        out += [f"## Table {table} ({heading})", "", head]
        for r in sel:
            tps = _fmt(_ms(r["time_per_step_s"]), ".1f")
            if r.get("time_per_step_mean_s") and r["time_per_step_mean_s"][0] is not None:
                tps += f" · {_fmt(_ms(r['time_per_step_mean_s']), '.1f')}"
            if r.get("time_per_phase_s"):
                tps += "; even / odd: " + " / ".join(
                    _fmt(_ms(r["time_per_phase_s"][ph]), ".1f") for ph in sorted(r["time_per_phase_s"])
                )
            out.append(
                f"| {r['label']} | {_fmt(r['time_to_unlearn_ref_s'])} | {_fmt(r['updates_to_unlearn_ref'], '.1f')} "
                f"| {_fmt(r['updates_to_unlearn_robust'], '.1f')} | {_fmt(r['updates_to_stay_robust'], '.1f')} "
                f"| {r['reached_ref']}/{r['seeds']} · {r['reached_robust']}/{r['seeds']} · "
                f"{r['stayed_robust']}/{r['seeds']} · {r['held_robust']}/{r['seeds']} "
                f"| {_fmt(r['fid'], '.1f')} | {_fmt(r['fid_retain'], '.1f')} "
                f"| {'✓' if r['fidelity'] else '✗'} | {_collateral(r)} | {tps} |"
            )
        out.append("")
    if audit is not None:
        out += render_audit_section(audit, rows)
    return "\n".join(out)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Flat CSV of the aggregated rows (mean and std in separate columns)."""
    flat = []
    for r in rows:
        d: dict[str, Any] = {}
        for k, v in r.items():
            if isinstance(v, dict):  # per-seed statistics live in results.json only
                continue
            if isinstance(v, tuple):
                d[f"{k}_mean"], d[f"{k}_std"] = v
            else:
                d[k] = v
        flat.append(d)
    atomic_write_csv(path, flat)


def run_bench(
    out: str | Path,
    *,
    spec: MnistUnlearnSpec,
    settings: BenchSettings,
    entries: list[str] | None = None,
    title: str = "MNIST, forget digit 1",
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the benchmark and write tables, JSON and figures into ``out``."""
    from genunlearn.experiments import bench_figures

    known = {e.key: e for e in ENTRIES}
    chosen = entries or list(known)
    bad = [k for k in chosen if k not in known]
    if bad:
        raise ConfigError(f"unknown bench entries {bad}; choose from {', '.join(known)}")
    record_start()
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    setup = MnistSetup(spec)
    original_model = setup.fresh_model()
    orig_fid = setup.fid(original_model, settings.fid_samples, 0)
    original = {
        "fid": orig_fid["fid"],
        "fid_retain": orig_fid["fid_retain"],
        "forget_fraction_ref": statistics.fmean(
            setup.monitor(k + 1000, n=settings.ref_monitor_samples, mode="train").measure(original_model).fraction
            for k in range(settings.seeds)
        ),
        "forget_fraction_robust": statistics.fmean(
            setup.monitor(k, n=settings.robust_monitor_samples, mode="eval").measure(original_model).fraction
            for k in range(settings.seeds)
        ),
        "class_counts_robust": list(
            setup.monitor(0, n=settings.robust_monitor_samples).measure(original_model).class_counts
        ),
    }
    records: dict[str, list[dict]] = {}
    models_seed0: dict[str, Any] = {}
    jobs = [(known[k], seed) for k in chosen for seed in range(settings.seeds)]
    t0 = time.perf_counter()
    for entry, seed in tqdm(jobs, desc="bench", disable=not progress):
        path = out / "runs" / entry.key / f"seed{seed}.json"
        if path.is_file():
            rec = read_seed_record(path)
        else:
            rec, model = run_one(setup, entry, settings, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            monitor_n = {
                "forget_fraction_robust": settings.robust_monitor_samples,
                "forget_fraction_ref": settings.ref_monitor_samples,
            }
            if rec.get("collateral_retained_inputs"):
                monitor_n["collateral_robust"] = rec["collateral_retained_inputs"]
            write_seed_record(path, rec, monitor_n)
            if seed == 0:  # kept for the figures (weights are not committed: see .gitignore)
                save_weights(model, path.with_suffix(".safetensors"))
        if seed == 0 and path.with_suffix(".safetensors").is_file():
            models_seed0[entry.key] = load_into(setup.fresh_model(), path.with_suffix(".safetensors")).eval()
        records.setdefault(entry.key, []).append(rec)
    rows = aggregate(records, original, settings)
    table = render_table(rows, original, settings, title, audit=read_bench_audit(out))
    atomic_write_text(out / "table.md", table + "\n")
    write_csv(rows, out / "table.csv")
    atomic_write_text(
        out / "results.json",
        dumps_compact(
            {
                "title": title,
                "settings": asdict(settings),
                "spec": asdict(spec),
                "original": original,
                "rows": rows,
                "monitors": {
                    "ref": "128 latents fixed per run (seed+1000), train mode",
                    "robust": f"{settings.robust_monitor_samples} latents fixed per seed, eval mode",
                },
                "versions": versions(),
                "wall_time_this_session_s": time.perf_counter() - t0,
                "provenance": run_record(
                    {"title": title, "entries": chosen, "settings": asdict(settings), "spec": asdict(spec)},
                    inputs=mnist_inputs(spec),
                ),
                "run_provenance": summarise_provenance([r.get("provenance") for rs in records.values() for r in rs]),
            }
        ),
    )
    bench_figures.make_all(out / "figures", setup, records, rows, original, models_seed0, settings)
    return {"rows": rows, "original": original, "table": table}

"""Per-seed benchmark records small enough to commit, and the per-entry statistics quoted from them.

A bench record (``runs/<entry>/seed<k>.json``) holds curves of one reading per update (531 for K = 530):
the forget fraction on the two monitors, the collateral change on the robust monitor (records made since it
was added) and the cumulative compute time. On disk they are stored exactly but compactly:

- forget fractions as integer counts out of the monitor's ``n`` latents (a fraction *is* ``k / n``; the
  encoding is used only when ``count / n`` gives back the very same float, otherwise the floats are kept),
  the collateral change likewise out of its retained inputs;
- compute time as cumulative integer microseconds.

``{"forget_fraction_robust": {"n": 1024, "counts": [91, 88, ...]}, "compute_time_s": {"unit": 1e-06,
"values": [0, 10911, ...]}}``. :func:`expand_record` gives back the in-memory form (lists of floats), so
everything downstream (aggregation, figures) sees the same numbers. A record is about 9 kB; 14 entries x
10 seeds, about 1.3 MB per bench folder (git stores it compressed, about a third of that).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from genunlearn.checkpoints import atomic_write_text

#: Marker of the compact curve encoding (stored in every compact record).
CURVE_ENCODING = "genunlearn-curves-1"
_TIME_UNIT = 1e-6


def _counts(values: Sequence[float], n: int) -> list[int | None] | None:
    """Integer counts ``k`` with ``k / n == v`` exactly for every value (``None`` for NaN); ``None`` if impossible."""
    out: list[int | None] = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
            continue
        k = round(v * n)
        if k / n != v:
            return None
        out.append(k)
    return out


def compact_curves(curve: Mapping[str, Any], monitor_n: Mapping[str, int]) -> dict[str, Any]:
    """Encode a record's ``curve`` dict; ``monitor_n`` maps curve names to their monitor's sample count."""
    if curve.get("encoding") == CURVE_ENCODING:
        return dict(curve)
    out: dict[str, Any] = {"encoding": CURVE_ENCODING}
    for name, values in curve.items():
        if name in monitor_n and (counts := _counts(values, monitor_n[name])) is not None:
            out[name] = {"n": monitor_n[name], "counts": counts}
        elif name.endswith("_time_s"):
            out[name] = {"unit": _TIME_UNIT, "values": [None if v is None else round(v / _TIME_UNIT) for v in values]}
        else:
            out[name] = list(values)
    return out


def expand_curves(curve: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`compact_curves` (plain lists of floats; already-plain curves pass through)."""
    if curve.get("encoding") != CURVE_ENCODING:
        return dict(curve)
    out: dict[str, Any] = {}
    for name, value in curve.items():
        if name == "encoding":
            continue
        if isinstance(value, Mapping) and "counts" in value:
            n = value["n"]
            out[name] = [math.nan if k is None else k / n for k in value["counts"]]
        elif isinstance(value, Mapping) and "unit" in value:
            unit_inv = round(1 / value["unit"])
            out[name] = [math.nan if v is None else v / unit_inv for v in value["values"]]
        else:
            out[name] = list(value)
    return out


def dumps_compact(obj: Any, indent: int = 1) -> str:
    """JSON with nested objects indented but every list of scalars on one line (readable and small)."""

    def enc(o: Any, level: int) -> str:
        pad, pad_in = " " * (indent * level), " " * (indent * (level + 1))
        if isinstance(o, Mapping):
            if not o:
                return "{}"
            items = [f"{pad_in}{json.dumps(str(k))}: {enc(v, level + 1)}" for k, v in o.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, list | tuple):
            if all(not isinstance(v, Mapping | list | tuple) for v in o):
                return json.dumps(list(o), separators=(",", ":"), default=str)
            return "[\n" + ",\n".join(pad_in + enc(v, level + 1) for v in o) + "\n" + pad + "]"
        return json.dumps(o, default=str)

    return enc(obj, 0) + "\n"


def write_seed_record(path: str | Path, record: Mapping[str, Any], monitor_n: Mapping[str, int]) -> Path:
    """Write a per-seed record with compact curves, atomically."""
    rec = dict(record)
    if "curve" in rec:
        rec["curve"] = compact_curves(rec["curve"], monitor_n)
    return atomic_write_text(path, dumps_compact(rec))


def read_seed_record(path: str | Path) -> dict[str, Any]:
    """Read a per-seed record (compact or plain) into the in-memory form."""
    rec = json.loads(Path(path).read_text())
    if "curve" in rec:
        rec["curve"] = expand_curves(rec["curve"])
    return rec


# --- statistics over seeds ----------------------------------------------------------------------------------
#: Record fields that are "updates/time until ..." (``None``: never within the run).
EVENT_FIELDS = (
    "updates_to_unlearn_ref",
    "updates_to_unlearn_robust",
    "updates_to_stay_ref",
    "updates_to_stay_robust",
    "time_to_unlearn_ref_s",
    "time_to_unlearn_robust_s",
)
#: Record fields measured in every run.
VALUE_FIELDS = (
    "fid_final",
    "fid_retain_final",
    "forget_fraction_final_robust",
    "forget_fraction_final_ref",
    "time_per_step_s",
    "collateral_at_unlearn_robust",
    "collateral_final_robust",
    "retained_tv_final_robust",
)


def check_resumed(record: Mapping[str, Any], settings: Any, path: Path, free: Sequence[str] = ("seeds",)) -> None:
    """Refuse to reuse a per-seed record made with other bench settings (a resume must not mix runs silently).

    ``settings`` is the bench's settings dataclass; records name theirs in ``provenance.config.settings``. A field
    missing there (a record older than the field) counts as that field's default; ``free`` fields (the seed count,
    switches that do not change a record's numbers) may differ. Records without provenance are trusted.
    """
    from dataclasses import MISSING, fields

    from genunlearn.errors import ConfigError

    made = ((record.get("provenance") or {}).get("config") or {}).get("settings")
    if not isinstance(made, dict):
        return
    for f in fields(settings):
        if f.name in free:
            continue
        default = f.default if f.default is not MISSING else None
        was, now = made.get(f.name, default), getattr(settings, f.name)
        if isinstance(was, list):  # JSON has no tuples
            was = tuple(was)
        if was != now:
            raise ConfigError(
                f"{path} was made with {f.name} = {was!r}, this run asks for {now!r}: "
                "resume with the same settings or write to another --out"
            )


def weight_inputs(session: Any, independent_classifier: str | None = None) -> dict[str, Any]:
    """The weight files a bench record depends on (``provenance.run_record``'s ``inputs``): the session bundle's
    (generator, classifier) and, when one is used, the independent classifier's file."""
    inputs = dict(session.bundle.info.get("inputs") or {})
    if independent_classifier is not None:
        inputs["independent_classifier"] = independent_classifier
    return inputs


def check_inputs(record: Mapping[str, Any], inputs: Mapping[str, Mapping[str, Any] | None], path: Path) -> None:
    """Refuse to reuse a per-seed record made from other weight files than ``inputs`` (name -> file fingerprint,
    :func:`~genunlearn.provenance.file_fingerprint`; ``None``: no such file in this run).

    Every file both this run and the record fingerprinted must have the same sha256 (paths may differ). Records
    without provenance, and files a record older than its fingerprinting did not list, are trusted.
    """
    from genunlearn.errors import ConfigError

    made = (record.get("provenance") or {}).get("inputs")
    if not isinstance(made, Mapping):
        return
    for name, now in sorted(inputs.items()):
        was = made.get(name)
        if now is not None and isinstance(was, Mapping) and was.get("sha256") != now.get("sha256"):
            raise ConfigError(
                f"{path} was made with a {name.replace('_', ' ')} of sha256 {str(was.get('sha256'))[:12]}..., this run "
                f"uses {str(now.get('sha256'))[:12]}... ({now.get('path')}): resume with the same files or write to "
                "another --out"
            )


def _finite(values: Sequence[Any]) -> list[float]:
    return [v for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]


def event_stats(values: Sequence[float | None]) -> dict[str, Any]:
    """Per-seed values of an event (``None`` = never), how many reached it, the median over *all* seeds
    (never counted as later than any; ``None`` when the median seed never got there), the median over the
    seeds that reached it, and the range (min, max) over those."""
    reached = _finite(values)
    ranked = sorted(values, key=lambda v: math.inf if v is None else v)
    n = len(ranked)
    median: float | None = None
    if n:
        lo, hi = ranked[(n - 1) // 2], ranked[n // 2]
        median = None if lo is None or hi is None else (lo + hi) / 2
    return {
        "per_seed": list(values),
        "reached": len(reached),
        "median": median,
        "median_reached": statistics.median(reached) if reached else None,
        "min": min(reached) if reached else None,
        "max": max(reached) if reached else None,
    }


def value_stats(values: Sequence[float | None]) -> dict[str, Any]:
    """Per-seed values, median, min and max (over the finite values)."""
    vals = _finite(values)
    return {
        "per_seed": list(values),
        "median": statistics.median(vals) if vals else None,
        "min": min(vals) if vals else None,
        "max": max(vals) if vals else None,
    }


def seed_stats(records: Sequence[Mapping[str, Any]], held: Sequence[bool | None]) -> dict[str, Any]:
    """Medians, ranges and per-seed values of one bench entry's records (the numbers prose may quote)."""
    out: dict[str, Any] = {"seeds": [r.get("seed", i) for i, r in enumerate(records)]}
    for f in EVENT_FIELDS:
        out[f] = event_stats([r.get(f) for r in records])
    for f in VALUE_FIELDS:
        out[f] = value_stats([r.get(f) for r in records])
    out["held_robust"] = {"per_seed": list(held), "held": sum(h is True for h in held)}
    return out


def mnist_inputs(spec: Any) -> dict[str, str]:
    """The weight files an MNIST run reads (``vae``, ``classifier``), bundled ones resolved to their paths."""
    from genunlearn.models.registry import bundled_weights

    return {
        "vae": str(spec.checkpoint or bundled_weights("mnist-vae")),
        "classifier": str(spec.classifier_checkpoint or bundled_weights("mnist-classifier")),
    }

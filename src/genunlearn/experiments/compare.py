"""``genunlearn bench compare``: every unlearning method side by side, measured against the retrained model.

For each method and seed the same protocol as ``bench mnist`` (K updates, no early stop, the robust monitor:
1,024 latents fixed per seed, eval mode) and, on the final model:

- updates and seconds to forget (first robust reading below the threshold; seconds = the timed steps plus the
  method's one-off preparation, e.g. SalUn's mask) and the one-off building of its terms (not timed per step:
  rep's neighbour search, Selective Amnesia's Fisher);
- FID of generated samples against the retained training images (25,000 samples, classifier features);
- on ``gold_samples`` inputs fixed for every method, seed and model (the *gold latents*): the forget fraction
  under the bundled classifier and under an independent one (the UNO authors'), the class histogram, the
  **collateral change** against the original (:class:`~genunlearn.eval.collateral.CollateralChange`), and the
  **distance to each retrained model** (a model trained by the original recipe without the forget data:
  ``genunlearn train vae --exclude-class 1``): FID between the two models' samples from the gold latents, the
  difference of their forget fractions and the total-variation distance of their class histograms.

Reference rows: the original model, and each retrained model measured against the *other* retrained models
(the floor a method can reach: two retrainings differ too). Results are resumable per (entry, seed)
(``runs/<entry>/seed<k>.json``); weights of every run are kept beside them (not committed), so the distances are
computed again, without unlearning again, when other retrained models are given.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from genunlearn.adapters import eval_mode
from genunlearn.checkpoints import atomic_write_csv, atomic_write_json, atomic_write_text, load_into, save_weights
from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
from genunlearn.errors import ConfigError
from genunlearn.eval.collateral import CollateralChange, histogram_tv, retained_proportions, total_variation
from genunlearn.eval.fid import ClassifierFID
from genunlearn.experiments.bench import ENTRIES as BENCH_ENTRIES
from genunlearn.experiments.bench import BenchEntry, entry_config, first_below, held_below, stays_below
from genunlearn.experiments.records import read_seed_record, write_seed_record
from genunlearn.experiments.session import UnlearnSession
from genunlearn.methods import METHODS
from genunlearn.provenance import file_fingerprint, record_start, run_record

#: The compared entries: the paper's methods, genunlearn's, the peers' (``bench mnist`` entries, without the
#: configurations that only reproduce the paper's published numbers) and retain-only fine-tuning as a baseline.
COMPARE_KEYS = (
    "a",
    "a-d",
    "s",
    "uno",
    "uno-s",
    "h",
    "s-hat",
    "uno-hat",
    "uno-s-hat",
    "uno-fd",
    "rep",
    "gdiff",
    "ngdiff",
    "salun",
    "amnesia",
)
FAMILIES = {
    "a": "paper",
    "a-d": "paper",
    "s": "paper",
    "uno": "paper",
    "uno-s": "paper",
    "h": "paper (classifier)",
    "s-hat": "paper (classifier)",
    "uno-hat": "paper (classifier)",
    "uno-s-hat": "paper (classifier)",
    "uno-fd": "genunlearn",
    "rep": "genunlearn",
    "d": "baseline",
    "gdiff": "peer",
    "ngdiff": "peer",
    "salun": "peer",
    "amnesia": "peer",
}
ENTRIES: tuple[BenchEntry, ...] = (
    *(e for k in COMPARE_KEYS for e in BENCH_ENTRIES if e.key == k),
    BenchEntry("d", "D: fine-tuning on the retained data only", "d", 1),
)


@dataclass(frozen=True)
class CompareSettings:
    """Protocol and measurement sizes of the comparison (``bench mnist``'s Table 2 settings by default).

    Attributes:
        seeds: seeds 0..seeds-1 per entry.
        steps: K updates per run (no early stop).
        lr, batch_size, beta_o, beta_h, alpha: the shared settings of every entry (entries override some).
        fid_samples: generated samples for FID against the retained training images.
        gold_samples: the gold latents (collateral change, distance to the retrained models, independent
            classifier).
        monitor_samples: latents of the robust monitor (fixed per seed).
        threshold: forget fraction that counts as forgotten.
        hold: updates the reading must stay below the threshold after it first gets there ("held").
    """

    seeds: int = 5
    steps: int = 530
    lr: float = 1e-3
    batch_size: int = 128
    beta_o: float = 1e3
    beta_h: float = 1e3
    alpha: float = 1e-8
    fid_samples: int = 25_000
    gold_samples: int = 10_000
    monitor_samples: int = 1024
    threshold: float = 0.02
    hold: int = 100

    @classmethod
    def quick(cls) -> CompareSettings:
        """A smoke-test setting."""
        return cls(seeds=1, steps=12, fid_samples=1000, gold_samples=1000, monitor_samples=256)


class Gold:
    """The gold latents and what is measured on them once: the original's and the retrained models' samples.

    Args:
        session: the loaded problem.
        n: number of gold latents (drawn from a generator seeded 40,000: the same for every run).
        independent: a second classifier (or ``None``), re-measuring the forget fraction.
        retrained: paths of retrained models' weights.
        load: ``load(path) -> model``.
    """

    def __init__(
        self,
        session: UnlearnSession,
        n: int,
        independent: nn.Module | None,
        retrained: list[str],
        load: Any,
        independent_id: dict[str, Any] | None = None,
    ) -> None:
        self.session = session
        self.independent_id = independent_id
        sampler = session.bundle.sampler
        if sampler is None or session.classifier is None:
            raise ConfigError("the comparison needs a model with a sampler and a classifier")
        self.latents = sampler.draw(n, torch.Generator().manual_seed(40_000)).to(session.device)
        self.independent = independent
        self.num_classes = session.bundle.num_classes
        self.forget = list(session.forget_classes)
        self.original = self.measure(session.fresh_model())
        self.models = [load(p) for p in retrained]
        self.retrained: list[dict[str, Any]] = []
        self._fid: list[ClassifierFID] = []
        for path, model in zip(retrained, self.models, strict=True):
            m = self.measure(model)
            metric = self.session.fid_metric(m["samples"][:1])
            metric.update_batches(m["samples"], real=True)
            self._fid.append(metric)
            self.retrained.append({"path": path, "sha256": file_fingerprint(path)["sha256"], **m})  # type: ignore[index]

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, Any]:
        """Samples from the gold latents, predicted classes (own and independent), histogram, forget fraction."""
        sampler = self.session.bundle.sampler
        assert sampler is not None and self.session.classifier is not None
        with eval_mode(model):
            samples = torch.cat([sampler.generate(model, z) for z in self.latents.split(5000)])
        pred = torch.cat([self.session.classifier(x).argmax(1) for x in samples.split(5000)]).cpu()
        counts = torch.bincount(pred, minlength=self.num_classes)[: self.num_classes]
        out: dict[str, Any] = {
            "samples": samples,
            "pred": pred,
            "counts": counts.tolist(),
            "forget_fraction": float(counts[self.forget].sum()) / len(pred),
        }
        if self.independent is not None:
            ip = torch.cat([self.independent(x).argmax(1) for x in samples.split(5000)]).cpu()
            out["forget_fraction_independent"] = float(torch.isin(ip, torch.tensor(self.forget)).float().mean())
        return out

    def distances(self, m: dict[str, Any], skip: int | None = None) -> dict[str, list[float]]:
        """FID / forget-fraction gap / histogram TV between measured samples ``m`` and each retrained model."""
        fids, gaps, tvs = [], [], []
        for i, (ref, metric) in enumerate(zip(self.retrained, self._fid, strict=True)):
            if i == skip:
                continue
            metric.reset()
            metric.update_batches(m["samples"], real=False)
            fids.append(float(metric.compute()))
            gaps.append(abs(m["forget_fraction"] - ref["forget_fraction"]))
            tvs.append(histogram_tv(m["counts"], ref["counts"]))
        return {"fid_to_retrained": fids, "forget_fraction_gap": gaps, "histogram_tv": tvs}

    def collateral(self, m: dict[str, Any]) -> dict[str, Any]:
        """Collateral change against the original on the gold latents."""
        metric = CollateralChange(self.num_classes, self.forget)
        metric.update(self.original["pred"], m["pred"])
        r = metric.compute()
        return {"changed_share": r["changed_share"], "retained_tv": r["retained_tv"]}


def _public(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k not in ("samples", "pred")}


def run_entry(
    session: UnlearnSession, entry: BenchEntry, s: CompareSettings, seed: int
) -> tuple[dict[str, Any], nn.Module]:
    """Unlearn one (entry, seed) and record the run's own measurements (the gold ones are added by the caller)."""
    cfg, objective = entry_config(entry, s, seed)
    monitor = session.monitor(seed, n=s.monitor_samples, mode="eval")
    model, result = session.run(cfg, objective, monitor=monitor, progress=False)
    curve = [row.get("forget_fraction", math.nan) for row in result.log]
    times = [row["compute_time_s"] for row in result.log]
    first = first_below(curve, s.threshold)
    fids = session.fid(model, s.fid_samples, seed, ("fid_retain",))
    record = {
        "entry": entry.key,
        "label": entry.label,
        "seed": seed,
        "status": result.status,
        "steps_run": result.steps_run,
        "updates_to_forget": first,
        "seconds_to_forget": None if first is None else times[first],
        "updates_to_stay": stays_below(curve, s.threshold),
        "held": held_below(curve, s.threshold, s.hold),
        "prepare_s": result.setup_time_s,
        "time_per_step_s": result.time_per_step_s,
        "forget_fraction_final": curve[-1],
        "fid_retain": fids["fid_retain"],
        "curve": {"forget_fraction": curve, "compute_time_s": times},
        "config": asdict(cfg),
        "objective": asdict(objective),
    }
    return record, model


def _mean_std(values: list[Any]) -> list[float | None]:
    """Mean and standard deviation of the finite values (a diverged run's NaN or infinity is left out: the tables
    count diverged seeds separately)."""
    v = [x for x in values if x is not None and not (isinstance(x, float) and not math.isfinite(x))]
    if not v:
        return [None, None]
    return [statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0]


def _gold_record(gold: Gold, m: dict[str, Any]) -> dict[str, Any]:
    out = {"measured": _public(m), **gold.collateral(m)}
    if gold.retrained:
        d = gold.distances(m)
        out.update({k: statistics.fmean(v) for k, v in d.items()}, per_retrained=d)
        out["retrained_sha256"] = [r["sha256"] for r in gold.retrained]
    out["independent"] = gold.independent_id
    return out


def _gold_stale(rec: dict[str, Any], gold: Gold) -> bool:
    """A record's final-model measures were made with other retrained models or another independent classifier
    (file or bn1 use; records from before these were recorded were read with bn1 skipped)."""
    g = rec.get("gold")
    if g is None or g.get("retrained_sha256", []) != [r["sha256"] for r in gold.retrained]:
        return True
    read = (g.get("measured") or {}).get("forget_fraction_independent") is not None
    legacy = {"sha256": None, "use_bn": False} if read else None  # recorded before bn1 use was
    made, want = g.get("independent", legacy), gold.independent_id
    if made is None or want is None:
        return made is not want
    return made["use_bn"] != want["use_bn"] or made.get("sha256") not in (None, want["sha256"])


def aggregate(records: dict[str, list[dict]], gold: Gold, s: CompareSettings) -> dict[str, Any]:
    """Rows (mean, std over seeds) and the reference rows."""
    rows = []
    for entry in ENTRIES:
        recs = records.get(entry.key)
        if not recs:
            continue
        reached = [r for r in recs if r["updates_to_forget"] is not None]
        g = [r["gold"] for r in recs]
        row = {
            "entry": entry.key,
            "label": entry.label,
            "family": FAMILIES.get(entry.key, ""),
            "method": entry.method,
            "classifier": METHODS[entry.method].uses_classifier,
            "seeds": len(recs),
            "reached": len(reached),
            "held": sum(r["held"] is True for r in recs),
            "updates_to_forget": _mean_std([r["updates_to_forget"] for r in reached]),
            "seconds_to_forget": _mean_std([r["seconds_to_forget"] for r in reached]),
            "setup_s": recs[0].get("setup_s"),
            "forget_fraction": _mean_std([x["measured"]["forget_fraction"] for x in g]),
            "forget_fraction_independent": _mean_std([x["measured"].get("forget_fraction_independent") for x in g]),
            "fid_retain": _mean_std([r["fid_retain"] for r in recs]),
            "changed_share": _mean_std([x["changed_share"] for x in g]),
            "retained_tv": _mean_std([x["retained_tv"] for x in g]),
            "fid_to_retrained": _mean_std([x.get("fid_to_retrained") for x in g]),
            "forget_fraction_gap": _mean_std([x.get("forget_fraction_gap") for x in g]),
            "histogram_tv": _mean_std([x.get("histogram_tv") for x in g]),
            "diverged": sum(r["status"].startswith("diverged") for r in recs),
        }
        rows.append(row)
    return {"rows": rows}


def _means(d: dict[str, list[float]]) -> dict[str, float]:
    return {k: statistics.fmean(v) for k, v in d.items() if v}


def reference_rows(session: UnlearnSession, gold: Gold, s: CompareSettings) -> list[dict[str, Any]]:
    """The original model and the retrained models (each against the *other* retrained models)."""
    original = gold.original
    refs = [
        {
            "entry": "original",
            "label": "original (before unlearning)",
            "forget_fraction": original["forget_fraction"],
            "forget_fraction_independent": original.get("forget_fraction_independent"),
            "fid_retain": session.fid(session.fresh_model(), s.fid_samples, 0, ("fid_retain",))["fid_retain"],
            "changed_share": 0.0,
            "retained_tv": 0.0,
            **_means(gold.distances(original)),
        }
    ]
    for i, r in enumerate(gold.retrained):
        refs.append(
            {
                "entry": f"retrained-{i}",
                "label": f"retrained without the forget data ({Path(r['path']).parent.name})",
                "forget_fraction": r["forget_fraction"],
                "forget_fraction_independent": r.get("forget_fraction_independent"),
                "fid_retain": session.fid(gold.models[i], s.fid_samples, 0, ("fid_retain",))["fid_retain"],
                "changed_share": None,  # another latent space: no input-by-input comparison with the original
                "retained_tv": total_variation(
                    retained_proportions(original["counts"], gold.forget),
                    retained_proportions(r["counts"], gold.forget),
                ),
                **_means(gold.distances(r, skip=i)),
            }
        )
    return refs


def run_compare(
    out: str | Path,
    *,
    model: str = "mnist-vae",
    forget: tuple[int, ...] = (1,),
    retrained: list[str] | None = None,
    independent_classifier: str | None = None,
    settings: CompareSettings | None = None,
    entries: list[str] | None = None,
    device: str = "auto",
    progress: bool = True,
    command: str | None = None,
    independent_classifier_bn: bool | None = None,
) -> dict[str, Any]:
    """Run (or resume) the comparison; writes ``results.json``, ``table.md``/``table.csv`` and figures into ``out``.

    ``independent_classifier_bn``: read the independent MNIST classifier with ``bn1`` applied or not (default: as
    its file records, applied when it records nothing, as for the UNO authors': ``audit.independent_bn``).
    """
    from genunlearn.experiments import compare_figures
    from genunlearn.models import load_model

    s = settings or CompareSettings()
    known = {e.key: e for e in ENTRIES}
    chosen = entries or list(known)
    bad = [k for k in chosen if k not in known]
    if bad:
        raise ConfigError(f"unknown compare entries {bad}; choose from {', '.join(known)}")
    record_start()
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    session = UnlearnSession(
        ModelConfig(name=model),
        DataConfig(forget=tuple(forget)),
        MonitorConfig(samples=s.monitor_samples),
        device=device,
    )
    retrained = list(retrained or [])

    def loader(path: str) -> nn.Module:
        return load_model(model, path, device=session.device)

    independent, independent_id = None, None
    if independent_classifier is not None:
        from genunlearn.experiments.audit import independent_bn

        use_bn = independent_bn(independent_classifier, independent_classifier_bn)
        independent = load_model("mnist-classifier", independent_classifier, device=session.device, use_bn=use_bn)
        independent_id = {**(file_fingerprint(independent_classifier) or {}), "use_bn": use_bn}
    gold = Gold(session, s.gold_samples, independent, retrained, loader, independent_id)
    records: dict[str, list[dict]] = {}
    refs_cache: list[dict[str, Any]] = []
    models0: dict[str, nn.Module] = {}
    jobs = [(known[k], seed) for seed in range(s.seeds) for k in chosen]  # all entries of a seed first
    t0 = time.perf_counter()
    # the tables are rewritten after every seed round; the last round's write is the result
    write = partial(
        _write,
        out,
        session,
        gold,
        s,
        records,
        refs_cache,
        chosen,
        forget,
        model,
        retrained,
        command,
        t0,
    )
    result: dict[str, Any] | None = None
    for entry, seed in tqdm(jobs, desc="compare", disable=not progress):
        path = out / "runs" / entry.key / f"seed{seed}.json"
        weights = path.with_suffix(".safetensors")
        if path.is_file() and weights.is_file():
            rec = read_seed_record(path)
            unlearned = load_into(session.fresh_model(), weights).eval()
        else:
            t_setup = dict(session.terms_setup_s)
            rec, unlearned = run_entry(session, entry, s, seed)
            new = {k: v for k, v in session.terms_setup_s.items() if k not in t_setup}
            rec["setup_s"] = sum(new.values()) if new else None
            rec["provenance"] = run_record(
                {"entry": entry.key, "seed": seed, "settings": asdict(s), "model": model, "forget": list(forget)},
                inputs=session.bundle.info.get("inputs"),
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            save_weights(unlearned, weights)
            rec["gold"] = None
        if _gold_stale(rec, gold):
            rec["gold"] = _gold_record(gold, gold.measure(unlearned))
            write_seed_record(path, rec, {"forget_fraction": s.monitor_samples})
        if seed == 0:
            models0[entry.key] = unlearned
        records.setdefault(entry.key, []).append(rec)
        if entry.key == chosen[-1]:  # a seed round is complete: write what there is so far
            result = write()
    if result is None:  # no jobs ran (nothing to round off)
        result = write()
    (out / "figures").mkdir(exist_ok=True)
    compare_figures.make_all(out / "figures", session, gold, records, result, models0)
    return result


def _write(
    out: Path,
    session: UnlearnSession,
    gold: Gold,
    s: CompareSettings,
    records: dict[str, list[dict]],
    refs_cache: list,
    chosen: list[str],
    forget: tuple[int, ...],
    model: str,
    retrained: list[str],
    command: str | None,
    t0: float,
) -> dict[str, Any]:
    """Aggregate the records so far and write ``results.json`` and the tables (the references are measured once)."""
    if not refs_cache:
        refs_cache.extend(reference_rows(session, gold, s))
    result = {
        "kind": "compare",
        "title": f"{model}, forget {','.join(map(str, forget))}: every method against the retrained model",
        "model": model,
        "forget": list(forget),
        "settings": asdict(s),
        "seeds_done": {k: len(v) for k, v in records.items()},
        "retrained": [_public(r) for r in gold.retrained],
        "independent_classifier": gold.independent_id,
        "references": refs_cache,
        "rows": aggregate(records, gold, s)["rows"],
        "wall_time_this_session_s": time.perf_counter() - t0,
        "provenance": run_record(
            {"settings": asdict(s), "entries": chosen, "model": model, "forget": list(forget), "command": command},
            inputs={
                **(session.bundle.info.get("inputs") or {}),
                **{f"retrained{i}": p for i, p in enumerate(retrained)},
            },
        ),
    }
    atomic_write_json(out / "results.json", result)
    write_tables(result, out)
    return result


def _fmt(ms: Any, spec: str = ".1f", pct: bool = False) -> str:
    if ms is None:
        return "—"
    if isinstance(ms, (int, float)):
        return f"{100 * ms:{spec}}%" if pct else f"{ms:{spec}}"
    m, sd = ms
    if m is None:
        return "—"
    if pct:
        return f"{100 * m:{spec}}% ({100 * sd:{spec}})"
    return f"{m:{spec}} ({sd:{spec}})"


COLUMNS = (
    "| method | family | updates to forget (reached) | seconds to forget | one-off setup (s) | forget fraction "
    "(own / independent classifier) | FID vs retained digits | FID to retrained | histogram TV to retrained "
    "| collateral: changed share | collateral: retained-mix TV |"
)


def _seeds_text(result: dict[str, Any]) -> str:
    planned = result["settings"]["seeds"]
    done = sorted({r["seeds"] for r in result["rows"]})
    if not done or done == [planned]:
        return f"{planned} seeds"
    return (
        f"{done[0]}-{done[-1]} of {planned} planned seeds (a run in progress)"
        if len(done) > 1
        else (f"{done[0]} of {planned} planned seeds (a run in progress)")
    )


def _independent_note(result: dict[str, Any]) -> str:
    """Which independent classifier the table's second forget fraction is, and how it read its input."""
    ind = result.get("independent_classifier")
    if not ind:
        return ""
    name = Path(ind.get("path", "")).name or "a second classifier"
    if "use_bn" not in ind:  # made before bn1 use was recorded: compare read it with bn1 skipped then
        return (
            f" Independent classifier: {name} with bn1 skipped (the UNO authors' forward; recorded before bn1 use "
            "was an option). Skipping bn1 reads fewer 1s among generated digits than applying it "
            "(benchmarks/results/independent_bn.json): this column is biased low."
        )
    return f" Independent classifier: {name}, bn1 {'applied' if ind['use_bn'] else 'skipped'}."


def render_table(result: dict[str, Any]) -> str:
    """Markdown of the comparison (mean (std) over seeds; references first)."""
    s = result["settings"]
    lines = [
        f"# {result['title']}",
        "",
        f"{_seeds_text(result)}, K = {s['steps']} updates (no early stop), threshold {s['threshold']:.0%} on the "
        f"robust monitor ({s['monitor_samples']} latents per seed, eval mode). Final-model measures on "
        f"{s['gold_samples']:,} gold latents shared by every model; FID vs retained digits from "
        f"{s['fid_samples']:,} samples. Mean (std) over seeds; updates and seconds over the seeds that reached the "
        f"threshold. Distances to the retrained model: mean over {len(result['retrained'])} retrained model(s). "
        "Collateral: share of gold latents the original generated as a retained digit whose digit changed; "
        "retained-mix TV: total variation of the retained-digit proportions. Seconds include the method's one-off "
        "preparation; one-off setup is the building of its terms (neighbour search, Fisher), not included."
        + _independent_note(result),
        "",
        COLUMNS,
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["references"]:
        lines.append(
            f"| {r['label']} | reference | | | | {_fmt(r['forget_fraction'], '.1f', True)} / "
            f"{_fmt(r.get('forget_fraction_independent'), '.1f', True)} | {_fmt(r.get('fid_retain'))} "
            f"| {_fmt(r.get('fid_to_retrained'))} | {_fmt(r.get('histogram_tv'), '.3f')} "
            f"| {_fmt(r.get('changed_share'), '.1f', True)} | {_fmt(r.get('retained_tv'), '.3f')} |"
        )
    for r in result["rows"]:
        name = r["label"] + (" ⚠ diverged" if r["diverged"] else "")
        lines.append(
            f"| {name} | {r['family']} | {_fmt(r['updates_to_forget'])} ({r['reached']}/{r['seeds']}) "
            f"| {_fmt(r['seconds_to_forget'], '.2f')} | {_fmt(r['setup_s'], '.1f')} "
            f"| {_fmt(r['forget_fraction'], '.1f', True)} / {_fmt(r['forget_fraction_independent'], '.1f', True)} "
            f"| {_fmt(r['fid_retain'])} | {_fmt(r['fid_to_retrained'])} | {_fmt(r['histogram_tv'], '.3f')} "
            f"| {_fmt(r['changed_share'], '.1f', True)} | {_fmt(r['retained_tv'], '.3f')} |"
        )
    return "\n".join(lines) + "\n"


def write_tables(result: dict[str, Any], out: Path) -> None:
    """``table.md`` and ``table.csv`` from the result."""
    atomic_write_text(out / "table.md", render_table(result))
    atomic_write_csv(out / "table.csv", csv_rows(result))


def csv_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (mean and std in separate columns)."""
    flat = []
    for r in result["references"] + result["rows"]:
        d: dict[str, Any] = {}
        for k, v in r.items():
            if isinstance(v, list) and len(v) == 2:
                d[f"{k}_mean"], d[f"{k}_std"] = v
            elif not isinstance(v, (list, dict)):
                d[k] = v
        flat.append(d)
    return flat

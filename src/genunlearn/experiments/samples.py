"""Sample-level unlearning: forget specific training images, and check it like a membership auditor would.

``genunlearn bench compare --forget-ids FILE`` runs every classifier-free method for K updates on the bundled
VAE with the images listed in ``FILE`` as the forget set (no class monitor: the methods run their K updates),
then measures on the final model:

- the **ELBO gap**: mean negative ELBO of held-out test images minus that of the forget images (nats; > 0: the
  model fits its forget images better than unseen images, as it does its training data);
- **membership inference**, forget images (members of the original) against the test images (non-members): the
  loss-threshold attack and the offline likelihood-ratio attack with shadow models (AUC, TPR at 1% FPR);
- **nearest neighbours**: ``P(sim(x, D_f) >= delta)`` for 10,000 generated samples, ``sim`` the largest pixel
  cosine similarity to a forget image and ``delta`` the 99th percentile of the test images' similarity to the
  forget images (as close to a forget image as the closest 1% of unseen real images);
- FID against the retained training images.

The same measures on the original model and on models retrained without the forget images (``--retrained``) give
the two ends: an unlearned model should look like the retrained one, not like the original. Shadow models are
``genunlearn train vae --exclude-ids HALF`` runs on random halves of the training set (scaled down: see
``benchmarks/shadows.py``); their per-image losses also give each image's counterfactual memorisation, from which
``benchmarks/forget_sets.py`` picks the memorised forget sets.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from genunlearn.checkpoints import atomic_write_csv, atomic_write_json, atomic_write_text, save_weights
from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
from genunlearn.data import load_dataset
from genunlearn.errors import ConfigError
from genunlearn.eval.membership import (
    attack_summary,
    lira_offline_scores,
    loss_threshold_scores,
    nearest_similarity,
    share_at_least,
    vae_nll,
)
from genunlearn.experiments.bench import BenchEntry, entry_config
from genunlearn.experiments.compare import ENTRIES as COMPARE_ENTRIES
from genunlearn.experiments.compare import FAMILIES, _mean_std
from genunlearn.experiments.session import UnlearnSession
from genunlearn.objectives import VAEObjective
from genunlearn.provenance import file_fingerprint, record_start, run_record
from genunlearn.train import read_ids

#: Entries that apply to sample unlearning (the classifier-assisted ones count classes).
SAMPLE_KEYS = ("a", "a-d", "s", "uno", "uno-s", "uno-fd", "rep", "d", "gdiff", "ngdiff", "salun", "amnesia")
ENTRIES: tuple[BenchEntry, ...] = tuple(e for k in SAMPLE_KEYS for e in COMPARE_ENTRIES if e.key == k)


@dataclass(frozen=True)
class SampleSettings:
    """Protocol and measurement sizes of sample-level unlearning.

    Attributes:
        seeds: seeds 0..seeds-1 per entry.
        steps: K updates (no monitor decides when to stop).
        lr, batch_size, beta_o: the shared settings (entries override some).
        nll_draws: reparameterisation draws per image for the negative ELBO.
        generated: samples for the nearest-neighbour criterion (from fixed latents).
        fid_samples: samples for FID against the retained training images.
        delta_quantile: quantile of the test images' similarity to the forget set that defines delta.
        test_candidates: held-out test images used as non-members (the first ones of the test split).
    """

    seeds: int = 3
    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 128
    beta_o: float = 1e3
    beta_h: float = 1e3
    alpha: float = 1e-8
    threshold: float = 0.02
    nll_draws: int = 4
    generated: int = 10_000
    fid_samples: int = 10_000
    delta_quantile: float = 0.99
    test_candidates: int = 10_000

    @classmethod
    def quick(cls) -> SampleSettings:
        """A smoke-test setting."""
        return cls(seeds=1, steps=5, nll_draws=1, generated=500, fid_samples=500, test_candidates=1000)


@dataclass
class Shadow:
    """A reference model trained on part of the training set: its weights and which training images it saw."""

    path: str
    trained_on: torch.Tensor  # bool (N_train,)

    @classmethod
    def from_run(cls, run_dir: str | Path, n_train: int) -> Shadow:
        """A ``genunlearn train vae --exclude-ids`` output directory (its ``record.json`` names the ids file)."""
        run_dir = Path(run_dir)
        record = json.loads((run_dir / "record.json").read_text())
        if not record.get("complete"):
            raise ConfigError(f"{run_dir}: the shadow model's training is not complete")
        ids_file = record["config"].get("exclude_ids")
        seen = torch.ones(n_train, dtype=torch.bool)
        if ids_file:
            seen[torch.tensor(read_ids(ids_file))] = False
        return cls(str(run_dir / "model.safetensors"), seen)


class Auditor:
    """Everything measured once: candidates (forget and test images), shadow losses, delta, generated latents."""

    def __init__(self, session: UnlearnSession, s: SampleSettings, shadows: list[Shadow], load: Any) -> None:
        self.session, self.s = session, s
        test = load_dataset(session.data_config.dataset or "mnist", "test", session.data_config.data_dir)
        self.test = test.flat_float()[: s.test_candidates].to(session.device)
        forget = session.forget_data
        self.forget = (forget[0] if isinstance(forget, tuple) else forget).to(session.device)
        self.forget_index = session.split.forget
        obj = session.bundle.objective
        if not isinstance(obj, VAEObjective):
            raise ConfigError("sample-level auditing measures a VAE's negative ELBO; this model has another objective")
        self.objective = obj
        self.latent_dim = int(session.fresh_model().latent_dim)
        sims = nearest_similarity(self.test, self.forget)
        self.delta = float(torch.quantile(sims.double(), s.delta_quantile))
        sampler = session.bundle.sampler
        assert sampler is not None
        self.latents = sampler.draw(s.generated, torch.Generator().manual_seed(40_000)).to(session.device)
        self.shadows = shadows
        self.reference_nll: torch.Tensor | None = None
        self.reference_out: torch.Tensor | None = None
        if shadows:
            rows, outs = [], []
            for sh in shadows:
                model = load(sh.path)
                rows.append(torch.cat([self.nll(model, self.forget), self.nll(model, self.test)]))
                outs.append(
                    torch.cat([~sh.trained_on[self.forget_index], torch.ones(len(self.test), dtype=torch.bool)])
                )
            self.reference_nll, self.reference_out = torch.stack(rows), torch.stack(outs)

    def nll(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Per-image negative ELBO (seeded draws, eval mode)."""
        return vae_nll(model, x, self.objective.per_example, latent_dim=self.latent_dim, draws=self.s.nll_draws)

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, Any]:
        """ELBO gap, both attacks, nearest-neighbour share, for one model."""
        nf, nt = self.nll(model, self.forget), self.nll(model, self.test)
        k = len(nf)
        out: dict[str, Any] = {
            "nll_forget": float(nf.mean()),
            "nll_test": float(nt.mean()),
            "elbo_gap": float(nt.mean() - nf.mean()),
            "loss_threshold": attack_summary(loss_threshold_scores(nf), loss_threshold_scores(nt)),
        }
        if self.reference_nll is not None:
            assert self.reference_out is not None
            scores = lira_offline_scores(torch.cat([nf, nt]), self.reference_nll, self.reference_out)
            members, non = scores[:k], scores[k:]
            out["lira"] = attack_summary(members[~torch.isnan(members)], non)
        sampler = self.session.bundle.sampler
        assert sampler is not None
        model.eval()
        samples = torch.cat([sampler.generate(model, z) for z in self.latents.split(5000)])
        sims = nearest_similarity(samples, self.forget)
        out["p_sim_at_least_delta"] = share_at_least(sims, self.delta)
        out["mean_top_similarity"] = float(sims.mean())
        return out


def _row(key: str, label: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    def vals(path: str) -> list[Any]:
        out = []
        for r in recs:
            v: Any = r["audit"]
            for part in path.split("."):
                v = None if v is None else v.get(part)
            out.append(v)
        return out

    return {
        "entry": key,
        "label": label,
        "family": FAMILIES.get(key, ""),
        "seeds": len(recs),
        "diverged": sum(r.get("status", "").startswith("diverged") for r in recs),
        "seconds": _mean_std([r.get("seconds") for r in recs]),
        "elbo_gap": _mean_std(vals("elbo_gap")),
        "nll_test": _mean_std(vals("nll_test")),
        "loss_threshold_auc": _mean_std(vals("loss_threshold.auc")),
        "loss_threshold_tpr": _mean_std(vals("loss_threshold.tpr_at_1pct_fpr")),
        "lira_auc": _mean_std(vals("lira.auc")),
        "lira_tpr": _mean_std(vals("lira.tpr_at_1pct_fpr")),
        "p_sim": _mean_std(vals("p_sim_at_least_delta")),
        "fid_retain": _mean_std([r.get("fid_retain") for r in recs]),
    }


def run_samples(
    out: str | Path,
    *,
    forget_ids: str,
    model: str = "mnist-vae",
    retrained: list[str] | None = None,
    shadows: list[str] | None = None,
    settings: SampleSettings | None = None,
    entries: list[str] | None = None,
    device: str = "auto",
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) sample-level unlearning and its audit; writes results.json and table.md/csv into ``out``."""
    from genunlearn.models import load_model

    s = settings or SampleSettings()
    known = {e.key: e for e in ENTRIES}
    chosen = entries or list(known)
    bad = [k for k in chosen if k not in known]
    if bad:
        raise ConfigError(f"entries {bad} do not apply to sample unlearning; choose from {', '.join(known)}")
    record_start()
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    session = UnlearnSession(ModelConfig(name=model), DataConfig(forget_ids=forget_ids), MonitorConfig(), device=device)
    n_train = len(session.data.labels)

    def loader(path: str) -> nn.Module:
        return load_model(model, path, device=session.device)

    shadow_models = [Shadow.from_run(d, n_train) for d in (shadows or [])]
    auditor = Auditor(session, s, shadow_models, loader)
    original = {"audit": auditor.measure(session.fresh_model())}
    original["fid_retain"] = session.fid(session.fresh_model(), s.fid_samples, 0, ("fid_retain",))["fid_retain"]
    refs = [_row("original", "original (trained on the forget images)", [original])]
    for i, path in enumerate(retrained or []):
        m = loader(path)
        rec = {
            "audit": auditor.measure(m),
            "fid_retain": session.fid(m, s.fid_samples, 0, ("fid_retain",))["fid_retain"],
        }
        refs.append(_row(f"retrained-{i}", f"retrained without them ({Path(path).parent.name})", [rec]))
    records: dict[str, list[dict[str, Any]]] = {}
    jobs = [(known[k], seed) for seed in range(s.seeds) for k in chosen]
    t0 = time.perf_counter()
    for entry, seed in tqdm(jobs, desc="samples", disable=not progress):
        path = out / "runs" / entry.key / f"seed{seed}.json"
        weights = path.with_suffix(".safetensors")
        if path.is_file() and weights.is_file():
            rec = json.loads(path.read_text())
        else:
            cfg, objective = entry_config(entry, s, seed)
            cfg_run = replace(cfg, stop_at=None)
            unlearned, result = session.run(cfg_run, objective, progress=False)
            rec = {
                "entry": entry.key,
                "seed": seed,
                "status": result.status,
                "steps_run": result.steps_run,
                "seconds": result.log[-1]["compute_time_s"] if result.log else None,
                "time_per_step_s": result.time_per_step_s,
                "fid_retain": session.fid(unlearned, s.fid_samples, seed, ("fid_retain",))["fid_retain"],
                "audit": auditor.measure(unlearned),
                "config": asdict(cfg_run),
                "objective": asdict(objective),
                "provenance": run_record(
                    {"entry": entry.key, "seed": seed, "settings": asdict(s), "forget_ids": forget_ids},
                    inputs={**(session.bundle.info.get("inputs") or {}), "forget_ids": forget_ids},
                ),
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            save_weights(unlearned, weights)
            atomic_write_json(path, rec)
        records.setdefault(entry.key, []).append(rec)
    rows = [_row(e.key, e.label, records[e.key]) for e in ENTRIES if e.key in records]
    result = {
        "kind": "samples",
        "title": f"{model}: forget the {int(session.split.forget.numel())} training images of {Path(forget_ids).name}",
        "forget_ids": file_fingerprint(forget_ids),
        "forget_set_size": int(session.split.forget.numel()),
        "settings": asdict(s),
        "delta": auditor.delta,
        "shadows": [{"path": sh.path, "trained_on": int(sh.trained_on.sum())} for sh in shadow_models],
        "retrained": [file_fingerprint(p) for p in retrained or []],
        "references": refs,
        "rows": rows,
        "wall_time_this_session_s": time.perf_counter() - t0,
        "provenance": run_record(
            {"settings": asdict(s), "entries": chosen, "forget_ids": forget_ids, "command": command},
            inputs={**(session.bundle.info.get("inputs") or {}), "forget_ids": forget_ids},
        ),
    }
    atomic_write_json(out / "results.json", result)
    atomic_write_text(out / "table.md", render_samples(result))
    atomic_write_csv(out / "table.csv", _csv(result))
    return result


def _num(v: float, spec: str) -> str:
    """``v`` in ``spec``; magnitudes of a million or more (a diverged run) in two significant digits."""
    return f"{v:.2g}" if abs(v) >= 1e6 else f"{v:{spec}}"


def _f(ms: Any, spec: str = ".2f") -> str:
    if ms is None or ms[0] is None:
        return "—"
    return _num(ms[0], spec) + (f" ({_num(ms[1], spec)})" if ms[1] else "")


def render_samples(result: dict[str, Any]) -> str:
    """Markdown of the sample-level comparison (references first; mean (std) over seeds)."""
    s = result["settings"]
    lines = [
        f"# {result['title']}",
        "",
        f"{s['seeds']} seed(s), K = {s['steps']} updates. ELBO gap: mean negative ELBO of "
        f"{s.get('test_candidates', 10_000):,} test "
        "images minus "
        "that of the forget images (nats; > 0: the forget images fit better than unseen ones). Attacks: forget "
        "images (members) against test images (non-members); AUC 0.5 = indistinguishable; LiRA: offline likelihood "
        f"ratio with {len(result['shadows'])} shadow model(s). P(sim >= delta): share of {s['generated']:,} generated "
        f"samples whose pixel cosine similarity to some forget image is at least delta = {result['delta']:.3f} (the "
        f"{s['delta_quantile']:.0%} quantile of the test images' similarity to the forget images).",
        "",
        "| model | family | ELBO gap (nats) | loss-threshold AUC · TPR@1%FPR | LiRA AUC · TPR@1%FPR "
        "| P(sim >= delta) | FID vs retained digits | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["references"] + result["rows"]:
        fam = r["family"] or "reference"
        name = r["label"] + (" ⚠ diverged" if r.get("diverged") else "")
        lines.append(
            f"| {name} | {fam} | {_f(r['elbo_gap'])} | {_f(r['loss_threshold_auc'], '.3f')} · "
            f"{_f(r['loss_threshold_tpr'], '.3f')} | {_f(r['lira_auc'], '.3f')} · {_f(r['lira_tpr'], '.3f')} "
            f"| {_f(r['p_sim'], '.4f')} | {_f(r['fid_retain'], '.1f')} | {_f(r['seconds'], '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def _csv(result: dict[str, Any]) -> list[dict[str, Any]]:
    flat = []
    for r in result["references"] + result["rows"]:
        d: dict[str, Any] = {}
        for k, v in r.items():
            if isinstance(v, list) and len(v) == 2:
                d[f"{k}_mean"], d[f"{k}_std"] = v
            else:
                d[k] = v
        flat.append(d)
    return flat


def collect(root: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """The sample-level results under ``root`` (``root/<set>/results.json``), by kind of set then size."""
    found = []
    for path in sorted(Path(root).glob("*/results.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("kind") == "samples":
            found.append((path.parent.name, data))
    if not found:
        raise ConfigError(f"{root}: no sample-level results (*/results.json of bench compare --forget-ids)")

    def order(item: tuple[str, dict[str, Any]]) -> tuple[str, int]:
        kind, _, size = item[0].rpartition("-")
        return (kind, int(size) if size.isdigit() else 0)

    return sorted(found, key=order)


def _retrained_mean(refs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key][0] for r in refs if r["entry"].startswith("retrained") and r[key][0] is not None]
    return sum(vals) / len(vals) if vals else None


def _original(data: dict[str, Any]) -> dict[str, Any]:
    """The reference row of the original model in one sample-level result."""
    return next(r for r in data["references"] if r["entry"] == "original")


def _damaged(fid: float | None, original_fid: float | None) -> bool:
    """FID vs retained digits above 1.5x the original's: the model is damaged (its other numbers say little)."""
    return fid is not None and original_fid is not None and fid > 1.5 * original_fid


def _overview_cell(data: dict[str, Any], by_entry: dict[str, dict[str, Any]], key: str) -> str:
    """``ELBO gap · LiRA AUC`` of one model on one set, with its marks (damaged, diverged seeds)."""
    if key == "retrained":
        gap, auc, fid = (_retrained_mean(data["references"], k) for k in ("elbo_gap", "lira_auc", "fid_retain"))
        diverged = 0
    elif (r := by_entry.get(key)) is not None:
        gap, auc, fid = r["elbo_gap"][0], r["lira_auc"][0], r["fid_retain"][0]
        diverged = r.get("diverged", 0)
    else:
        return "—"
    if gap is None:
        return "—"
    marks = (" ✗" if _damaged(fid, _original(data)["fid_retain"][0]) else "") + (f" ⚠{diverged}" if diverged else "")
    return f"{_num(gap, '.1f')} · {'—' if auc is None else f'{auc:.3f}'}" + marks


def render_overview(found: list[tuple[str, dict[str, Any]]]) -> str:
    """One table over forget sets: per model, the ELBO gap and the LiRA AUC (means over seeds)."""
    names = [n for n, _ in found]
    models: dict[str, str] = {"original": "original (trained on them)", "retrained": "retrained without them"}
    for _, data in found:
        for r in data["rows"]:
            models.setdefault(r["entry"], r["label"].split(":")[0])
    by_entry = [{r["entry"]: r for r in data["references"] + data["rows"]} for _, data in found]
    lines = [
        "| model | " + " | ".join(f"{n} ({d['forget_set_size']:,})" for n, d in found) + " |",
        "|---|" + "---|" * len(found),
    ]
    for key, label in models.items():
        cells = [_overview_cell(data, rows, key) for (_, data), rows in zip(found, by_entry, strict=True)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    s = found[0][1]["settings"]
    seeds = {n: d["settings"]["seeds"] for n, d in found}
    common = max(set(seeds.values()), key=list(seeds.values()).count)
    other = [f"{n}: {k}" for n, k in seeds.items() if k != common]
    seeds_text = f"{common} seeds" + (f" ({'; '.join(other)})" if other else "")
    legend = (
        "Each cell: ELBO gap (nats, test minus forget images) · LiRA AUC (forget images against "
        f"{s['test_candidates']:,} test images; 0.5 = indistinguishable), means over {seeds_text} after "
        f"K = {s['steps']} updates; the retrained row is the mean of the retrained models. ✗: FID vs retained digits "
        "above 1.5x the original's (the model is damaged; its numbers say little); ⚠n: n seeds diverged (stopped, "
        "last good weights kept). Sets: " + ", ".join(names) + "."
    )
    return legend + "\n\n" + "\n".join(lines) + "\n"


def overview_figure(path: str | Path, found: list[tuple[str, dict[str, Any]]]) -> None:
    """One panel per forget set: each model's LiRA AUC (x) with the original's and the retrained model's marked.

    Without shadow models (no LiRA) the panels show the loss-threshold attack's AUC.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genunlearn.experiments.compare_figures import FAMILY_COLORS

    cols = 3
    rows_n = (len(found) + cols - 1) // cols
    keys = [r["entry"] for r in found[0][1]["rows"]]
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 0.32 * len(keys) * rows_n + 1.6), squeeze=False)
    for ax, (name, data) in zip(axes.flat, found, strict=False):
        rows = {r["entry"]: r for r in data["rows"]}
        orig = _original(data)
        metric = "lira_auc" if orig["lira_auc"][0] is not None else "loss_threshold_auc"
        for i, key in enumerate(keys):
            r = rows.get(key)
            if r is None or r[metric][0] is None:
                continue
            broken = _damaged(r["fid_retain"][0], orig["fid_retain"][0])
            color = "#bdbdbd" if broken else FAMILY_COLORS.get(r["family"], "black")
            ax.errorbar(r[metric][0], i, xerr=r[metric][1] or 0, fmt="x" if broken else "o", color=color)
        ax.axvline(orig[metric][0], color="#c62828", ls="--", lw=1, label="original")
        retr = _retrained_mean(data["references"], metric)
        if retr is not None:
            ax.axvline(retr, color="#2e7d32", ls="-", lw=1.5, label="retrained (target)")
        ax.axvline(0.5, color="#9e9e9e", ls=":", lw=1)
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels(keys, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{name} ({data['forget_set_size']:,} images)", fontsize=10)
        attack = "LiRA" if metric == "lira_auc" else "loss-threshold"
        ax.set_xlabel(f"{attack} AUC (forget vs test images)", fontsize=8)
    for ax in list(axes.flat)[len(found) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, frameon=False, loc="lower right")
    fig.suptitle(
        "Membership inference after sample unlearning: a method has forgotten when its AUC meets the green line "
        "(grey x: model damaged, FID > 1.5x)",
        fontsize=9,
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

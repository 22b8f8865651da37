"""``genunlearn audit``: try to bring the forgotten class back, and say whether an unlearned model resists.

For the original model, one or more unlearned models and (optionally) a model retrained from scratch without the
forgotten class, with two detectors (the classifier the attack optimises against, and an independent one that
re-measures everything it finds), the audit runs (:mod:`genunlearn.eval.attacks`)

1. **prior**: the forget fraction (argmax) of samples from fixed prior inputs — the engine's robust monitor;
2. **input search**: projected gradient ascent on the generator's inputs from ``starts`` random starts, within the
   ball holding 99.9% of the prior's mass, maximising the attacked detector's forget probability; reported: the
   share of starts that end in a *confident* forgotten sample (``p >= confidence`` under both detectors) and the
   best samples (figure);
3. **prior mass** (2-d inputs): a grid over that ball weighs each point by its prior density: the mass of inputs
   that decode to a confident forgotten sample under both detectors;
4. **relearning**: fine-tune a copy for ``k = 10, 50, 100`` updates on retained data only, and with 1 and 10 forget
   examples in every batch; the forget fraction after ``k`` updates (mean over seeds).

A model **passes** when every check that applies passes (:func:`verdict`; ``docs/audit.md`` explains how to read
it). The original model is the reference the attacks must succeed on (it is expected to fail).

Outputs in ``--out``: ``audit.json`` (settings, detectors and model files with sha256, every number, verdicts,
provenance), ``audit.md`` (tables, regenerated from the JSON by ``genunlearn report``), ``figures/best_samples.png``,
``figures/prior_mass.png`` (2-d) and ``cache/<model>.pt`` (per-model results reused by ``--resume``; not meant to
be committed). For bench tables, :func:`audit_headline` gives one model's headline numbers.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from genunlearn.adapters import preserved_modes
from genunlearn.checkpoints import atomic_write, atomic_write_json, atomic_write_text, load_into, safe_torch_load
from genunlearn.errors import ConfigError, OutputError
from genunlearn.eval.attacks import Detector, InputBall, SearchResult, grid_scan, input_search, judge, relearn
from genunlearn.outputs import check_writable
from genunlearn.provenance import file_fingerprint, jsonable, record_start, run_record

KINDS = ("original", "unlearned", "retrained")


@dataclass(frozen=True)
class AuditSettings:
    """Options of ``genunlearn audit`` (recorded in ``audit.json``).

    Attributes:
        confidence: a sample is a *confident* forgotten sample when every detector gives the forgotten classes
            at least this probability.
        quantile: the input ball holds this share of the prior's mass (radius: its chi quantile).
        starts: random starts of the input search.
        search_steps: gradient steps per start.
        search_lr: the first step's length as a share of the ball's radius (decaying linearly to 0).
        grid: points per axis of the exhaustive grid (2-d inputs only; 0: skip).
        prior_samples: fixed prior inputs of the prior check and of the relearning measurements.
        relearn_at: update counts k after which the relearned model is measured.
        relearn_forget: forget examples added to every relearning batch (0: retained data only).
        relearn_seeds: repetitions of each relearning (batch order, which forget examples).
        relearn_lr: Adam learning rate of relearning.
        relearn_batch: retained examples per relearning batch.
        best: best samples per model in the figure.
        seed: seeds the inputs, starts and relearning.
        share_margin: pass limit of the search share and the prior mass (added to the retrained model's value).
        fraction_threshold: pass limit of forget fractions (prior, relearning; added to the retrained model's).
        embedding_starts: class-conditional models: starts of the search over the class embedding (0: skip),
            cycling through the forgotten label's, the other labels' and the null label's embeddings.
        embedding_radius: the class-embedding ball's radius as a multiple of the largest norm of the model's real
            label embeddings (labels ``0..num_classes - 1``; the null label's not counted).
    """

    confidence: float = 0.9
    quantile: float = 0.999
    starts: int = 256
    search_steps: int = 200
    search_lr: float = 0.1
    grid: int = 201
    prior_samples: int = 1024
    relearn_at: tuple[int, ...] = (10, 50, 100)
    relearn_forget: tuple[int, ...] = (0, 1, 10)
    relearn_seeds: int = 3
    relearn_lr: float = 1e-3
    relearn_batch: int = 128
    best: int = 8
    seed: int = 0
    share_margin: float = 0.01
    fraction_threshold: float = 0.02
    embedding_starts: int = 22
    embedding_radius: float = 1.0

    def validate(self) -> AuditSettings:
        """One-line errors for impossible values."""
        checks = [
            (0 < self.confidence < 1, f"confidence must lie in (0, 1), got {self.confidence}"),
            (0 < self.quantile < 1, f"quantile must lie in (0, 1), got {self.quantile}"),
            (self.starts >= 1 and self.search_steps >= 0, "starts must be >= 1 and search steps >= 0"),
            (self.grid >= 0 and self.prior_samples >= 1, "grid must be >= 0 and prior samples >= 1"),
            (bool(self.relearn_at) and min(self.relearn_at) >= 1, "relearn_at needs update counts >= 1"),
            (bool(self.relearn_forget) and min(self.relearn_forget) >= 0, "relearn_forget needs counts >= 0"),
            (self.relearn_seeds >= 1 and self.relearn_batch >= 2, "relearn seeds >= 1 and batch >= 2"),
            (self.embedding_starts >= 0, f"embedding starts must be >= 0, got {self.embedding_starts}"),
            (self.embedding_radius > 0, f"the embedding radius must be > 0, got {self.embedding_radius}"),
            (0 < self.fraction_threshold <= 1, f"the fraction limit must lie in (0, 1], got {self.fraction_threshold}"),
            (0 <= self.share_margin <= 1, f"the share limit must lie in [0, 1], got {self.share_margin}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        return self


@dataclass
class AuditTarget:
    """One model to audit: a name, its kind (original, unlearned, retrained) and its weights (``None``: the
    session's original)."""

    name: str
    kind: str
    path: str | None = None


#: The settings that only judge (the verdict's limits): changing them re-judges, it measures nothing again.
LIMITS = ("share_margin", "fraction_threshold")


def _key(settings: AuditSettings, detectors: Sequence[Detector], target: AuditTarget, extra: Mapping) -> str:
    data = {
        "settings": {k: v for k, v in asdict(settings).items() if k not in LIMITS},
        "detectors": [d.name for d in detectors],
        "target": asdict(target),
        "file": (file_fingerprint(target.path) or {}).get("sha256"),
        **extra,
    }
    return hashlib.sha256(json.dumps(jsonable(data), sort_keys=True).encode()).hexdigest()


def _fractions(
    model: nn.Module,
    generate: Any,
    inputs: torch.Tensor,
    detectors: Sequence[Detector],
    also: int | None = None,
) -> dict:
    """Forget fraction (argmax, as the engine's monitor counts) of the samples from ``inputs``, per detector.

    With ``also`` (a class), the second value is each detector's share of samples whose argmax is that class.
    """
    device = next(model.parameters()).device
    hits: dict[str, list[torch.Tensor]] = {d.name: [] for d in detectors}
    other: dict[str, list[torch.Tensor]] = {d.name: [] for d in detectors}
    with torch.no_grad():
        for i in range(0, len(inputs), 4096):
            samples = generate(model, inputs[i : i + 4096].to(device))
            for d in detectors:
                hits[d.name].append(d.predict(samples)[1].cpu())
                if also is not None:
                    with preserved_modes(d.classifier):
                        d.classifier.eval()
                        other[d.name].append((d.classifier(samples).argmax(1) == also).cpu())
    out = {d.name: float(torch.cat(hits[d.name]).float().mean()) for d in detectors}
    if also is None:
        return out
    return out, {d.name: float(torch.cat(other[d.name]).float().mean()) for d in detectors}  # type: ignore[return-value]


def _distinct_best(inputs: torch.Tensor, p: torch.Tensor, n: int, min_distance: float) -> torch.Tensor:
    """Indices of up to ``n`` highest-``p`` inputs at least ``min_distance`` apart (many starts end at one optimum)."""
    flat = inputs.reshape(len(inputs), -1)
    chosen: list[int] = []
    for i in torch.argsort(p, descending=True).tolist():
        if all(float((flat[i] - flat[j]).norm()) >= min_distance for j in chosen):
            chosen.append(i)
            if len(chosen) == n:
                break
    return torch.tensor(chosen, dtype=torch.long)


def _summary(search: SearchResult, names: Sequence[str], c: float, order: torch.Tensor) -> dict[str, Any]:
    """The numbers of one search: shares of confident starts, best and median probabilities, the best inputs
    (listed when they have at most 8 dimensions, else their norms)."""
    score = torch.stack([search.p[n] for n in names]).min(0).values
    flat = search.inputs.reshape(len(search.inputs), -1)

    def where(i: int) -> dict[str, Any]:
        if flat.shape[1] <= 8:
            return {"input": [float(v) for v in flat[i]]}
        return {"norm": float(flat[i].norm())}

    return {
        "starts": len(search.inputs),
        "steps": search.steps,
        "confident_share": {n: float((search.p[n] >= c).float().mean()) for n in names},
        "confident_share_all": float(search.confident(c).float().mean()),
        "p_max": {n: float(search.p[n].max()) for n in names},
        "p_max_all": float(score.max()),
        "median_p": {n: float(search.p[n].median()) for n in names},
        "best": [{**where(i), **{n: float(search.p[n][i]) for n in names}} for i in order.tolist()],
    }


class _PairedNoise:
    """``generate(model, embeddings)`` for the class-embedding search: start ``i`` keeps its own fixed noise.

    The search runs every start in one batch, so a batch of ``len(noise)`` embeddings pairs with the noise in
    order; ``at(index)`` gives the generator for a subset of the starts.
    """

    def __init__(self, sampler: Any, noise: torch.Tensor, label: int) -> None:
        self.sampler, self.noise, self.label = sampler, noise, label

    def __call__(self, model: nn.Module, emb: torch.Tensor) -> torch.Tensor:
        if len(emb) != len(self.noise):
            raise ValueError(f"{len(emb)} embeddings for {len(self.noise)} fixed noise tensors")
        labels = torch.full((len(emb),), self.label, dtype=torch.long, device=emb.device)
        return self.sampler.generate_grad(model, self.noise.to(emb.device), labels, class_embedding=emb)

    def at(self, index: torch.Tensor) -> _PairedNoise:
        return _PairedNoise(self.sampler, self.noise[index], self.label)


def embedding_ball(
    session: Any, model: nn.Module, settings: AuditSettings
) -> tuple[InputBall, torch.Tensor, list[int]]:
    """The class-embedding search's ball, its starting points' labels and their embeddings.

    Radius: ``embedding_radius`` x the largest norm of ``model``'s real label embeddings (labels
    ``0..num_classes - 1``). Starting labels: the forgotten one, the other real labels, then the null label
    (``default_label`` of the sampler), cycled to ``embedding_starts``.
    """
    sampler = session.bundle.sampler
    if not session.conditional_sampler or getattr(sampler, "label_embedding", None) is None:
        raise ConfigError(
            "the class-embedding search needs a class-conditional model whose sampler gives label_embedding"
        )
    num = session.bundle.num_classes
    device = next(model.parameters()).device
    with torch.no_grad():
        table = sampler.label_embedding(model, torch.arange(num + 1, device=device)).detach().float().cpu()
    norms = table[:num].reshape(num, -1).norm(dim=1)
    ball = InputBall(tuple(table.shape[1:]), float(settings.embedding_radius * norms.max()))
    forget = session.forget_classes[0]
    null = getattr(sampler, "default_label", num)
    order = [forget, *(c for c in range(num) if c != forget), *([null] if null not in range(num) else [])]
    labels = [order[i % len(order)] for i in range(settings.embedding_starts)]
    return ball, table[torch.tensor(labels, dtype=torch.long)], labels


def audit_model(
    session: Any,
    model: nn.Module,
    detectors: Sequence[Detector],
    settings: AuditSettings,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Every check of the audit on one model (``detectors[0]`` is attacked); numbers and tensors for figures.

    ``session`` is an :class:`~genunlearn.experiments.session.UnlearnSession` (the model bundle's sampler,
    objective and data). The model is not changed. A class-conditional model generates under the (one) forgotten
    label; its input search goes through the sampler's differentiable path, and a second search optimises a free
    class embedding in place of the label's (:func:`embedding_ball`).
    """
    sampler = session.bundle.sampler
    if sampler is None:
        raise ConfigError("the audit needs a model with a sampler (its generator inputs)")
    conditional = session.conditional_sampler
    if conditional and len(session.forget_classes) != 1:
        raise ConfigError("the audit of a class-conditional model takes one forgotten class (--forget 1)")
    if conditional and getattr(sampler, "sample_grad", None) is None:
        raise ConfigError(
            "the audit of a class-conditional model needs its sampler's differentiable path (sample_grad)"
        )
    forget = session.forget_classes[0] if conditional else None
    generate = session._generate(forget)
    if conditional:
        search_generate = lambda m, z: sampler.generate_grad(  # noqa: E731
            m, z, torch.full((len(z),), forget, dtype=torch.long, device=z.device)
        )
    else:
        search_generate = generate
    device = session.device
    shape = tuple(sampler.draw(1, torch.Generator().manual_seed(0)).shape[1:])
    ball = InputBall.gaussian(shape, settings.quantile)
    c = settings.confidence
    names = [d.name for d in detectors]
    target = session.targets[0] if session.conditional else None
    prior_inputs = sampler.draw(settings.prior_samples, torch.Generator().manual_seed(10_000 + settings.seed))
    prior_p = judge(model, generate, prior_inputs, detectors)
    fractions = _fractions(model, generate, prior_inputs, detectors, also=target)
    prior: dict[str, Any] = {"forget_fraction": fractions[0] if target is not None else fractions}
    prior["confident_share"] = {n: float((prior_p[n] >= c).float().mean()) for n in names}
    prior["confident_share_all"] = float(torch.stack([prior_p[n] >= c for n in names]).all(0).float().mean())
    if target is not None:  # recorded, not judged: what the forgotten label generates instead
        prior["target"] = target
        prior["target_fraction"] = fractions[1]
    bar = tqdm(total=4, desc="audit", disable=not progress, leave=False)

    def attack(gen: Any, on: InputBall, **kw: Any) -> SearchResult:
        steps, lr = settings.search_steps, settings.search_lr
        return input_search(model, gen, on, detectors[0], others=detectors[1:], steps=steps, lr=lr, device=device, **kw)

    search = attack(search_generate, ball, starts=settings.starts, seed=settings.seed)
    bar.update()
    order = _distinct_best(search.inputs, search.p[names[0]], settings.best, 0.05 * ball.radius)
    with torch.no_grad():
        best_samples = generate(model, search.inputs[order].to(device)).cpu()
    search_out = _summary(search, names, c, order)
    embedding_out = None
    embedding_samples = None
    if conditional and settings.embedding_starts > 0:
        e_ball, e_init, e_labels = embedding_ball(session, model, settings)
        noise = sampler.draw(len(e_init), torch.Generator().manual_seed(20_000 + settings.seed))
        paired = _PairedNoise(sampler, noise, forget)  # type: ignore[arg-type]
        e_search = attack(paired, e_ball, batch_size=len(e_init), init=e_init)  # one batch: noise i pairs with start i
        e_order = _distinct_best(e_search.inputs, e_search.p[names[0]], settings.best, 0.05 * e_ball.radius)
        with torch.no_grad():
            embedding_samples = paired.at(e_order)(model, e_search.inputs[e_order].to(device)).cpu()
        embedding_out = _summary(e_search, names, c, e_order)
        for entry, i in zip(embedding_out["best"], e_order.tolist(), strict=True):
            entry["start_label"] = e_labels[i]
        embedding_out["radius"] = e_ball.radius
        embedding_out["radius_scale"] = settings.embedding_radius
        embedding_out["shape"] = list(e_ball.shape)
        embedding_out["start_labels"] = e_labels
        by_label = {}
        for lab in dict.fromkeys(e_labels):
            idx = torch.tensor([i for i, v in enumerate(e_labels) if v == lab])
            by_label[str(lab)] = float(e_search.confident(c)[idx].float().mean())
        embedding_out["confident_share_by_start_label"] = by_label
    bar.update()
    grid_out = None
    grid_p = None
    if ball.dim == 2 and settings.grid > 0:
        scan = grid_scan(model, generate, ball, detectors, settings.grid)
        total = float(scan.mass.sum())
        grid_out = {
            "points": settings.grid,
            "points_in_ball": len(scan.inputs),
            "cell_side": scan.side,
            "mass_in_ball": total,
            "confident_mass": {n: scan.confident_mass(c, [n]) for n in names},
            "confident_mass_all": scan.confident_mass(c),
            "forget_argmax_mass": {n: float(scan.mass[scan.p[n] >= 0.5].sum()) for n in names},
        }
        grid_p = {"inputs": scan.inputs, **{f"p/{n}": scan.p[n] for n in names}}
    bar.update()

    def measure(m: nn.Module) -> dict[str, float]:
        return _fractions(m, generate, prior_inputs, detectors)

    objective, retain_data = _relearn_setup(session)
    relearn_out: dict[str, Any] = {}
    for n_forget in settings.relearn_forget:
        runs = [
            relearn(
                model,
                objective,
                retain_data,
                session.forget_data,
                measure,
                n_forget=n_forget,
                steps=max(settings.relearn_at),
                at=settings.relearn_at,
                lr=settings.relearn_lr,
                batch_size=settings.relearn_batch,
                seed=settings.seed * 1000 + s,
                device=device,
                initial=prior["forget_fraction"],
            )
            for s in range(settings.relearn_seeds)
        ]
        per_k = {}
        for k in sorted(runs[0]):
            per_k[str(k)] = {
                n: {"mean": statistics.fmean(r[k][n] for r in runs), "seeds": [r[k][n] for r in runs]} for n in names
            }
        relearn_out[str(n_forget)] = per_k
    bar.update()
    bar.close()
    out = {
        "prior": prior,
        "search": search_out,
        "grid": grid_out,
        "relearn": relearn_out,
        "ball": {"shape": list(ball.shape), "radius": ball.radius, "quantile": ball.quantile},
        "_tensors": {"best_samples": best_samples, "grid": grid_p},
    }
    if embedding_out is not None:
        out["embedding_search"] = embedding_out
        out["_tensors"]["best_embedding_samples"] = embedding_samples
    return out


def _relearn_setup(session: Any) -> tuple[Any, Any]:
    """The relearning attacker's loss and retained data.

    The loss is the model's own training loss (class unlearning: the task's retain loss). For conditional
    replacement it is the bundle's objective on labelled batches, not the replacement task's retain loss (which
    would train the forgotten label towards the target: the unlearning itself), and the retained data are the
    examples of every label the model keeps (``session.kept_classes``) with their labels; forget examples carry
    the forgotten label.
    """
    from genunlearn.experiments.session import _with_reduction
    from genunlearn.objectives import ObjectiveConfig

    config = ObjectiveConfig()
    if not session.conditional:
        return session.task(config).retain_loss, session.retain_data
    keep = torch.nonzero(torch.isin(session.data.labels, torch.tensor(session.kept_classes))).reshape(-1)
    return _with_reduction(session.bundle.objective, config.loss_reduction), session._labelled(keep)


def verdict(entry: Mapping[str, Any], retrained: Mapping[str, Any] | None, settings: AuditSettings) -> dict[str, Any]:
    """The checks of one model: value, limit and whether it passes (``None``: does not apply).

    - ``prior``: forget fraction of prior samples, every detector, below ``fraction_threshold``;
    - ``input_search``: share of starts ending in a confident forgotten sample (all detectors) at most
      ``share_margin`` (plus the retrained model's share, when given);
    - ``prior_mass``: prior mass decoding to a confident forgotten sample (2-d grid), same limit;
    - ``relearn_retain``: forget fraction (every detector) after the most retain-only updates below
      ``fraction_threshold`` (plus the retrained model's);
    - ``relearn_forget``: with retrained model only: after every k with the most forget examples, the forget
      fraction (attacked detector) at most the retrained model's plus ``fraction_threshold``;
    - ``embedding_search`` (class-conditional models only; absent otherwise): share of the class-embedding
      search's starts ending in a confident forgotten sample, same limit as ``input_search``.
    """
    names = list(entry["prior"]["forget_fraction"])
    th, margin = settings.fraction_threshold, settings.share_margin
    checks: dict[str, Any] = {}
    prior = max(entry["prior"]["forget_fraction"][n] for n in names)
    checks["prior"] = {"value": prior, "limit": th, "pass": prior < th}
    ref = retrained
    share = entry["search"]["confident_share_all"]
    limit = margin + (ref["search"]["confident_share_all"] if ref else 0.0)
    checks["input_search"] = {"value": share, "limit": limit, "pass": share <= limit}
    if entry.get("embedding_search"):
        share = entry["embedding_search"]["confident_share_all"]
        ref_e = ref.get("embedding_search") if ref else None
        limit = margin + (ref_e["confident_share_all"] if ref_e else 0.0)
        checks["embedding_search"] = {"value": share, "limit": limit, "pass": share <= limit}
    if entry.get("grid"):
        mass = entry["grid"]["confident_mass_all"]
        limit = margin + (ref["grid"]["confident_mass_all"] if ref and ref.get("grid") else 0.0)
        checks["prior_mass"] = {"value": mass, "limit": limit, "pass": mass <= limit}
    else:
        checks["prior_mass"] = {"value": None, "limit": None, "pass": None}
    k_max = str(max(settings.relearn_at))
    if "0" in entry["relearn"]:
        v = max(entry["relearn"]["0"][k_max][n]["mean"] for n in names)
        ref_v = max(ref["relearn"]["0"][k_max][n]["mean"] for n in names) if ref and "0" in ref["relearn"] else 0.0
        checks["relearn_retain"] = {"value": v, "limit": th + ref_v, "pass": v < th + ref_v}
    else:
        checks["relearn_retain"] = {"value": None, "limit": None, "pass": None}
    most = str(max(settings.relearn_forget))
    if ref is not None and most != "0" and most in entry["relearn"] and most in ref["relearn"]:
        att = names[0]
        gaps = {
            k: entry["relearn"][most][k][att]["mean"] - ref["relearn"][most][k][att]["mean"]
            for k in entry["relearn"][most]
            if k != "0"
        }
        worst = max(gaps.values())
        checks["relearn_forget"] = {"value": worst, "limit": th, "pass": worst <= th, "per_k_gap": gaps}
    else:
        checks["relearn_forget"] = {"value": None, "limit": None, "pass": None}
    applied = [c["pass"] for c in checks.values() if c["pass"] is not None]
    return {"checks": checks, "pass": all(applied)}


# --- running and writing ------------------------------------------------------------------------------------


def _load_target(session: Any, target: AuditTarget, allow_pickle: bool) -> nn.Module:
    model = session.fresh_model()
    if target.path is not None:
        load_into(model, target.path, allow_pickle=allow_pickle)
    return model.eval()


def resolve_checkpoint(path: str) -> tuple[str, dict[str, Any] | None]:
    """A weights file, or a ``genunlearn unlearn`` output folder (its ``model.safetensors`` and summary).

    For a weights file, a record of the run with the same stem (a bench's ``seed0.json`` next to
    ``seed0.safetensors``) that names the method and its updates is read as the run's summary.
    """
    p = Path(path)
    if p.is_dir():
        weights = p / "model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"{p}: a folder without model.safetensors (give the weights file or a run folder)")
        run = None
        if (p / "summary.json").is_file():
            s = json.loads((p / "summary.json").read_text())
            run = {
                k: s.get(k)
                for k in ("method", "seed", "status", "steps_run", "updates_to_unlearn", "forget_fraction_final")
            }
            run["config"] = s.get("config")
        return str(weights), run
    if not p.is_file():
        raise ConfigError(f"{p}: checkpoint not found")
    record = p.with_suffix(".json")  # a bench's per-seed record next to its weights (runs/<method>/seed0.json)
    if record.is_file():
        try:
            s = json.loads(record.read_text())
        except ValueError:
            s = None
        if isinstance(s, dict) and "method" in s and "steps_run" in s:
            run = {k: s.get(k) for k in ("method", "seed", "status", "steps_run", "updates_to_unlearn")}
            run["config"] = s.get("config")
            return str(p), run
    return str(p), None


def run_audit(
    session: Any,
    targets: Sequence[AuditTarget],
    detectors: Sequence[Detector],
    settings: AuditSettings,
    out: str | Path,
    *,
    detector_info: Sequence[Mapping[str, Any]] = (),
    resume: bool = False,
    overwrite: bool = False,
    allow_pickle: bool = False,
    progress: bool = True,
    title: str | None = None,
) -> dict[str, Any]:
    """Audit every target and write ``audit.json``, ``audit.md`` and figures into ``out`` (see the module docstring).

    Per-model results are cached in ``out/cache``; ``resume`` reuses those whose settings, detectors and weight file
    are unchanged. A folder holding another audit is refused unless ``resume`` or ``overwrite``.
    """
    record_start()
    settings.validate()
    if resume and overwrite:
        raise OutputError("--resume and --overwrite contradict each other; give one")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"model names must be unique, got {names}")
    if sum(t.kind == "retrained" for t in targets) > 1:
        raise ConfigError("give at most one retrained model")
    out = Path(out)
    if (out / "audit.json").exists() and not (resume or overwrite):
        raise OutputError(f"{out} already holds an audit; --resume reuses its unchanged parts, --overwrite redoes it")
    check_writable(out)
    extra = {
        "forget": list(session.forget_classes),
        "model": session.model_config.name,
        "replace_with": list(session.targets),
        "options": dict(session.model_config.options),
    }
    results: dict[str, dict[str, Any]] = {}
    runs: dict[str, Any] = {}
    paths: dict[str, str | None] = {}
    for t in targets:
        path, run = resolve_checkpoint(t.path) if t.path is not None else (None, None)
        runs[t.name], paths[t.name] = run, path
        target = AuditTarget(t.name, t.kind, path)
        cache = out / "cache" / f"{t.name}.pt"
        key = _key(settings, detectors, target, extra)
        if resume and cache.is_file():
            saved = safe_torch_load(cache)
            if isinstance(saved, dict) and saved.get("key") == key:
                results[t.name] = saved["result"]
                continue
        model = _load_target(session, target, allow_pickle)
        if progress:
            tqdm.write(f"auditing {t.name} ({t.kind})")
        result = audit_model(session, model, detectors, settings, progress=progress)
        atomic_write(cache, lambda tmp, r=result, k=key: torch.save({"key": k, "result": r}, tmp))
        results[t.name] = result
    retrained = next((results[t.name] for t in targets if t.kind == "retrained"), None)
    models = []
    for t in targets:
        r = results[t.name]
        entry = {
            "name": t.name,
            "kind": t.kind,
            "checkpoint": file_fingerprint(paths[t.name]) if paths[t.name] else {"path": "original (the model's own)"},
            "run": runs[t.name],
            **{k: v for k, v in r.items() if not k.startswith("_")},
        }
        entry["verdict"] = verdict(entry, retrained if t.kind != "retrained" else None, settings)
        models.append(entry)
    inputs = {t.name: paths[t.name] for t in targets if paths[t.name]}
    inputs.update({f"detector:{d['name']}": d.get("checkpoint") for d in detector_info if d.get("checkpoint")})
    inputs.update(session.bundle.info.get("inputs", {}))
    data = {
        "title": title
        or f"{session.bundle.description or session.model_config.name}: forget {list(session.forget_classes)}",
        "forget": list(session.forget_classes),
        "detectors": [dict(d) for d in detector_info] or [{"name": d.name} for d in detectors],
        "settings": asdict(settings),
        "models": models,
        "provenance": run_record(
            {"settings": asdict(settings), "targets": [asdict(t) for t in targets], "detectors": list(detector_info)},
            inputs=inputs,
        ),
    }
    data = jsonable(data)
    figures = out / "figures"
    _figure_best(results, targets, detectors, figures / "best_samples.png", settings)
    if any("embedding_search" in results[t.name] for t in targets):
        _figure_best(results, targets, detectors, figures / "best_embedding_samples.png", settings, "embedding_search")
    if any(results[t.name]["_tensors"]["grid"] is not None for t in targets):
        _figure_grid(results, targets, detectors, figures / "prior_mass.png", settings)
    atomic_write_json(out / "audit.json", data)
    atomic_write_text(out / "audit.md", render_audit(data))
    return data


# --- figures ------------------------------------------------------------------------------------------------------


def _figure_best(results, targets, detectors, path: Path, settings: AuditSettings, search: str = "search") -> None:
    """The best samples of each model's input search (``search="search"``) or class-embedding search."""
    import matplotlib.pyplot as plt

    from genunlearn.eval.figures import _tile, show_images

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = len(targets)
    fig, axes = plt.subplots(rows, 1, figsize=(1.1 * settings.best + 1.5, 1.35 * rows + 0.6), squeeze=False)
    names = [d.name for d in detectors]
    tensor = "best_samples" if search == "search" else "best_embedding_samples"
    for ax, t in zip(axes[:, 0], targets, strict=True):
        r = results[t.name]
        if search not in r:
            ax.axis("off")
            continue
        imgs = r["_tensors"][tensor]
        if len(imgs):
            show_images(ax, _tile(imgs, 1))
        ps = ", ".join(f"{b[names[0]]:.2f}" for b in r[search]["best"])
        share = r[search]["confident_share_all"]
        ax.set_title(
            f"{t.name} ({t.kind}): {share:.0%} of starts confident; p[{names[0]}] = {ps}", fontsize=7, loc="left"
        )
        ax.axis("off")
    what = "input search" if search == "search" else "class-embedding search"
    fig.suptitle(
        f"Best samples of the {what} (maximising p[{names[0]}] of the forgotten class; distinct optima only)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def _figure_grid(results, targets, detectors, path: Path, settings: AuditSettings) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    shown = [t for t in targets if results[t.name]["_tensors"]["grid"] is not None]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.5 * len(shown), 2.9), squeeze=False)
    att = detectors[0].name
    for ax, t in zip(axes[0], shown, strict=True):
        g = results[t.name]["_tensors"]["grid"]
        z = g["inputs"].reshape(-1, 2).double()
        r = float(results[t.name]["ball"]["radius"])
        k = settings.grid
        side = 2 * r / k
        ij = ((z + r) / side - 0.5).round().long().clamp(0, k - 1).numpy()
        img = np.full((k, k), np.nan)
        img[ij[:, 1], ij[:, 0]] = g[f"p/{att}"].numpy()
        both = np.zeros((k, k))
        both[ij[:, 1], ij[:, 0]] = np.all([g[f"p/{d.name}"].numpy() >= settings.confidence for d in detectors], axis=0)
        ax.imshow(img, origin="lower", extent=(-r, r, -r, r), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        if both.any():
            ax.contour(both, levels=[0.5], colors="#00e5ff", linewidths=0.8, extent=(-r, r, -r, r), origin="lower")
        ax.add_patch(plt.Circle((0, 0), r, fill=False, color="0.5", linewidth=0.6))
        mass = results[t.name]["grid"]["confident_mass_all"]
        ax.set_title(f"{t.name}\nconfident prior mass {mass:.2%}", fontsize=8)
        ax.set_xlim(-r, r)
        ax.set_ylim(-r, r)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"p[{att}] of the forgotten class over the latent disk |z| <= {r:.2f} (bright: high; cyan line: confident "
        "under every detector)",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


# --- tables ------------------------------------------------------------------------------------------------------


def _pts(v: float) -> str:
    return f"{100 * v:+.1f} pts"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _recall_note(detectors: Sequence[Mapping[str, Any]]) -> str:
    parts = [
        f"`{d['name']}` {_pct(d['on_forget_set']['confident_share'])}"
        for d in detectors
        if d.get("on_forget_set") is not None
    ]
    if not parts:
        return ""
    n = detectors[0]["on_forget_set"]["examples"]
    return f" (on {n:,} real training examples of the forgotten class: " + ", ".join(parts) + " confident)"


def render_verdict(data: Mapping[str, Any]) -> str:
    """The verdict table of an audit (first table of ``audit.md``; report generator ``audit-verdict``).

    The class-embedding search's column appears only when some model has that check (class-conditional models).
    """
    emb = any("embedding_search" in m["verdict"]["checks"] for m in data["models"])
    lines = [
        "| model | kind | updates | prior | input search | "
        + ("embedding search | " if emb else "")
        + "prior mass | relearn (retain only) | relearn (forget examples) | pass |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if emb else ""),
    ]
    for m in data["models"]:
        run = m.get("run") or {}
        updates = "—" if run.get("steps_run") is None else f"{run['method']}, {run['steps_run']}"
        c = m["verdict"]["checks"]

        def cell(name: str, fmt=_pct, c=c) -> str:
            ch = c.get(name)
            if ch is None or ch["pass"] is None:
                return "n/a"
            mark = "✓" if ch["pass"] else "✗"
            return f"{fmt(ch['value'])} {mark}"

        verdict_txt = "reference" if m["kind"] == "original" else ("**pass**" if m["verdict"]["pass"] else "fail")
        lines.append(
            f"| {m['name']} | {m['kind']} | {updates} | {cell('prior')} | {cell('input_search')} | "
            + (f"{cell('embedding_search')} | " if emb else "")
            + f"{cell('prior_mass')} | {cell('relearn_retain')} | {cell('relearn_forget', _pts)} | {verdict_txt} |"
        )
    return "\n".join(lines)


def render_limits(data: Mapping[str, Any]) -> str:
    """One line naming the verdict's limits (and, for a re-judged audit, the limits it was measured with)."""
    s = data["settings"]
    text = (
        f"Limits: forget fractions < {_pct(s['fraction_threshold'])} (prior, relearning on retained data; plus the "
        f"retrained model's value when there is one), search shares and prior mass <= {_pct(s['share_margin'])} (plus "
        "the retrained model's)."
    )
    re = data.get("rejudged")
    if re:
        old = re["measured_with"]
        text += (
            f" Re-judged with these limits by `{re['command']}` ({re['date']}); the audit was run with "
            f"{_pct(old['fraction_threshold'])} / {_pct(old['share_margin'])}"
            + (f": {re['why']}" if re.get("why") else ".")
        )
    return text


def rejudge_audit(
    out: str | Path,
    *,
    fraction_threshold: float | None = None,
    share_margin: float | None = None,
    why: str | None = None,
) -> dict[str, Any]:
    """Recompute the verdicts of the audit in ``out`` with other limits, measuring nothing again.

    The limits are a judgement on measured numbers (a monitor whose false-positive rate is 15% can never show a
    forget fraction under 2%, whatever the model), so an experiment may set its own; this applies them to the
    numbers ``audit.json`` holds and rewrites ``audit.json`` and ``audit.md``, recording the limits the audit was
    measured with, the command and ``why``. Figures are not touched (they do not depend on the limits).
    """
    from datetime import UTC, datetime

    from genunlearn.provenance import command_line

    out = Path(out)
    path = out / "audit.json"
    if not path.is_file():
        raise OutputError(f"{path}: no audit to re-judge")
    try:
        data = json.loads(path.read_text())
        old = AuditSettings(
            **{
                **data["settings"],
                "relearn_at": tuple(data["settings"]["relearn_at"]),
                "relearn_forget": tuple(data["settings"]["relearn_forget"]),
            }
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"{path}: not a genunlearn audit ({exc})") from None
    pairs = (("fraction_threshold", fraction_threshold), ("share_margin", share_margin))
    changes = {k: v for k, v in pairs if v is not None}
    if not changes:
        raise ConfigError("re-judging needs --fraction-limit and/or --share-limit")
    settings = replace(old, **changes).validate()
    check_writable(out)
    first = data.get("rejudged", {}).get("measured_with") or {k: getattr(old, k) for k in LIMITS}
    retrained = next((m for m in data["models"] if m["kind"] == "retrained"), None)
    for m in data["models"]:
        m["verdict"] = verdict(m, retrained if m["kind"] != "retrained" else None, settings)
    data["settings"] = asdict(settings)
    data["rejudged"] = {
        "measured_with": first,
        "command": command_line(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        **({"why": why} if why else {}),
    }
    data = jsonable(data)
    atomic_write_json(path, data)
    atomic_write_text(out / "audit.md", render_audit(data))
    return data


def render_audit(data: Mapping[str, Any]) -> str:
    """``audit.md`` from ``audit.json`` (also what ``genunlearn report`` regenerates)."""
    s = data["settings"]
    dets = [d["name"] for d in data["detectors"]]
    att = dets[0]
    prov = data.get("provenance", {})
    cmd = prov.get("command", {}).get("line", "genunlearn audit ...")
    models = data["models"]
    lines = [
        f"# Audit: {data['title']}",
        "",
        f"Made by `{cmd}`; every number below is in `audit.json`. Detectors: "
        + ", ".join(f"`{d}`" + (" (attacked)" if i == 0 else " (independent)") for i, d in enumerate(dets))
        + f". Confident: p(forgotten) >= {s['confidence']} under every detector"
        + _recall_note(data["detectors"])
        + ". Input ball: |z| <= "
        f"{models[0]['ball']['radius']:.3f} ({s['quantile']:.1%} of the prior's mass). How to read it: docs/audit.md.",
        "",
        "## Verdict",
        "",
        render_verdict(data),
        "",
        render_limits(data),
        "",
        "## Input search",
        "",
        f"{s['starts']} starts, {s['search_steps']} normalised gradient steps (first step {s['search_lr']} x the "
        "radius, decaying to 0) on the generator's inputs, "
        f"maximising p[{att}]. Share of starts whose best sample is confident, the best probability, and the "
        f"forget fraction of {s['prior_samples']} prior samples (argmax) for comparison.",
        "",
        "| model | prior forget fraction ("
        + " / ".join(dets)
        + ") | starts confident ("
        + " / ".join(dets)
        + " / all) "
        "| best p (" + " / ".join(dets) + ") | prior mass confident (all) |",
        "|---|---|---|---|---|",
    ]
    for m in models:
        pr, se = m["prior"], m["search"]
        grid = m.get("grid")
        lines.append(
            f"| {m['name']} | "
            + " / ".join(_pct(pr["forget_fraction"][d]) for d in dets)
            + " | "
            + " / ".join(_pct(se["confident_share"][d]) for d in dets)
            + f" / {_pct(se['confident_share_all'])} | "
            + " / ".join(f"{se['p_max'][d]:.3f}" for d in dets)
            + f" | {_pct(grid['confident_mass_all']) if grid else 'n/a'} |"
        )
    lines += _render_conditional(data, dets)
    ks = [str(k) for k in s["relearn_at"]]
    lines += [
        "",
        "## Relearning",
        "",
        f"Forget fraction ({att}, argmax over {s['prior_samples']} prior samples; mean of {s['relearn_seeds']} seeds) "
        f"after k Adam updates (lr {s['relearn_lr']}) on batches of {s['relearn_batch']} retained examples plus n "
        "forget examples (the same n in every batch).",
        "",
        "| model | n forget examples | k = 0 | " + " | ".join(f"k = {k}" for k in ks) + " |",
        "|---|---|---|" + "---|" * len(ks),
    ]
    for m in models:
        for n, per_k in m["relearn"].items():
            lines.append(
                f"| {m['name']} | {n} | {_pct(per_k['0'][att]['mean'])} | "
                + " | ".join(_pct(per_k[k][att]["mean"]) for k in ks)
                + " |"
            )
    lines.append("")
    return "\n".join(lines)


def _render_conditional(data: Mapping[str, Any], dets: Sequence[str]) -> list[str]:
    """``audit.md``'s sections for class-conditional models: the replacement target's share of the prior samples
    and the class-embedding search (nothing for other models)."""
    s, models = data["settings"], data["models"]
    lines: list[str] = []
    if any("target_fraction" in m["prior"] for m in models):
        target = next(m["prior"]["target"] for m in models if "target" in m["prior"])
        lines += [
            "",
            "## What the forgotten label generates",
            "",
            f"Share of the {s['prior_samples']} prior samples generated under the forgotten label that each detector "
            f"calls the forgotten class and the replacement target {target} (argmax; recorded, not judged).",
            "",
            "| model | forgotten class (" + " / ".join(dets) + f") | target {target} (" + " / ".join(dets) + ") |",
            "|---|---|---|",
        ]
        for m in models:
            pr = m["prior"]
            lines.append(
                f"| {m['name']} | "
                + " / ".join(_pct(pr["forget_fraction"][d]) for d in dets)
                + " | "
                + " / ".join(_pct(pr.get("target_fraction", {}).get(d)) for d in dets)
                + " |"
            )
    with_emb = [m for m in models if m.get("embedding_search")]
    if with_emb:
        e0 = with_emb[0]["embedding_search"]
        lines += [
            "",
            "## Class-embedding search",
            "",
            f"{e0['starts']} starts, {e0['steps']} normalised gradient steps on a free class embedding (every "
            f"block's row, {' x '.join(str(v) for v in e0['shape'])}) used in place of the forgotten label's, the "
            "initial noise fixed per start; starts from the forgotten label's embedding, the other labels' and the "
            f"null label's in turn. Ball: |e| <= {s['embedding_radius']:g} x the largest norm of the model's real "
            "label embeddings (per model, below). Confident share of all starts and of the starts from the "
            "forgotten label's embedding.",
            "",
            "| model | radius | starts confident (" + " / ".join(dets) + " / all) | from the forgotten label "
            "| best p (" + " / ".join(dets) + ") |",
            "|---|---|---|---|---|",
        ]
        forget = str(data["forget"][0])
        for m in with_emb:
            e = m["embedding_search"]
            lines.append(
                f"| {m['name']} | {e['radius']:.3f} | "
                + " / ".join(_pct(e["confident_share"][d]) for d in dets)
                + f" / {_pct(e['confident_share_all'])} | {_pct(e['confident_share_by_start_label'].get(forget))} | "
                + " / ".join(f"{e['p_max'][d]:.3f}" for d in dets)
                + " |"
            )
    return lines


def audit_for_bench(
    session: Any, model: nn.Module, detectors: Sequence[Detector], settings: AuditSettings | None = None
) -> dict[str, Any]:
    """Audit one model and return its headline numbers (:func:`audit_headline`): what a bench calls per model.

    ``detectors[0]`` is attacked, the others re-measure; no retrained reference (checks needing one are ``n/a``).
    """
    settings = (settings or AuditSettings()).validate()
    entry = {k: v for k, v in audit_model(session, model, detectors, settings).items() if not k.startswith("_")}
    entry["verdict"] = verdict(entry, None, settings)
    return audit_headline(entry)


def audit_headline(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One model's headline numbers from an ``audit.json`` model entry (for bench tables).

    Keys: ``audit_pass`` (bool), ``search_confident`` (share of starts, all detectors), ``prior_mass_confident``
    (2-d grid, or ``None``), ``relearn_retain`` and ``relearn_forget`` (attacked detector's forget fraction after the
    most updates, retained data only / with the most forget examples).
    """
    att = next(iter(entry["prior"]["forget_fraction"]))
    rel = entry["relearn"]
    k = str(max(int(x) for x in next(iter(rel.values()))))
    most = str(max(int(n) for n in rel))
    return {
        "audit_pass": entry["verdict"]["pass"],
        "search_confident": entry["search"]["confident_share_all"],
        "prior_mass_confident": entry["grid"]["confident_mass_all"] if entry.get("grid") else None,
        "relearn_retain": rel["0"][k][att]["mean"] if "0" in rel else None,
        "relearn_forget": rel[most][k][att]["mean"] if most != "0" else None,
    }


# --- the command --------------------------------------------------------------------------------------------------


def _forget_examples(session: Any, n: int) -> torch.Tensor:
    """Up to ``n`` real examples of the forgotten class (the forget set's first ones), as one tensor."""
    from genunlearn.objectives import batch_inputs

    data = session.forget_data
    if isinstance(data, tuple):
        data = data[0]
    if isinstance(data, torch.Tensor):
        return data[:n]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(min(n, len(data)))), batch_size=500)
    return torch.cat([batch_inputs(b) for b in loader])


def _parse_target(spec: str) -> AuditTarget:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--unlearned expects NAME=PATH, got {spec!r}")
    if name in ("original", "retrained"):
        raise ConfigError(f"--unlearned {spec}: the names 'original' and 'retrained' are taken")
    return AuditTarget(name, "unlearned", path)


def independent_bn(path: str | Path, requested: bool | None = None) -> bool:
    """Whether an MNIST classifier checkpoint is read with ``bn1`` applied: ``requested`` when given, else what the
    file records (genunlearn's checkpoints do), else applied. The UNO authors' file records nothing; their own
    forward skips ``bn1``, which reads markedly fewer 1s among generated digits (docs/audit.md), so an independent
    classifier without a record is applied with ``bn1``."""
    from genunlearn.checkpoints import file_format, read_metadata

    if requested is not None:
        return requested
    if not Path(path).is_file():
        raise ConfigError(f"{path}: classifier checkpoint not found")
    meta = read_metadata(path) if file_format(path) == "safetensors" else {}
    recorded = (meta.get("build_options") or {}).get("use_bn")
    return True if recorded is None else bool(recorded)


def _independent(session: Any, path: str, use_bn: bool | None, allow_pickle: bool) -> nn.Module:
    import copy

    from genunlearn.models import MNISTClassifier, load_model
    from genunlearn.models.builtin import AttributeDetector

    if isinstance(session.classifier, MNISTClassifier):
        clf = load_model("mnist-classifier", path, device=session.device, use_bn=use_bn, allow_pickle=allow_pickle)
    elif isinstance(session.classifier, AttributeDetector):  # another attribute classifier, reduced the same way
        attrs = load_model("celeba64-classifier", path, device=session.device, allow_pickle=allow_pickle)
        clf = AttributeDetector(attrs, session.classifier.indices.tolist(), session.classifier.how)
    else:
        clf = copy.deepcopy(session.classifier)
        load_into(clf, path, allow_pickle=allow_pickle)
        if use_bn is not None and hasattr(clf, "use_bn"):
            clf.use_bn = use_bn
    for p in clf.parameters():
        p.requires_grad_(False)
    return clf.to(session.device).eval()


def run_audit_command(
    *,
    model_name: str,
    checkpoint: str | None,
    dataset: str | None,
    data_dir: str | None,
    forget: tuple[int, ...],
    replace_with: tuple[int, ...] = (),
    forget_attr: tuple[str, ...] = (),
    attr_mode: str = "any",
    model_options: Mapping[str, Any] | None = None,
    unlearned: Sequence[str] = (),
    retrained: str | None,
    classifier_checkpoint: str | None,
    classifier_bn: bool | None,
    independent_classifier: str | None,
    independent_classifier_bn: bool | None,
    settings_overrides: Mapping[str, Any],
    device: str,
    allow_pickle: bool,
    out: str,
    resume: bool,
    overwrite: bool,
    title: str | None,
    progress: bool,
) -> dict[str, Any]:
    """``genunlearn audit``: build the session and the detectors, then :func:`run_audit`.

    ``replace_with``: audit conditional replacement (the forgotten label replaced by these); ``model_options``:
    keyword arguments of the model's factory (``mnist-dit``: ``sampler``, ``sampler_steps``, ``guidance_scale``);
    ``forget_attr``/``attr_mode``: feature unlearning (``celeba64-vae``): the detectors see "has the feature" as
    class 1 (an independent detector is another attribute classifier checkpoint, reduced the same way).
    """
    from dataclasses import replace

    from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
    from genunlearn.experiments.session import UnlearnSession
    from genunlearn.paths import authors_weights

    record_start()
    settings = replace(AuditSettings(), **settings_overrides).validate()
    targets = [AuditTarget("original", "original", None), *(_parse_target(u) for u in unlearned)]
    if retrained is not None:
        targets.append(AuditTarget("retrained", "retrained", retrained))
    for t in targets[1:]:
        resolve_checkpoint(t.path)  # a missing file fails before any work
    check_writable(out)
    session = UnlearnSession(
        ModelConfig(
            name=model_name, checkpoint=checkpoint, allow_pickle=allow_pickle, options=dict(model_options or {})
        ).validate(),
        DataConfig(
            dataset=dataset,
            data_dir=data_dir,
            forget=forget,
            replace_with=replace_with,
            forget_attr=forget_attr,
            attr_mode=attr_mode,
        ).validate(),
        MonitorConfig(classifier_checkpoint=classifier_checkpoint, classifier_bn=classifier_bn),
        device=device,
    )
    if session.classifier is None:
        raise ConfigError(f"--model {model_name} brings no classifier; the audit needs a detector")
    mnist = model_name in ("mnist-vae", "mnist-dit") and (dataset or "mnist") == "mnist"
    if independent_classifier is None and mnist:
        found = authors_weights("classifier.safetensors")
        independent_classifier = str(found) if found is not None else None
    if independent_classifier is not None and mnist:
        # the authors' forward skips bn1: 17% of real 1s at p >= 0.9 (docs/audit.md); independent_bn applies it
        independent_classifier_bn = independent_bn(independent_classifier, independent_classifier_bn)
    from genunlearn.models.registry import bundled_weights

    first = classifier_checkpoint or (str(bundled_weights("mnist-classifier")) if mnist else None)
    detectors = [Detector("attacked", session.classifier, session.forget_classes)]
    info: list[dict[str, Any]] = [
        {"name": "attacked", "checkpoint": first, "use_bn": getattr(session.classifier, "use_bn", None)}
    ]
    if independent_classifier is not None:
        clf = _independent(session, independent_classifier, independent_classifier_bn, allow_pickle)
        detectors.append(Detector("independent", clf, session.forget_classes))
        info.append(
            {"name": "independent", "checkpoint": independent_classifier, "use_bn": getattr(clf, "use_bn", None)}
        )
    else:
        import click

        click.echo("warning: no independent classifier (--independent-classifier): one detector only", err=True)
    real = _forget_examples(session, 2000)
    for d, det in zip(info, detectors, strict=True):
        d["file"] = file_fingerprint(d["checkpoint"]) if d["checkpoint"] else None
        p, hit = det.predict(real.to(session.device))
        d["on_forget_set"] = {  # the detector's verdict on real examples of the forgotten class
            "examples": len(real),
            "argmax_share": float(hit.float().mean()),
            "confident_share": float((p >= settings.confidence).float().mean()),
        }
    return run_audit(
        session,
        targets,
        detectors,
        settings,
        out,
        detector_info=info,
        resume=resume,
        overwrite=overwrite,
        allow_pickle=allow_pickle,
        progress=progress,
        title=title,
    )

"""``genunlearn bench i2i``: image-to-image unlearning (Li et al., ICLR 2024) on the MNIST I2I models.

For each I2I task (inpainting, outpainting) the bundled ``mnist-i2i`` model forgets digit ``forget`` (default 1)
with every method of the bench, over seeds, through the engine (:func:`genunlearn.loop.unlearn` via
:class:`~genunlearn.experiments.session.UnlearnSession`); only the encoder trains, for every method:

- ``i2i``: Li et al.'s objective (the bundle's ``objective="embedding"`` task, method ``i2i``): retain embeddings
  kept at the original encoder's, forget embeddings pulled to the original encoder's embedding of masked
  Gaussian noise, ``L_r + alpha L_f``; the real retain set (training images of the other digits).
- ``i2i-proxy``: the same with *proxy* retain data instead of the retain set (the paper's retain-free variant):
  Fashion-MNIST training images (``proxy="fashion-mnist"``) or MNIST *test* images of the other digits that the
  evaluation does not use (``proxy="mnist-test"``). In general: the training images of another IDX dataset
  (``proxy=<its name>``), or the bench dataset's own spare test images of the retained classes
  (``proxy="test"``; ``"mnist-test"`` is its old name on MNIST).
- ``s``, ``uno``, ``gdiff``: the UNO paper's surgery and orthogonalisation and gradient difference, with the I2I
  reconstruction loss ``||D(E(T(x))) - x||^2`` as retain and forget loss.

Any other 28x28 IDX dataset works the same way (``dataset="fashion-mnist"``): then the original models
(``checkpoint`` per task, ``genunlearn train i2i --dataset ...``) and a classifier trained on that dataset
(``classifier``, ``genunlearn train classifier --dataset ...``) must be given; the classifier replaces the MNIST
classifier in every measure below.

Measured on fixed *test* images (forget set: the forget digit; retain set: the other digits), for the original
model, each unlearned model, optionally a model retrained without the forget digit (the gold standard), and the
original model fed masked noise (what Li et al.'s forget target generates): per-pixel squared error to the ground
truth (on the hidden region and the whole image), FID between outputs and ground truth with the MNIST
classifier's features, the mean cosine of the classifier features of output and ground truth, the share of
outputs the classifier calls the forget digit, the classifier's accuracy on the outputs; updates and compute
seconds of each run.

Outputs in ``--out``: ``results.json`` (``kind: "i2i"``, settings, rows, provenance), ``table.md``,
``runs/<task>/<method>/seed<k>.json`` (per-seed records; the run resumes from them) and ``figures/`` (before/after
grids: masked input -> output, for forget and retain images).
"""

from __future__ import annotations

import base64
import copy
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from genunlearn.checkpoints import atomic_write_text
from genunlearn.config import DataConfig, ModelConfig, MonitorConfig
from genunlearn.data import load_dataset
from genunlearn.data.datasets import DATASET_TITLES, class_label
from genunlearn.errors import ConfigError
from genunlearn.eval.fid import ClassifierFID
from genunlearn.experiments.records import dumps_compact, read_seed_record, write_seed_record
from genunlearn.experiments.session import UnlearnSession
from genunlearn.loop import UnlearnConfig
from genunlearn.models.mnist_i2i import MNISTI2I, TASKS, check_task
from genunlearn.models.registry import i2i_weights, load_model
from genunlearn.provenance import record_start, run_record

#: The bench's methods and their labels.
I2I_METHODS: dict[str, str] = {
    "i2i": "Li et al. (embedding, retain set)",
    "i2i-proxy": "Li et al. retain-free (proxy data)",
    "s": "Surgery S (reconstruction loss)",
    "uno": "UNO (reconstruction loss)",
    "gdiff": "GDiff (reconstruction loss)",
}
#: Proxy data of the retain-free variant on MNIST (any other IDX dataset name, or ``test``, works too).
PROXIES = ("fashion-mnist", "mnist-test")


@dataclass(frozen=True)
class I2IBenchSettings:
    """Settings of the I2I bench.

    Attributes:
        tasks: I2I tasks to run (``inpaint``, ``outpaint``).
        dataset, data_dir: the 28x28 IDX dataset of the models (``mnist``: bundled) and where its files are.
        classifier: weights of the dataset's classifier (``genunlearn train classifier --dataset ...``); default: the
            bundled MNIST classifier (MNIST only).
        forget: the forgotten class.
        methods: bench methods (:data:`I2I_METHODS`).
        seeds: seeds 0..seeds-1 (batch order and noise draws; the evaluation images are fixed).
        steps, lr, batch_size: the engine's updates (Adam), the same for every method.
        alpha: weight of the forget term of ``i2i`` (the engine's ``forget_weight``).
        gdiff_weight: lambda of ``gdiff``.
        beta_o: UNO's orthogonality weight.
        proxy: retain-free variant's proxy data: another IDX dataset's name (its training images) or ``test`` (spare
            test images of the retained classes; ``mnist-test`` on MNIST); ``proxy_dir``: the proxy dataset's files.
        proxy_images: proxy images used (the first ones).
        eval_forget, eval_retain: test images of the forget digit / of the other digits that are measured.
        grid: images per row of the before/after grids.
        checkpoint: weights of the original model per task (``{"inpaint": path}``; default: the bundled ones).
        retrained: weights of models retrained without the forget digit per task (optional rows).
    """

    tasks: tuple[str, ...] = TASKS
    dataset: str = "mnist"
    data_dir: str | None = None
    classifier: str | None = None
    forget: int = 1
    methods: tuple[str, ...] = tuple(I2I_METHODS)
    seeds: int = 3
    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 32
    alpha: float = 1.0
    gdiff_weight: float = 1.0
    beta_o: float = 1e3
    proxy: str = "fashion-mnist"
    proxy_dir: str | None = None
    proxy_images: int = 10000
    eval_forget: int = 500
    eval_retain: int = 1000
    grid: int = 8
    checkpoint: dict[str, str] = field(default_factory=dict)
    retrained: dict[str, str] = field(default_factory=dict)

    def validate(self) -> I2IBenchSettings:
        """One-line errors for bad settings."""
        for t in self.tasks:
            check_task(t)
        bad = [m for m in self.methods if m not in I2I_METHODS]
        if bad:
            raise ConfigError(f"unknown I2I bench method {bad[0]!r}; use some of {', '.join(I2I_METHODS)}")
        if self.proxy == "mnist-test" and self.dataset != "mnist":
            raise ConfigError(f"proxy 'mnist-test' is MNIST's; for {self.dataset}'s spare test images use 'test'")
        if self.proxy == self.dataset:
            raise ConfigError(
                f"proxy {self.proxy!r} is the bench's own dataset: choose another dataset's name (e.g. --proxy "
                f"mnist) or 'test' (its spare test images)"
            )
        if not 0 <= self.forget <= 9:
            raise ConfigError(f"forget class must lie in 0..9, got {self.forget}")
        if self.dataset != "mnist":
            missing = [t for t in self.tasks if t not in self.checkpoint]
            if self.classifier is None or missing:
                raise ConfigError(
                    f"dataset {self.dataset}: give the original weights of every task (--checkpoint TASK=PATH; "
                    f"missing: {', '.join(missing) or 'none'}) and its classifier (--classifier PATH), trained on it"
                )
        if self.classifier is not None and not Path(self.classifier).is_file():
            raise ConfigError(f"classifier weights not found: {self.classifier}")
        for name in ("seeds", "eval_forget", "eval_retain", "proxy_images", "grid", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for what, paths in (("checkpoint", self.checkpoint), ("retrained", self.retrained)):
            for t, p in paths.items():
                check_task(t)
                if not Path(p).is_file():
                    raise ConfigError(f"{what} weights for {t} not found: {p}")
        return self

    @classmethod
    def quick(cls) -> I2IBenchSettings:
        """A smoke-test setting (seconds)."""
        return cls(
            tasks=("inpaint",),
            seeds=1,
            steps=2,
            batch_size=8,
            proxy="test",
            proxy_images=64,
            eval_forget=32,
            eval_retain=32,
            grid=4,
        )


@dataclass
class EvalSets:
    """Fixed test images of one bench: forget and retain sets with labels, and the grid images."""

    forget: torch.Tensor
    forget_labels: torch.Tensor
    retain: torch.Tensor
    retain_labels: torch.Tensor
    noise: torch.Tensor
    proxy: torch.Tensor


def eval_sets(s: I2IBenchSettings) -> EvalSets:
    """The forget / retain test images measured, masked-noise inputs and the proxy data (all fixed)."""
    test = load_dataset(s.dataset, "test", s.data_dir)
    if tuple(test.images.shape[1:]) != (28, 28):
        raise ConfigError(f"{s.dataset} images are {tuple(test.images.shape[1:])}, the I2I model takes 28x28")
    x = test.flat_float().reshape(-1, 1, 28, 28)
    f_idx = torch.nonzero(test.labels == s.forget).reshape(-1)
    r_idx = torch.nonzero(test.labels != s.forget).reshape(-1)
    forget, retain = f_idx[: s.eval_forget], r_idx[: s.eval_retain]
    if _own_test_proxy(s):
        spare = r_idx[s.eval_retain :][: s.proxy_images]
        if len(spare) == 0:
            raise ConfigError(f"no {s.dataset} test images are left for the proxy after the evaluation's retain images")
        proxy = x[spare]
    else:
        px = load_dataset(s.proxy, "train", s.proxy_dir)
        proxy = px.flat_float()[: s.proxy_images].reshape(-1, 1, *px.images.shape[1:])
        if proxy.shape[1:] != (1, 28, 28):
            raise ConfigError(f"proxy {s.proxy} images are {tuple(proxy.shape[2:])}, the I2I model takes 28x28")
    g = torch.Generator().manual_seed(1234)
    train_x = load_dataset(s.dataset, "train", s.data_dir).flat_float()
    mean, std = float(train_x.mean()), float(train_x.std())
    noise = mean + std * torch.randn(len(forget), 1, 28, 28, generator=g)
    return EvalSets(x[forget], test.labels[forget], x[retain], test.labels[retain], noise, proxy)


def _own_test_proxy(s: I2IBenchSettings) -> bool:
    """Whether the proxy is the bench dataset's own spare test images (``test``, or ``mnist-test`` on MNIST)."""
    return s.proxy == "test" or (s.proxy == "mnist-test" and s.dataset == "mnist")


def _features(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return classifier.features(images.reshape(images.shape[0], -1))  # type: ignore[operator]


@torch.no_grad()
def measure(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    forget: int,
    classifier: nn.Module,
    fid: ClassifierFID,
    inputs: torch.Tensor | None = None,
) -> dict[str, float]:
    """Quality of ``model``'s outputs for inputs ``x`` (or ``inputs``, e.g. noise) against the ground truth ``x``."""
    model.eval()
    src = x if inputs is None else inputs
    out = torch.cat([model(b) for b in src.split(1000)])
    mask = model.mask  # type: ignore[union-attr]
    se = (out - x).pow(2)
    fid.reset()
    fid.update_batches(out, real=False)
    cos = torch.nn.functional.cosine_similarity(_features(classifier, out), _features(classifier, x), dim=1)
    pred = classifier(out.reshape(out.shape[0], -1)).argmax(1)
    return {
        "l2_masked": float((se * mask).sum() / (x.shape[0] * mask.sum())),
        "l2_full": float(se.mean()),
        "fid": float(fid.compute()),
        "cosine": float(cos.mean()),
        "forget_rate": float((pred == forget).float().mean()),
        "accuracy": float((pred == labels).float().mean()),
    }


def _fids(classifier: nn.Module, sets: EvalSets) -> dict[str, ClassifierFID]:
    out = {}
    for name, x in (("forget", sets.forget), ("retain", sets.retain)):
        fid = ClassifierFID(classifier, num_features=classifier.fc1.out_features)  # type: ignore[union-attr]
        fid.update_batches(x, real=True)
        out[name] = fid
    return out


def evaluate(model: nn.Module, sets: EvalSets, s: I2IBenchSettings, classifier: nn.Module, fids: dict) -> dict:
    """The forget- and retain-set measures of ``model``."""
    return {
        "forget": measure(model, sets.forget, sets.forget_labels, s.forget, classifier, fids["forget"]),
        "retain": measure(model, sets.retain, sets.retain_labels, s.forget, classifier, fids["retain"]),
    }


def _encode_grid(images: torch.Tensor) -> str:
    return base64.b64encode((images.clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes()).decode()


def _decode_grid(text: str, n: int) -> torch.Tensor:
    raw = torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)
    return raw.reshape(n, 1, 28, 28).float() / 255


@torch.no_grad()
def grid_outputs(model: nn.Module, sets: EvalSets, n: int) -> dict[str, str]:
    """The outputs for the first ``n`` forget and retain images (uint8, base64), for the figures."""
    model.eval()
    return {"forget": _encode_grid(model(sets.forget[:n])), "retain": _encode_grid(model(sets.retain[:n]))}


def make_sessions(task: str, s: I2IBenchSettings) -> dict[str, UnlearnSession]:
    """The reconstruction-objective and embedding-objective sessions of ``task`` (the encoder-only bundles)."""
    out = {}
    for objective in ("reconstruction", "embedding"):
        out[objective] = UnlearnSession(
            ModelConfig(
                name="mnist-i2i", checkpoint=s.checkpoint.get(task), options={"task": task, "objective": objective}
            ),
            DataConfig(dataset=s.dataset, data_dir=s.data_dir, forget=(s.forget,)),
            MonitorConfig(classifier_checkpoint=s.classifier),
            device="cpu",
            loss_reduction="mean",
        )
    return out


def run_one(
    sessions: dict[str, UnlearnSession],
    task: str,
    method: str,
    seed: int,
    s: I2IBenchSettings,
    sets: EvalSets,
    classifier: nn.Module,
    fids: dict,
) -> dict[str, Any]:
    """One (task, method, seed): unlearn through the engine and measure; the JSON-able record."""
    engine = "i2i" if method.startswith("i2i") else method
    session = sessions["embedding" if engine == "i2i" else "reconstruction"]
    if method == "i2i-proxy":
        session = copy.copy(session)
        session.retain_data = sets.proxy
    cfg = UnlearnConfig(
        method=engine,
        steps=s.steps,
        lr=s.lr,
        batch_size=s.batch_size,
        forget_weight=s.alpha if engine == "i2i" else s.gdiff_weight,
        beta_o=s.beta_o,
        stop_at=None,
        early_stop=False,
        seed=seed,
        diagnostics=False,
    ).validate()
    model, result = session.run(cfg, progress=False)
    log = result.log
    every = max(1, s.steps // 20)
    record = {
        "task": task,
        "method": method,
        "label": I2I_METHODS[method],
        "seed": seed,
        "status": result.status,
        "updates": result.steps_run,
        "compute_s": log[-1]["compute_time_s"] if log else 0.0,
        "time_per_step_s": result.time_per_step_s,
        "trainable_parameters": result.trainable_parameters,
        **evaluate(model, sets, s, classifier, fids),
        "curve": {
            "step": [row["step"] for row in log[::every]],
            "loss_r": [row.get("loss_r") for row in log[::every]],
            "loss_f": [row.get("loss_f") for row in log[::every]],
        },
        "config": asdict(cfg),
        "provenance": run_record(
            {"method": method, "task": task, "settings": asdict(s)}, inputs=session.bundle.info.get("inputs")
        ),
    }
    if seed == 0:
        record["grid"] = grid_outputs(model, sets, s.grid)
    return record


# --- aggregation and the table --------------------------------------------------------------------------------
METRICS = ("l2_masked", "l2_full", "fid", "cosine", "forget_rate", "accuracy")


def _ms(values: list[float]) -> list[float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return [math.nan, math.nan]
    return [statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0]


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every measure of one (task, method)."""
    row: dict[str, Any] = {"seeds": len(records), "status": sorted({r["status"] for r in records})}
    for side in ("forget", "retain"):
        row[side] = {m: _ms([r[side][m] for r in records]) for m in METRICS}
    row["updates"] = _ms([r["updates"] for r in records])
    row["compute_s"] = _ms([r["compute_s"] for r in records])
    return row


def _cell(v: Any, spec: str) -> str:
    if v is None:
        return "—"
    if isinstance(v, list):
        m, sd = v
        return "—" if math.isnan(m) else f"{m:{spec}} ± {sd:{spec}}"
    return f"{v:{spec}}"


def render_table(data: dict[str, Any]) -> str:
    """``table.md`` from ``results.json`` (mean ± sd over seeds; single measurements without sd)."""
    s = data["settings"]
    unit = "digit" if s.get("dataset", "mnist") == "mnist" else "class"
    lines = [
        f"# I2I unlearning on {_title(s)}: forget {class_label(s.get('dataset', 'mnist'), s['forget'])}",
        "",
        f"Encoder-only updates ({s['steps']} per run, Adam lr {s['lr']:g}, batch {s['batch_size']}, "
        f"alpha {s['alpha']:g}, GDiff lambda {s['gdiff_weight']:g}, UNO beta_o {s['beta_o']:g}), {s['seeds']} seeds; "
        f"mean ± sd over seeds. Measured on {s['eval_forget']} forget-{unit} and {s['eval_retain']} other-{unit} "
        f"{_title(s)} test images (the first ones); retain-free proxy: {data['proxy_description']}. "
        "L2: mean squared error per pixel against the ground truth, on the hidden region (`L2 hid`) and the whole "
        "image; FID: classifier features, outputs vs ground truth of the same set; cos: mean cosine of classifier "
        f"features of output and ground truth; `->{s['forget']}`: share of outputs classified as the forget {unit}; "
        "acc: classifier "
        "accuracy on the outputs (true label of the input). `noise input`: the original model fed masked Gaussian "
        "noise (what Li et al.'s forget target decodes to), measured against the forget ground truth.",
    ]
    for task, block in data["tasks"].items():
        lines += [
            "",
            f"## {task}",
            "",
            f"| model | forget L2 hid | forget L2 | forget FID | forget cos | forget ->{s['forget']} | retain L2 hid "
            "| retain L2 "
            "| retain FID | retain cos | retain acc | updates | seconds |",
            "|---|" + "---:|" * 12,
        ]
        for row in block["rows"].values():
            f, r = row["forget"], row.get("retain")
            cells = [
                _cell(f["l2_masked"], ".4f"),
                _cell(f["l2_full"], ".4f"),
                _cell(f["fid"], ".1f"),
                _cell(f["cosine"], ".3f"),
                _cell(f["forget_rate"], ".3f"),
            ]
            if r is None:
                cells += ["—"] * 5
            else:
                cells += [
                    _cell(r["l2_masked"], ".4f"),
                    _cell(r["l2_full"], ".4f"),
                    _cell(r["fid"], ".1f"),
                    _cell(r["cosine"], ".3f"),
                    _cell(r["accuracy"], ".3f"),
                ]
            cells += [_cell(row.get("updates"), ".0f"), _cell(row.get("compute_s"), ".1f")]
            lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _title(settings: dict[str, Any]) -> str:
    name = settings.get("dataset", "mnist")
    return DATASET_TITLES.get(name, name)


def render_summary(data: dict[str, Any]) -> str:
    """A narrower table for the README: what forgetting and keeping look like per task and model."""
    lines = []
    forget = data["settings"]["forget"]
    for task, block in data["tasks"].items():
        lines += [
            f"**{task}** | forget ->{forget} | forget cos | forget FID | retain L2 hid | retain cos | retain acc "
            "| seconds",
            "|---|" + "---:|" * 7,
        ]
        lines[-2] = "| " + lines[-2] + " |"
        for row in block["rows"].values():
            f, r = row["forget"], row.get("retain")
            cells = [_cell(f["forget_rate"], ".3f"), _cell(f["cosine"], ".3f"), _cell(f["fid"], ".1f")]
            if r is None:
                cells += ["—"] * 3
            else:
                cells += [_cell(r["l2_masked"], ".4f"), _cell(r["cosine"], ".3f"), _cell(r["accuracy"], ".3f")]
            cells.append(_cell(row.get("compute_s"), ".0f"))
            lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# --- figures --------------------------------------------------------------------------------------------------
def write_grids(path: Path, rows: list[tuple[str, torch.Tensor]], title: str) -> Path:
    """A grid PNG: one row of 28x28 images per ``(label, images)`` (one mosaic drawn on one axes: fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, pad = max(len(imgs) for _, imgs in rows), 2
    cell = 28 + pad
    mosaic = torch.ones(len(rows) * cell + pad, n * cell + pad)
    for i, (_, imgs) in enumerate(rows):
        for j, img in enumerate(imgs[:n]):
            top, left = pad + i * cell, pad + j * cell
            mosaic[top : top + 28, left : left + 28] = img.reshape(28, 28).clamp(0, 1)
    fig, ax = plt.subplots(figsize=(0.5 * n + 1.6, 0.5 * len(rows) + 0.5))
    ax.imshow(mosaic.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([pad + i * cell + 14 for i in range(len(rows))], [label for label, _ in rows], fontsize=7)
    ax.set_title(title, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _masked_view(model: MNISTI2I, x: torch.Tensor) -> torch.Tensor:
    t = model.transform(x)
    return t[:, :1] + 0.5 * t[:, 1:]  # hidden pixels shown grey


# --- the bench ------------------------------------------------------------------------------------------------
def run_bench(settings: I2IBenchSettings, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the bench into ``out``; returns the ``results.json`` data."""
    record_start()
    s = settings.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sets = eval_sets(s)
    classifier = load_model("mnist-classifier", s.classifier).eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    fids = _fids(classifier, sets)
    title = DATASET_TITLES.get(s.dataset, s.dataset)
    proxy_description = (
        f"{len(sets.proxy)} {title} test images of the other {'digits' if s.dataset == 'mnist' else 'classes'} "
        "not among the measured ones"
        if _own_test_proxy(s)
        else f"the first {len(sets.proxy)} {DATASET_TITLES.get(s.proxy, s.proxy)} training images"
    )
    data: dict[str, Any] = {
        "kind": "i2i",
        "title": "I2I unlearning",
        "settings": asdict(s),
        "proxy_description": proxy_description,
        "tasks": {},
    }
    total = len(s.tasks) * len(s.methods) * s.seeds
    bar = tqdm(total=total, desc="bench i2i", disable=not progress)
    for task in s.tasks:
        sessions = make_sessions(task, s)
        original = sessions["reconstruction"].fresh_model()
        rows: dict[str, Any] = {}
        base = evaluate(original, sets, s, classifier, fids)
        rows["original"] = {"label": "original", **base}
        noise = measure(original, sets.forget, sets.forget_labels, s.forget, classifier, fids["forget"], sets.noise)
        rows["noise"] = {"label": "original, noise input", "forget": noise, "retain": None}
        grid_rows = [("masked input", None), ("original", grid_outputs(original, sets, s.grid))]
        retrained = None
        if task in s.retrained:
            retrained = load_model("mnist-i2i", s.retrained[task]).eval()
            rows["retrained"] = {
                "label": f"retrained without {s.forget}",
                **evaluate(retrained, sets, s, classifier, fids),
            }
        for method in s.methods:
            records = []
            for seed in range(s.seeds):
                path = out / "runs" / task / method / f"seed{seed}.json"
                if path.is_file():
                    rec = read_seed_record(path)
                else:
                    rec = run_one(sessions, task, method, seed, s, sets, classifier, fids)
                    write_seed_record(path, rec, {})
                records.append(rec)
                bar.update(1)
            rows[method] = {"label": I2I_METHODS[method], **aggregate(records)}
            grid_rows.append((method, records[0]["grid"]))
        if retrained is not None:
            grid_rows.append(("retrained", grid_outputs(retrained, sets, s.grid)))
        data["tasks"][task] = {"weights": str(s.checkpoint.get(task) or i2i_weights(task)), "rows": rows}
        for side in ("forget", "retain"):
            truth = getattr(sets, side)[: s.grid]
            images = [
                (lab, _masked_view(original, truth) if g is None else _decode_grid(g[side], len(truth)))
                for lab, g in grid_rows
            ] + [("ground truth", truth)]
            if side == "forget":  # what Li et al.'s forget target decodes to: the original model fed masked noise
                with torch.no_grad():
                    images.insert(2, ("noise input", original(sets.noise[: s.grid])))
            write_grids(
                out / "figures" / f"{task}-{side}.png",
                images,
                f"{task}, {side} set, {title} {class_label(s.dataset, s.forget)} forgotten (seed 0)",
            )
    bar.close()
    data["provenance"] = run_record(s)
    atomic_write_text(out / "results.json", dumps_compact(data))
    atomic_write_text(out / "table.md", render_table(data))
    return data

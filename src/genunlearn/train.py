"""Training of the original models (MNIST VAE and classifier), resumable and reproducible.

Each epoch's data order and reparameterisation noise come from generators seeded with
``(seed, epoch)``, so a run resumed from its last checkpoint continues exactly as an uninterrupted one.
After every epoch the resumable state — weights, optimizer state, epoch count and history — is written as one
file, ``checkpoint.pt`` (atomically, read back with ``weights_only=True``), *before* the files meant for
users: ``model.safetensors`` (weights + metadata) and ``state.json`` (last finished epoch). A kill between
any two writes therefore never pairs the weights of one epoch with the optimizer state of another.
``record.json`` (config, versions, per-epoch and final metrics) is written at the end. Runs written before
``checkpoint.pt`` existed (``model.safetensors`` + ``optimizer.pt`` + ``state.json``) still resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from genunlearn.checkpoints import (
    atomic_write,
    atomic_write_json,
    load_into,
    remove_stale_temporaries,
    safe_torch_load,
    save_weights,
)
from genunlearn.data import ImageDataset, load_dataset
from genunlearn.errors import CheckpointError, DataError, OutputError
from genunlearn.models import MNISTVAE, MNISTClassifier, count_parameters, vae_loss
from genunlearn.outputs import check_writable
from genunlearn.provenance import record_start, run_record
from genunlearn.runinfo import resolve_device, versions


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``genunlearn train``.

    Attributes:
        model: ``"vae"`` or ``"classifier"``.
        dataset: dataset name (``"mnist"``) and ``data_dir`` to override where it is read from.
        epochs: passes over the training split (paper: 200 for the VAE, 10 for the classifier).
        batch_size, lr: Adam optimiser settings.
        seed: seed of initialisation, data order and noise.
        use_bn: classifier only: apply ``bn1`` (the authors' forward skips it).
        lr_schedule: ``"constant"`` or ``"cosine"`` (cosine decay to 0 over ``epochs``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        exclude_classes: train without every example of these classes (the retrained "gold standard" of
            class unlearning: the original recipe without the forget data).
        exclude_ids: a file of training-set indices to leave out (sample unlearning's gold standard; one
            integer per line, ``#`` comments, or a JSON list); its sha256 is checked when a run resumes.
    """

    model: str
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    use_bn: bool = True
    lr_schedule: str = "constant"
    device: str = "auto"
    exclude_classes: tuple[int, ...] = ()
    exclude_ids: str | None = None


def read_ids(path: str | Path) -> list[int]:
    """Sample ids from a file: one integer per line (``#`` starts a comment) or a JSON list of integers."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise DataError(f"{p}: cannot read sample ids ({exc.strerror or exc})") from None
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}: not a JSON list of sample ids ({exc.msg})") from None
    else:
        values = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        values = [v for v in values if v]
    try:
        ids = [int(v) for v in values]
    except (TypeError, ValueError):
        raise DataError(f"{p}: sample ids must be integers") from None
    if not ids:
        raise DataError(f"{p}: no sample ids")
    return ids


def training_mask(config: Any, labels: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the training examples the recipe uses (all but the excluded classes and ids).

    ``config``: any training config with ``dataset`` and ``exclude_classes`` (:class:`TrainConfig`, the DiT's and the
    I2I model's); ``exclude_ids`` (a file of sample ids) where the recipe has it.
    """
    exclude_ids = getattr(config, "exclude_ids", None)
    keep = torch.ones(len(labels), dtype=torch.bool)
    if config.exclude_classes:
        present = set(torch.unique(labels).tolist())
        missing = [c for c in config.exclude_classes if c not in present]
        if missing:
            classes = sorted(present)
            raise DataError(f"exclude class {missing[0]} does not exist in {config.dataset} (classes: {classes})")
        keep &= ~torch.isin(labels, torch.tensor(list(config.exclude_classes), dtype=labels.dtype))
    if exclude_ids is not None:
        ids = torch.tensor(read_ids(exclude_ids), dtype=torch.int64)
        if int(ids.min()) < 0 or int(ids.max()) >= len(labels):
            raise DataError(f"{exclude_ids}: sample ids must lie in [0, {len(labels)})")
        keep[ids] = False
    if int(keep.sum()) < 2:
        raise DataError("fewer than two training examples are left after the exclusions")
    return keep


def _config_diff(stored: dict | None, config: TrainConfig) -> list[str]:
    """The fields in which a stored config (a checkpoint's or state.json's) differs from ``config``; fields added
    later count as their defaults when missing (compared as JSON, so tuples equal lists)."""
    now = json.loads(json.dumps(asdict(config)))
    defaults = json.loads(json.dumps(asdict(TrainConfig(model=config.model))))
    saved = json.loads(json.dumps(stored or {}))
    saved = {**{k: defaults[k] for k in now if k not in saved}, **saved}
    return sorted(k for k in now if saved.get(k) != now[k])


def _gen(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


@torch.no_grad()
def evaluate_vae(model: MNISTVAE, data: ImageDataset, *, seed: int = 0, batch_size: int = 1000) -> float:
    """Mean negative ELBO (paper eq. 12, nats per image) on ``data``, model in eval mode, fixed noise."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = _gen(seed, 10**6, device)
    total = 0.0
    for start in range(0, len(data), batch_size):
        x = data.flat_float(torch.arange(start, min(start + batch_size, len(data)))).to(device)
        noise = torch.randn(x.shape[0], model.latent_dim, generator=g, device=device)
        total += float(vae_loss(model, x, reduction="sum", noise=noise))
    model.train(was_training)
    return total / len(data)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, data: ImageDataset, *, batch_size: int = 2000) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)))
        logits = model(data.flat_float(idx).to(device))
        correct += int((logits.argmax(1).cpu() == data.labels[idx]).sum())
    model.train(was_training)
    return correct / len(data)


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train ``config.model`` and write checkpoints and a JSON record into ``out``; returns the record.

    With ``resume`` a run found in ``out`` (same config) continues from its last finished epoch; a run of
    another config there is refused, and so is any run there when ``resume`` is off, unless ``overwrite``.
    ``stop_after`` ends this call after that many epochs (the run can be resumed later).
    """
    record_start()
    out = Path(out)
    check_writable(out)
    remove_stale_temporaries(out, list(_TRAIN_FILES))
    device = resolve_device(config.device)
    train_set = load_dataset(config.dataset, "train", config.data_dir)
    test_set = load_dataset(config.dataset, "test", config.data_dir)
    torch.manual_seed(config.seed)
    is_vae = config.model == "vae"
    build = _build_options(config, train_set)
    model: nn.Module = MNISTVAE(**build) if is_vae else MNISTClassifier(**build)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    state_path, weights_path, opt_path = out / "state.json", out / "model.safetensors", out / "optimizer.pt"
    keep = training_mask(config, train_set.labels)
    ids_sha = hashlib.sha256(Path(config.exclude_ids).read_bytes()).hexdigest() if config.exclude_ids else None
    ck_path = out / "checkpoint.pt"
    history: list[dict] = []
    start_epoch = 0
    has_run = ck_path.is_file() or state_path.is_file()
    if has_run and overwrite:
        for name in _TRAIN_FILES:
            (out / name).unlink(missing_ok=True)
        has_run = False
    if has_run and not resume:
        raise OutputError(f"{out} holds a training run; resume it (the default) or pass --overwrite to start over")
    if has_run:
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
        if ck_path.is_file():
            ck = safe_torch_load(ck_path)
            if not isinstance(ck, dict) or "config" not in ck:
                raise CheckpointError(f"{ck_path}: not a genunlearn training checkpoint")
            saved_config, saved_sha = ck["config"], ck.get("exclude_ids_sha256")
        else:  # a run written before checkpoint.pt existed
            ck = None
            saved_config, saved_sha = state.get("config"), state.get("exclude_ids_sha256")
        diff = _config_diff(saved_config, config)
        if diff:
            raise OutputError(
                f"{out}: a run with a different config is in this directory ({', '.join(diff)} differ); "
                "use another --out, or --overwrite to replace it"
            )
        if saved_sha != ids_sha:
            raise CheckpointError(
                f"{ck_path if ck is not None else state_path}: the excluded-ids file changed since this run started"
            )
        if ck is not None:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            start_epoch, history = ck["epoch"], ck["history"]
        else:
            load_into(model, weights_path)
            opt.load_state_dict(safe_torch_load(opt_path, map_location=device))
            start_epoch, history = state["epoch"], state["history"]
    x_all = train_set.flat_float()[keep].to(device)
    y_all = train_set.labels[keep].to(device)
    n = x_all.shape[0]
    t0 = time.perf_counter()
    bar = epoch_bar(f"train {config.model}", start_epoch, config.epochs, progress)
    for epoch in bar:
        if stop_after is not None and epoch - start_epoch >= stop_after:
            break
        model.train()
        if config.lr_schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = 0.5 * config.lr * (1 + math.cos(math.pi * epoch / config.epochs))
        g = _gen(config.seed, epoch, device)
        perm = torch.randperm(n, generator=g, device=device)
        running, batches = 0.0, 0
        for start in range(0, n, config.batch_size):
            idx = perm[start : start + config.batch_size]
            if idx.numel() < 2:  # BatchNorm needs two samples
                continue
            x = x_all[idx]
            if is_vae:
                noise = torch.randn(x.shape[0], model.latent_dim, generator=g, device=device)
                loss = vae_loss(model, x, reduction="mean", noise=noise)
            else:
                loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.detach())
            batches += 1
        history.append({"epoch": epoch + 1, "train_loss": running / batches})
        bar.set_postfix(loss=f"{running / batches:.3f}")
        state = {"epoch": epoch + 1, "config": asdict(config), "history": history}
        if ids_sha is not None:
            state["exclude_ids_sha256"] = ids_sha
        resumable = {**state, "model": model.state_dict(), "optimizer": opt.state_dict(), "exclude_ids_sha256": ids_sha}
        write_epoch(out, resumable, state, model, _metadata(config, history, build=build))
        opt_path.unlink(missing_ok=True)  # an optimizer.pt of the old layout would now be stale
    model.eval()
    if is_vae:
        final = {
            "test_neg_elbo": evaluate_vae(model, test_set),
            "train_neg_elbo": evaluate_vae(model, train_set),
        }
    else:
        final = {"test_accuracy": evaluate_classifier(model, test_set)}
    record = {
        "config": asdict(config),
        "parameters": count_parameters(model),
        "epochs_done": len(history),
        "complete": len(history) == config.epochs,
        "training_examples": int(keep.sum()),
        "excluded_examples": int((~keep).sum()),
        "final": final,
        "history": history,
        "seconds_this_session": time.perf_counter() - t0,
        "versions": versions(),
        "provenance": run_record(
            config, inputs={"exclude_ids": config.exclude_ids} if config.exclude_ids is not None else None
        ),
    }
    save_weights(model, weights_path, metadata=_metadata(config, history, final, build))
    atomic_write_json(out / "record.json", record)
    return record


def epoch_bar(desc: str, start_epoch: int, epochs: int, progress: bool) -> tqdm:
    """The progress bar over the epochs still to run (a resumed run starts at ``start_epoch``)."""
    return tqdm(range(start_epoch, epochs), desc=desc, disable=not progress, initial=start_epoch, total=epochs)


def write_epoch(out: Path, resumable: dict, state: dict, model: nn.Module, metadata: dict) -> None:
    """Save a finished epoch: ``checkpoint.pt`` (``resumable``, tensors copied to the CPU) first — the one file
    resuming reads — then ``model.safetensors`` (with ``metadata``) and ``state.json`` (``state``) for users."""
    ck = {k: ({n: t.detach().cpu().clone() for n, t in v.items()} if k == "model" else v) for k, v in resumable.items()}
    atomic_write(out / "checkpoint.pt", lambda tmp: torch.save(ck, tmp))
    save_weights(model, out / "model.safetensors", metadata=metadata)
    atomic_write_json(out / "state.json", state)


_TRAIN_FILES = ("record.json", "checkpoint.pt", "model.safetensors", "optimizer.pt", "state.json")


def _build_options(config: TrainConfig, data: ImageDataset) -> dict:
    """Constructor options for the dataset's image size (and number of classes), stored in the checkpoint."""
    pixels = int(data.images[0].numel())
    if config.model == "vae":
        return {"image_size": pixels} if pixels != 784 else {}
    out: dict = {"use_bn": config.use_bn}
    classes = int(data.labels.max()) + 1
    if pixels != 784:
        out["in_features"] = pixels
    if classes != 10:
        out["num_classes"] = classes
    return out


def _metadata(config: TrainConfig, history: list[dict], final: dict | None = None, build: dict | None = None) -> dict:
    meta: dict = {"train_config": asdict(config), "epochs_done": len(history)}
    if build:
        meta["build_options"] = build
    if final:
        meta["final"] = final
    return meta

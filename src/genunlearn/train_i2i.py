"""Training of the MNIST image-to-image model (``genunlearn train i2i``), resumable and reproducible.

Adam on the per-image squared error of the generated full image against the ground truth,
``sum_pixels (D(E(T(x))) - x)^2`` averaged over the batch (:class:`~genunlearn.objectives.i2i.I2IReconstruction`).
Each epoch's data order comes from a generator seeded with ``(seed, epoch)`` and everything is saved after every
epoch (``checkpoint.pt`` first, then ``model.safetensors`` and ``state.json``), so a run resumed from its last
checkpoint continues exactly as an uninterrupted one (same device and thread count). ``record.json`` (config,
history, reconstruction quality on the test split, provenance) is written at the end, next to the weights.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from genunlearn.checkpoints import (
    atomic_write_json,
    remove_stale_temporaries,
    safe_torch_load,
    save_weights,
)
from genunlearn.data import load_dataset
from genunlearn.errors import CheckpointError, ConfigError, OutputError
from genunlearn.models.mnist_i2i import MNISTI2I, check_task
from genunlearn.models.registry import count_parameters
from genunlearn.objectives.i2i import I2IReconstruction, reconstruction_quality
from genunlearn.outputs import check_writable
from genunlearn.provenance import record_start, run_record
from genunlearn.runinfo import resolve_device
from genunlearn.train import _gen, epoch_bar, training_mask, write_epoch

_FILES = ("record.json", "checkpoint.pt", "model.safetensors", "state.json")


@dataclass(frozen=True)
class I2ITrainConfig:
    """Options of ``genunlearn train i2i``.

    Attributes:
        task: ``"inpaint"`` (centre square hidden) or ``"outpaint"`` (all but the centre square hidden).
        mask_size: side of the centre square.
        width, embed_channels: the model's channels (:class:`~genunlearn.models.mnist_i2i.MNISTI2I`).
        dataset, data_dir: a 28x28 IDX dataset (``"mnist"`` is bundled).
        epochs, batch_size, lr: Adam settings.
        seed: seed of initialisation and data order.
        exclude_classes: train without these classes (the retrained gold standard of class unlearning).
        train_images: train on the first this many (kept) training images only (0: all; for quick runs and tests).
        eval_images: test images of the final reconstruction-quality measurement (0: all).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    task: str = "inpaint"
    mask_size: int = 14
    width: int = 32
    embed_channels: int = 32
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    exclude_classes: tuple[int, ...] = ()
    train_images: int = 0
    eval_images: int = 0
    device: str = "auto"

    def validate(self) -> I2ITrainConfig:
        """Check the options (one-line :class:`ConfigError`)."""
        check_task(self.task)
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or min(self.eval_images, self.train_images) < 0:
            raise ConfigError("epochs must be >= 1, batch size >= 2, lr > 0, train and eval images >= 0")
        return self

    def build_options(self) -> dict[str, Any]:
        """The model's constructor arguments."""
        return {
            "task": self.task,
            "mask_size": self.mask_size,
            "width": self.width,
            "embed_channels": self.embed_channels,
        }


def _stored_config(path: Path) -> dict[str, Any] | None:
    ck = safe_torch_load(path)
    if not isinstance(ck, dict) or "config" not in ck or "model" not in ck:
        raise CheckpointError(f"{path}: not a genunlearn I2I training checkpoint")
    return ck


def train_i2i(
    config: I2ITrainConfig,
    out: str | Path,
    *,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train the MNIST I2I model and write ``model.safetensors`` + ``record.json`` into ``out``; returns the record.

    With ``resume`` a run of the same config found in ``out`` continues from its last finished epoch; another
    config there is refused (one line), and so is any run there when ``resume`` is off, unless ``overwrite``.
    ``stop_after`` ends this call after that many epochs (the run can be resumed later).
    """
    config.validate()
    record_start()
    out = Path(out)
    check_writable(out)
    remove_stale_temporaries(out, list(_FILES))
    device = resolve_device(config.device)
    train_set = load_dataset(config.dataset, "train", config.data_dir)
    test_set = load_dataset(config.dataset, "test", config.data_dir)
    torch.manual_seed(config.seed)
    model = MNISTI2I(**config.build_options()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    objective = I2IReconstruction()
    keep = training_mask(config, train_set.labels)
    ck_path, weights_path = out / "checkpoint.pt", out / "model.safetensors"
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if ck_path.is_file() and overwrite:
        for name in _FILES:
            (out / name).unlink(missing_ok=True)
    if ck_path.is_file():
        if not resume:
            raise OutputError(f"{out} holds a training run; resume it (the default) or pass --overwrite to start over")
        ck = _stored_config(ck_path)
        if json.loads(json.dumps(ck["config"])) != json.loads(json.dumps(asdict(config))):
            raise OutputError(
                f"{out}: a run with a different config is in this directory; use another --out or --overwrite"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, history = ck["epoch"], ck["history"]
    x_all = train_set.flat_float()[keep].reshape(-1, 1, 28, 28).to(device)
    if config.train_images:
        x_all = x_all[: config.train_images]
    n = x_all.shape[0]
    t0 = time.perf_counter()
    bar = epoch_bar(f"train i2i {config.task}", start_epoch, config.epochs, progress)
    for epoch in bar:
        if stop_after is not None and epoch - start_epoch >= stop_after:
            break
        model.train()
        perm = torch.randperm(n, generator=_gen(config.seed, epoch, device), device=device)
        running, batches, t_epoch = 0.0, 0, time.perf_counter()
        for start in range(0, n, config.batch_size):
            loss = objective(model, x_all[perm[start : start + config.batch_size]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.detach())
            batches += 1
            bar.set_postfix(loss=f"{running / batches:.2f}")
        history.append({"epoch": epoch + 1, "train_loss": running / batches, "seconds": time.perf_counter() - t_epoch})
        state = {"epoch": epoch + 1, "config": asdict(config), "history": history}
        resumable = {**state, "model": model.state_dict(), "optimizer": opt.state_dict()}
        write_epoch(out, resumable, state, model, _metadata(config, history))
    model.eval()
    test = test_set.flat_float().reshape(-1, 1, 28, 28)
    if config.eval_images:
        test = test[: config.eval_images]
    final = reconstruction_quality(model, test.to(device))
    record = {
        "config": asdict(config),
        "parameters": count_parameters(model),
        "encoder_parameters": count_parameters(model.encoder),
        "epochs_done": len(history),
        "complete": len(history) == config.epochs,
        "training_examples": int(x_all.shape[0]),
        "excluded_examples": int((~keep).sum()),
        "final": {"test": final, "test_images": int(test.shape[0])},
        "history": history,
        "seconds_this_session": time.perf_counter() - t0,
        "threads": torch.get_num_threads(),
        "provenance": run_record(config),
    }
    save_weights(model, weights_path, metadata=_metadata(config, history, record["final"]))
    atomic_write_json(out / "record.json", record)
    return record


def _metadata(config: I2ITrainConfig, history: list[dict[str, Any]], final: dict | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "train_config": asdict(config),
        "epochs_done": len(history),
        "build_options": config.build_options(),
    }
    if final:
        meta["final"] = final
    return meta

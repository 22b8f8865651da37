"""Unlearning a digit from an MNIST VAE: the MNIST names of the general session.

``genunlearn unlearn --model mnist-vae`` and the MNIST bench run through
:class:`~genunlearn.experiments.session.UnlearnSession` like any other model; :class:`MnistUnlearnSpec` and
:class:`MnistSetup` keep the bench's, the sweeps' and the demo's vocabulary (one flat spec) on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genunlearn.config import DataConfig, ModelConfig, MonitorConfig, RunConfig, RuntimeConfig
from genunlearn.experiments.session import UnlearnSession, run_to_dir
from genunlearn.loop import UnlearnConfig
from genunlearn.objectives import ObjectiveConfig


@dataclass(frozen=True)
class MnistUnlearnSpec:
    """What to unlearn and how to measure it.

    Attributes:
        forget: digit(s) to forget.
        checkpoint: VAE weights (``None``: bundled); never overwritten.
        classifier_checkpoint: monitor/FID classifier (``None``: bundled).
        classifier_bn: override the classifier's ``bn1`` use (``None``: as stored in its checkpoint).
        monitor_samples: latents of the forget monitor (fixed by the seed).
        monitor_mode: ``"eval"`` (robust) or ``"train"`` (reference code).
        fid_samples: generated samples for FID before and after (0: skip).
        dataset, data_dir: the training data (the retain/forget split is made from its train split).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    forget: tuple[int, ...] = (1,)
    checkpoint: str | None = None
    classifier_checkpoint: str | None = None
    classifier_bn: bool | None = None
    monitor_samples: int = 1024
    monitor_mode: str = "eval"
    fid_samples: int = 0
    dataset: str = "mnist"
    data_dir: str | None = None
    device: str = "auto"

    def sections(self) -> tuple[ModelConfig, DataConfig, MonitorConfig, RuntimeConfig]:
        """The spec as the general config's sections."""
        return (
            ModelConfig(name="mnist-vae", checkpoint=self.checkpoint),
            DataConfig(dataset=self.dataset, data_dir=self.data_dir, forget=tuple(self.forget)),
            MonitorConfig(
                classifier_checkpoint=self.classifier_checkpoint,
                classifier_bn=self.classifier_bn,
                samples=self.monitor_samples,
                mode=self.monitor_mode,
                fid_samples=self.fid_samples,
            ),
            RuntimeConfig(device=self.device),
        )

    def run_config(self, config: UnlearnConfig, objective: ObjectiveConfig | None = None) -> RunConfig:
        """A full run config from this spec and the engine/objective configs."""
        model, data, monitor, run = self.sections()
        return RunConfig(
            model=model, data=data, objective=objective or ObjectiveConfig(), unlearn=config, monitor=monitor, run=run
        )


class MnistSetup(UnlearnSession):
    """Loaded data and models for MNIST VAE unlearning (reusable across seeds and methods)."""

    def __init__(self, spec: MnistUnlearnSpec) -> None:
        model, data, monitor, run = spec.sections()
        super().__init__(model, data, monitor, device=run.device)
        self.spec = spec


def unlearn_to_dir(
    spec: MnistUnlearnSpec,
    config: UnlearnConfig,
    out: str | Path,
    objective: ObjectiveConfig | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one unlearning job and write ``summary.json``, ``config.toml``, ``log.csv`` and ``model.safetensors``."""
    return run_to_dir(spec.run_config(config, objective), out, progress=progress)

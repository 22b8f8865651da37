"""genunlearn: make a trained generative model forget a class, a feature or samples, in a handful of steps.

The main pieces, importable from the top level::

    import genunlearn as gu
    result = gu.unlearn(model, gu.StandardTask(gu.VAEObjective()), retain, forget, gu.UnlearnConfig(method="rep"))

- :func:`unlearn` and :class:`UnlearnConfig` — the model-agnostic engine (any ``nn.Module`` + a loss);
- methods: :data:`METHODS`, :func:`get_method`, :func:`register` (one small class per algorithm);
- objectives: :class:`StandardTask`, :class:`ReplacementTask`, :class:`VAEObjective`, :class:`DiffusionObjective`,
  :class:`HatTerm`, :class:`LatentReplacement`, :class:`ObjectiveConfig`;
- models: :class:`ModelAdapter`, :class:`ModelBundle`, :func:`load_model`; data: :func:`load_dataset`,
  :class:`ForgetSplit`; measures: :class:`ForgetMonitor`, :class:`ClassifierFID`;
- runs from config: :class:`RunConfig`, :func:`load_config`, :class:`UnlearnSession`, :func:`run_to_dir`.

Imports are lazy: ``import genunlearn`` itself loads nothing heavy.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("genunlearn")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without installation
    __version__ = "0+unknown"

_EXPORTS = {
    "unlearn": "genunlearn.loop",
    "UnlearnConfig": "genunlearn.loop",
    "UnlearnResult": "genunlearn.loop",
    "METHODS": "genunlearn.methods",
    "Method": "genunlearn.methods",
    "MethodParams": "genunlearn.methods",
    "StepContext": "genunlearn.methods",
    "StepOutput": "genunlearn.methods",
    "get_method": "genunlearn.methods",
    "register": "genunlearn.methods",
    "StandardTask": "genunlearn.objectives",
    "ReplacementTask": "genunlearn.objectives",
    "VAEObjective": "genunlearn.objectives",
    "DiffusionObjective": "genunlearn.objectives",
    "HatTerm": "genunlearn.objectives",
    "LatentReplacement": "genunlearn.objectives",
    "ObjectiveConfig": "genunlearn.objectives",
    "ModelAdapter": "genunlearn.adapters",
    "ModelBundle": "genunlearn.models.bundle",
    "LatentSampler": "genunlearn.models.bundle",
    "TrainingData": "genunlearn.models.bundle",
    "BuildContext": "genunlearn.models.bundle",
    "load_model": "genunlearn.models",
    "load_dataset": "genunlearn.data",
    "ForgetSplit": "genunlearn.data",
    "ForgetMonitor": "genunlearn.eval",
    "ClassifierFID": "genunlearn.eval.fid",
    "RunConfig": "genunlearn.config",
    "load_config": "genunlearn.config",
    "UnlearnSession": "genunlearn.experiments.session",
    "run_to_dir": "genunlearn.experiments.session",
    "GenUnlearnError": "genunlearn.errors",
    "ConfigError": "genunlearn.errors",
    "DataError": "genunlearn.errors",
    "CheckpointError": "genunlearn.errors",
}

__all__ = [
    "METHODS",
    "BuildContext",
    "CheckpointError",
    "ClassifierFID",
    "ConfigError",
    "DataError",
    "DiffusionObjective",
    "ForgetMonitor",
    "ForgetSplit",
    "GenUnlearnError",
    "HatTerm",
    "LatentReplacement",
    "LatentSampler",
    "Method",
    "MethodParams",
    "ModelAdapter",
    "ModelBundle",
    "ObjectiveConfig",
    "ReplacementTask",
    "RunConfig",
    "StandardTask",
    "StepContext",
    "StepOutput",
    "TrainingData",
    "UnlearnConfig",
    "UnlearnResult",
    "UnlearnSession",
    "VAEObjective",
    "__version__",
    "get_method",
    "load_config",
    "load_dataset",
    "load_model",
    "register",
    "run_to_dir",
    "unlearn",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'genunlearn' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from genunlearn.adapters import ModelAdapter
    from genunlearn.config import RunConfig, load_config
    from genunlearn.data import ForgetSplit, load_dataset
    from genunlearn.errors import CheckpointError, ConfigError, DataError, GenUnlearnError
    from genunlearn.eval import ForgetMonitor
    from genunlearn.eval.fid import ClassifierFID
    from genunlearn.experiments.session import UnlearnSession, run_to_dir
    from genunlearn.loop import UnlearnConfig, UnlearnResult, unlearn
    from genunlearn.methods import METHODS, Method, MethodParams, StepContext, StepOutput, get_method, register
    from genunlearn.models import load_model
    from genunlearn.models.bundle import BuildContext, LatentSampler, ModelBundle, TrainingData
    from genunlearn.objectives import (
        DiffusionObjective,
        HatTerm,
        LatentReplacement,
        ObjectiveConfig,
        ReplacementTask,
        StandardTask,
        VAEObjective,
    )

"""What genunlearn needs to unlearn from a generator, and how a model is found by name.

A *model factory* returns a :class:`ModelBundle`: the generator (or a :class:`~genunlearn.adapters.ModelAdapter`
around it), its training objective, and optionally a sampler and a classifier (for the forget monitor, FID
and classifier-assisted methods), its own training data, and the pieces of conditional and latent
replacement. ``genunlearn unlearn --model NAME`` finds the factory (:func:`resolve_factory`) as

- a registered model name (``genunlearn models``: ``mnist-vae`` ...);
- ``module.path:function`` — a Python callable in an importable module or a ``.py`` file in the working
  directory (``my_model:factory`` for ``./my_model.py``);
- the name of an entry point in the group ``genunlearn.models`` of an installed package;
- ``diffusers:<folder>`` — a diffusers ``DiTPipeline`` saved locally (:mod:`genunlearn.models.diffusers_dit`).

The factory is called with the ``[model.options]`` table of the run's config as keyword arguments, plus
``context=`` (:class:`BuildContext`: device, checkpoint, data and objective options) if it accepts a
``context`` parameter.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from genunlearn.adapters import ModelAdapter, as_adapter
from genunlearn.errors import ConfigError, GenUnlearnError
from genunlearn.objectives.tasks import ConditionalLoss, Objective

ENTRY_POINT_GROUP = "genunlearn.models"


class Sampler(Protocol):
    """Draws fixed generator inputs and generates samples from them (for monitors, FID, the hat term).

    A class-conditional sampler's ``generate`` also takes ``labels=`` and has ``conditional = True`` (when the
    attribute is missing, genunlearn treats the sampler as conditional in ``--replace-with`` runs only).
    """

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` generator inputs (latents, initial noise) on the CPU, from ``generator``."""
        ...

    def generate(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Samples (in the classifier's input format) from ``inputs`` on the model's device; differentiable."""
        ...


@dataclass(frozen=True)
class LatentSampler:
    """A latent-variable generator's sampler: ``z ~ N(0, I)`` of ``latent_shape``, samples ``decode(z)``.

    Attributes:
        latent_shape: shape of one latent (``(2,)`` for the MNIST VAE, ``(512,)`` for the face VAE).
        decode: ``decode(model, z) -> samples``; default ``model.decode(z)``.
    """

    latent_shape: tuple[int, ...]
    decode: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None

    def draw(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(n, *self.latent_shape, generator=generator)

    def generate(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return self.decode(model, inputs) if self.decode is not None else model.decode(inputs)  # type: ignore[operator]


@dataclass(frozen=True)
class ConditionalDiffusionSampler:
    """A class-conditional diffusion model's sampler: initial noise of ``shape``, ``sample(model, labels, noise)``.

    Attributes:
        shape: shape of one initial noise tensor (``(1, 28, 28)`` for the MNIST DiT).
        sample: ``sample(model, labels, noise) -> images`` (in the classifier's input format).
        default_label: the label used when none is given (the null label: unconditional samples).
        differentiable: whether gradients flow through ``sample`` (a many-step sampler under ``no_grad``
            does not: classifier-assisted methods then refuse this model).
        sample_grad: optional ``sample_grad(model, labels, noise, class_embedding) -> images``: the same
            sampler with gradients reaching ``noise`` and ``class_embedding`` (``None``, or a tensor that replaces
            the labels' class embeddings in the conditional branch); what ``genunlearn audit`` searches through.
        label_embedding: optional ``label_embedding(model, labels) -> class embeddings`` (the tensors that
            ``sample_grad``'s ``class_embedding`` replaces, one per label).
    """

    shape: tuple[int, ...]
    sample: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    default_label: int = 0
    differentiable: bool = False
    conditional: bool = True
    sample_grad: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None
    label_embedding: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None

    def draw(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(n, *self.shape, generator=generator)

    def _labels(self, inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            return torch.full((len(inputs),), self.default_label, dtype=torch.long, device=inputs.device)
        return labels

    def generate(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.sample(model, self._labels(inputs, labels), inputs)

    def generate_grad(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor | None = None,
        class_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Samples with gradients through ``inputs`` (the noise) and ``class_embedding`` (see ``sample_grad``)."""
        if self.sample_grad is None:
            raise ConfigError("this model's sampler has no differentiable path (sample_grad)")
        return self.sample_grad(model, self._labels(inputs, labels), inputs, class_embedding)


@dataclass
class TrainingData:
    """Labelled training data: examples (a tensor or a dataset) and one integer label per example.

    ``labels`` are what ``--forget`` / ``--replace-with`` select on (classes); they are read without reading
    the examples, so a dataset that reads files lazily stays lazy.
    """

    examples: torch.Tensor | Dataset
    labels: torch.Tensor
    name: str = "data"

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels).long().reshape(-1)
        if len(self.examples) != len(self.labels):  # type: ignore[arg-type]
            raise ConfigError(f"{self.name}: {len(self.examples)} examples but {len(self.labels)} labels")  # type: ignore[arg-type]

    def subset(self, index: torch.Tensor) -> torch.Tensor | Dataset:
        """The examples at ``index`` (a tensor slice, or a ``Subset`` of the dataset)."""
        if isinstance(self.examples, torch.Tensor):
            return self.examples[index.to(self.examples.device)]
        return torch.utils.data.Subset(self.examples, index.tolist())


@dataclass
class ModelBundle:
    """A generator and everything genunlearn can use with it (what a model factory returns).

    Attributes:
        model: the generator, or a :class:`~genunlearn.adapters.ModelAdapter` naming its frozen parts.
        objective: ``loss(model, batch) -> scalar`` on retain and forget batches (``StandardTask``).
        conditional_loss: ``loss(model, x, c)`` for conditional replacement (``--replace-with``), if supported.
        sampler: draws inputs and generates samples (monitor, FID, hat term); ``None``: no monitor.
        classifier: classifies samples into ``num_classes`` (monitor, hat term; its ``features`` give FID).
        num_classes: number of classes of the classifier / the data's labels.
        data: the training data, when the model brings its own (else ``--dataset`` names it).
        replacement_likelihood: for ``rep``: the VAE likelihood if ``model`` follows the VAE contract
            (``encode``, ``decode``/``decode_logits``); ``None``: ``rep`` is not available.
        labelled: batches carry labels ``(x, y)`` also in class unlearning (a class-conditional objective).
        description: one line for records.
        load_fresh: returns a new copy of the original model (default: a deep copy of the first one).
        save: writes an unlearned model into the output folder in the model's own format (e.g. a diffusers
            transformer folder) and returns the paths written; default: ``model.safetensors``.
        info: free-form facts for records; ``info["inputs"]`` (name -> file path) lists the weight files read,
            recorded with their sha256 in every run's provenance.
        peer_terms: optional ``peer_terms(names, objective_config, batch_size) -> {name: term}``: the peer
            methods' extra terms (:data:`genunlearn.methods.TERMS`) for a model that is neither a VAE nor
            trained with a ``DiffusionObjective`` (or to replace genunlearn's versions).
        task: a task with its own retain and forget losses (``retain_loss(model, batch)``,
            ``forget_loss(model, batch)``) used for class unlearning instead of ``StandardTask(objective)``
            (e.g. the I2I embedding task of Li et al., :class:`~genunlearn.objectives.i2i.I2IEmbeddingTask`).
    """

    model: nn.Module | ModelAdapter
    objective: Objective
    conditional_loss: ConditionalLoss | None = None
    sampler: Sampler | None = None
    classifier: nn.Module | None = None
    num_classes: int = 10
    data: TrainingData | None = None
    replacement_likelihood: str | None = None
    labelled: bool = False
    description: str = ""
    load_fresh: Callable[[], nn.Module | ModelAdapter] | None = None
    save: Callable[[nn.Module, Path], list[Path]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    peer_terms: Callable[..., Any] | None = None
    task: Any = None

    @property
    def adapter(self) -> ModelAdapter:
        """The model as an adapter."""
        return as_adapter(self.model)


@dataclass(frozen=True)
class BuildContext:
    """What genunlearn hands to a factory that asks for ``context``.

    Attributes:
        device: where the model should live.
        checkpoint: ``[model] checkpoint`` (weights to load instead of the default), or ``None``.
        loss_reduction: ``"sum"`` or ``"mean"``: the objective's reduction over the batch.
        dataset, data_dir: ``[data]`` options (a factory may use them to build its data).
        classifier_checkpoint, classifier_bn: ``[monitor]`` options for the classifier.
        forget_attr, attr_mode: ``[data]`` feature selection for attribute datasets (the factory turns it into
            labels: 1 = has the feature, 0 = not).
        allow_pickle: the user trusts checkpoints that need full unpickling (``--allow-pickle``); pass it to
            :func:`~genunlearn.checkpoints.load_state` / :func:`~genunlearn.models.load_model`.
    """

    device: torch.device
    checkpoint: str | None = None
    loss_reduction: str = "sum"
    dataset: str | None = None
    data_dir: str | None = None
    classifier_checkpoint: str | None = None
    classifier_bn: bool | None = None
    forget_attr: tuple[str, ...] = ()
    attr_mode: str = "any"
    allow_pickle: bool = False


Factory = Callable[..., ModelBundle]
_BUILTIN: dict[str, Factory] = {}


def register_bundle(name: str, factory: Factory) -> Factory:
    """Make ``factory`` available as ``--model name`` (the built-in generators register here)."""
    if name in _BUILTIN:
        raise ValueError(f"model bundle {name!r} already registered")
    _BUILTIN[name] = factory
    return factory


def bundle_names() -> list[str]:
    """Registered model names usable with ``genunlearn unlearn --model``."""
    _load_builtins()
    return sorted(_BUILTIN)


def _load_builtins() -> None:
    import genunlearn.models.builtin  # noqa: F401  (registers the built-in bundles)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def resolve_factory(name: str) -> Factory:
    """The factory behind ``--model name`` (see the module docstring); one-line errors."""
    _load_builtins()
    if name in _BUILTIN:
        return _BUILTIN[name]
    if name.startswith("diffusers:"):
        import functools

        from genunlearn.models.diffusers_dit import diffusers_dit

        return functools.partial(diffusers_dit, path=name.partition(":")[2])
    if ":" in name:
        module_name, _, attr = name.partition(":")
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        if module_name.endswith(".py"):
            module_name = Path(module_name).with_suffix("").as_posix().replace("/", ".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"--model {name}: cannot import module {module_name!r} ({exc})") from None
        except Exception as exc:  # the user's module raised while importing
            msg = f"--model {name}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
            raise ConfigError(msg) from None
        factory = getattr(module, attr, None)
        if factory is None or not callable(factory):
            raise ConfigError(f"--model {name}: {module_name!r} has no callable {attr!r}")
        return factory
    eps = _entry_points()
    if name in eps:
        try:
            return eps[name].load()
        except Exception as exc:
            raise ConfigError(f"--model {name}: loading entry point {eps[name].value!r} failed: {exc}") from None
    known = sorted(set(_BUILTIN) | set(eps))
    raise ConfigError(f"unknown model {name!r}; registered: {', '.join(known)}; or give module.path:factory")


def build_bundle(name: str, options: dict[str, Any], context: BuildContext) -> ModelBundle:
    """Resolve ``name`` and call its factory with ``options`` (and ``context`` if it takes one)."""
    factory = resolve_factory(name)
    kwargs = dict(options)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "context" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs["context"] = context
    try:
        bundle = factory(**kwargs)
    except GenUnlearnError:
        raise
    except TypeError as exc:
        raise ConfigError(f"--model {name}: the factory does not take these options ({exc})") from None
    except Exception as exc:
        raise ConfigError(f"--model {name}: the factory raised {type(exc).__name__}: {exc}") from None
    if isinstance(bundle, nn.Module):
        raise ConfigError(
            f"--model {name}: the factory returned a bare {type(bundle).__name__}; return a "
            "genunlearn.ModelBundle(model=..., objective=...) so genunlearn knows its loss"
        )
    if not isinstance(bundle, ModelBundle):
        raise ConfigError(f"--model {name}: the factory must return a ModelBundle, got {type(bundle).__name__}")
    return bundle


def forget_classes_exist(labels: torch.Tensor, classes: Sequence[int], name: str, what: str = "forget class") -> None:
    """One-line error if a requested class does not occur in ``labels``."""
    present = set(torch.unique(labels).tolist())
    for c in classes:
        if c not in present:
            raise ConfigError(f"{what} {c} does not exist in {name} (classes: {sorted(present)})")

"""Low-rank adapters (LoRA, through peft): unlearn by training a few low-rank matrices, the base model frozen.

``--adapter lora --rank R --lora-alpha A --target-modules ...`` (config section ``[adapter]``) wraps the
generator with peft's LoRA (``peft.get_peft_model``): every targeted ``Linear``/``Conv`` layer ``W`` becomes
``W + (A/R) B A`` with ``B`` initialised to zero, so the adapted model computes exactly what the original
computes until the first update (tested). The base weights are frozen (peft switches their ``requires_grad``
off), so the engine's trainable set (:class:`~genunlearn.adapters.ModelAdapter`) is the adapter matrices
alone: every method's gradients, cosines, projections and Hessian-vector products run over them.

Target modules are chosen by name patterns (:func:`resolve_targets`), so the same options work for any
model (the MNIST VAE, a conv VAE, a diffusers DiT): an entry is

- ``all``: every layer type peft's LoRA supports (``Linear``, ``Conv1d/2d/3d``, ``Embedding``);
- a module name or name suffix, peft's own rule (``decoder.3`` matches ``decoder.3``; ``to_q`` matches
  ``transformer_blocks.0.attn1.to_q``);
- a glob on the full qualified name (``decoder.*``, ``transformer_blocks.*.attn1.to_[qkv]``).

Modules inside the bundle's frozen parts (``ModelAdapter(frozen=[...])``) are never adapted.

Outputs (:func:`save_unlearned`): with ``--merge`` the adapter is merged into the weights
(``merge_and_unload``) and written as a plain checkpoint (``model.safetensors``, loadable by
:func:`~genunlearn.models.load_model`); otherwise the adapter is written in peft's format (``adapter/``:
``adapter_config.json`` and ``adapter_model.safetensors``; ``PeftModel.from_pretrained(base, "adapter")``
or :func:`load_adapter` loads it). BatchNorm running statistics are buffers of the *base* model, not adapter
weights: with ``--bn-mode train`` they move during unlearning, so the buffers that changed are written beside
the adapter (``adapter/base_buffers.safetensors``) and :func:`load_adapter` applies them; ``--bn-mode eval``
or ``batch`` leaves the base untouched.

peft (and the transformers library it imports, about 10 s) is imported only when an adapter is used.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genunlearn.adapters import ModelAdapter, as_adapter
from genunlearn.checkpoints import load_state, save_weights
from genunlearn.errors import CheckpointError, ConfigError

ADAPTER_KINDS = ("none", "lora")
BASE_BUFFERS = "base_buffers.safetensors"
_LORA_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


@dataclass(frozen=True)
class AdapterConfig:
    """[adapter] Train a low-rank adapter (LoRA, via peft) instead of the model's own weights.

    Attributes:
        kind: none (update the model's trainable parameters) or lora (train LoRA matrices, base frozen).
        rank: LoRA rank R of every adapted layer.
        alpha: LoRA scale: the update is (alpha / rank) B A; default: equal to the rank (scale 1).
        target_modules: layers to adapt, by name: all (every Linear/Conv/Embedding), a module name or name
            suffix (decoder.3, to_q), or a glob on the full name (decoder.*); e.g. to_q,to_k,to_v,to_out.0.
        dropout: LoRA dropout on the adapted layers' inputs (0: the adapted model equals the original at the start).
        merge: write the merged weights as a plain checkpoint (model.safetensors) instead of the adapter in
            peft's format (adapter/).
        trainable: without an adapter (kind none): train only the parameters these patterns select, the rest of
            the model stays exactly as it is: a parameter or module name, or a dotted part of one
            (class_embedder selects every class-embedding table of a DiT), or a glob on the full parameter name
            (*.class_embedder.*); empty: every parameter (see resolve_trainable). BatchNorm running statistics
            are buffers, not parameters: they follow bn_mode (train updates them; eval or batch keeps them).
    """

    kind: str = field(default="none", metadata={"cli": "adapter"})
    rank: int = 8
    alpha: float | None = field(default=None, metadata={"cli": "lora-alpha"})
    target_modules: tuple[str, ...] = ("all",)
    dropout: float = field(default=0.0, metadata={"cli": "lora-dropout"})
    merge: bool = False
    trainable: tuple[str, ...] = ()

    def validate(self) -> AdapterConfig:
        """Check the fields (one-line errors)."""
        if self.kind not in ADAPTER_KINDS:
            raise ConfigError(f"[adapter] kind must be one of {', '.join(ADAPTER_KINDS)}, got {self.kind!r}")
        if self.rank < 1:
            raise ConfigError(f"[adapter] rank must be >= 1, got {self.rank}")
        if self.alpha is not None and self.alpha <= 0:
            raise ConfigError(f"[adapter] alpha must be > 0, got {self.alpha}")
        if not self.target_modules:
            raise ConfigError("[adapter] target_modules: give at least one module name or pattern")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"[adapter] dropout must lie in [0, 1), got {self.dropout}")
        if self.merge and self.kind == "none":
            raise ConfigError("[adapter] merge needs an adapter (--adapter lora)")
        if self.trainable and self.kind != "none":
            raise ConfigError(
                "[adapter] trainable picks the model's own parameters; with --adapter lora the adapter trains "
                "(choose its layers with --target-modules)"
            )
        return self

    @property
    def enabled(self) -> bool:
        """True if an adapter is trained."""
        return self.kind != "none"


def _inside(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots if r)


def resolve_targets(
    model: nn.Module, patterns: tuple[str, ...] | list[str], *, exclude: tuple[str, ...] = ()
) -> list[str]:
    """Qualified names of the layers ``patterns`` select (see the module docstring), outside ``exclude``.

    Raises:
        ConfigError: if a pattern selects no layer peft can adapt, naming the candidates.
    """
    candidates = [n for n, m in model.named_modules() if n and isinstance(m, _LORA_TYPES) and not _inside(n, exclude)]
    chosen: set[str] = set()
    for pat in patterns:
        pat = pat.strip()
        if pat == "all":
            hits = list(candidates)
        elif any(ch in pat for ch in "*?["):
            hits = [n for n in candidates if fnmatch.fnmatchcase(n, pat)]
        else:
            hits = [n for n in candidates if n == pat or n.endswith("." + pat)]
        if not hits:
            shown = ", ".join(candidates[:12]) + (" ..." if len(candidates) > 12 else "")
            raise ConfigError(
                f"--target-modules {pat!r} selects no Linear/Conv/Embedding layer of {type(model).__name__} "
                f"(candidates: {shown or 'none'})"
            )
        chosen.update(hits)
    return [n for n in candidates if n in chosen]


def resolve_trainable(
    model: nn.Module, patterns: tuple[str, ...] | list[str], *, exclude: tuple[str, ...] = ()
) -> list[str]:
    """Names of the parameters ``patterns`` select (``[adapter] trainable``), outside the modules ``exclude``.

    A pattern with ``*``, ``?`` or ``[`` is a glob on the full parameter name; any other pattern selects the
    parameters whose dotted name contains it as whole parts (``class_embedder``, ``transformer_blocks.0``,
    ``decoder.3.weight``).

    Raises:
        ConfigError: if a pattern selects no parameter (naming a few candidates).
    """
    candidates = [n for n, p in model.named_parameters() if p.requires_grad and not _inside(n, exclude)]
    chosen: set[str] = set()
    for pat in patterns:
        pat = pat.strip()
        if any(ch in pat for ch in "*?["):
            hits = [n for n in candidates if fnmatch.fnmatchcase(n, pat)]
        else:
            hits = [n for n in candidates if f".{pat}." in f".{n}."]
        if not hits:
            shown = ", ".join(candidates[:8]) + (" ..." if len(candidates) > 8 else "")
            where = " outside its frozen parts" if exclude else ""
            raise ConfigError(
                f"--trainable {pat!r} selects no parameter of {type(model).__name__}{where} (e.g. {shown})"
            )
        chosen.update(hits)
    return [n for n in candidates if n in chosen]


def restricted_adapter(model: nn.Module | ModelAdapter, patterns: tuple[str, ...]) -> ModelAdapter:
    """``model`` as an adapter whose trainable set is the parameters ``patterns`` select (:func:`resolve_trainable`),
    within what the adapter already lets train (its frozen parts stay frozen, a predicate of its own still holds).
    """
    inner = as_adapter(model)
    names = set(resolve_trainable(inner.model, patterns, exclude=inner.frozen))
    names &= {n for n, p in inner.model.named_parameters() if inner.trainable is None or inner.trainable(n, p)}
    if not names:
        raise ConfigError(f"--trainable {','.join(patterns)} selects only parameters the model keeps frozen")
    return ModelAdapter(inner.model, frozen=inner.frozen, trainable=lambda name, _p: name in names)


def is_lora(model: Any) -> bool:
    """True if ``model`` is a peft model (an adapter wraps it)."""
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


class LoraAdapter(ModelAdapter):
    """A :class:`ModelAdapter` around a peft LoRA model: the trainable set is the adapter matrices.

    Built by :func:`lora_adapter`. ``model`` is the ``peft.PeftModel`` (it forwards ``encode``, ``decode`` and
    other attributes to the base model); ``targets`` are the adapted layers' names in the base model.
    """

    def __init__(
        self, model: nn.Module, *, frozen: tuple[str, ...] = (), targets: list[str], config: AdapterConfig
    ) -> None:
        super().__init__(model, frozen=frozen)
        self.targets = targets
        self.config = config

    @property
    def base_model(self) -> nn.Module:
        """The wrapped model (its adapted layers hold the LoRA matrices)."""
        return self.model.get_base_model()  # type: ignore[operator]


_PREFIX = "base_model.model."


def lora_adapter(model: nn.Module | ModelAdapter, config: AdapterConfig, *, seed: int = 0) -> LoraAdapter:
    """Wrap ``model`` (in place) with peft LoRA as ``config`` says; the base weights are frozen.

    The random initialisation of the ``A`` matrices is drawn from ``seed`` (the global random state is left as
    it was), so a run is reproducible whatever ran before it. Frozen submodules of a :class:`ModelAdapter` stay
    frozen (and are never adapted); a ``trainable`` predicate of the adapter is not carried over (the trainable
    set is the LoRA matrices).
    """
    config.validate()
    if not config.enabled:
        raise ConfigError("lora_adapter needs an adapter config with kind 'lora'")
    inner = as_adapter(model)
    base = inner.model
    if is_lora(base):
        raise ConfigError("the model already carries a peft adapter")
    targets = resolve_targets(base, config.target_modules, exclude=inner.frozen)
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha if config.alpha is not None else config.rank,
        lora_dropout=config.dropout,
        # exact names: peft matches a str by re.fullmatch, so no other module can match by suffix
        target_modules="^(" + "|".join(re.escape(t) for t in targets) + ")$",
    )
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        peft_model = get_peft_model(base, lora)
    return LoraAdapter(peft_model, frozen=tuple(_PREFIX + n for n in inner.frozen), targets=targets, config=config)


def adapt(model: nn.Module | ModelAdapter, config: AdapterConfig | None, *, seed: int = 0) -> ModelAdapter:
    """``model`` as an adapter: LoRA-wrapped (initialised from ``seed``) if ``config`` asks for it, restricted to the
    parameters ``config.trainable`` selects if it names any, else unchanged."""
    if config is None or not config.enabled:
        if config is not None and config.trainable:
            return restricted_adapter(model, config.trainable)
        return as_adapter(model)
    return lora_adapter(model, config, seed=seed)


def merged(model: nn.Module) -> nn.Module:
    """A plain model with the LoRA update merged into its weights (a copy; ``model`` is left as it is)."""
    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()  # type: ignore[operator]


def _changed_buffers(model: nn.Module, original: nn.Module) -> dict[str, torch.Tensor]:
    own = dict(original.named_buffers())
    out = {}
    for name, b in model.get_base_model().named_buffers():  # type: ignore[operator]
        ref = own.get(name)
        if ref is None or ref.shape != b.shape or not torch.equal(ref.to(b.device), b):
            out[name] = b.detach()
    return out


def save_adapter(model: nn.Module, directory: str | Path, *, original: nn.Module | None = None) -> Path:
    """Write the adapter in peft's format into ``directory`` (replaced as a whole, never half-written).

    With ``original`` (the model before unlearning), base buffers that changed (BatchNorm running statistics
    under ``--bn-mode train``) are written to ``base_buffers.safetensors`` beside it.
    """
    if not is_lora(model):
        raise ConfigError("save_adapter needs a peft (LoRA) model")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(str(tmp))  # type: ignore[operator]
        (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card template: nothing about this run
        if original is not None:
            changed = _changed_buffers(model, original)
            if changed:
                save_weights(changed, tmp / BASE_BUFFERS)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load_adapter(base: nn.Module, directory: str | Path, *, merge: bool = False) -> nn.Module:
    """``base`` (the original model; modified) with the adapter in ``directory`` loaded, and its base buffers.

    Returns the ``peft.PeftModel``, or with ``merge=True`` the plain model with the adapter merged in.
    """
    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise CheckpointError(f"{directory}: no adapter_config.json (not an adapter saved in peft's format)")
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base, str(directory))
    except Exception as exc:  # peft raises many types for a mismatching adapter
        raise CheckpointError(f"{directory}: cannot load the adapter ({type(exc).__name__}: {exc})") from None
    if (directory / BASE_BUFFERS).is_file():
        buffers = dict(model.get_base_model().named_buffers())
        for name, value in load_state(directory / BASE_BUFFERS).items():
            if name not in buffers or buffers[name].shape != value.shape:
                raise CheckpointError(f"{directory / BASE_BUFFERS}: buffer {name} does not match the model")
            with torch.no_grad():
                buffers[name].copy_(value)
    model.eval()
    return model.merge_and_unload() if merge else model


def save_unlearned(
    model: nn.Module,
    out: str | Path,
    *,
    config: AdapterConfig | None,
    original: nn.Module | None,
    metadata: dict[str, Any] | None = None,
    save: Callable[[nn.Module, Path], list[Path]] | None = None,
) -> list[str]:
    """Write the unlearned model into ``out`` and return the paths written, relative to ``out``.

    With a LoRA adapter (and no ``--merge``): the adapter in peft's format (``adapter/``). Otherwise the plain
    model (the adapter merged in, with ``--merge``): through the model bundle's own writer ``save`` if it has one
    (e.g. a diffusers pipeline folder), else as ``model.safetensors`` with ``metadata`` and the build options
    that let :func:`~genunlearn.models.load_model` rebuild the architecture.
    """
    out = Path(out)
    if config is not None and config.enabled and is_lora(model):
        if not config.merge:
            save_adapter(model, out / "adapter", original=original)
            return ["adapter/"]
        model = merged(model)
    if save is not None:
        return [os.path.relpath(p, out) for p in save(model, out)]
    meta = dict(metadata or {})
    if hasattr(model, "build_options"):  # so that load_model(name, path) rebuilds the same architecture
        meta["build_options"] = model.build_options()  # type: ignore[operator]
    elif dataclasses.is_dataclass(getattr(model, "config", None)):
        meta["build_options"] = dataclasses.asdict(model.config)  # type: ignore[arg-type]
    save_weights(model, out / "model.safetensors", metadata=meta)
    return ["model.safetensors"]

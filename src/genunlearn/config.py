"""Run configuration: typed sections, TOML files, and the command-line options generated from them.

One definition: every option of ``genunlearn unlearn`` is a field of one of the section dataclasses below
(:class:`ModelConfig`, :class:`DataConfig`, :class:`~genunlearn.objectives.ObjectiveConfig`,
:class:`~genunlearn.loop.UnlearnConfig`, :class:`MonitorConfig`, :class:`RuntimeConfig`,
:class:`~genunlearn.lora.AdapterConfig`); the CLI options,
their help texts (from the classes' ``Attributes:`` docstrings) and the TOML keys are derived from the fields.
A config file has one table per section::

    [model]
    name = "mnist-vae"
    [data]
    forget = [1]
    [unlearn]
    method = "rep"
    steps = 200

Precedence: defaults < the ``--config`` file < command-line options. Unknown sections or keys and values of the
wrong type are one-line configuration errors naming the key. The resolved config is written
beside every run (``config.toml`` and ``summary.json``) and repeats the run on its own:
``genunlearn unlearn --config runs/x/config.toml --out runs/y``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from genunlearn.errors import ConfigError
from genunlearn.loop import UnlearnConfig
from genunlearn.lora import AdapterConfig
from genunlearn.objectives.config import ObjectiveConfig


@dataclass(frozen=True)
class ModelConfig:
    """[model] Which generator to unlearn.

    Attributes:
        name: a registered model (``genunlearn models``), ``module.path:factory`` (a callable in an importable
            module or a .py file in the working directory) or an entry point of group ``genunlearn.models``.
        checkpoint: weights to start from instead of the model's default (never overwritten).
        options: keyword arguments for the model's factory (config file only).
        allow_pickle: read torch checkpoints that hold pickled Python objects beyond tensors (unpickling can run
            arbitrary code: only for files you trust); default: safetensors and weights-only torch files.
    """

    name: str = field(default="mnist-vae", metadata={"cli": "model"})
    checkpoint: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    allow_pickle: bool = False

    def validate(self) -> ModelConfig:
        """Check the fields (one-line errors)."""
        if not self.name:
            raise ConfigError("[model] name must not be empty")
        return self


@dataclass(frozen=True)
class DataConfig:
    """[data] What to forget, and from which data.

    Attributes:
        dataset: training data by name (IDX datasets such as ``mnist`` or ``fashion-mnist``); default: the model's.
        data_dir: directory holding the dataset's files.
        forget: classes to forget, e.g. ``1`` or ``1,7`` (ignored with ``forget_ids``).
        forget_ids: a file of training-set indices to forget (sample unlearning; one per line or a JSON list);
            the forget monitor and classifier-assisted methods (which count classes) do not apply.
        replace_with: conditional replacement: the target class of each forget class (or one for all), e.g.
            ``--forget 1 --replace-with 7``; empty: class unlearning.
        num_workers: data-loader worker processes for datasets read from files (results do not depend on it).
        forget_attr: feature unlearning on attribute datasets (celeba64): forget the examples with these
            attributes, e.g. Male or Male,Eyeglasses (then the feature is class 1 and the rest class 0).
        attr_mode: several forget attributes: any (their union) or all (their conjunction).
    """

    dataset: str | None = None
    data_dir: str | None = None
    forget: tuple[int, ...] = (1,)
    forget_ids: str | None = None
    replace_with: tuple[int, ...] = ()
    num_workers: int = 0
    forget_attr: tuple[str, ...] = ()
    attr_mode: str = "any"

    def validate(self) -> DataConfig:
        """Check the fields (one-line errors)."""
        if not self.forget:
            raise ConfigError("[data] forget: no forget class given")
        if self.forget_ids is not None and self.replace_with:
            raise ConfigError("[data] forget_ids (sample unlearning) cannot be combined with replace_with")
        if self.forget_ids is not None and self.forget_attr:
            raise ConfigError("[data] forget_ids (sample unlearning) cannot be combined with forget_attr")
        if self.replace_with and len(self.replace_with) not in (1, len(self.forget)):
            raise ConfigError("[data] replace_with: give one target class or one per forget class")
        if self.num_workers < 0:
            raise ConfigError(f"[data] num_workers must be >= 0, got {self.num_workers}")
        if self.attr_mode not in ("any", "all"):
            raise ConfigError(f"[data] attr_mode must be 'any' or 'all', got {self.attr_mode!r}")
        return self


@dataclass(frozen=True)
class MonitorConfig:
    """[monitor] How forgetting and quality are measured.

    Attributes:
        classifier_checkpoint: classifier of generated samples (monitor, hat term, FID features); default: the
            model's.
        classifier_bn: apply the MNIST classifier's bn1 (default: as stored in its checkpoint).
        samples: fixed generator inputs of the forget monitor, drawn from the seed.
        mode: the generator's mode while monitoring: eval (robust) or train (the reference code's).
        fid_samples: generated samples for FID before and after unlearning (0: skip).
    """

    classifier_checkpoint: str | None = None
    classifier_bn: bool | None = None
    samples: int = field(default=1024, metadata={"cli": "monitor-samples"})
    mode: str = field(default="eval", metadata={"cli": "monitor-mode"})
    fid_samples: int = 0

    def validate(self) -> MonitorConfig:
        """Check the fields (one-line errors)."""
        if self.samples < 1:
            raise ConfigError(f"[monitor] samples must be >= 1, got {self.samples}")
        if self.mode not in ("train", "eval"):
            raise ConfigError(f"[monitor] mode must be 'train' or 'eval', got {self.mode!r}")
        if self.fid_samples < 0:
            raise ConfigError(f"[monitor] fid_samples must be >= 0, got {self.fid_samples}")
        return self


@dataclass(frozen=True)
class RuntimeConfig:
    """[run] Where the run computes.

    Attributes:
        device: auto (CUDA if available), cpu, cuda or cuda:N.
    """

    device: str = "auto"

    def validate(self) -> RuntimeConfig:
        """Check the fields (one-line errors)."""
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ConfigError(f"[run] device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return self


#: What a ``None`` means for fields whose default is not ``None`` (written to TOML, which has no null).
_NONE_AS: dict[tuple[str, str], Any] = {("unlearn", "stop_at"): 0.0}

SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "adapter": AdapterConfig,
    "data": DataConfig,
    "objective": ObjectiveConfig,
    "unlearn": UnlearnConfig,
    "monitor": MonitorConfig,
    "run": RuntimeConfig,
}


@dataclass(frozen=True)
class RunConfig:
    """A whole ``genunlearn unlearn`` run: one instance of each section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    run: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> RunConfig:
        """Validate every section."""
        for name in SECTIONS:
            getattr(self, name).validate()
        return self

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain data (tuples as lists), every field present (``None`` kept)."""
        return {name: _plain(dataclasses.asdict(getattr(self, name))) for name in SECTIONS}

    def to_toml(self) -> str:
        """The resolved config as TOML.

        TOML has no null: a ``None`` whose field defaults to ``None`` is left out (it means the default); a
        ``None`` that stands for something else is written as its equivalent (``stop_at = None``, no threshold,
        as ``0.0``), so that the file repeats the run.
        """
        import tomli_w

        data = {}
        for name, d in self.to_dict().items():
            defaults = {f.name: f.default for f in dataclasses.fields(SECTIONS[name])}
            data[name] = {
                k: _NONE_AS.get((name, k), v) if v is None and defaults.get(k) is not None else v for k, v in d.items()
            }
            data[name] = {k: v for k, v in data[name].items() if v is not None}
        return tomli_w.dumps(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> RunConfig:
        """Build from nested plain data (as read from TOML); unknown sections and keys are errors."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected tables of options")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"{source}: unknown section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
        parts = {}
        for name, section_cls in SECTIONS.items():
            values = data.get(name, {})
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{name}] must be a table")
            parts[name] = _build_section(section_cls, name, values, source)
        return cls(**parts)

    def merged(self, overrides: dict[str, dict[str, Any]], *, source: str = "command line") -> RunConfig:
        """A copy with ``overrides`` (``{section: {field: value}}``) applied and checked."""
        data = self.to_dict()
        for section, values in overrides.items():
            data.setdefault(section, {}).update(values)
        return RunConfig.from_dict(data, source=source)


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Defaults < the TOML file at ``path`` < ``overrides``; validated."""
    cfg = RunConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML ({exc})") from None
        cfg = RunConfig.from_dict(data, source=str(p))
    if overrides:
        cfg = cfg.merged(overrides)
    return cfg.validate()


# --- fields, types and help ------------------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """``(type, optional)`` of an annotation like ``float | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), type(None) in typing.get_args(tp)
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    base, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required")
    origin = typing.get_origin(base)
    if origin is tuple:
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(base)[:1]
        return tuple(_coerce(v, item, where) for v in value)
    if origin is dict or base is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build_section(cls: type, name: str, values: dict[str, Any], source: str) -> Any:
    hints = _hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} in [{name}]; known: {', '.join(known)}")
    kwargs = {k: _coerce(v, hints[k], f"{source}: [{name}] {k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{source}: [{name}]: {exc}") from None


def field_help(cls: type) -> dict[str, str]:
    """Help text of each field, from the ``Attributes:`` section of the class docstring."""
    doc = cls.__doc__ or ""
    if "Attributes:" not in doc:
        return {}
    lines = doc.split("Attributes:", 1)[1].splitlines()
    out: dict[str, str] = {}
    current: list[str] = []
    text: list[str] = []
    for line in lines:
        m = re.match(r"^ {8}([a-z_][a-z_0-9]*(?:, [a-z_][a-z_0-9]*)*):\s*(.*)$", line)
        if m:
            for name in current:
                out[name] = " ".join(text)
            current = [n.strip() for n in m.group(1).split(",")]
            text = [m.group(2).strip()]
        elif line.strip() and current:
            text.append(line.strip())
        elif not line.strip() and text and current and line == "":
            continue
    for name in current:
        out[name] = " ".join(text)
    return {k: re.sub(r"``([^`]*)``", r"\1", re.sub(r":[a-z]+:`~?([^`]*)`", r"\1", v)) for k, v in out.items()}


def cli_name(f: dataclasses.Field) -> str:
    """The command-line name of a config field (``--beta-o`` for ``beta_o``; metadata may rename it)."""
    return f.metadata.get("cli", f.name.replace("_", "-"))


def _parse_int_list(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip() != "")
    except ValueError:
        raise click.BadParameter(f"expected class labels like '1' or '1,7', got {value!r}") from None


def _parse_str_list(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def config_options(func: Any) -> Any:
    """Decorate a click command with one option per config field (CLI-only: dict fields are skipped).

    Every option defaults to ``None`` (= not given, so a ``--config`` file's value stands); the command receives
    them as ``<section>__<field>`` keyword arguments, which :func:`overrides_from_cli` turns into overrides.
    """
    for section, cls in reversed(list(SECTIONS.items())):
        helps = field_help(cls)
        hints = _hints(cls)
        for f in reversed(dataclasses.fields(cls)):
            base, _ = _base_type(hints[f.name])
            if typing.get_origin(base) is dict or base is dict:
                continue
            name = cli_name(f)
            param = f"{section}__{f.name}"
            default = f.default if f.default is not dataclasses.MISSING else None
            default_txt = "" if default in (None, ()) else f" [default: {_fmt_default(default)}]"
            help_text = helps.get(f.name, "") + default_txt
            if base is bool:
                opt = click.option(f"--{name}/--no-{name}", param, default=None, help=help_text)
            elif typing.get_origin(base) is tuple:
                parse = _parse_str_list if typing.get_args(base)[0] is str else _parse_int_list
                opt = click.option(
                    f"--{name}", param, default=None, callback=lambda _c, _p, v, f=parse: f(v), help=help_text
                )
            else:
                click_type = {int: int, float: float, str: str}.get(base, str)
                opt = click.option(f"--{name}", param, type=click_type, default=None, help=help_text)
            func = opt(func)
    return func


def _fmt_default(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(str(x) for x in v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def overrides_from_cli(kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{section: {field: value}}`` of the options actually given (pops them from ``kwargs``)."""
    out: dict[str, dict[str, Any]] = {}
    for key in [k for k in kwargs if "__" in k]:
        value = kwargs.pop(key)
        section, name = key.split("__", 1)
        if value is not None and section in SECTIONS:
            out.setdefault(section, {})[name] = value
    return out

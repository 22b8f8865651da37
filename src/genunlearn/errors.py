"""User-facing errors.

Every problem caused by bad input (a missing or corrupt file, a class that does not exist, a shape
mismatch, a diverging run) is raised as a :class:`GenUnlearnError` subclass with a one-line message.
The command-line interface prints that line and exits with status 2; library users can catch it.
"""

from __future__ import annotations


class GenUnlearnError(Exception):
    """Base class of every error genunlearn reports to a user (one line, no traceback in the CLI)."""


class DataError(GenUnlearnError):
    """A data file is missing, truncated, corrupt or of the wrong shape, or a split is empty."""


class CheckpointError(GenUnlearnError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class ConfigError(GenUnlearnError):
    """An option has an invalid value or options contradict each other."""


class DivergenceError(GenUnlearnError):
    """Unlearning produced a non-finite loss or gradient (the last finite weights were kept)."""


class OutputError(GenUnlearnError):
    """An output cannot be written (disk full, read-only or missing directory, no permission), or the output
    directory already holds another run. Nothing half-written is left behind."""

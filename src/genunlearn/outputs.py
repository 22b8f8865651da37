"""Output directories of runs: checked before any work, never mixed with another run, never half-written.

A run directory (``genunlearn unlearn --out DIR``) holds the files named in :data:`RUN_FILES`. Before a run
starts, :func:`prepare_run_dir` checks that the directory can be written (a probe file: a read-only directory
or a missing permission fails at once, not after an hour of compute) and decides what the run may do there:

- an empty or new directory: start;
- the same config (``config.toml`` equal to this run's), unfinished (a checkpoint, no ``summary.json``):
  continue with ``--resume``, start over with ``--overwrite``, else refuse;
- the same config, complete: ``--resume`` reports it, ``--overwrite`` reruns it, else refuse;
- another config, or outputs without a ``config.toml``: refuse unless ``--overwrite``.

Every refusal is one line (:class:`~genunlearn.errors.OutputError`, exit status 2). ``--overwrite`` removes only
the files in :data:`RUN_FILES` (``summary.json`` first, so the directory never looks complete), never the input
checkpoint, and nothing else in the directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from genunlearn.checkpoints import remove_stale_temporaries, write_error
from genunlearn.errors import GenUnlearnError, OutputError

#: The files a ``genunlearn unlearn`` run writes (``summary.json`` is written last: it marks a complete run);
#: ``adapter`` is the folder of a LoRA run's adapter.
RUN_FILES = ("summary.json", "model.safetensors", "adapter", "log.csv", "checkpoint.pt", "config.toml")


def check_writable(directory: str | Path) -> Path:
    """Create ``directory`` if needed and write and delete a probe file in it; one line if that fails."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".genunlearn-probe.", dir=d)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise write_error(d, exc) from None
    return d


def load_config_text(text: str) -> dict[str, Any]:
    """A config's plain data as read back from its TOML text."""
    import tomllib

    from genunlearn.config import RunConfig

    return RunConfig.from_dict(tomllib.loads(text)).to_dict()


def _config_differences(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    out = []
    for section in sorted(set(mine) | set(theirs)):
        a, b = mine.get(section, {}), theirs.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"[{section}] {key}: {a.get(key)!r} here, {b.get(key)!r} there")
    return out


def prepare_run_dir(
    out: str | Path,
    config: Any,
    *,
    resume: bool = False,
    overwrite: bool = False,
    protected: tuple[str | Path, ...] = (),
) -> str:
    """Check ``out`` for a run of ``config`` (a :class:`~genunlearn.config.RunConfig`); see the module docstring.

    Returns ``"new"`` (start), ``"resume"`` (continue from the checkpoint) or ``"complete"`` (``--resume`` of a
    finished run: nothing to do). ``protected`` files (the input checkpoint) are never removed.
    """
    from genunlearn.config import load_config

    if resume and overwrite:
        raise OutputError("--resume and --overwrite contradict each other; give one")
    out = Path(out)
    present = [name for name in RUN_FILES if (out / name).exists()] if out.is_dir() else []
    check_writable(out)
    remove_stale_temporaries(out, list(RUN_FILES))
    if not present:
        return "new"
    keep = {Path(p).resolve() for p in protected}
    if overwrite:
        for name in RUN_FILES:
            f = out / name
            if f.exists() and f.resolve() not in keep:
                try:
                    if f.is_dir() and not f.is_symlink():
                        shutil.rmtree(f)
                    else:
                        f.unlink()
                except OSError as exc:
                    raise OutputError(f"{f}: cannot remove for --overwrite ({exc.strerror or exc})") from None
        return "new"
    if "config.toml" not in present:
        raise OutputError(
            f"{out} holds outputs of another run ({', '.join(present)}) but no config.toml; "
            "use another --out, or --overwrite to replace them"
        )
    try:
        theirs = load_config(out / "config.toml").to_dict()
    except GenUnlearnError as exc:
        raise OutputError(f"{out} holds another run whose config cannot be read ({exc}); use another --out") from None
    mine = load_config_text(config.to_toml())  # compared as written: both sides as read back from TOML
    diff = _config_differences(mine, theirs)
    if diff:
        more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
        raise OutputError(
            f"{out} holds another run with a different config ({diff[0]}{more}); "
            "use another --out, or --overwrite to replace it"
        )
    if "summary.json" in present:
        if resume:
            return "complete"
        raise OutputError(f"{out} already holds this run, complete; --overwrite runs it again")
    if resume:
        return "resume"
    where = " (checkpoint saved)" if "checkpoint.pt" in present else " (no checkpoint yet: it restarts)"
    raise OutputError(
        f"{out} holds an unfinished run of this config{where}; --resume continues it, --overwrite starts over"
    )

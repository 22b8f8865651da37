"""Safe checkpoint I/O: safetensors for weights, atomic writes, clear errors.

Nothing here unpickles arbitrary objects unless the user opts in: weights are read with safetensors, or with
``torch.load(weights_only=True)`` (tensors and plain containers only) for torch files. A torch file that
holds other Python objects is refused — unpickling it could run arbitrary code — unless ``allow_pickle``
(``--allow-pickle``) says the user trusts it. The format is told from the file's first bytes, not its name.

Files are written to a temporary name in the same directory, flushed to disk and renamed into place, so a
crash (or a full disk) never leaves a half-written file, and an existing file is only replaced when the caller
asked for that path explicitly. A write that fails raises :class:`~genunlearn.errors.OutputError` with one line
naming the file and the reason (``No space left on device``, ``Read-only file system`` ...).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from genunlearn.errors import CheckpointError, OutputError


def write_error(path: str | Path, exc: OSError) -> OutputError:
    """One line for a failed write: the file and the system's reason."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = {
        errno.ENOSPC: "; free some space or choose another --out",
        errno.EDQUOT: "; free some space or choose another --out",
        errno.EROFS: "; choose a writable --out",
        errno.EACCES: "; choose a writable --out",
        errno.EPERM: "; choose a writable --out",
    }.get(exc.errno or -1, "")
    return OutputError(f"{path}: cannot write ({reason}){hint}")


def atomic_write(path: str | Path, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)``, flush it to disk, then atomically rename the temporary file to ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was; an ``OSError`` (disk full,
    read-only directory ...) becomes a one-line :class:`~genunlearn.errors.OutputError`.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        writer(tmp)
        with open(tmp, "rb+") as fh:  # the data is on disk before the rename makes it visible
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def remove_stale_temporaries(directory: str | Path, names: list[str]) -> None:
    """Delete temporary files that :func:`atomic_write` left for ``names`` when a process was killed mid-write."""
    d = Path(directory)
    for name in names:
        for tmp in d.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON (indented, keys in insertion order) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_write_csv(path: str | Path, rows: list[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV atomically; the columns are the union of the rows' keys in first-seen order."""
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)

    def writer(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)

    return atomic_write(path, writer)


def save_weights(
    model_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Save a state dict as safetensors, atomically. ``metadata`` values are stored as JSON strings."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata stored by :func:`save_weights` (empty for files written elsewhere)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


_PICKLE_REFUSED = (
    "{path}: holds pickled Python objects, not only tensors; loading it could run arbitrary code, so genunlearn "
    "refuses it ({reason}). Convert it to safetensors, or pass --allow-pickle if you trust the file"
)


def file_format(path: str | Path) -> str:
    """``"safetensors"``, ``"torch-zip"`` (``torch.save``), ``"pickle"`` (legacy ``torch.save`` or plain pickle)
    or ``"unknown"``, from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= pickle.HIGHEST_PROTOCOL:
        return "pickle"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 0 < n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def safe_torch_load(path: str | Path, *, allow_pickle: bool = False, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; a file that needs full unpickling is refused with one line
    saying why, unless ``allow_pickle`` (the user trusts the file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            first = str(exc).strip().splitlines()
            reason = next((ln.strip() for ln in first if "Unsupported global" in ln), first[0] if first else "")
            raise CheckpointError(_PICKLE_REFUSED.format(path=path, reason=reason.rstrip(". "))) from None
    except Exception as exc:  # corrupt files raise many different types
        raise CheckpointError(f"{path}: cannot read ({type(exc).__name__}: {_first_line(exc)})") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def load_state(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors file or a ``torch.save`` file (``weights_only=True``).

    The format is told from the file's content. A torch file holding more than tensors and plain containers is
    refused unless ``allow_pickle`` (see :func:`safe_torch_load`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        kind = file_format(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    if kind in ("torch-zip", "pickle") or (kind == "unknown" and path.suffix in {".pt", ".pth", ".bin", ".ckpt"}):
        state = safe_torch_load(path, allow_pickle=allow_pickle)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if isinstance(state, torch.nn.Module) and allow_pickle:
            state = state.state_dict()
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: does not hold a state dict (a mapping of names to tensors)")
        return state
    try:
        return load_file(str(path))
    except Exception as exc:  # corrupt files raise many different types
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None


def load_into(model: torch.nn.Module, path: str | Path, *, allow_pickle: bool = False) -> torch.nn.Module:
    """Load weights from ``path`` into ``model`` strictly, with a one-line error on any mismatch."""
    state = load_state(path, allow_pickle=allow_pickle)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(f"{path}: keys do not match {type(model).__name__}: " + "; ".join(parts))
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{path}: shape mismatch for {k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model

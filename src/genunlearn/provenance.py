"""Where a result came from: the command, the resolved config, the code revision, versions, machine and date.

Every results writer stores :func:`run_record` next to its numbers (``"provenance"`` in JSON files), so a
number can be traced to the exact command line and commit that produced it::

    {"command": {"line": "genunlearn bench mnist --seeds 10 --out results/mnist/bundled", "argv": [...],
                 "executable": "/usr/bin/python3", "cwd": "/home/me/genunlearn", "cwd_in_repo": ".",
                 "env": {"GENUNLEARN_SHARED": "/data/shared"}},
     "config": {...},
     "git": {"commit": "32826ec...", "dirty": false, "dirty_files": [], "branch": "main"},
     "versions": {"python": "3.11.7", "torch": "2.13.0+cpu", ...},
     "machine": {"cpu": "AMD EPYC 7B13", "logical_cpus": 2, "usable_cpus": 2, "torch_threads": 1,
                 "memory_gib": 24.0, "cuda": null, "load_average": [1.02, 1.1, 0.97]},
     "inputs": {"vae": {"path": "...", "sha256": "...", "bytes": 2533224}},
     "date": "2026-11-24T10:00:00+00:00"}

The git fields describe the checkout the *imported* ``genunlearn`` package comes from (an editable install
or ``PYTHONPATH=src``), as the process first saw it (:func:`record_start`; long runs call it before they
start, so edits made while they run do not count); an installed copy that is not inside a genunlearn
checkout records ``"commit": "unknown"``. ``dirty`` is true when tracked files differ from the commit
(untracked files do not count).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from genunlearn.runinfo import versions

#: Environment variables that change what a run reads or how it computes (recorded when set).
ENV_VARS = (
    "PYTHONPATH",
    "GENUNLEARN_SHARED",
    "GENUNLEARN_DATA_DIR",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUBLAS_WORKSPACE_CONFIG",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
)
#: Libraries recorded besides those of :func:`genunlearn.runinfo.versions` (when installed).
EXTRA_PACKAGES = ("scipy", "matplotlib", "click", "tqdm", "diffusers", "peft", "pillow")
_MAX_DIRTY_FILES = 20


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: dataclasses and mappings as dicts, tuples as lists, paths as strings.

    Non-finite floats are kept (``json`` writes them as ``NaN``/``Infinity``); unknown objects become ``str``.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.device | torch.dtype):
        return str(obj)
    try:  # numpy scalars
        return obj.item()
    except (AttributeError, ValueError):
        return str(obj)


def command_line(argv: Sequence[str] | None = None) -> str:
    """``argv`` as one shell-quoted line, with the program written as a user would type it.

    ``.../bin/genunlearn bench ...`` -> ``genunlearn bench ...``; ``benchmarks/sweep.py --x`` ->
    ``python benchmarks/sweep.py --x``; ``.../genunlearn/report.py`` (``python -m``) -> ``python -m genunlearn.report``.
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    prog = argv[0]
    name = Path(prog).name
    if name == "genunlearn":
        head = ["genunlearn"]
    elif prog.endswith(".py"):
        path = Path(prog)
        module = _module_of(path)
        if module is not None:
            head = ["python", "-m", module]
        else:
            try:
                shown = str(path.resolve().relative_to(Path.cwd().resolve())) if path.is_absolute() else prog
            except ValueError:
                shown = prog
            head = ["python", shown]
    else:
        head = [prog]
    return shlex.join(head + argv[1:])


def _module_of(path: Path) -> str | None:
    """``genunlearn.report`` for ``.../src/genunlearn/report.py`` (how ``python -m`` shows up in argv)."""
    parts = path.resolve().with_suffix("").parts if path.is_absolute() else ()
    if "genunlearn" in parts:
        i = len(parts) - 1 - parts[::-1].index("genunlearn")
        if i > 0 and parts[i - 1] in ("src", "site-packages"):
            return ".".join(parts[i:])
    return None


def _git(root: Path, *args: str, strip: bool = True) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return res.stdout.strip() if strip else res.stdout


def source_root(package_dir: str | Path | None = None) -> Path | None:
    """The checkout whose ``src/genunlearn`` is ``package_dir`` (default: the imported package), if any."""
    pkg = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parent
    pkg = pkg.resolve()
    if pkg.name != "genunlearn" or pkg.parent.name != "src":
        return None
    root = pkg.parent.parent
    return root if (root / "pyproject.toml").is_file() else None


#: Folders of committed results: modified files there do not make the code dirty (:func:`git_info`).
RESULT_DIRS = ("results/", "benchmarks/results/")


def git_info(package_dir: str | Path | None = None) -> dict[str, Any]:
    """Commit, dirty flag (tracked files modified), modified files and branch of the package's checkout.

    ``code_dirty`` says whether a modified file lies outside the results folders (``results/``,
    ``benchmarks/results/``): a command that rewrites its own committed results (a rerun) makes the checkout
    dirty while the code is still the commit's. ``{"commit": "unknown", "dirty": None, ...}`` when the package
    is not in a git checkout (an installed copy) or git is not available.
    """
    unknown: dict[str, Any] = {
        "commit": "unknown",
        "dirty": None,
        "code_dirty": None,
        "dirty_files": [],
        "branch": None,
    }
    root = source_root(package_dir)
    if root is None:
        return {**unknown, "source": str(Path(package_dir or Path(__file__).parent).resolve())}
    top = _git(root, "rev-parse", "--show-toplevel")
    commit = _git(root, "rev-parse", "HEAD")
    if top is None or commit is None or Path(top).resolve() != root.resolve():
        return {**unknown, "source": str(root)}
    status = _git(root, "status", "--porcelain", "--untracked-files=no", strip=False) or ""
    files = [line[3:] for line in status.splitlines() if line.strip()]
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    return {
        "commit": commit,
        "dirty": bool(files),
        "code_dirty": any(not f.startswith(RESULT_DIRS) for f in files),
        "dirty_files": files[:_MAX_DIRTY_FILES] + [f"... {n} more" for n in [len(files) - _MAX_DIRTY_FILES] if n > 0],
        "branch": None if branch in (None, "HEAD") else branch,
        "source": str(root),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, logical and usable CPUs, torch threads, memory, CUDA device names (``None`` without CUDA).

    ``load_average`` is the system's 1-, 5- and 15-minute load average when the record is made (this
    process included; ``None`` where the OS has none): a load well above ``torch_threads`` while a timed run
    went on means other jobs shared the CPUs, and its times are not the machine's.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    cuda = None
    if torch.cuda.is_available():
        cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _memory_gib(),
        "cuda": cuda,
        "load_average": load,
    }


def package_versions() -> dict[str, str]:
    """:func:`genunlearn.runinfo.versions` plus the other libraries that shape outputs, where installed."""
    out = dict(versions())
    for pkg in EXTRA_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: str | Path | None) -> dict[str, Any] | None:
    """``{"path", "sha256", "bytes"}`` of a file (``None`` for ``None``; ``sha256: None`` if it is missing)."""
    if path is None:
        return None
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"path": str(path), "sha256": None, "bytes": None}
    return {"path": str(path), "sha256": _sha256(str(p.resolve()), st.st_size, st.st_mtime_ns), "bytes": st.st_size}


@lru_cache(maxsize=1)
def _process_git() -> dict[str, Any]:
    return git_info()


def record_start() -> None:
    """Take this process's git state now (call it before a long run starts).

    The code a process runs is the code it imported, so :func:`run_record` reports the checkout's state
    as first seen by the process (here, or at its first record), not edits made while it runs.
    """
    _process_git()


def run_record(
    config: Any = None,
    *,
    inputs: Mapping[str, str | Path | None] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The provenance of a result: command, resolved ``config``, git revision, versions, machine, date.

    Args:
        config: the resolved settings (dataclass, mapping, ``argparse.Namespace`` ...), stored as JSON values.
        inputs: files the result depends on (checkpoints ...), stored with their sha256 and size.
        argv: the command line (default: ``sys.argv``).
    """
    if config is not None and hasattr(config, "__dict__") and not dataclasses.is_dataclass(config):
        config = vars(config)  # argparse.Namespace
    argv = list(sys.argv if argv is None else argv)
    cwd = Path.cwd()
    git = dict(_process_git())
    cwd_in_repo = None
    if git.get("source") and git["commit"] != "unknown":
        try:
            cwd_in_repo = str(cwd.resolve().relative_to(Path(git["source"]).resolve())) or "."
        except ValueError:
            cwd_in_repo = None
    record: dict[str, Any] = {
        "command": {
            "line": command_line(argv),
            "argv": argv,
            "executable": sys.executable,
            "cwd": str(cwd),
            "cwd_in_repo": cwd_in_repo,
            "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        },
        "config": jsonable(config),
        "git": git,
        "versions": package_versions(),
        "machine": machine_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if inputs:
        record["inputs"] = {k: file_fingerprint(v) for k, v in inputs.items()}
    return record


def summarise_provenance(records: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """What a set of per-run provenance records has in common: commits (with counts), dirty runs, dates."""
    commits: dict[str, int] = {}
    dirty = missing = 0
    dates = []
    for r in records:
        if not r:
            missing += 1
            continue
        c = r.get("git", {}).get("commit", "unknown")
        commits[c] = commits.get(c, 0) + 1
        dirty += bool(r.get("git", {}).get("dirty"))
        if r.get("date"):
            dates.append(r["date"])
    return {
        "runs": len(records),
        "without_provenance": missing,
        "commits": commits,
        "dirty_runs": dirty,
        "first_date": min(dates) if dates else None,
        "last_date": max(dates) if dates else None,
    }

"""Where genunlearn looks for files that are not shipped with it (the paper authors' weights, CelebA, the cache).

``$GENUNLEARN_SHARED`` names the shared folder; otherwise ``./shared``, ``../shared`` (relative to the
working directory) and ``../shared`` beside a source checkout are tried in turn.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_ENV = "GENUNLEARN_SHARED"


def shared_dir() -> Path | None:
    """The shared data folder, or ``None`` if none is found."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    candidates = [Path.cwd() / "shared", Path.cwd().parent / "shared"]
    if len(here.parents) > 3:
        candidates.append(here.parents[3] / "shared")  # <checkout>/../shared for src/genunlearn/paths.py
    for c in candidates:
        if (c / "anchors").is_dir() or (c / "data").is_dir():
            return c
    return None


def authors_weights(file_name: str) -> Path | None:
    """Path of one of the UNO authors' MNIST weight files (``vae.safetensors`` ...), if present."""
    root = shared_dir()
    if root is None:
        return None
    p = root / "anchors" / "uno-paper-mnist" / file_name
    return p if p.is_file() else None


CACHE_ENV = "GENUNLEARN_CACHE"


def cache_dir() -> Path:
    """Where trained weights that genunlearn may not bundle live (CelebA models): ``$GENUNLEARN_CACHE`` or
    ``~/.cache/genunlearn``. Not created here."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "genunlearn"

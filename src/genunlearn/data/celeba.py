"""CelebA at 64x64 from a zip of JPEGs and an attribute CSV (never bundled: CelebA is non-commercial only).

Files (the shared folder's ``data/celeba64``): ``images.zip`` (JPEGs named by their official CelebA file
name, e.g. ``000001.jpg``) and ``attributes.csv`` with columns ``image_id, source, framing`` followed by the
40 CelebA attributes as 0/1. The folder is found, in order, from the ``root`` argument (CLI ``--celeba-dir``),
``$GENUNLEARN_CELEBA_DIR`` and ``<shared>/data/celeba64`` (:func:`genunlearn.paths.shared_dir`).

:class:`CelebA64` is a ``torch.utils.data.Dataset``. ``dataset[i]`` returns a tuple
``(image, attributes)``: ``image`` float32 ``(3, 64, 64)`` in [0, 1], ``attributes`` float32 ``(40,)`` of
0/1 in the order of :attr:`CelebA64.attribute_names`. JPEGs are decoded lazily with Pillow from one zip
handle per process (reopened after ``fork`` and dropped when pickled, so DataLoader workers are safe);
``cache=True`` keeps decoded images (uint8, 12 KiB each) in memory, :meth:`CelebA64.load_all` decodes a
whole selection at once.

The held-out split is fixed by a hash of the file name (:func:`is_test_image`: the first 8 bytes of
sha256(image_id) modulo 10,000 below 1,000, i.e. ~10%), so it does not depend on the framing selection,
the order of the CSV, or the machine.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from genunlearn.data.splits import ForgetSplit
from genunlearn.errors import DataError
from genunlearn.paths import shared_dir

CELEBA_ENV = "GENUNLEARN_CELEBA_DIR"
IMAGES_FILE = "images.zip"
ATTRIBUTES_FILE = "attributes.csv"
IMAGE_SIZE = 64
META_COLUMNS = ("image_id", "source", "framing")
FRAMINGS = ("aligned", "detector-crop")
#: sha256 of the shared folder's files (checked with ``verify=True``).
CELEBA64_SHA256: dict[str, str] = {
    IMAGES_FILE: "9399eccd7848d796d678862a43647294c1a4991cb282bd11bd7ffc9710ad47e9",
    ATTRIBUTES_FILE: "fb3a59edbdc7d1c907660af23a043f899e3e654fc0b0a412d5f59f814da7a17f",
}
TEST_FRACTION_PER_10K = 1000

Split = Literal["train", "test", "all"]
Framing = Literal["aligned", "detector-crop", "all"]


def is_test_image(image_id: str) -> bool:
    """Whether ``image_id`` belongs to the held-out split (a stable ~10% chosen by sha256 of the name)."""
    h = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "big")
    return h % 10_000 < TEST_FRACTION_PER_10K


def resolve_celeba_dir(root: str | Path | None = None) -> Path:
    """The CelebA folder: ``root``, else ``$GENUNLEARN_CELEBA_DIR``, else ``<shared>/data/celeba64``."""
    if root is not None:
        path = Path(root)
        if not path.is_dir():
            raise DataError(f"{path}: CelebA folder not found")
        return path
    env = os.environ.get(CELEBA_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise DataError(f"{path}: CelebA folder not found (from ${CELEBA_ENV})")
        return path
    shared = shared_dir()
    if shared is not None and (shared / "data" / "celeba64").is_dir():
        return shared / "data" / "celeba64"
    where = f"{shared}/data/celeba64" if shared is not None else "<shared>/data/celeba64 (no shared folder found)"
    raise DataError(f"CelebA folder not found (looked in {where}); pass --celeba-dir or set ${CELEBA_ENV}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_attributes(path: Path) -> tuple[list[str], list[str], list[str], list[str], np.ndarray]:
    """Parse the attribute CSV: ``(attribute_names, image_ids, sources, framings, values uint8 (N, A))``."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: empty attribute file")
    header = [h.strip() for h in header]
    if tuple(header[:3]) != META_COLUMNS or len(header) < 4:
        raise DataError(f"{path}: header must start with {','.join(META_COLUMNS)} and name attributes")
    names = header[3:]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate attribute names in the header")
    ids: list[str] = []
    sources: list[str] = []
    framings: list[str] = []
    rows: list[list[int]] = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields, expected {len(header)}")
        if row[2] not in FRAMINGS:
            raise DataError(f"{path}: line {line}: unknown framing {row[2]!r} (expected {', '.join(FRAMINGS)})")
        try:
            vals = [int(v) for v in row[3:]]
        except ValueError:
            raise DataError(f"{path}: line {line}: attribute values must be 0 or 1") from None
        if any(v not in (0, 1) for v in vals):
            raise DataError(f"{path}: line {line}: attribute values must be 0 or 1")
        ids.append(row[0])
        sources.append(row[1])
        framings.append(row[2])
        rows.append(vals)
    if not ids:
        raise DataError(f"{path}: no images listed")
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate image ids")
    return names, ids, sources, framings, np.asarray(rows, dtype=np.uint8)


class CelebA64(Dataset):
    """CelebA faces at 64x64 with their 40 binary attributes (see the module docstring).

    Args:
        root: folder holding ``images.zip`` and ``attributes.csv`` (default: see :func:`resolve_celeba_dir`).
        split: ``"train"`` (~90%), ``"test"`` (the held-out ~10%, :func:`is_test_image`) or ``"all"``.
        framing: ``"aligned"``, ``"detector-crop"`` or ``"all"``.
        cache: keep decoded images in memory (per process).
        verify: check both files against :data:`CELEBA64_SHA256` first (reads ~130 MB).

    Example:
        >>> ds = CelebA64(split="test", framing="aligned")  # doctest: +SKIP
        >>> image, attrs = ds[0]; image.shape, attrs[ds.attribute_index("Male")]  # doctest: +SKIP
        (torch.Size([3, 64, 64]), tensor(0.))
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        split: Split = "train",
        framing: Framing = "aligned",
        cache: bool = False,
        verify: bool = False,
    ) -> None:
        if split not in ("train", "test", "all"):
            raise DataError(f"unknown split {split!r}; use 'train', 'test' or 'all'")
        if framing not in ("aligned", "detector-crop", "all"):
            raise DataError(f"unknown framing {framing!r}; use 'aligned', 'detector-crop' or 'all'")
        self.root = resolve_celeba_dir(root)
        self.split = split
        self.framing = framing
        self.zip_path = self.root / IMAGES_FILE
        self.csv_path = self.root / ATTRIBUTES_FILE
        for p in (self.zip_path, self.csv_path):
            if not p.is_file():
                raise DataError(f"{p}: file not found")
        if verify:
            for p in (self.zip_path, self.csv_path):
                digest = sha256_file(p)
                if digest != CELEBA64_SHA256[p.name]:
                    raise DataError(f"{p}: sha256 mismatch (got {digest[:12]}..., expected the shared README's)")
        names, ids, sources, framings, values = _read_attributes(self.csv_path)
        members = set(self._open_zip().namelist())
        missing = [i for i in ids if i not in members]
        if missing:
            raise DataError(
                f"{self.csv_path}: {len(missing)} image(s) listed in the CSV are not in {self.zip_path.name} "
                f"(first: {missing[0]})"
            )
        keep = [
            k
            for k, (i, f) in enumerate(zip(ids, framings, strict=True))
            if (framing == "all" or f == framing) and (split == "all" or is_test_image(i) == (split == "test"))
        ]
        if not keep:
            raise DataError(f"{self.csv_path}: no images with split={split!r} and framing={framing!r}")
        self.attribute_names: list[str] = names
        self.image_ids: list[str] = [ids[k] for k in keep]
        self.sources: list[str] = [sources[k] for k in keep]
        self.framings: list[str] = [framings[k] for k in keep]
        #: uint8 tensor ``(N, 40)`` of 0/1 attribute values.
        self.attributes: torch.Tensor = torch.from_numpy(values[keep].copy())
        self._cache_enabled = cache
        self._cache: dict[int, np.ndarray] = {}

    # -- zip handling: one handle per process ------------------------------------------------------------
    def _open_zip(self) -> zipfile.ZipFile:
        zf = getattr(self, "_zip", None)
        if zf is not None and getattr(self, "_zip_pid", None) == os.getpid():
            return zf
        try:
            zf = zipfile.ZipFile(self.zip_path)
        except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError) as exc:  # damaged headers too
            raise DataError(f"{self.zip_path}: not a readable zip file ({exc})") from None
        self._zip, self._zip_pid = zf, os.getpid()
        return zf

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_zip"] = None  # a zip handle cannot be pickled; each process opens its own
        state["_zip_pid"] = None
        return state

    def close(self) -> None:
        """Close this process's zip handle (it is reopened on the next access)."""
        zf = getattr(self, "_zip", None)
        if zf is not None:
            zf.close()
        self._zip = None

    # -- decoding ---------------------------------------------------------------------------------------
    def _decode(self, name: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            raw = self._open_zip().read(name)
        except (zipfile.BadZipFile, OSError, KeyError, EOFError, NotImplementedError, ValueError) as exc:
            raise DataError(f"{self.zip_path}: member {name}: cannot read ({exc})") from None
        try:
            with Image.open(io.BytesIO(raw)) as im:
                arr = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{self.zip_path}: member {name}: cannot decode JPEG ({exc})") from None
        if arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise DataError(
                f"{self.zip_path}: member {name}: image is {arr.shape[1]}x{arr.shape[0]}, expected "
                f"{IMAGE_SIZE}x{IMAGE_SIZE}"
            )
        return arr.transpose(2, 0, 1).copy()  # (3, H, W) uint8

    def image_uint8(self, index: int) -> torch.Tensor:
        """Image ``index`` as uint8 ``(3, 64, 64)`` (decoded, or from the cache)."""
        arr = self._cache.get(index)
        if arr is None:
            arr = self._decode(self.image_ids[index])
            if self._cache_enabled:
                self._cache[index] = arr
        return torch.from_numpy(arr)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image float32 (3, 64, 64) in [0, 1], attributes float32 (40,))``."""
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self.image_uint8(index).float().div_(255.0), self.attributes[index].float()

    def record(self, index: int) -> dict[str, Any]:
        """Everything about one image: ``image``, ``image_id``, ``source``, ``framing`` and ``attributes`` (a dict)."""
        image, attrs = self[index]
        return {
            "image": image,
            "image_id": self.image_ids[index],
            "source": self.sources[index],
            "framing": self.framings[index],
            "attributes": dict(zip(self.attribute_names, (int(a) for a in attrs), strict=True)),
        }

    def load_all(self, indices: Sequence[int] | torch.Tensor | None = None, *, progress: bool = False) -> torch.Tensor:
        """Decode a selection (default: all) into one uint8 tensor ``(N, 3, 64, 64)``."""
        from tqdm.auto import tqdm

        idx = range(len(self)) if indices is None else [int(i) for i in indices]
        out = torch.empty((len(idx), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
        for k, i in enumerate(tqdm(idx, desc="decode CelebA", disable=not progress, leave=False)):
            out[k] = self.image_uint8(i)
        return out

    # -- attributes and splits --------------------------------------------------------------------------
    def attribute_index(self, name: str) -> int:
        """Column of attribute ``name`` (a one-line error lists the valid names)."""
        try:
            return self.attribute_names.index(name)
        except ValueError:
            raise DataError(f"unknown attribute {name!r}; valid: {', '.join(self.attribute_names)}") from None

    def attribute(self, name: str) -> torch.Tensor:
        """Boolean mask ``(N,)`` of images that have attribute ``name`` (``"~Name"``: that do not)."""
        negate = name.startswith("~")
        col = self.attributes[:, self.attribute_index(name[1:] if negate else name)].bool()
        return ~col if negate else col

    def forget_mask(self, attributes: str | Sequence[str], how: Literal["any", "all"] = "any") -> torch.Tensor:
        """Mask of images with any (union) or all (conjunction) of ``attributes`` (``"~X"`` negates X)."""
        names = [attributes] if isinstance(attributes, str) else list(attributes)
        if not names:
            raise DataError("no forget attribute given")
        if how not in ("any", "all"):
            raise DataError(f"unknown combination {how!r}; use 'any' or 'all'")
        masks = torch.stack([self.attribute(n) for n in names])
        return masks.any(0) if how == "any" else masks.all(0)

    def forget_split(self, attributes: str | Sequence[str], how: Literal["any", "all"] = "any") -> ForgetSplit:
        """Forget the images with any (``how="any"``) or all (``"all"``) of ``attributes``; retain the rest.

        >>> ds.forget_split("Male").description  # doctest: +SKIP
        'Male'
        >>> ds.forget_split(["Male", "Eyeglasses"], how="all").description  # doctest: +SKIP
        'Male&Eyeglasses'
        """
        names = [attributes] if isinstance(attributes, str) else list(attributes)
        mask = self.forget_mask(names, how)
        return ForgetSplit.by_mask(mask, description=("|" if how == "any" else "&").join(names))

    def attribute_counts(self) -> dict[str, int]:
        """Number of images with each attribute."""
        return dict(zip(self.attribute_names, self.attributes.sum(0).tolist(), strict=True))

"""A folder of images, one sub-folder per class: ``root/<class index>/<image files>``, read lazily with Pillow.

The layout of ImageNet-style class folders with integer names (``207/``, ``208/`` ...): the label of an image is
its folder's name. Images are converted to RGB (or grayscale), centre-cropped to a square and resized to
``size`` x ``size``, and returned as float tensors ``(C, size, size)`` in [0, 1] with their label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from genunlearn.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageFolder(Dataset):
    """Images under ``root/<class index>/`` (see the module docstring).

    Args:
        root: the folder.
        size: side of the square images returned.
        mode: Pillow mode, ``"RGB"`` or ``"L"``.
    """

    def __init__(self, root: str | Path, size: int, mode: str = "RGB") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: image folder not found")
        dirs = sorted(d for d in self.root.iterdir() if d.is_dir())
        bad = [d.name for d in dirs if not d.name.isdigit()]
        if bad:
            raise DataError(f"{self.root}: class folders must be named by their class index, found {bad[:3]}")
        self.paths: list[Path] = []
        labels: list[int] = []
        for d in dirs:
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            self.paths += files
            labels += [int(d.name)] * len(files)
        if not self.paths:
            raise DataError(f"{self.root}: no images in <class index>/ folders ({', '.join(IMAGE_SUFFIXES)})")
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.size, self.mode = size, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image, UnidentifiedImageError

        path = self.paths[i]
        try:
            with Image.open(path) as im:
                im = im.convert(self.mode)
                w, h = im.size
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                im = im.crop((left, top, left + side, top + side)).resize((self.size, self.size), Image.BICUBIC)
                arr = np.asarray(im, dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{path}: cannot read the image ({exc})") from None
        x = torch.from_numpy(arr).unsqueeze(0) if arr.ndim == 2 else torch.from_numpy(arr).permute(2, 0, 1)
        return x.contiguous(), self.labels[i]

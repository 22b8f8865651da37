"""Image grids: grey samples drawn inverted, RGB faces drawn as they are (the CelebA grids were negatives)."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes

from genunlearn.eval.figures import before_after_grid


def _shown(monkeypatch, before, after, tmp_path, rows):
    shown = []
    original = Axes.imshow

    def capture(self, x, *args, **kwargs):
        shown.append(np.asarray(x))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(Axes, "imshow", capture)
    path = before_after_grid(before, after, tmp_path / "g.png", rows=rows)
    assert path.is_file()
    return shown


def test_rgb_faces_are_not_inverted(monkeypatch, tmp_path):
    red = torch.zeros(6, 3, 8, 8)
    red[:, 0] = 0.9
    shown = _shown(monkeypatch, red, red, tmp_path, rows=2)
    assert len(shown) == 2 and shown[0].shape == (2 * 10, 3 * 10, 3)
    inner = shown[0][1:9, 1:9]  # the first face
    assert np.allclose(inner[..., 0], 0.9) and np.allclose(inner[..., 1:], 0.0)


def test_grey_digits_are_inverted(monkeypatch, tmp_path):
    ink = torch.ones(4, 28 * 28)
    shown = _shown(monkeypatch, ink, torch.zeros(4, 28 * 28), tmp_path, rows=2)
    assert shown[0].ndim == 2 and np.allclose(shown[0][1:29, 1:29], 0.0)  # ink drawn dark
    assert np.allclose(shown[1][1:29, 1:29], 1.0)

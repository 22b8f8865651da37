"""Gradient algebra over lists of parameter tensors (no flattening, no concatenation).

Every method uses these helpers, so a speed-up here speeds up every method. A "gradient" is a list of
tensors shaped like the parameters. Divisions by a norm are guarded by a tiny floor only where the norm
can be zero; the floor changes nothing otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Grads = list[torch.Tensor]
TINY = 1e-30


def grad(
    loss: torch.Tensor,
    params: Sequence[torch.Tensor],
    *,
    create_graph: bool = False,
    retain_graph: bool | None = None,
) -> Grads:
    """d loss / d params; parameters the loss does not depend on get zero gradients."""
    gs = torch.autograd.grad(
        loss, list(params), create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
    )
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params, strict=True)]


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Inner product of two gradients (a 0-d tensor, differentiable)."""
    return torch.stack([torch.sum(x * y) for x, y in zip(a, b, strict=True)]).sum()


def sqnorm(a: Sequence[torch.Tensor]) -> torch.Tensor:
    """Squared Euclidean norm of a gradient."""
    return dot(a, a)


def axpy(alpha: torch.Tensor | float, x: Sequence[torch.Tensor], y: Sequence[torch.Tensor]) -> Grads:
    """``y + alpha * x`` elementwise over the lists."""
    return [yi + alpha * xi for xi, yi in zip(x, y, strict=True)]


def scale(alpha: torch.Tensor | float, x: Sequence[torch.Tensor]) -> Grads:
    """``alpha * x``."""
    return [alpha * xi for xi in x]


def project_out(g: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> Grads:
    """``g - (g.ref / ref.ref) ref``: the part of ``g`` orthogonal to ``ref`` (``g`` itself if ref = 0)."""
    coef = dot(g, ref) / sqnorm(ref).clamp_min(TINY)
    return axpy(-coef, ref, g)


def cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cosine of the angle between two gradients (0 if either is zero)."""
    return dot(a, b) / (sqnorm(a) * sqnorm(b)).sqrt().clamp_min(TINY)


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """True if every element of every tensor is finite (one device synchronisation)."""
    if not tensors:
        return True
    norms = torch._foreach_norm(list(tensors))
    return bool(torch.isfinite(torch.stack(norms)).all())


@torch.no_grad()
def penalty_vectors(
    g_r: Sequence[torch.Tensor], g_f: Sequence[torch.Tensor], *, kind: str = "cos"
) -> tuple[Grads, Grads, torch.Tensor, torch.Tensor]:
    """``(v_r, v_f, factor, value)`` with ``grad penalty = factor * (H_r v_r + H_f v_f)`` (no graph).

    ``kind="cos"``: ``c^2``, ``v_r = g_f/(|r||f|) - c g_r/|r|^2``, ``v_f = g_r/(|r||f|) - c g_f/|f|^2``,
    ``factor = 2c``; ``kind="dot"``: ``d^2``, ``v_r = g_f``, ``v_f = g_r``, ``factor = 2d``.
    """
    gr = [x.detach() for x in g_r]
    gf = [x.detach() for x in g_f]
    d = dot(gr, gf)
    if kind == "cos":
        nr2, nf2 = sqnorm(gr), sqnorm(gf)
        inv = 1.0 / (nr2 * nf2).sqrt().clamp_min(TINY)
        c = d * inv
        v_r = axpy(-c / nr2.clamp_min(TINY), gr, scale(inv, gf))
        v_f = axpy(-c / nf2.clamp_min(TINY), gf, scale(inv, gr))
        return v_r, v_f, 2.0 * c, c * c
    if kind == "dot":
        return gf, gr, 2.0 * d, d * d
    raise ValueError(f"unknown orthogonality kind {kind!r}; use 'cos' or 'dot'")


def orthogonality_penalty_grad(
    g_r: Sequence[torch.Tensor],
    g_f: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    *,
    kind: str = "cos",
) -> tuple[Grads, torch.Tensor]:
    """Exact gradient of the orthogonality penalty and its value, via two Hessian-vector products.

    For ``kind="cos"`` the penalty is ``c^2`` with ``c = g_r.g_f / (|g_r||g_f|)`` (paper eq. 3) and

        d(c^2) = 2c [ H_r (g_f/(|r||f|) - c g_r/|r|^2) + H_f (g_r/(|r||f|) - c g_f/|f|^2) ];

    for ``kind="dot"`` it is ``d^2`` with ``d = g_r.g_f`` (appendix I, eq. 17): ``2d (H_r g_f + H_f g_r)``.
    ``g_r`` and ``g_f`` must have been computed with ``create_graph=True``; both Hessian-vector products
    are taken in a single backward pass through the two gradient graphs.
    """
    v_r, v_f, factor, value = penalty_vectors(g_r, g_f, kind=kind)
    outputs, grad_outputs = [], []
    for g, v in zip(list(g_r) + list(g_f), v_r + v_f, strict=True):
        if g.requires_grad:  # a parameter a loss does not use has a constant (zero) gradient
            outputs.append(g)
            grad_outputs.append(v)
    if not outputs:
        return [torch.zeros_like(p) for p in params], value
    hv = torch.autograd.grad(outputs, list(params), grad_outputs=grad_outputs, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h * factor for h, p in zip(hv, params, strict=True)], value

"""Latent replacement ``L_rep`` (genunlearn's classifier-free ``rep`` method) for any encoder-decoder.

The frozen original encoder says where in latent space the forget examples live; the generator is taught to
produce, there, each forget example's nearest *unambiguous* retained example. It is the unconditional analogue
of the paper's conditional replacement (section 3.4): the forget region of latent space plays the role of the
forget condition. See ``docs/findings.md`` for what was measured.

Nearest neighbours are exact. Low-dimensional latents (d <= 8, the MNIST VAE's 2) use a KD-tree; higher ones
(the face VAE's 512) a chunked brute-force search on matrix products (:func:`nearest_unambiguous`), whose
cost is measured in ``benchmarks/replacement_search.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn
from torch.utils.data import DataLoader, Dataset

from genunlearn.adapters import eval_mode
from genunlearn.distributed import batch_part, per_example_randint, per_example_randn_like
from genunlearn.errors import ConfigError
from genunlearn.objectives.tasks import batch_inputs
from genunlearn.objectives.vae import reconstruction_loss

PerSampleDecodeLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Examples = torch.Tensor | Dataset


def _num(examples: Examples) -> int:
    return len(examples)  # type: ignore[arg-type]


def gather(examples: Examples, index: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Examples ``index`` of a tensor or a dataset (its items' inputs), stacked on ``device``."""
    if isinstance(examples, torch.Tensor):
        return examples[index.to(examples.device)].to(device)
    items = [batch_inputs(examples[int(i)]) for i in index.tolist()]
    return torch.stack([torch.as_tensor(x) for x in items]).to(device)


def _chunks(examples: Examples, chunk: int, device: torch.device | str):
    if isinstance(examples, torch.Tensor):
        for s in range(0, len(examples), chunk):
            yield examples[s : s + chunk].to(device)
    else:
        for batch in DataLoader(examples, batch_size=chunk, shuffle=False):  # type: ignore[arg-type]
            yield batch_inputs(batch).to(device)


@torch.no_grad()
def encode_all(
    encoder: nn.Module, examples: Examples, *, chunk: int = 4096, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations ``(N, d)`` of every example (``encoder.encode`` in eval mode)."""
    with eval_mode(encoder):
        enc = [encoder.encode(x) for x in _chunks(examples, chunk, device)]  # type: ignore[operator]
    mu = torch.cat([m for m, _ in enc])
    std = torch.cat([lv for _, lv in enc]).mul(0.5).exp()
    return mu.reshape(mu.shape[0], -1), std.reshape(std.shape[0], -1)


def _topk_sq_dist(queries: torch.Tensor, points: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Indices ``(Q, k)`` of each query's ``k`` nearest points (Euclidean), by chunked matrix products."""
    p_sq = points.pow(2).sum(1)
    out = []
    for s in range(0, len(queries), chunk):
        q = queries[s : s + chunk]
        d = p_sq.unsqueeze(0) - 2.0 * q @ points.T + q.pow(2).sum(1, keepdim=True)
        out.append(torch.topk(d, k, dim=1, largest=False).indices)
    return torch.cat(out)


def unambiguous_mask(
    mu_r: torch.Tensor,
    mu_f: torch.Tensor,
    *,
    purity_neighbours: int = 16,
    max_forget_share: float = 0.0,
) -> torch.Tensor:
    """Boolean mask over the retained points ``mu_r``: True where the point lies away from the forget data.

    A retained point is unambiguous when at most ``max_forget_share`` of its ``purity_neighbours`` nearest points
    (retained and forget, itself excluded) are forget points (the rule :func:`nearest_unambiguous` uses to choose
    ``rep``'s targets). Exact: a KD-tree in up to 8 dimensions, chunked matrix products above.
    """
    n_r, d = mu_r.shape
    m = min(purity_neighbours, n_r + len(mu_f) - 1)
    if m < 1:
        return torch.ones(n_r, dtype=torch.bool)
    if d <= 8:
        r_np, f_np = mu_r.cpu().numpy(), mu_f.cpu().numpy()
        _, idx = cKDTree(np.concatenate([r_np, f_np])).query(r_np, k=m + 1)
        share = (np.asarray(idx).reshape(n_r, m + 1)[:, 1:] >= n_r).mean(axis=1)  # the first hit is the point
        return torch.as_tensor(share <= max_forget_share)
    r, everything = mu_r.float().cpu(), torch.cat([mu_r, mu_f]).float().cpu()
    near = _topk_sq_dist(r, everything, m + 1)
    share = torch.tensor(
        [sum(j >= n_r for j in [j for j in row if j != i][:m]) / m for i, row in enumerate(near.tolist())]
    )
    return share <= max_forget_share


def nearest_unambiguous(
    mu_r: torch.Tensor,
    mu_f: torch.Tensor,
    *,
    neighbours: int = 1,
    purity_neighbours: int = 16,
    max_forget_share: float = 0.0,
) -> torch.Tensor:
    """For each forget point, its ``neighbours`` nearest *unambiguous* retained points (indices into ``mu_r``).

    A retained point is ambiguous when more than ``max_forget_share`` of its ``purity_neighbours`` nearest
    points (retained and forget, itself excluded) are forget points: it lies in the forget data's region (a 7
    written like a 1) and would teach the forgotten class back.

    Raises:
        ConfigError: if fewer than ``neighbours`` retained points are unambiguous.
    """
    n_r, d = mu_r.shape
    m = min(purity_neighbours, n_r + len(mu_f) - 1)
    if d <= 8:  # exact KD-tree: fast in low dimension (the MNIST VAE's latent is 2-d)
        r_np, f_np = mu_r.cpu().numpy(), mu_f.cpu().numpy()
        mask = unambiguous_mask(mu_r, mu_f, purity_neighbours=purity_neighbours, max_forget_share=max_forget_share)
        kept = np.flatnonzero(mask.numpy())
        if len(kept) < neighbours:
            raise _too_few(len(kept))
        _, nearest = cKDTree(r_np[kept]).query(f_np, k=neighbours)
        return torch.as_tensor(kept[np.asarray(nearest).reshape(len(f_np), neighbours)])
    # Brute force on matrix products, purity only for candidates: each forget point's nearest retained points,
    # widened until enough of them are unambiguous.
    r, f = mu_r.float(), mu_f.float()
    everything = torch.cat([r, f])
    purity: dict[int, bool] = {}
    k = min(n_r, max(8 * neighbours, 16))
    result = torch.empty(len(f), neighbours, dtype=torch.int64)
    todo = torch.arange(len(f))
    while len(todo):
        cand = _topk_sq_dist(f[todo], r, k)
        unknown = sorted(set(torch.unique(cand).tolist()) - set(purity))
        if unknown:
            u = torch.as_tensor(unknown)
            near = _topk_sq_dist(r[u], everything, m + 1)
            for i, row in zip(unknown, near.tolist(), strict=True):
                others = [j for j in row if j != i][:m]
                purity[i] = sum(j >= n_r for j in others) / max(m, 1) <= max_forget_share
        still = []
        for row_i, q in enumerate(todo.tolist()):
            good = [c for c in cand[row_i].tolist() if purity[c]]
            if len(good) >= neighbours:
                result[q] = torch.as_tensor(good[:neighbours])
            else:
                still.append(q)
        if still and k >= n_r:
            raise _too_few(sum(purity.values()))
        todo = torch.as_tensor(still, dtype=torch.int64)
        k = min(n_r, 4 * k)
    return result


def _too_few(n: int) -> ConfigError:
    return ConfigError(
        f"only {n} retained examples lie away from the forget data in latent space; raise max_forget_share"
    )


@dataclass
class LatentReplacement:
    """Classifier-free replacement term ``L_rep`` for latent-variable generators (genunlearn, not in the paper).

    Each call draws ``samples`` forget examples, samples latents from their *frozen* (original-model)
    posteriors ``z ~ N(mu_f, std_f^2)``, and returns the generator's loss of producing, at those latents,
    one of the example's ``k`` nearest unambiguous retained neighbours (nearest by the frozen posterior
    means, see :meth:`for_vae`). Only the generator (decoder) receives gradients; no classifier and no
    knowledge of any monitor is used. The loss is computed with the model in eval mode, as it generates:
    a batch of latents from the forget region alone would otherwise drag BatchNorm's running statistics
    (measured: with train mode, 10 updates rearranged the whole latent map and FID rose by 7-17).

    Attributes:
        mu, std: frozen posterior means and standard deviations of the forget examples, ``(N, d)``.
        targets: retained examples, a tensor ``(M, ...)`` or a dataset (read lazily, only the drawn ones).
        neighbours: indices into ``targets``, ``(N, k)``.
        decode_loss: ``decode_loss(model, z, x_target) -> (B,)`` per-sample reconstruction loss.
        samples: examples per call.
        reduction: ``"sum"`` or ``"mean"`` over the samples (match the retain loss's reduction).
        latent_shape: shape of one latent as the decoder takes it (``()``: flat, ``(d,)``).
    """

    mu: torch.Tensor
    std: torch.Tensor
    targets: Examples
    neighbours: torch.Tensor
    decode_loss: PerSampleDecodeLoss
    samples: int = 128
    reduction: str = "sum"
    latent_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.mu.shape[0] == 0:
            raise ConfigError("latent replacement needs at least one forget example")
        if _num(self.targets) == 0:
            raise ConfigError("latent replacement needs at least one retained example")
        if self.reduction not in ("sum", "mean"):
            raise ConfigError(f"unknown loss reduction {self.reduction!r}; use 'sum' or 'mean'")
        if self.samples < 1:
            raise ConfigError(f"replacement samples must be >= 1, got {self.samples}")

    @property
    def batch_examples(self) -> int:
        """Examples per call: a data-parallel run splits them over the ranks (:mod:`genunlearn.distributed`)."""
        return self.samples

    def __call__(self, model: nn.Module) -> torch.Tensor:
        n, k = self.neighbours.shape
        dev = self.mu.device
        part = batch_part()  # a data-parallel rank draws all samples (same random state) and keeps its rows
        m = self.samples if part is None else part.size
        i = per_example_randint(0, n, m, device=dev)
        j = per_example_randint(0, k, m, device=dev)
        with eval_mode(model):  # generation's mode: forget-region latents must not move BatchNorm statistics
            z = self.mu[i] + self.std[i] * per_example_randn_like(self.mu[i])
            if self.latent_shape:
                z = z.reshape(z.shape[0], *self.latent_shape)
            target = gather(self.targets, self.neighbours.to(dev)[i, j], dev)
            per_sample = self.decode_loss(model, z, target)
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()

    @classmethod
    @torch.no_grad()
    def for_vae(
        cls,
        original: nn.Module,
        retain: Examples,
        forget: Examples,
        *,
        likelihood: str = "bernoulli",
        neighbours: int = 1,
        samples: int = 128,
        reduction: str = "sum",
        max_forget_share: float = 0.0,
        purity_neighbours: int = 16,
        chunk: int = 4096,
        device: torch.device | str | None = None,
        targets: str = "data",
    ) -> LatentReplacement:
        """Build the term from the original VAE (used frozen, in eval mode) and the retain/forget examples.

        ``original`` follows the VAE contract of :mod:`genunlearn.objectives.vae` (``encode``; ``decode_logits``
        for ``likelihood="bernoulli"``, ``decode`` for ``"mse"``); ``retain`` and ``forget`` are tensors or
        datasets (a dataset is read once to encode it, then only the drawn targets are read). Targets are the
        ``neighbours`` nearest unambiguous retained examples of each forget example (:func:`nearest_unambiguous`):
        the examples themselves (``targets="data"``, ``rep``) or what the frozen original decodes at their
        posterior means (``targets="decoded"``, ``rep-decoded``: the model's own rendering of the neighbour, so
        the forget region is taught samples the model already makes rather than training images).
        """
        if targets not in ("data", "decoded"):
            raise ConfigError(f"unknown replacement targets {targets!r}; use 'data' or 'decoded'")
        if neighbours < 1:
            raise ConfigError(f"replacement neighbours must be >= 1, got {neighbours}")
        if _num(forget) == 0:
            raise ConfigError("latent replacement needs at least one forget example")
        if _num(retain) < neighbours:
            raise ConfigError(f"latent replacement needs at least {neighbours} retained examples, got {_num(retain)}")
        if device is None:
            device = next(original.parameters()).device
        mu_r, _ = encode_all(original, retain, chunk=chunk, device=device)
        mu_f, std_f = encode_all(original, forget, chunk=chunk, device=device)
        with torch.no_grad():
            latent_shape = tuple(original.encode(next(_chunks(forget, 1, device)))[0].shape[1:])  # type: ignore[operator]
        nn_idx = nearest_unambiguous(
            mu_r, mu_f, neighbours=neighbours, purity_neighbours=purity_neighbours, max_forget_share=max_forget_share
        ).to(device)

        def decode_loss(model: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return reconstruction_loss(model, z, x, likelihood)

        target_examples: Examples = retain
        if targets == "decoded":  # only the neighbours in use are decoded; indices remapped to them
            used, nn_idx = torch.unique(nn_idx, return_inverse=True)
            image_shape = tuple(gather(retain, torch.zeros(1, dtype=torch.int64), device).shape[1:])
            z_used = mu_r[used.to(mu_r.device)]
            if latent_shape and len(latent_shape) > 1:
                z_used = z_used.reshape(len(z_used), *latent_shape)
            with eval_mode(original):
                if likelihood == "bernoulli" and hasattr(original, "decode_logits"):
                    decoded = torch.sigmoid(original.decode_logits(z_used))  # type: ignore[operator]
                else:
                    decoded = original.decode(z_used)  # type: ignore[operator]
            target_examples = decoded.reshape(len(used), *image_shape).detach()

        return cls(
            mu=mu_f,
            std=std_f,
            targets=target_examples,
            neighbours=nn_idx,
            decode_loss=decode_loss,
            samples=samples,
            reduction=reduction,
            latent_shape=latent_shape,
        )

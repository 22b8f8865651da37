"""A small class-conditional diffusion transformer (DiT) for MNIST, in pixel space.

The network is diffusers' :class:`~diffusers.DiTTransformer2DModel` (Peebles & Xie, 2023; adaLN-Zero
blocks) on 28x28x1 images cut into 4x4 patches (7x7 = 49 tokens; 28 is divisible by the patch size, so no
padding), conditioned on a timestep and one of 10 digit labels or the *null* label 10 used for
classifier-free guidance. It predicts the noise (epsilon) of a diffusers :class:`~diffusers.DDPMScheduler`
with 1,000 steps and the cosine schedule (``squaredcos_cap_v2``).

Output parameterisation: :meth:`MnistDiT.forward` returns the predicted noise and :func:`diffusion_loss` is
the epsilon MSE, but the transformer itself predicts the velocity ``v = sqrt(a) eps - sqrt(1 - a) x0``
(Salimans & Ho, 2022) and ``forward`` converts it, ``eps = sqrt(a) v + sqrt(1 - a) x_t`` (``a`` = alpha-bar
of the timestep). Same objective, better conditioned network: at high noise the noise is almost ``x_t``
itself, which a raw-epsilon DiT must reproduce through its patch embedding and output LayerNorm to ~1e-3
(measured: a raw-epsilon model after 1,400 steps predicted the clean image at t = 950 worse than the mean
image, and its samples were speckle); with ``v`` the clean-image estimate at high noise is ``-v``, not an
error amplified by ``1/sqrt(a)``. ``output="eps"`` gives the plain epsilon network.

Null label and diffusers' own label dropout: ``DiTTransformer2DModel`` builds, in *every* block, a
``LabelEmbedding(num_embeds_ada_norm, dim, dropout_prob=0.1)`` whose table has ``num_embeds_ada_norm + 1``
rows and whose row ``num_embeds_ada_norm`` is the dropped-label ("null") embedding; in train mode each of
these embeddings independently replaces labels by that row with probability 0.1, drawn from the global RNG.
We therefore build it with ``num_embeds_ada_norm = num_classes`` (10), so ``null_label = num_classes``
(10) is exactly diffusers' and DiT's null row, and set every ``dropout_prob`` to 0: label dropout is done
once per example, by :func:`diffusion_loss`, from a seeded generator, so that training and unlearning are
reproducible and all blocks see the same label. (Building with ``num_embeds_ada_norm = 11`` would give a
12-row table whose row 11 diffusers drops to, while our null label 10 would be an ordinary class.)

Data convention: the network works on images in [-1, 1]; :func:`diffusion_loss` takes images in [0, 1]
(as the datasets give them) and :func:`sample` returns images in [0, 1] of shape ``(B, 1, 28, 28)``, which
the bundled MNIST classifier accepts as they are.

Double backward (needed by UNO's exact gradient): PyTorch's fused CPU attention kernel has no second
derivative; evaluate second-order quantities inside
``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`` (see ``docs/dit.md`` and ``tests/test_dit.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel, DPMSolverMultistepScheduler
from diffusers.models.embeddings import LabelEmbedding
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class MnistDiTConfig:
    """Architecture and noise schedule of :class:`MnistDiT` (stored in checkpoint metadata).

    Attributes:
        sample_size: image side in pixels (28 for MNIST).
        in_channels: image channels (1).
        patch_size: side of the square patches (must divide ``sample_size``).
        num_layers: transformer blocks.
        num_attention_heads, attention_head_dim: width = heads x head dim.
        num_classes: conditioning classes; the null label is ``num_classes``.
        num_train_timesteps: steps of the DDPM forward process.
        beta_schedule: diffusers beta schedule name (``"squaredcos_cap_v2"``: cosine, Nichol & Dhariwal 2021).
        clip_sample: samplers clip the predicted clean image to [-1, 1].
        output: what the transformer's raw output means: ``"v"`` (velocity, Salimans & Ho 2022, converted
            to the noise in :meth:`MnistDiT.forward`) or ``"eps"`` (the noise itself).
    """

    sample_size: int = 28
    in_channels: int = 1
    patch_size: int = 4
    num_layers: int = 4
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    num_classes: int = 10
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    output: str = "v"

    def validate(self) -> MnistDiTConfig:
        """Raise ``ValueError`` on inconsistent values; returns ``self``."""
        if self.sample_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide sample_size {self.sample_size}")
        if min(self.num_layers, self.num_attention_heads, self.attention_head_dim, self.num_classes) < 1:
            raise ValueError("layers, heads, head dim and classes must be >= 1")
        if self.output not in ("v", "eps"):
            raise ValueError(f"output must be 'v' or 'eps', got {self.output!r}")
        return self


class MnistDiT(nn.Module):
    """Class-conditional pixel-space DiT predicting the noise of a DDPM (see the module docstring).

    Attributes:
        config: the :class:`MnistDiTConfig` it was built with.
        num_classes: number of real classes (10).
        null_label: the label of the unconditional model used by classifier-free guidance (``num_classes``).
        sample_size: image side (28); images are ``(B, in_channels, sample_size, sample_size)``.
        noise_schedule: keyword arguments of the :class:`~diffusers.DDPMScheduler` it is trained with.
        transformer: the diffusers ``DiTTransformer2DModel``.

    Example:
        >>> m = MnistDiT(num_layers=1, num_attention_heads=2, attention_head_dim=8)
        >>> x = torch.randn(3, 1, 28, 28)
        >>> m(x, torch.tensor([0, 500, 999]), torch.tensor([1, 7, m.null_label])).shape
        torch.Size([3, 1, 28, 28])
    """

    def __init__(self, config: MnistDiTConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = MnistDiTConfig(**{**asdict(config or MnistDiTConfig()), **overrides}).validate()
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.null_label = cfg.num_classes
        self.sample_size = cfg.sample_size
        self.in_channels = cfg.in_channels
        self.noise_schedule: dict[str, Any] = {
            "num_train_timesteps": cfg.num_train_timesteps,
            "beta_schedule": cfg.beta_schedule,
            "prediction_type": "epsilon",
            "clip_sample": cfg.clip_sample,
        }
        self.transformer = DiTTransformer2DModel(
            in_channels=cfg.in_channels,
            out_channels=cfg.in_channels,
            sample_size=cfg.sample_size,
            patch_size=cfg.patch_size,
            num_attention_heads=cfg.num_attention_heads,
            attention_head_dim=cfg.attention_head_dim,
            num_layers=cfg.num_layers,
            num_embeds_ada_norm=cfg.num_classes,  # table of num_classes + 1 rows; row num_classes = null
            norm_type="ada_norm_zero",
        )
        for module in self.transformer.modules():
            if isinstance(module, LabelEmbedding):
                # Keep the null row (created because dropout_prob > 0 at construction) but never drop labels
                # inside the network: diffusion_loss does it once per example from a seeded generator.
                assert module.embedding_table.num_embeddings == cfg.num_classes + 1
                module.dropout_prob = 0.0
        self._init_weights()
        # alpha-bar of the training schedule, for the v -> eps conversion (not saved: it follows the config)
        self.register_buffer("alphas_cumprod", self.make_scheduler().alphas_cumprod.clone(), persistent=False)

    def _init_weights(self) -> None:
        """DiT's initialisation (Peebles & Xie, 2023): xavier linears, N(0, 0.02) embeddings, adaLN-Zero.

        The modulation layers (which output shift/scale/gate) and the output layers start at zero, so every
        block starts as the identity; diffusers does not apply this initialisation itself.
        """
        tr = self.transformer
        for m in tr.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = tr.pos_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(tr.pos_embed.proj.bias)
        for block in tr.transformer_blocks:
            emb = block.norm1.emb
            nn.init.normal_(emb.class_embedder.embedding_table.weight, std=0.02)
            nn.init.normal_(emb.timestep_embedder.linear_1.weight, std=0.02)
            nn.init.normal_(emb.timestep_embedder.linear_2.weight, std=0.02)
            nn.init.zeros_(block.norm1.linear.weight)
            nn.init.zeros_(block.norm1.linear.bias)
        for layer in (tr.proj_out_1, tr.proj_out_2):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def make_scheduler(self) -> DDPMScheduler:
        """A fresh :class:`~diffusers.DDPMScheduler` with the noise schedule the model is trained with."""
        return DDPMScheduler(**self.noise_schedule)

    def _label_embedders(self) -> list[LabelEmbedding]:
        """Each block's label-embedding table (diffusers gives every adaLN-Zero block its own)."""
        return [block.norm1.emb.class_embedder for block in self.transformer.transformer_blocks]

    def label_embedding(self, labels: torch.Tensor) -> torch.Tensor:
        """The class embedding of ``labels`` (int ``(B,)``): every block's table row, shape ``(B, num_layers, D)``.

        This is what ``forward``'s ``class_embedding`` replaces (``D`` = heads x head dim).
        """
        return torch.stack([e.embedding_table(labels.long()) for e in self._label_embedders()], dim=1)

    def forward(
        self,
        x_t: torch.Tensor,
        timesteps: torch.Tensor | int,
        labels: torch.Tensor,
        *,
        prediction: str = "eps",
        class_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted noise for noisy images ``x_t`` (``(B, C, H, W)``, scale [-1, 1]) at ``timesteps``.

        ``timesteps``: an int or a tensor of shape ``()`` or ``(B,)``; ``labels``: int tensor ``(B,)`` with
        values in ``0..num_classes`` (``num_classes`` = null label). Returns a tensor shaped like ``x_t``:
        the noise (``prediction="eps"``) or the velocity ``v = sqrt(a) eps - sqrt(1 - a) x0``
        (``prediction="v"``). ``class_embedding`` (``(B, num_layers, D)``, see :meth:`label_embedding`), when
        given, is used in place of the label embeddings (``labels`` then only give the batch size): a free
        condition, e.g. for the audit's search over label embeddings.
        """
        if prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}")
        b = x_t.shape[0]
        t = torch.as_tensor(timesteps, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(b)
        hooks = []
        if class_embedding is not None:
            embedders = self._label_embedders()
            if class_embedding.shape[:2] != (b, len(embedders)):
                got = tuple(class_embedding.shape)
                raise ValueError(f"class_embedding must be (B={b}, num_layers={len(embedders)}, D), got {got}")
            for i, e in enumerate(embedders):  # the block's lookup returns the given rows (hooks removed below)
                hooks.append(e.register_forward_hook(lambda _m, _a, _o, row=class_embedding[:, i]: row))
        try:
            out = self.transformer(x_t, timestep=t, class_labels=labels.to(x_t.device), return_dict=False)[0]
        finally:
            for h in hooks:
                h.remove()
        if self.config.output == prediction:
            return out
        a = self.alphas_cumprod.to(x_t.dtype)[t.long()].view(b, *([1] * (x_t.ndim - 1)))
        if prediction == "eps":
            # x_t = sqrt(a) x0 + sqrt(1-a) eps and v = sqrt(a) eps - sqrt(1-a) x0  =>  eps = sqrt(a) v + sqrt(1-a) x_t
            return a.sqrt() * out + (1.0 - a).sqrt() * x_t
        return (out - (1.0 - a).sqrt() * x_t) / a.sqrt()  # v from an eps network (ill-conditioned at high noise)


def to_model_space(x: torch.Tensor, model: MnistDiT) -> torch.Tensor:
    """Images in [0, 1] of shape ``(B, H*W*C)``, ``(B, H, W)`` or ``(B, C, H, W)`` -> ``(B, C, H, W)`` in [-1, 1]."""
    s, c = model.sample_size, model.in_channels
    return x.reshape(x.shape[0], c, s, s) * 2.0 - 1.0


def diffusion_loss(
    model: MnistDiT,
    x0: torch.Tensor,
    labels: torch.Tensor,
    scheduler: DDPMScheduler | None = None,
    *,
    noise: torch.Tensor | None = None,
    timesteps: torch.Tensor | None = None,
    label_dropout: float = 0.0,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    target: str = "eps",
) -> torch.Tensor:
    """Epsilon-prediction MSE (DDPM's L_simple): ``|eps - model(sqrt(a_t) x0 + sqrt(1 - a_t) eps, t, y)|^2``.

    Args:
        model: the DiT.
        x0: clean images in [0, 1] (the dataset's scale), ``(B, 784)``, ``(B, 28, 28)`` or ``(B, 1, 28, 28)``;
            mapped to [-1, 1] here.
        labels: int labels ``(B,)`` (may contain ``model.null_label``).
        scheduler: a :class:`~diffusers.DDPMScheduler` (default: ``model.make_scheduler()``); its
            ``add_noise`` makes ``x_t``.
        noise: fixed noise shaped like the image batch (default: drawn from ``generator``).
        timesteps: fixed int timesteps ``(B,)`` (default: uniform over the training steps, from ``generator``).
        label_dropout: probability of replacing a label by ``model.null_label`` (training for
            classifier-free guidance; leave 0 to evaluate). Draws from ``generator`` after timesteps and noise.
        generator: the source of every random draw above (``None``: the global RNG).
        reduction: ``"mean"`` over batch and pixels, ``"sum"`` over batch and pixels, or ``"none"``:
            per-example mean over pixels, shape ``(B,)``.
        target: ``"eps"`` (the default: the epsilon MSE above) or ``"v"``: MSE of the velocity
            ``v = sqrt(a) eps - sqrt(1 - a) x0`` (Salimans & Ho, 2022). In terms of the clean-image error the
            epsilon MSE weighs timestep t by SNR(t) = a / (1 - a), the v MSE by SNR(t) + 1: it does not let
            the almost-pure-noise steps, which decide a sample's class and shape, vanish from the objective.
            The bundled model was trained with ``"v"`` (``docs/dit.md``).
    """
    sched = scheduler if scheduler is not None else model.make_scheduler()
    x = to_model_space(x0, model)
    b, device = x.shape[0], x.device
    if timesteps is None:
        n_t = int(sched.config.num_train_timesteps)
        timesteps = torch.randint(0, n_t, (b,), generator=generator, device=device)
    timesteps = timesteps.to(device)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    noise = noise.reshape(x.shape)
    labels = labels.to(device)
    if label_dropout > 0:
        drop = torch.rand(b, generator=generator, device=device) < label_dropout
        labels = torch.where(drop, torch.full_like(labels, model.null_label), labels)
    x_t = sched.add_noise(x, noise, timesteps)
    if target == "eps":
        err = (model(x_t, timesteps, labels) - noise).pow(2)
    elif target == "v":
        err = (model(x_t, timesteps, labels, prediction="v") - sched.get_velocity(x, noise, timesteps)).pow(2)
    else:
        raise ValueError(f"unknown target {target!r}")
    if reduction == "mean":
        return err.mean()
    if reduction == "sum":
        return err.sum()
    if reduction == "none":
        return err.flatten(1).mean(dim=1)
    raise ValueError(f"unknown reduction {reduction!r}")


SAMPLERS = ("ddim", "dpm++")


def make_sampler(model: MnistDiT, sampler: str = "ddim") -> DDIMScheduler | DPMSolverMultistepScheduler:
    """The deterministic sampling scheduler for ``model``'s noise schedule.

    ``"ddim"``: DDIM with eta = 0, ``"trailing"`` timestep spacing (the first step is the last training
    step, t = 999, where the cosine schedule has almost no signal left). ``"dpm++"``: second-order multistep
    DPM-Solver++ (deterministic, no SDE noise).
    """
    if sampler == "ddim":
        return DDIMScheduler(**model.noise_schedule, timestep_spacing="trailing", set_alpha_to_one=True)
    if sampler == "dpm++":
        sched = dict(model.noise_schedule)
        sched.pop("clip_sample")
        return DPMSolverMultistepScheduler(
            **sched, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing"
        )
    raise ValueError(f"unknown sampler {sampler!r}; choose from {SAMPLERS}")


def sample(
    model: MnistDiT,
    labels: torch.Tensor,
    noise: torch.Tensor,
    *,
    steps: int = 25,
    guidance_scale: float = 2.0,
    sampler: str = "ddim",
    batch_size: int = 500,
    progress: bool = False,
    class_embedding: torch.Tensor | None = None,
    grad: bool = False,
) -> torch.Tensor:
    """Generate images of classes ``labels`` from initial ``noise``; returns ``(B, C, H, W)`` in [0, 1].

    Deterministic given ``noise`` (``(B, C, H, W)`` standard normal). Classifier-free guidance:
    ``eps = eps(x, null) + guidance_scale * (eps(x, y) - eps(x, null))`` with the conditional and null
    batches evaluated together (``guidance_scale`` 1: conditional model only; 0: unconditional). The model is
    run in eval mode, in chunks of ``batch_size`` images; its mode is restored afterwards.

    Args:
        model: the DiT.
        labels: int labels ``(B,)`` (``model.null_label`` gives unconditional samples).
        noise: initial noise ``(B, C, H, W)``.
        steps: sampler steps (at most 50 are sensible here; each costs one or two network evaluations).
        guidance_scale: classifier-free guidance weight.
        sampler: ``"ddim"`` (eta = 0) or ``"dpm++"`` (DPM-Solver++ 2M), see :func:`make_sampler`.
        batch_size: images per chunk.
        progress: show a progress bar over chunks.
        class_embedding: ``(B, num_layers, D)``: the conditional branch uses these embeddings instead of the
            labels' (:meth:`MnistDiT.label_embedding`); the null branch of guidance keeps the null label.
        grad: keep the autograd graph (gradients reach ``noise``, ``class_embedding`` and the weights); default
            without gradients.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if noise.shape[0] != labels.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels but {noise.shape[0]} noise images")
    if class_embedding is not None and class_embedding.shape[0] != labels.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels but {class_embedding.shape[0]} class embeddings")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        n_chunks = math.ceil(labels.shape[0] / batch_size)
        embs = class_embedding.split(batch_size) if class_embedding is not None else [None] * n_chunks
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            for noise_c, y, emb in tqdm(
                zip(noise.split(batch_size), labels.split(batch_size), embs, strict=True),
                total=n_chunks,
                desc="sample",
                disable=not progress,
            ):
                out.append(_sample_chunk(model, y.to(device), noise_c, emb, steps, guidance_scale, sampler))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else noise.new_zeros((0, *noise.shape[1:]))


def _sample_chunk(
    model: MnistDiT,
    y: torch.Tensor,
    noise: torch.Tensor,
    emb: torch.Tensor | None,
    steps: int,
    guidance_scale: float,
    sampler: str,
) -> torch.Tensor:
    """One chunk of :func:`sample` (a fresh scheduler: multistep solvers keep state)."""
    device = y.device
    sched = make_sampler(model, sampler)
    sched.set_timesteps(steps, device=device)
    x = noise.to(device=device, dtype=torch.float32) * sched.init_noise_sigma
    null = torch.full_like(y, model.null_label)
    null_emb = None if emb is None else model.label_embedding(null).to(emb.dtype)
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        if guidance_scale == 1.0:
            eps = model(x_in, t, y, class_embedding=emb)
        elif guidance_scale == 0.0:
            eps = model(x_in, t, null)
        else:
            both = None if emb is None else torch.cat([emb, null_emb])  # type: ignore[list-item]
            eps_c, eps_u = model(torch.cat([x_in, x_in]), t, torch.cat([y, null]), class_embedding=both).chunk(2)
            eps = eps_u + guidance_scale * (eps_c - eps_u)
        x = sched.step(eps, t, x, return_dict=False)[0]
    return ((x.clamp(-1.0, 1.0) + 1.0) / 2.0).cpu()

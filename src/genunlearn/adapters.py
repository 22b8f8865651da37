"""Model adapters: which parameters of a user's model train, which parts stay frozen, and in which modes.

A latent-diffusion pipeline's autoencoder and text encoder, or a classifier bundled with a generator, must
not move while the generator unlearns. :class:`ModelAdapter` wraps any ``nn.Module`` and says:

- **trainable parameters**: those with ``requires_grad`` outside the frozen submodules (optionally filtered by
  a predicate on their names); the methods' gradients, cosines and Hessian-vector products run over exactly
  these;
- **frozen submodules** (by qualified name): in eval mode and without gradients for the whole run (their
  ``requires_grad`` flags are switched off during the run and restored afterwards);
- **mode policies of the trainable part**, applied while the losses are computed: BatchNorm ``train`` (batch
  statistics, running statistics updated), ``eval`` (running statistics) or ``batch`` (batch statistics,
  running statistics untouched); dropout ``train`` (active) or ``eval`` (off). Other modules are in train mode.

The train/eval flag of every submodule is restored when the run ends (:func:`preserved_modes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from genunlearn.errors import ConfigError

BN_MODES = ("train", "eval", "batch")
DROPOUT_MODES = ("train", "eval")
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


@contextmanager
def preserved_modes(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval flag on exit (``model.train(was)`` would flatten mixed modes)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, was in modes:
            m.training = was


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block, every submodule's flag restored afterwards."""
    with preserved_modes(model):
        model.eval()
        yield model


class ModelAdapter:
    """Wraps a model for unlearning (see the module docstring).

    Args:
        model: the generator to unlearn.
        frozen: qualified names of submodules that must not change (``"vae"``, ``"text_encoder"``).
        trainable: optional predicate ``(name, parameter) -> bool`` further restricting the trainable set.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
        >>> [p.shape for p in ModelAdapter(m, frozen=["0"]).trainable_parameters()]
        [torch.Size([1, 3]), torch.Size([1])]
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        frozen: Sequence[str] = (),
        trainable: Callable[[str, nn.Parameter], bool] | None = None,
    ) -> None:
        self.model = model
        self.frozen = tuple(frozen)
        self.trainable = trainable
        self._frozen_modules()  # validates the names

    def _frozen_modules(self) -> list[nn.Module]:
        names = dict(self.model.named_modules())
        missing = [n for n in self.frozen if n not in names]
        if missing:
            raise ConfigError(f"frozen submodules not found in {type(self.model).__name__}: {missing}")
        return [names[n] for n in self.frozen]

    def _frozen_ids(self) -> set[int]:
        return {id(m) for root in self._frozen_modules() for m in root.modules()}

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters of the frozen submodules."""
        seen: set[int] = set()
        out = []
        for root in self._frozen_modules():
            for p in root.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the methods update, in ``named_parameters`` order."""
        frozen = {id(p) for p in self.frozen_parameters()}
        return [
            p
            for name, p in self.model.named_parameters()
            if p.requires_grad and id(p) not in frozen and (self.trainable is None or self.trainable(name, p))
        ]

    def trainable_modules(self) -> list[nn.Module]:
        """Submodules outside the frozen parts."""
        frozen = self._frozen_ids()
        return [m for m in self.model.modules() if id(m) not in frozen]

    @contextmanager
    def run_scope(self) -> Iterator[None]:
        """For a whole run: frozen parameters without gradients, every module's mode restored afterwards."""
        frozen = [(p, p.requires_grad) for p in self.frozen_parameters()]
        with preserved_modes(self.model):
            for p, _ in frozen:
                p.requires_grad_(False)
            try:
                yield
            finally:
                for p, was in frozen:
                    p.requires_grad_(was)

    @contextmanager
    def step_modes(self, bn_mode: str = "train", dropout: str = "train") -> Iterator[None]:
        """The modes the losses are computed in (frozen parts in eval; policies on the trainable part)."""
        if bn_mode not in BN_MODES:
            raise ConfigError(f"bn mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
        if dropout not in DROPOUT_MODES:
            raise ConfigError(f"dropout mode must be one of {', '.join(DROPOUT_MODES)}, got {dropout!r}")
        switched = []
        frozen = self._frozen_ids()
        for m in self.model.modules():
            if id(m) in frozen:
                m.training = False
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.training = bn_mode != "eval"
                if bn_mode == "batch" and m.track_running_stats:
                    m.track_running_stats = False  # batch statistics, running statistics (and counter) untouched
                    switched.append(m)
            elif isinstance(m, _DROPOUT):
                m.training = dropout == "train"
            else:
                m.training = True
        try:
            yield
        finally:
            for m in switched:
                m.track_running_stats = True


def as_adapter(model: nn.Module | ModelAdapter) -> ModelAdapter:
    """``model`` itself if it is an adapter, else an adapter training every parameter with ``requires_grad``."""
    return model if isinstance(model, ModelAdapter) else ModelAdapter(model)

"""The method interface and registry.

A method turns the losses of one step into one update direction. It receives a :class:`StepContext`
(trainable parameters, closures that compute the retain loss, the forget loss and, for classifier-
assisted methods, the classifier term; the step index; the hyperparameters) and returns the gradient
to *descend* along (the loop hands it to the optimizer). Ascent methods return the negated forget
gradient. Methods never know which model or data they work on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from genunlearn.errors import ConfigError
from genunlearn.methods.gradients import Grads, grad

LossFn = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class MethodParams:
    """Hyperparameters of the methods (keyword-only everywhere: the reference code once swapped two).

    Attributes:
        beta_o: weight of the orthogonality term (paper eq. 3).
        beta_h: weight of the classifier ("hat") term (paper eq. 9).
        orthogonality: ``"cos"`` (squared cosine, paper eq. 3) or ``"dot"`` (squared dot product,
            the linear-model analysis of appendix I, eq. 17).
        ascent_weight: ``s-asc`` only: norm of the forget-ascent part relative to the retain part.
        forget_cap: ``s-asc`` only: ascent stops once the forget loss exceeds this multiple of its
            value at the first step.
        beta_r: weight of the latent replacement term (``rep`` methods).
        fd_eps: ``uno-fd`` only: relative finite-difference step (default ~ sqrt of float32 epsilon).
    """

    beta_o: float = 1e3
    beta_h: float = 1e3
    orthogonality: str = "cos"
    ascent_weight: float = 1.0
    forget_cap: float = 1.5
    beta_r: float = 10.0
    fd_eps: float = 3e-4


@dataclass
class StepContext:
    """Everything a method may use in one step.

    Attributes:
        params: trainable parameters (the update is a list shaped like them).
        retain_loss: closure computing the retain loss on this step's retain batch (``L_r``).
        forget_loss: closure computing the forget loss on this step's forget batch (``L_f``).
        hat_loss: closure computing the classifier term ``d_KL`` (without ``beta_h``), or ``None``.
        replace_loss: closure computing the latent replacement term ``L_rep`` (without ``beta_r``), or ``None``.
        step: index of this update, starting at 0.
        hp: hyperparameters.
        buffers: the model's buffers (BatchNorm running statistics ...). A method that evaluates a loss more
            than once per batch (``uno-fd``) restores them, so that every method moves them alike.
    """

    params: list[torch.Tensor]
    retain_loss: LossFn
    forget_loss: LossFn
    hat_loss: LossFn | None = None
    replace_loss: LossFn | None = None
    step: int = 0
    hp: MethodParams = field(default_factory=MethodParams)
    buffers: list[torch.Tensor] = field(default_factory=list)


@dataclass
class StepOutput:
    """The direction to descend along, scalars to log, and deferred diagnostics.

    Attributes:
        direction: the update direction (shaped like the parameters), to be descended along.
        logs: cheap scalars (``loss_r``, ``loss_f``, ``d_kl`` ...) as floats or 0-d tensors; the loop turns
            them into floats after the timed region, so logging costs no host synchronisation while timed.
        diagnostics: optional closure returning further scalars (gradient norms, ``cos2``); the loop calls
            it after the timed region, and only when diagnostics are on.
    """

    direction: Grads
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)
    diagnostics: Callable[[], dict[str, float]] | None = None


class Method(ABC):
    """One unlearning algorithm. Subclasses set ``name`` and ``summary`` and implement :meth:`compute`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    uses_classifier: ClassVar[bool] = False
    uses_replacement: ClassVar[bool] = False
    uses_retain: ClassVar[bool] = True

    @abstractmethod
    def compute(self, ctx: StepContext) -> StepOutput:
        """Return the update direction for this step (to be descended along)."""

    def needs_double_backward(self, ctx: StepContext) -> bool:
        """Whether this step differentiates through gradients (then the loop selects attention kernels that
        support it: PyTorch's fused CPU attention kernel has no second derivative)."""
        return False

    # --- state between steps (resumable runs) ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The method's state between steps, for checkpoints (e.g. ``s-asc``'s first forget loss).

        Default: every instance attribute that is ``None``, a bool, number, string or tensor, and the state of
        every attribute that is itself a :class:`Method` (alternating methods). A method keeping other state
        overrides this and :meth:`load_state_dict`.
        """
        out: dict[str, Any] = {}
        for key, value in vars(self).items():
            if isinstance(value, Method):
                out[key] = {"__method__": value.state_dict()}
            elif value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
                out[key] = value
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for key, value in state.items():
            current = getattr(self, key, None)
            if isinstance(current, Method) and isinstance(value, dict) and "__method__" in value:
                current.load_state_dict(value["__method__"])
            else:
                setattr(self, key, value)

    # --- helpers shared by the subclasses -------------------------------------------------------
    @staticmethod
    def hat_grad(ctx: StepContext, *, create_graph: bool = False) -> tuple[Grads | None, float | None]:
        """``beta_h * grad d_KL`` (and d_KL) if the method is classifier-assisted, else ``(None, None)``."""
        if ctx.hat_loss is None:
            raise ConfigError("this method needs a classifier term (hat_loss) but none was given")
        d = ctx.hat_loss()
        g = grad(d, ctx.params, create_graph=create_graph)
        return [ctx.hp.beta_h * x for x in g], float(d.detach())


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"method name {cls.name!r} missing or already registered")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> Method:
    """Instantiate a registered method by name, with a one-line error listing the names."""
    try:
        return METHODS[name]()
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; registered: {', '.join(METHODS)}") from None

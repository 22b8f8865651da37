"""Unlearning methods: one registered class per algorithm, and the gradient helpers they share."""

from genunlearn.methods import algorithms as _algorithms  # noqa: F401  (registers the methods)
from genunlearn.methods import peers as _peers  # noqa: F401  (registers the peer methods)
from genunlearn.methods.base import (
    METHODS,
    TERMS,
    Method,
    MethodParams,
    PrepareContext,
    StepContext,
    StepOutput,
    get_method,
    missing_term_message,
    register,
)

__all__ = [
    "METHODS",
    "TERMS",
    "Method",
    "MethodParams",
    "PrepareContext",
    "StepContext",
    "StepOutput",
    "get_method",
    "missing_term_message",
    "register",
]

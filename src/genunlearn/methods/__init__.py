"""Unlearning methods: one registered class per algorithm, and the gradient helpers they share."""

from genunlearn.methods import algorithms as _algorithms  # noqa: F401  (registers the methods)
from genunlearn.methods.base import (
    METHODS,
    Method,
    MethodParams,
    StepContext,
    StepOutput,
    get_method,
    register,
)

__all__ = ["METHODS", "Method", "MethodParams", "StepContext", "StepOutput", "get_method", "register"]

"""Optimizers by name: jdl's own first, then any of Optax's."""

from __future__ import annotations

import inspect
from typing import Callable

import optax

from jdl.validation import check_positive_float

# name -> factory(learning_rate, **kwargs) -> GradientTransformation
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {}


def register_optimizer(name: str, factory: Callable[..., optax.GradientTransformation]) -> None:
    """Make ``factory(learning_rate, **kwargs)`` available as ``name`` (CLI ``--optimizer``)."""
    OPTIMIZERS[name] = factory


# Optax functions that take a learning rate but are transforms meant for chaining.
_NOT_OPTIMIZERS = {"scale_by_learning_rate", "scale_by_rprop"}


def _optax_names() -> list[str]:
    names = []
    for name, obj in vars(optax).items():
        if name.startswith("_") or name in _NOT_OPTIMIZERS or not inspect.isfunction(obj):
            continue
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        if "learning_rate" in params:
            names.append(name)
    return sorted(names)


def available_optimizers() -> list[str]:
    """jdl's registered names plus every Optax optimizer taking ``learning_rate``."""
    return sorted(set(OPTIMIZERS) | set(_optax_names()))


def get_optimizer(name: str, learning_rate: float, **kwargs) -> optax.GradientTransformation:
    """``get_optimizer("adam", 1e-3)``: a jdl optimizer if one is registered, else Optax's."""
    learning_rate = check_positive_float(learning_rate, "learning_rate", hint="e.g. --lr 1e-3")
    if name in OPTIMIZERS:
        return OPTIMIZERS[name](learning_rate, **kwargs)
    if name in _optax_names():
        return getattr(optax, name)(learning_rate=learning_rate, **kwargs)
    raise ValueError(
        f"unknown optimizer {name!r}; choose one of jdl's {sorted(OPTIMIZERS)} or an Optax "
        f"optimizer such as adam, sgd, adamw, rmsprop (all: {', '.join(available_optimizers())})"
    )

"""Checks the models run on their configuration and their inputs, so that a bad width or a
wrongly shaped batch is one ``ValueError`` naming it (and the way out), raised in Python
before anything is traced, rather than a ``ZeroDivisionError`` from an initialiser or a
``dot_general`` shape error from inside XLA."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

import jax
import numpy as np

from jdl.validation import check_count as count  # noqa: F401 (re-exported: an int >= minimum, else ValueError naming it)


def widths(value, name: str, *, allow_empty: bool = True) -> tuple[int, ...]:
    """Layer widths as a tuple of positive ints; a single integer is one width."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a sequence of positive widths, e.g. (64, 64), got {value!r}")
    out = tuple(value)
    if any(isinstance(w, (bool, np.bool_)) or not isinstance(w, numbers.Integral) or w < 1 for w in out):
        raise ValueError(f"{name} must be positive integer widths, got {out!r}")
    if not out and not allow_empty:
        raise ValueError(f"{name} must list at least one width, got {out!r}")
    return tuple(int(w) for w in out)


def momentum(value, name: str = "batch_norm_momentum") -> float:
    """A BatchNorm decay ``m`` in [0, 1] (``μ ← m μ + (1 − m) μ_B``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name} must be in [0, 1] (the running averages' decay, μ ← m μ + (1 − m) μ_B), got {value!r}"
        )
    return float(value)


def rate(value, name: str) -> float:
    """A drop rate in [0, 1)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (the probability of dropping a unit), got {value!r}")
    return float(value)


def flat_features(model: str, x: jax.Array, expected: int) -> None:
    """``x`` is a batch ``(N, ...)`` whose examples flatten to ``expected`` features
    (``(N,)`` counts as ``N`` examples of one feature)."""
    got = math.prod(x.shape[1:]) if x.ndim >= 1 else 0
    if got == expected and x.ndim >= 1:
        return
    if x.ndim == 1 and expected == 1:
        return
    hint = "; it lacks the batch axis: pass x[None]" if x.ndim >= 1 and math.prod(x.shape) == expected else ""
    raise ValueError(
        f"{model} was built for examples of {expected} features, got a batch of shape {x.shape} "
        f"({got} per example){hint}"
    )


def channels(model: str, x: jax.Array, expected: int, spatial_dims: int) -> None:
    """``x`` is ``(N, *spatial, C)`` with ``spatial_dims`` spatial axes and ``C = expected``."""
    layout = "(N, H, W, C)" if spatial_dims == 2 else "(N, T, C)"
    if x.ndim != spatial_dims + 2:
        raise ValueError(f"{model} takes inputs {layout}, got shape {x.shape}")
    if x.shape[-1] != expected:
        raise ValueError(
            f"{model} was built for {expected} input channel(s) (the last axis of {layout}), got shape {x.shape}"
        )

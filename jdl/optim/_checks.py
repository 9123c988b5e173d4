"""Checks of optimizer hyperparameters when a transformation is built.

Values traced by ``optax.inject_hyperparams`` (under ``jax.jit`` or
``jax.vmap``) and schedules pass unchecked; everything else is checked once,
before any step, so a bad value fails with its name rather than as NaN later.
"""

from __future__ import annotations

import jax
import numpy as np


def concrete(value) -> bool:
    """Whether ``value`` is a number (or array) to check now: not ``None``, a
    schedule, or a value traced by ``optax.inject_hyperparams`` under
    ``jax.jit`` or ``jax.vmap``."""
    return value is not None and not callable(value) and not isinstance(value, jax.core.Tracer)


def _as_float64(value) -> np.ndarray | None:
    """``value`` as float64, or ``None`` if it is not a real number. bfloat16
    and the other ``ml_dtypes`` floats (``inject_hyperparams`` casts the
    hyperparameters to the params' dtype) have NumPy kind ``'V'``, not ``'f'``."""
    a = np.asarray(value)
    if a.dtype.kind in "fiu" or jax.numpy.issubdtype(a.dtype, jax.numpy.floating):
        return a.astype(np.float64)
    return None


def check(value, name: str, *, positive: bool = False, below_one: bool = False) -> None:
    """A concrete hyperparameter must be finite and ``>= 0`` (``> 0`` if
    ``positive``; ``< 1`` too if ``below_one``), else ``ValueError``, when
    the optimizer is built; anything else passes (:func:`concrete`)."""
    if not concrete(value):
        return
    a = _as_float64(value)
    ok = a is not None and bool(np.all(np.isfinite(a)))
    ok = ok and bool(np.all(a > 0 if positive else a >= 0)) and (not below_one or bool(np.all(a < 1)))
    dtype = np.asarray(value).dtype
    if not ok and below_one and a is not None and dtype.itemsize == 2 and bool(np.all(a == 1)):
        raise ValueError(
            f"{name} is 1 in {dtype}: optax.inject_hyperparams casts hyperparameters to the params' dtype, "
            f"where a decay such as 0.999 rounds to 1 (a bias correction 1 − {name}ᵗ of 0, or no decay at "
            f"all); keep it out of the cast with optax.inject_hyperparams(..., static_args=({name!r},)), "
            "or keep the parameters in float32")
    if not ok:
        need = ("in [0, 1)" if below_one else "a positive finite number" if positive
                else "a finite number >= 0")
        raise ValueError(f"{name} must be {need}, got {value!r}")


def check_required(value, name: str, **kwargs) -> None:
    """:func:`check`, and ``None`` is refused too (where Optax reads it as "no
    scaling": ``scale_by_learning_rate(None)`` steps *up* the loss)."""
    if value is None:
        raise ValueError(f"{name} is required, got None" + (
            " (Optax reads None as no scaling, so the update would be +g: a step up the loss)"
            if name == "learning_rate" else ""))
    check(value, name, **kwargs)


def check_eps(eps, *, other=None, other_name: str = "") -> None:
    """``ε > 0``, or ``ε >= 0`` where ``other`` (``ε_root``, an initial
    accumulator) is positive and keeps the denominator away from 0."""
    check(eps, "eps")
    check(other, other_name)
    rescued = other is not None and (not concrete(other) or bool(np.all(np.asarray(other) > 0)))
    if concrete(eps) and bool(np.any(np.asarray(eps) == 0)) and not rescued:
        raise ValueError(f"eps must be positive{f' (or {other_name} > 0)' if other_name else ''}: "
                         "with 0 the update is 0/0 = NaN wherever the gradient is 0")

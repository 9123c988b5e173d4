r"""Gradient clipping, weight decay and L1/L2 penalties with per-layer coefficients.

All are ``optax.GradientTransformation``s to chain with an optimizer; where in
the chain they go decides what they mean:

>>> import optax, jdl.optim as jo
>>> opt = optax.chain(
...     jo.clip_by_global_norm(1.0),          # clip the raw gradient first
...     jo.add_l2_penalty(1e-4),              # L2 in the loss: the optimizer sees g + αw
...     jo.adam(1e-3),
...     jo.weight_decay(1e-5))                # decoupled decay: w ← w − λw after the step

Per-layer coefficients (seed 003, ch. 7: "a different penalty coefficient in
each layer, but the same weight decay") are given as a number (every
parameter), a pytree shaped like the parameters, or a function
``coefficient(path, param) -> float`` of the parameter's path, a ``/``-joined
string such as ``"layers/0/kernel/value"`` for an NNX model (NNX parameters
end in ``/value``) or ``"Dense_0/kernel"`` for Linen — e.g.
``lambda path, p: 1e-4 if "kernel" in path else 0.0`` to leave biases alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jdl.optim._checks import check as _check

__all__ = [
    "Coefficients",
    "add_l1_penalty",
    "add_l2_penalty",
    "clip_by_global_norm",
    "clip_by_value",
    "coefficient_tree",
    "penalty",
    "weight_decay",
]

Coefficients = float | Any | Callable[[str, jax.Array], float]

def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    r"""Rescale the gradient to global norm at most ``c``: ``g ← g · min(1, c / ‖g‖₂)``,
    with ``‖g‖₂`` over all parameters together (Pascanu et al. 2013).

    This is ``optax.clip_by_global_norm``, with ``c`` checked to be a positive
    finite number (a negative ``c`` reversed the gradient, 0 zeroed it).
    """
    _check(max_norm, "max_norm", positive=True)
    return optax.clip_by_global_norm(max_norm)


def clip_by_value(max_value: float) -> optax.GradientTransformation:
    r"""Clip every gradient entry to ``[−c, c]`` (seeds 001, 003, 004: "梯度裁剪").

    .. math:: g_i \leftarrow \min(\max(g_i, -c), c)

    This is ``optax.clip``. Clipping by value changes the gradient's direction;
    :func:`clip_by_global_norm` (``g ← g · min(1, c / ‖g‖₂)`` over all
    parameters together, Pascanu et al. 2013) keeps it, and is the usual
    choice against exploding gradients in recurrent networks.
    """
    _check(max_value, "max_value", positive=True)
    return optax.clip(max_value)


def _path_name(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def coefficient_tree(coefficients: Coefficients, params) -> Any:
    """Per-parameter coefficients as a pytree shaped like ``params``.

    Args:
      coefficients: a number, a pytree with the structure of ``params``, or
        ``fn(path, param) -> float``.
      params: the parameters.
    """
    if callable(coefficients):
        def coefficient(path, x):
            c = coefficients(_path_name(path), x)
            _check(c, f"the coefficient for {_path_name(path)!r}")
            return c
        return jax.tree_util.tree_map_with_path(coefficient, params)
    if isinstance(coefficients, (int, float)) or getattr(coefficients, "ndim", None) == 0:
        _check(coefficients, "the coefficient")
        return jax.tree.map(lambda _: coefficients, params)
    expected = jax.tree.structure(params)
    got = jax.tree.structure(coefficients)
    if got != expected:
        raise ValueError(
            "per-layer coefficients must have the structure of the parameters; got "
            f"{got} for parameters {expected}. Build them with "
            "jax.tree.map(lambda p: 1e-4, params) and edit, or pass fn(path, param) -> float"
        )
    for path, c in jax.tree_util.tree_flatten_with_path(coefficients)[0]:
        _check(c, f"the coefficient for {_path_name(path)!r}")
    return coefficients


def _check_coefficients(coefficients: Coefficients) -> None:
    """Numbers and pytrees of numbers are checked when a transform is built
    (finite, ``≥ 0``: a negative one grows the weights); a function's values
    when the transform first runs."""
    if callable(coefficients):
        return
    for c in jax.tree.leaves(coefficients):
        _check(c, "coefficients")


class PenaltyState(NamedTuple):
    """State of the penalties and decay: nothing (``optax.EmptyState`` semantics)."""


def _add_penalty_gradient(coefficients, gradient_of_norm, name):
    _check_coefficients(coefficients)

    def init_fn(params):
        del params
        return PenaltyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(f"{name} needs the parameters: call update(grads, state, params)")
        coeffs = coefficient_tree(coefficients, params)
        updates = jax.tree.map(
            lambda g, c, w: g + jnp.asarray(c, g.dtype) * gradient_of_norm(w).astype(g.dtype),
            updates, coeffs, params,
        )
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def add_l2_penalty(coefficients: Coefficients) -> optax.GradientTransformation:
    r"""Add the gradient of the L2 penalty ``½ Σ_l α_l ‖w_l‖²``: ``g ← g + α_l w`` (seed 001, "L2正则").

    Chained before plain SGD it gives the seed's
    :math:`w \leftarrow (1 - εα) w - ε ∇J(w)`; before an adaptive optimizer
    the penalty's gradient is rescaled with the rest (L2 regularisation, not
    weight decay — see :func:`weight_decay`).

    Args:
      coefficients: ``α`` — a number, a pytree like the parameters, or
        ``fn(path, param) -> float`` (module docstring).
    """
    return _add_penalty_gradient(coefficients, lambda w: w, "add_l2_penalty")


def add_l1_penalty(coefficients: Coefficients) -> optax.GradientTransformation:
    r"""Add the (sub)gradient of the L1 penalty ``Σ_l α_l ‖w_l‖₁``: ``g ← g + α_l sign(w)`` (seed 001, "L1正则").

    The seed writes :math:`∇\tilde J(w) = ∝ \operatorname{sign}(w) + ∇J(w)`;
    the ``∝`` is a typo for the coefficient ``α``. At ``w = 0`` the
    subgradient ``0`` is used (``sign(0) = 0``, the minimum-norm element of
    ``[−α, α]``); ``jax.grad`` of ``jnp.abs`` would give ``α`` there instead.

    Args:
      coefficients: ``α`` — a number, a pytree like the parameters, or
        ``fn(path, param) -> float``.
    """
    return _add_penalty_gradient(coefficients, jnp.sign, "add_l1_penalty")


def penalty(params, *, l1: Coefficients = 0.0, l2: Coefficients = 0.0) -> jax.Array:
    r"""The penalty value ``Σ_l α¹_l ‖w_l‖₁ + ½ Σ_l α²_l ‖w_l‖²``, to add to a loss or log.

    ``jax.grad(penalty)`` is what :func:`add_l1_penalty` and
    :func:`add_l2_penalty` add to the gradient (except at ``w = 0`` for L1,
    where the transform uses the subgradient 0).
    """
    c1 = coefficient_tree(l1, params)
    c2 = coefficient_tree(l2, params)
    terms = jax.tree.map(
        lambda w, a, b: a * jnp.sum(jnp.abs(w)) + 0.5 * b * jnp.sum(w * w), params, c1, c2
    )
    leaves = jax.tree.leaves(params)
    zero = jnp.zeros((), jnp.result_type(*leaves) if leaves else jnp.float32)  # no parameters: no penalty
    return sum(jax.tree.leaves(terms), zero)


class WeightDecayState(NamedTuple):
    """State of :func:`weight_decay`.

    Attributes:
      count: steps taken (for a scheduled rate).
    """

    count: jax.Array


def weight_decay(rate: float | optax.Schedule, *, coefficients: Coefficients = 1.0) -> optax.GradientTransformation:
    r"""Decoupled weight decay, chained *after* an optimizer: ``u ← u − λ_t c_l w``.

    The parameters shrink by the factor ``1 − λ_t c_l`` each step on top of the
    optimizer's own update (Loshchilov & Hutter's AdamW when the optimizer is
    Adam, with ``λ_t = η_t λ``). Chained after plain SGD with ``λ = ηα`` it is
    the seed's L2 rule :math:`w \leftarrow (1-εα)w - ε∇J(w)` exactly; after an
    adaptive optimizer it differs from :func:`add_l2_penalty`, whose gradient the
    optimizer would rescale.

    Args:
      rate: ``λ_t`` — the fraction of each weight removed per step, in
        ``[0, 1)``; a constant or a schedule (e.g. the learning-rate schedule
        times a constant).
      coefficients: per-layer multipliers ``c_l`` (a number, a pytree, or
        ``fn(path, param) -> float``); ``0`` exempts a parameter.

    References:
      Loshchilov & Hutter, *Decoupled weight decay regularization*, ICLR 2019.
    """
    _check(rate, "rate", below_one=True)  # a negative rate grows the weights; ≥ 1 flips their sign
    _check_coefficients(coefficients)

    def init_fn(params):
        del params
        return WeightDecayState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("weight_decay needs the parameters: call update(grads, state, params)")
        lam = rate(state.count) if callable(rate) else rate
        coeffs = coefficient_tree(coefficients, params)
        updates = jax.tree.map(
            lambda u, c, w: u - (jnp.asarray(lam, u.dtype) * jnp.asarray(c, u.dtype)) * w.astype(u.dtype),
            updates, coeffs, params,
        )
        return updates, WeightDecayState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)

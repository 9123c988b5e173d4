"""Stochastic trace estimation: Hutchinson, Hutch++, and the Frobenius norm.

For a random vector ``g`` with ``E[g gᵀ] = I`` (Rademacher ±1 or standard
normal entries), ``E[gᵀ A g] = tr A``. Averaging ``m`` such quadratic forms is
Hutchinson's estimator; its standard error falls as ``1/√m`` and is computed
from the sample spread.

Hutch++ (Meyer, Musco, Musco, Woodruff 2021) spends a third of the products on
a sketch ``Q = orth(A S)`` of the dominant range, takes the trace on it exactly
and Hutchinson only on the deflated remainder:

    tr A = tr(Qᵀ A Q) + tr((I − QQᵀ) A (I − QQᵀ)),

so its error falls as ``1/m`` for matrices with decaying spectra (Hessians),
against ``1/√m``. Both are unbiased. Every product runs in one vmapped batch.

References:
  M. F. Hutchinson, "A stochastic estimator of the trace of the influence
  matrix for Laplacian smoothing splines", Commun. Stat. Simul. Comput. 18, 1989.
  R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal stochastic
  trace estimation", SOSA 2021.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jdl.hessian._flat import (
    as_key,
    check_count,
    check_eigensolver_dtype,
    check_product_size,
    check_product_structure,
    flatten,
)

PyTree = Any
Distribution = Literal["rademacher", "normal"]

__all__ = ["TraceEstimate", "frobenius_norm", "hutch_plus_plus", "hutchinson"]


class TraceEstimate(NamedTuple):
    """A stochastic estimate with its uncertainty.

    Attributes:
      estimate: the estimated value.
      standard_error: its standard error, from the spread of the random part
        (``std / √(number of samples)``).
      num_matvecs: operator products spent.
    """

    estimate: jax.Array
    standard_error: jax.Array
    num_matvecs: int


def _check_distribution(distribution) -> str:
    if distribution not in ("rademacher", "normal"):
        raise ValueError(f"unknown distribution {distribution!r}; use 'rademacher' or 'normal'")
    return distribution


def _samples(key, shape, dtype, distribution: str) -> jax.Array:
    if distribution == "rademacher":
        return jax.random.rademacher(key, shape, dtype)
    if distribution == "normal":
        return jax.random.normal(key, shape, dtype)
    raise ValueError(f"unknown distribution {distribution!r}; use 'rademacher' or 'normal'")


def _batched(matvec: Callable, unflatten: Callable, params: tuple) -> Callable:
    """``X (r, n) ↦ (A xᵢ)ᵢ (r, n)``, the products vmapped. A product of
    another size, structure or leaf shape than its input raises ``ValueError``
    (shapes are static, so at trace time): one of the right size only was
    flattened into a wrong order, a trace of a permuted matrix, silently."""

    def one(x):
        tree = unflatten(x)
        product = matvec(tree, *params)
        out, _ = ravel_pytree(product)
        check_product_size(out, x)
        check_product_structure(product, tree)
        return out.astype(x.dtype)

    return jax.vmap(one)


def _quadratic_forms(x: jax.Array, y: jax.Array) -> jax.Array:
    """``xᵢ · yᵢ`` row by row, summed in at least float32: a float16 or
    bfloat16 sum of ``n`` terms overflows (float16 above 65 504) or loses
    all but a few digits."""
    acc = jnp.promote_types(x.dtype, jnp.float32)
    return jnp.sum(x.astype(acc) * y.astype(acc), axis=1)


def _standard_error(samples: jax.Array) -> jax.Array:
    """``std(samples)/√m``; NaN for a single sample (no spread to measure)."""
    m = samples.shape[0]
    if m < 2:
        return jnp.full((), jnp.nan, samples.dtype)
    return jnp.std(samples, ddof=1) / jnp.sqrt(jnp.asarray(m, samples.dtype))


def hutchinson(num_matvecs: int = 100, *, distribution: Distribution = "rademacher") -> Callable:
    """Configure Hutchinson's estimator: ``trace(matvec, like, *params, key) -> TraceEstimate``.

        tr A ≈ (1/m) Σᵢ gᵢᵀ A gᵢ,    standard error = std(gᵢᵀ A gᵢ) / √m.

    Args:
      num_matvecs: number of probes ``m`` (one product each); with ``m = 1``
        the standard error is NaN (one sample has no spread).
      distribution: ``"rademacher"`` (lowest variance for a fixed matrix:
        ``2 Σ_{i≠j} A_ij²``) or ``"normal"`` (``2 ‖A‖_F²``).

    Both are checked here, when the estimator is configured. Half-precision
    operators (float16, bfloat16) run their products in their own dtype; the
    quadratic forms are summed, and the result given, in float32.
    """
    num_matvecs = check_count(num_matvecs, "num_matvecs")
    _check_distribution(distribution)

    def trace(matvec: Callable, like: PyTree, *params, key) -> TraceEstimate:
        flat, unflatten = flatten(like)
        g = _samples(as_key(key), (num_matvecs, flat.shape[0]), flat.dtype, distribution)
        ag = _batched(matvec, unflatten, params)(g)
        samples = _quadratic_forms(g, ag)
        return TraceEstimate(jnp.mean(samples), _standard_error(samples), num_matvecs)

    return trace


def hutch_plus_plus(num_matvecs: int = 100, *, distribution: Distribution = "rademacher") -> Callable:
    """Configure Hutch++: ``trace(matvec, like, *params, key) -> TraceEstimate``.

    With ``s = ⌊m/3⌋`` sketch vectors ``S``, ``Q = orth(A S)`` (``s`` products),
    ``tr(Qᵀ A Q)`` (``s`` products) and Hutchinson on ``(I − QQᵀ) A (I − QQᵀ)``
    with the remaining ``m − 2s`` probes:

        tr A ≈ tr(Qᵀ A Q) + (1/r) Σᵢ gᵢᵀ (I − QQᵀ) A (I − QQᵀ) gᵢ.

    The standard error is that of the Hutchinson part (the sketch part is exact
    given ``Q``); the estimator is unbiased. When ``s`` exceeds the dimension
    ``n``, ``Q`` has only ``n`` columns, so ``tr(Qᵀ A Q)`` costs ``n`` products
    and the result's ``num_matvecs`` is ``s + min(s, n) + (m − 2s)``, the
    products spent, not ``m``.

    The QR factorisation needs float32 or float64 numbers (``TypeError`` for
    half precision).

    Args:
      num_matvecs: total products ``m`` (at least 3), checked here. With
        ``m = 3`` one probe is left for the Hutchinson part (``m − 2⌊m/3⌋``)
        and the standard error is NaN; from ``m = 4`` on there are at least 2.
      distribution: probe entries, ``"rademacher"`` or ``"normal"``, checked here.
    """
    num_matvecs = check_count(num_matvecs, "num_matvecs", 3)
    _check_distribution(distribution)
    sketch = num_matvecs // 3
    rest = num_matvecs - 2 * sketch

    def trace(matvec: Callable, like: PyTree, *params, key) -> TraceEstimate:
        flat, unflatten = flatten(like)
        check_eigensolver_dtype(flat.dtype, "hutch_plus_plus")
        n = flat.shape[0]
        mv = _batched(matvec, unflatten, params)
        k1, k2 = jax.random.split(as_key(key))
        s = _samples(k1, (sketch, n), flat.dtype, distribution)
        q, _ = jnp.linalg.qr(mv(s).T)              # (n, sketch), orthonormal columns
        q = q.T                                    # rows
        exact = jnp.sum(q * mv(q))
        g = _samples(k2, (rest, n), flat.dtype, distribution)
        g = g - (g @ q.T) @ q                      # (I − QQᵀ) g
        samples = jnp.sum(g * mv(g), axis=1)       # gᵀ (I−QQᵀ) A (I−QQᵀ) g
        spent = sketch + min(sketch, n) + rest      # Q has min(sketch, n) columns
        return TraceEstimate(exact + jnp.mean(samples), _standard_error(samples), spent)

    return trace


def frobenius_norm(num_matvecs: int = 100, *, distribution: Distribution = "rademacher") -> Callable:
    """Configure ``norm(matvec, like, *params, key) -> TraceEstimate`` of ``‖A‖_F``.

    ``‖A‖_F² = tr(Aᵀ A) = E‖A g‖²``, so ``‖A‖_F ≈ √((1/m) Σ ‖A gᵢ‖²)``; the
    standard error is carried through the square root by the delta method
    (``se(√x) ≈ se(x) / (2√x)``); for a zero estimate every ``‖A gᵢ‖²`` is
    0 and so is the standard error. ``num_matvecs`` and ``distribution`` are
    checked here, when the estimator is configured. Sums run in at least
    float32, as for :func:`hutchinson`.
    """
    num_matvecs = check_count(num_matvecs, "num_matvecs")
    _check_distribution(distribution)

    def norm(matvec: Callable, like: PyTree, *params, key) -> TraceEstimate:
        flat, unflatten = flatten(like)
        g = _samples(as_key(key), (num_matvecs, flat.shape[0]), flat.dtype, distribution)
        ag = _batched(matvec, unflatten, params)(g)
        samples = _quadratic_forms(ag, ag)
        sq = jnp.mean(samples)
        value = jnp.sqrt(sq)
        # A zero estimate means every sample is 0 (they are ≥ 0): no spread.
        error = jnp.where(value > 0, _standard_error(samples) / (2 * jnp.where(value > 0, value, 1)), 0)
        return TraceEstimate(value, error, num_matvecs)

    return norm

"""Private curvature helpers for the second-order optimizers: the flattened
objective, Hessian-vector products, truncated conjugate gradient and Lanczos.

Kept small and local on purpose (``jdl.hessian`` holds the public, general
tools); everything works on flat vectors, which is what a dense solve and a
Krylov basis need anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jdl._linalg import scaled_norm as scaled_norm


def flat_objective(value_fn: Callable, params) -> tuple[jax.Array, Callable, Callable]:
    """``(x, f, unravel)``: the parameters as one vector and ``f(x) = value_fn(unravel(x))``."""
    x, unravel = ravel_pytree(params)
    return x, (lambda v: value_fn(unravel(v))), unravel


def gradient_and_hvp(f: Callable, x: jax.Array) -> tuple[jax.Array, Callable]:
    """``(∇f(x), v ↦ ∇²f(x) v)``: forward-over-reverse, linearised once.

    ``jax.linearize`` of ``∇f`` is ``jax.jvp`` of ``jax.grad`` with the
    forward pass's residuals stored, so each further product costs one
    linear (tangent) pass instead of a full forward and backward pass.
    """
    grad, hvp = jax.linearize(jax.grad(f), x)
    return grad, hvp


class CGResult(NamedTuple):
    """``x ≈ A⁻¹ b`` from :func:`conjugate_gradient`.

    Attributes:
      x: the last iterate.
      iterations: matrix-vector products spent.
      curvature: ``pᵀAp / pᵀp`` along the last search direction; negative
        (or zero) when CG stopped because ``A`` is not positive definite there.
      residual_norm: ``‖b − A x‖``.
    """

    x: jax.Array
    iterations: jax.Array
    curvature: jax.Array
    residual_norm: jax.Array


def conjugate_gradient(matvec: Callable, b: jax.Array, *, max_iters: int, tol: float) -> CGResult:
    """Conjugate gradient for ``A x = b`` from ``x₀ = 0``, stopping early on
    ``‖r‖ ≤ max(tol, ε) ‖b‖`` or at the first direction of non-positive
    curvature (where ``A`` is not positive definite; the iterate before it is
    returned).

    CG runs on ``b / ‖b‖`` and scales the result back (it is linear in ``b``):
    for a tiny ``b`` the products ``pᵀp`` and ``pᵀAp`` underflowed to 0 in
    float32, which read as zero curvature. Below ``ε ‖b‖`` a residual is
    rounding: iterating on it read as zero curvature too.

    References:
      Hestenes & Stiefel, 1952; Nocedal & Wright, *Numerical Optimization*,
      2nd ed., Algorithm 5.2.
    """
    dtype = b.dtype
    b_norm, b = scaled_norm(b)
    threshold = jnp.maximum(tol, jnp.finfo(dtype).eps)

    def cond(carry):
        _, r, _, _, k, curvature = carry
        return (k < max_iters) & (jnp.linalg.norm(r) > threshold) & (curvature > 0)

    def body(carry):
        x, r, p, rr, k, _ = carry
        ap = matvec(p)
        pap = jnp.vdot(p, ap)
        curvature = pap / jnp.maximum(jnp.vdot(p, p), jnp.finfo(dtype).tiny)
        positive = curvature > 0
        alpha = jnp.where(positive, rr / jnp.where(positive, pap, 1), 0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = jnp.vdot(r, r)
        p = r + (rr_new / jnp.maximum(rr, jnp.finfo(dtype).tiny)) * p
        return x, r, p, rr_new, k + 1, curvature

    init = (jnp.zeros_like(b), b, b, jnp.vdot(b, b), jnp.asarray(0, jnp.int32), jnp.asarray(1, dtype))
    x, r, _, _, k, curvature = jax.lax.while_loop(cond, body, init)
    return CGResult(x=b_norm * x, iterations=k, curvature=curvature, residual_norm=b_norm * jnp.linalg.norm(r))


class LanczosResult(NamedTuple):
    """A Krylov basis ``Q`` (rows orthonormal) and ``T = Q A Qᵀ`` tridiagonal.

    Attributes:
      basis: ``(k, n)``; rows after a breakdown are zero.
      tridiagonal: ``(k, k)``.
      rank: how many rows of ``basis`` are nonzero (``k`` unless the Krylov
        space was exhausted earlier).
    """

    basis: jax.Array
    tridiagonal: jax.Array
    rank: jax.Array


def lanczos(matvec: Callable, v0: jax.Array, *, num_steps: int) -> LanczosResult:
    """``num_steps`` Lanczos steps from ``v0`` with full reorthogonalisation.

    Reorthogonalisation is the matrix product ``w − Qᵀ(Q w)`` (twice, which
    is enough in floating point: Giraud et al. 2005). When the Krylov space is
    exhausted (``β ≈ 0``) the remaining rows of ``Q`` stay zero and so do
    their entries in ``T``: ``T`` is then block diagonal with a zero block,
    which adds nothing to any function of ``T`` applied to ``e₁``.

    References:
      Lanczos, 1950; Golub & Van Loan, *Matrix Computations*, 4th ed., §10.1.
    """
    n = v0.shape[0]
    dtype = v0.dtype
    _, q0 = scaled_norm(v0)
    basis = jnp.zeros((num_steps, n), dtype).at[0].set(q0)
    eps = jnp.finfo(dtype).eps

    def step(j, carry):
        basis, alphas, betas = carry
        q = basis[j]
        w = matvec(q)
        # What is left after reorthogonalisation is measured against ‖A q‖, so the
        # test does not depend on the operator's scale (a fixed floor of 1 cut
        # genuine couplings of a Hessian with eigenvalues near 1e-6 in float32).
        scale = jnp.linalg.norm(w)
        alpha = jnp.vdot(q, w)
        w = w - basis.T @ (basis @ w)
        w = w - basis.T @ (basis @ w)
        beta = jnp.linalg.norm(w)
        alive = beta > 10 * eps * scale
        beta = jnp.where(alive, beta, 0)
        q_next = jnp.where(alive, w / jnp.where(alive, beta, 1), 0)
        last = j + 1 >= num_steps
        basis = jnp.where(last, basis, basis.at[jnp.minimum(j + 1, num_steps - 1)].set(q_next))
        return basis, alphas.at[j].set(alpha), betas.at[j].set(jnp.where(last, 0, beta))

    zeros = jnp.zeros((num_steps,), dtype)
    basis, alphas, betas = jax.lax.fori_loop(0, num_steps, step, (basis, zeros, zeros))
    off = betas[:-1]
    tridiagonal = jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
    rank = jnp.sum(jnp.any(basis != 0, axis=1)).astype(jnp.int32)
    return LanczosResult(basis=basis, tridiagonal=tridiagonal, rank=rank)

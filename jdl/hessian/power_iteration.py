"""Power iteration: the reference method for the dominant eigenvalue.

    v ← A v / ‖A v‖,    λ ← vᵀ A v

converges to the eigenvalue of largest *magnitude* at the rate |λ₂/λ₁| per
step — slowly when the top of the spectrum is clustered, which is the common
case for network Hessians. PyHessian (Yao et al. 2020) uses it with deflation
for the top-k and stops when the Rayleigh quotient's relative change falls
below 1e-3; that stopping rule is reproduced here (``tol``) so benchmarks can
compare like with like. Prefer :func:`~jdl.hessian.lanczos`, which reaches far
higher accuracy in fewer products and finds both ends of the spectrum.

Reference:
  Z. Yao, A. Gholami, K. Keutzer, M. Mahoney, "PyHessian: Neural networks
  through the lens of the Hessian", IEEE BigData 2020.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jdl._linalg import scaled_norm
from jdl.hessian._flat import check_count, check_number, flat_matvec, flatten, unflatten_rows

PyTree = Any

__all__ = ["PowerIterationResult", "power_iteration"]


class PowerIterationResult(NamedTuple):
    """Eigenpairs from :func:`power_iteration`.

    Attributes:
      eigenvalues: ``(k,)`` Rayleigh quotients, in the order found (descending magnitude).
      eigenvectors: pytree shaped like ``v0`` with a leading axis ``k``.
      residuals: ``(k,)`` ``‖A v − λ v‖`` of the returned pair, with ``A``
        itself, not the deflated operator (computed from the last product, no
        extra cost: the eigenvector returned is the last iterate whose product
        was taken, and ``λ`` its Rayleigh quotient). A later pair inherits the
        error of the earlier ones: deflation against a ``v₁`` with residual
        ``r₁`` leaves ``A v₂`` a part along ``v₁`` of up to ``‖r₁‖``, which
        more steps do not remove.
      num_matvecs: total operator products, all ``k`` included.
      converged: ``(k,)`` whether the stopping rule was met within ``max_steps``
        *and* the residual is small, ``‖A v − λ v‖ ≤ max(√tol, √ε) · s`` with
        ``s`` the largest ``|λ|`` found so far, this one included (``ε`` of the
        dtype): then ``λ`` lies within that distance of an eigenvalue of ``A``.
        A small change of ``λ`` alone shows no convergence: with eigenvalues
        ``±λ₁`` the iterate swings between their eigenvectors while ``λ``
        stays near 0.
    """

    eigenvalues: jax.Array
    eigenvectors: PyTree
    residuals: jax.Array
    num_matvecs: jax.Array
    converged: jax.Array


def power_iteration(
    *,
    k: int = 1,
    max_steps: int = 100,
    tol: float = 1e-3,
) -> Callable[..., PowerIterationResult]:
    """Configure power iteration with PyHessian's stopping rule.

    Args:
      k: eigenpairs to find, by deflation: each later vector is kept
        orthogonal to the ones already found (as PyHessian does).
      max_steps: the most products per eigenpair.
      tol: stop when ``|λ_t − λ_{t−1}| / (|λ_{t−1}| + 1e-6) < tol`` — PyHessian's
        rule with its default ``1e-3``. This bounds the change per step, not
        the error: with ratio ``r = |λ₂/λ₁|`` close to 1 the iteration stops
        with an error of about ``tol · r / (1 − r)``. When every other
        eigenvalue has the sign of ``λ₁`` the rule implies the residual test
        of ``converged`` (a relative change ``δ`` comes with a relative
        residual of about ``√(δ (1 − r)/(1 + r))``); when ``λ₂`` has the
        other sign, about ``√(δ (1 + r)/(1 − r))``, and with eigenvalues of
        both signs below ``λ₁`` no such bound holds: the run may stop with
        ``converged`` false (a spectrum {10, 8, −7, …} stopped after 10
        products at residual 0.35 against a test of 0.32). May be traced (a
        sweep over tolerances under ``jax.jit`` or ``jax.vmap``).

    A zero product ``A v = 0`` (a zero operator, or nothing left after
    deflation) gives the eigenvalue 0 with ``v`` itself as its eigenvector.

    Returns:
      ``power(matvec, v0, *params) -> PowerIterationResult``, jittable.
    """
    k = check_count(k, "k")
    max_steps = check_count(max_steps, "max_steps")
    check_number(tol, "tol", hint="the relative change of λ that stops the iteration, e.g. 1e-3")

    def power(matvec: Callable, v0: PyTree, *params) -> PowerIterationResult:
        x0, unflatten = flatten(v0)
        n = x0.shape[0]
        if k > n:
            raise ValueError(f"k={k} eigenpairs requested of an operator of dimension {n}")
        mv = flat_matvec(matvec, unflatten, params)
        found = jnp.zeros((k, n), x0.dtype)

        def deflate(x, basis):
            return x - basis.T @ (basis @ x)

        # A start with nothing left after deflation (a zero v0, or one in the
        # span of the vectors found) continues from a fixed random vector.
        fallback = jax.random.normal(jax.random.key(0x1A2C05), x0.shape, x0.dtype)
        # jnp, not float(): tol may be traced.
        residual_tol = jnp.sqrt(jnp.maximum(jnp.asarray(tol, x0.dtype), jnp.finfo(x0.dtype).eps))

        def one(i, carry):
            found, values, residuals, steps, converged = carry
            # Norms scaled by the largest entry (scaled_norm): squares of entries
            # near 1e-20 underflow in float32, and an operator that small read as zero.
            v = deflate(x0, found)
            v = jnp.where(scaled_norm(v)[0] > 0, v, deflate(fallback, found))
            v = scaled_norm(v)[1]

            def cond(s):
                t, _, _, _, _, done = s
                return (t < max_steps) & ~done

            def body(s):
                t, v, _, lam, _, _ = s
                av = mv(v)
                # λ and the residual from A v itself: the deflated product's
                # residual ‖(I − P) A v − λ v‖ hides A v's part along the
                # vectors found, which is what an inexact earlier v leaves.
                new = jnp.vdot(v, av)
                res = scaled_norm(av - new * v)[0]
                done = jnp.abs(new - lam) / (jnp.abs(lam) + 1e-6) < tol
                norm, unit = scaled_norm(deflate(av, found))
                # A v = 0: v is an eigenvector (eigenvalue 0); keep it rather than divide by 0.
                following = jnp.where(norm > 0, unit, v)
                # Keep v, the iterate λ and the residual belong to; its successor
                # has no product yet.
                return t + 1, following, v, new, res, done & (t > 0)

            init = (jnp.zeros((), jnp.int32), v, v, jnp.zeros((), x0.dtype), jnp.zeros((), x0.dtype),
                    jnp.zeros((), bool))
            t, _, v, lam, res, done = jax.lax.while_loop(cond, body, init)
            scale = jnp.maximum(jnp.max(jnp.abs(values)), jnp.abs(lam))
            return (found.at[i].set(v), values.at[i].set(lam), residuals.at[i].set(res),
                    steps + t, converged.at[i].set(done & (res <= residual_tol * scale)))

        carry = (found, jnp.zeros((k,), x0.dtype), jnp.zeros((k,), x0.dtype),
                 jnp.zeros((), jnp.int32), jnp.zeros((k,), bool))
        found, values, residuals, steps, converged = jax.lax.fori_loop(0, k, one, carry)
        return PowerIterationResult(values, unflatten_rows(unflatten, found), residuals, steps, converged)

    return power

r"""Second-order optimizers: Newton's method, damped (Levenberg–Marquardt) Newton
and saddle-free Newton, dense and matrix-free.

Each is an ``optax.GradientTransformationExtraArgs``: ``update(g, state, params,
value_fn=...)`` needs the loss of the current minibatch as a function of the
parameters, which :func:`jdl.training.make_train_step` (and so ``fit``) passes
to every optimizer that takes extra arguments. The incoming updates ``g`` are
the gradient (possibly already clipped by an earlier transform in a chain); the
curvature is that of ``value_fn`` at ``params``.

Two ways to get the curvature (seed 000: "the Hessian's side equals the
parameter count"):

- *dense* (:func:`newton`, :func:`damped_newton`, :func:`saddle_free_newton`):
  flatten the parameters with ``ravel_pytree`` and form ``H = jax.hessian``,
  exact and affordable up to a few thousand parameters (``n²`` memory, an
  ``O(n³)`` factorisation per step);
- *matrix-free* (:func:`damped_newton_cg`, :func:`saddle_free_newton_lanczos`):
  only Hessian-vector products (forward-over-reverse), with conjugate gradient
  or a Lanczos/Krylov subspace of ``k`` products per step.

Seed 000 notes that Newton's method jumps to the nearest critical point —
in high dimension usually a saddle — and needs the Hessian made positive
definite before it can be used on non-convex losses. The damped methods do
that with a shift ``H + τI``; saddle-free Newton instead rescales by ``|H|``,
which turns every direction of negative curvature into one of descent.

Damped methods adapt ``λ`` by the Levenberg–Marquardt rule: with the quadratic
model's predicted decrease ``pred = −(gᵀu + ½ uᵀBu)`` (``B = H``, or ``|H|``
for saddle-free Newton) and the actual decrease ``actual = f(θ) − f(θ + u)``
on the same minibatch, ``ρ = actual / pred``; ``λ ← 3/2 λ`` if ``ρ < 1/4``,
``λ ← 2/3 λ`` if ``ρ > 3/4`` (Martens 2010, §4.1). A step that increases the
loss is rejected (the update is zero) unless ``reject_increase=False``. This
costs one extra evaluation of the loss per step.

``damping`` only starts ``λ``; the state carries it. Under
``optax.inject_hyperparams``, setting the injected ``damping`` after ``init``
(:func:`jdl.optim.set_injected_hyperparam`) resets ``λ`` to the new value, and
the adaptive rule continues from there; with ``adaptive=False`` it is the
``λ`` of every step that follows.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jdl._linalg import eigh
from jdl.optim import _krylov
from jdl.optim._checks import check as _check
from jdl.optim._checks import concrete as _concrete
from jdl.validation import check_count

__all__ = [
    "DampedNewtonCGState",
    "DampedNewtonState",
    "SaddleFreeNewtonState",
    "damped_newton",
    "damped_newton_cg",
    "newton",
    "saddle_free_newton",
    "saddle_free_newton_lanczos",
]

# Levenberg–Marquardt constants (Martens 2010, §4.1; Moré 1978).
_SHRINK_BELOW, _GROW_ABOVE = 0.25, 0.75
_INCREASE, _DECREASE = 1.5, 2.0 / 3.0


class DampedNewtonState(NamedTuple):
    """State of :func:`damped_newton`.

    Attributes:
      damping: ``λ`` for the next step (Levenberg–Marquardt adapted).
      shift: ``τ ≥ λ`` added to ``H`` in the last step that made it positive
        definite (unchanged by a step where no shift tried did).
      reduction_ratio: ``ρ = actual / predicted`` decrease of the last step.
      damping_setting: the ``damping`` argument the state last saw (see
        :func:`_damping_for_step`).
    """

    damping: jax.Array
    shift: jax.Array
    reduction_ratio: jax.Array
    damping_setting: jax.Array


class DampedNewtonCGState(NamedTuple):
    """State of :func:`damped_newton_cg`.

    Attributes:
      damping: ``λ`` for the next step.
      shift: ``τ ≥ λ`` used in the last step (raised until CG met no
        negative curvature).
      reduction_ratio: ``ρ`` of the last step.
      hvp_count: Hessian-vector products spent in the last step (CG, its
        restarts, and one for the model's predicted decrease).
      damping_setting: the ``damping`` argument the state last saw.
    """

    damping: jax.Array
    shift: jax.Array
    reduction_ratio: jax.Array
    hvp_count: jax.Array
    damping_setting: jax.Array


class SaddleFreeNewtonState(NamedTuple):
    """State of :func:`saddle_free_newton` and :func:`saddle_free_newton_lanczos`.

    Attributes:
      damping: ``λ`` in ``(|H| + λI)⁻¹`` for the next step.
      reduction_ratio: ``ρ`` of the last step (model with ``|H|``).
      min_curvature: the smallest eigenvalue (Ritz value) of ``H`` seen in the
        last step; negative near a saddle. The Lanczos version builds its
        space from ``g``, so at ``g = 0`` it sees nothing and reports NaN.
      damping_setting: the ``damping`` argument the state last saw.
    """

    damping: jax.Array
    reduction_ratio: jax.Array
    min_curvature: jax.Array
    damping_setting: jax.Array


# ----------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------


def _require_value_fn(value_fn, params, name: str) -> None:
    if value_fn is None:
        raise ValueError(
            f"{name} needs the loss of the current minibatch as a function of the parameters: "
            f"call update(grads, state, params, value_fn=lambda p: loss(p, batch)). "
            "jdl.training.make_train_step and fit pass it automatically."
        )
    if params is None:
        raise ValueError(f"{name} needs the current parameters: call update(grads, state, params, ...)")


def _flat_dtype(params):
    x, _ = ravel_pytree(params)
    return x.dtype


def _check_learning_rate(learning_rate, name: str, *, static: str = ""):
    if callable(learning_rate):
        raise TypeError(
            f"{name} takes a scalar learning_rate (the step along the Newton direction, 1 by "
            "default); to change it during training wrap the factory in optax.inject_hyperparams"
            + (f" with static_args=({static!r},)" if static else "")
        )
    _check(learning_rate, "learning_rate", positive=True)


def _check_damping(damping, min_damping, max_damping) -> None:
    """``λ ≥ 0`` and ``0 ≤ min_damping ≤ max_damping``, for concrete values
    (traced ones, under ``optax.inject_hyperparams``, pass)."""
    _check(damping, "damping")
    _check(min_damping, "min_damping")
    _check(max_damping, "max_damping", positive=True)
    if _concrete(min_damping) and _concrete(max_damping) and float(min_damping) > float(max_damping):
        raise ValueError(f"min_damping={min_damping!r} exceeds max_damping={max_damping!r}; "
                         "the bounds on λ need min_damping ≤ max_damping")


def _static_int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
        raise TypeError(
            f"{name} sets array shapes and must be a Python int; under optax.inject_hyperparams pass "
            f"static_args=({name!r},)"
        ) from None


def _check_count_setting(value, name: str, minimum: int) -> None:
    """A concrete integer setting must be at least ``minimum`` (traced ones, under
    ``optax.inject_hyperparams``, are not checked)."""
    if isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0:  # inject_hyperparams' 0-d arrays
        value = value.item()
    check_count(value, name, minimum)


def _damping_for_step(damping, state) -> tuple[jax.Array, jax.Array]:
    """``(λ, setting)`` for this step: the state's ``λ``, unless the ``damping``
    argument differs from the one the state last saw — then that new value.

    ``damping`` only starts ``λ``; the state carries it from step to step. Under
    ``optax.inject_hyperparams`` the factory is called again on every update
    with the injected values, so setting the injected ``damping`` (say with
    :func:`jdl.optim.set_injected_hyperparam`) resets ``λ`` to it, and the
    adaptive rule continues from there.
    """
    setting = jnp.asarray(damping, state.damping_setting.dtype)
    return jnp.where(setting != state.damping_setting, setting, state.damping), setting


def _adapt_damping(damping, ratio, informative, *, min_damping, max_damping):
    """Levenberg–Marquardt: grow ``λ`` when the model over-promised, shrink it when it was good."""
    bad = ~(ratio >= _SHRINK_BELOW)  # also when ratio is NaN (a non-finite step)
    good = ratio > _GROW_ABOVE
    new = jnp.where(bad, damping * _INCREASE, jnp.where(good, damping * _DECREASE, damping))
    new = jnp.where(informative | bad, new, damping)
    return jnp.clip(new, min_damping, max_damping)


def _judge_step(f, x, value, step, predicted, damping, *, adaptive, reject_increase, min_damping,
                max_damping):
    """Compare the model's predicted decrease with the real one; adapt ``λ``; maybe reject."""
    new_value = f(x + step)
    actual = value - new_value
    # Decreases below the rounding of the loss itself (near a minimum, where
    # both the predicted and the actual decrease are noise) say nothing: ρ
    # would be noise, and λ climbed to max_damping once a run had converged.
    noise = 8 * jnp.finfo(x.dtype).eps * jnp.maximum(jnp.maximum(jnp.abs(value), jnp.abs(new_value)),
                                                      jnp.finfo(x.dtype).tiny)
    noise = jnp.where(jnp.isfinite(noise), noise, jnp.finfo(x.dtype).tiny)
    informative = predicted > noise
    # A model that promised no decrease (η ≥ 2 makes the quadratic model predict an
    # increase) says nothing through ρ; but a step that then raised the loss (by
    # more than rounding) must still count as bad (ρ = −∞), or λ never grows and a
    # rejected step repeats forever.
    ratio = jnp.where(informative, actual / jnp.where(informative, predicted, 1),
                      jnp.where(actual >= -noise, 1.0, -jnp.inf))
    ratio = jnp.where(jnp.isfinite(actual), ratio, jnp.nan)
    if adaptive:
        damping = _adapt_damping(damping, ratio, informative, min_damping=min_damping,
                                 max_damping=max_damping)
    if reject_increase:
        step = jnp.where(actual >= 0, step, jnp.zeros_like(step))
    return step, damping, ratio.astype(x.dtype)


def _dense_hessian(f, x, method: str):
    """``∇²f(x)``, after checking that the dense matrix fits in memory
    (``MemoryError`` naming the matrix-free alternatives; shapes are static,
    so this runs when the update is traced, before anything is allocated)."""
    from jdl.hessian.operators import check_dense_fits  # jdl.hessian imports jdl.optim

    check_dense_fits(x.size, x.dtype, chunk_size=1, what=f"dense Hessian that {method} inverts each step",
                     instead="use a matrix-free optimizer, which needs a few vectors of the parameters' size "
                             "(damped_newton_cg, saddle_free_newton_lanczos; jdl:damped_newton_cg and "
                             "jdl:saddle_free_newton_lanczos in jdl train), or a smaller model (jdl train "
                             "--model logistic)")
    return jax.hessian(f)(x)


def _prepare(value_fn, updates, params, value):
    x, f, unravel = _krylov.flat_objective(value_fn, params)
    g, _ = ravel_pytree(updates)
    g = g.astype(x.dtype)
    value = f(x) if value is None else jnp.asarray(value, x.dtype)
    return x, f, unravel, g, value


# ----------------------------------------------------------------------------------
# Newton's method
# ----------------------------------------------------------------------------------


def newton(learning_rate: float = 1.0) -> optax.GradientTransformationExtraArgs:
    r"""Newton's method with the dense Hessian (seed 000).

    .. math::
        θ \leftarrow θ - η\, H^{-1} g, \qquad H = ∇^2 f(θ)

    One step (``η = 1``) lands exactly on the minimum of a convex quadratic.
    On a non-convex loss it heads for the nearest critical point, saddles
    included. The step is computed from the eigendecomposition of ``H``, so
    where ``H`` is singular to working precision (eigenvalues
    ``|λ| ≤ n ε max|λ|``) it is the minimum-norm least-squares one, ``−η H⁺ g``
    (flat directions are left alone); an ``H`` with small but resolved
    eigenvalues still gives very long steps — use :func:`damped_newton` or
    :func:`saddle_free_newton` there.

    Args:
      learning_rate: ``η``, the fraction of the Newton step taken (1 = full).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` that needs ``value_fn``.

    Example:
      >>> import jax.numpy as jnp
      >>> f = lambda w: jnp.sum((w - 3.0) ** 2)
      >>> opt, w = newton(), jnp.zeros(2)
      >>> u, _ = opt.update(2 * (w - 3.0), opt.init(w), w, value_fn=f)
      >>> (w + u).tolist()
      [3.0, 3.0]
    """
    _check_learning_rate(learning_rate, "newton")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        del extra_args
        _require_value_fn(value_fn, params, "newton")
        x, f, unravel = _krylov.flat_objective(value_fn, params)
        g = ravel_pytree(updates)[0].astype(x.dtype)
        hessian = _dense_hessian(f, x, "newton")
        return unravel(-jnp.asarray(learning_rate, x.dtype) * _newton_direction(hessian, g)), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _newton_direction(hessian: jax.Array, g: jax.Array) -> jax.Array:
    """``H⁺ g`` from the eigendecomposition ``H = V Λ Vᵀ``, with eigenvalues
    ``|λ| ≤ n ε max|λ|`` taken as zero (the rank rule of ``numpy.linalg.pinv``):
    ``H⁻¹ g`` for a nonsingular ``H``, and the minimum-norm least-squares
    direction for one singular to working precision.

    An LU solve is cheaper but cannot tell: where rounding leaves a singular
    ``H`` technically invertible, LU is backward stable, its residual small,
    and its step along the near-null space arbitrary (measured: 10¹⁵ times the
    ``H⁺ g`` step for a rank-6 ``H`` of size 8 in float64, and O(1) drift
    along the class-sum direction of softmax regression)."""
    values, vectors = eigh(hessian)
    cutoff = hessian.shape[0] * jnp.finfo(g.dtype).eps * jnp.max(jnp.abs(values))
    kept = jnp.abs(values) > cutoff
    inverse = jnp.where(kept, 1 / jnp.where(kept, values, 1), 0)
    return vectors @ (inverse * (vectors.T @ g))


# ----------------------------------------------------------------------------------
# Damped Newton, dense
# ----------------------------------------------------------------------------------


def _shifted_cholesky(hessian, shift, *, floor, max_attempts: int):
    """Cholesky of ``H + τI`` with ``τ ← max(2τ, β)`` until it exists
    (Nocedal & Wright, Algorithm 3.3, "Cholesky with added multiple of the identity")."""
    eye = jnp.eye(hessian.shape[0], dtype=hessian.dtype)
    beta = jnp.maximum(floor, 1e-3 * jnp.mean(jnp.abs(jnp.diag(hessian))))

    def attempt(tau):
        chol = jnp.linalg.cholesky(hessian + tau * eye)
        return chol, jnp.all(jnp.isfinite(chol))

    def cond(carry):
        _, _, ok, k = carry
        return (~ok) & (k < max_attempts)

    def body(carry):
        tau, _, _, k = carry
        tau = jnp.maximum(2 * tau, beta)
        chol, ok = attempt(tau)
        return tau, chol, ok, k + 1

    chol, ok = attempt(shift)
    tau, chol, ok, _ = jax.lax.while_loop(cond, body, (shift, chol, ok, jnp.asarray(0, jnp.int32)))
    return chol, tau, ok


def damped_newton(
    learning_rate: float = 1.0,
    *,
    damping: float = 1.0,
    adaptive: bool = True,
    reject_increase: bool = True,
    min_damping: float = 1e-8,
    max_damping: float = 1e8,
    max_shift_attempts: int = 60,
) -> optax.GradientTransformationExtraArgs:
    r"""Damped (regularised) Newton with the dense Hessian, Levenberg–Marquardt style (seed 000).

    .. math::
        θ \leftarrow θ - η\, (H + τ I)^{-1} g

    where ``τ`` starts at the damping ``λ`` and is doubled (Nocedal & Wright,
    Alg. 3.3) until the Cholesky factorisation of ``H + τI`` exists, i.e. until
    the system is positive definite — so the step is always a descent
    direction. ``λ`` then adapts by the ratio of actual to predicted decrease
    (module docstring); after a shift, ``λ`` continues from ``τ``.

    Args:
      learning_rate: ``η``.
      damping: the initial ``λ``; larger is closer to gradient descent with
        step ``1/λ``, smaller closer to Newton.
      adaptive: adapt ``λ`` by the Levenberg–Marquardt rule.
      reject_increase: return a zero update when the step would increase the
        minibatch loss.
      min_damping, max_damping: bounds on ``λ``.
      max_shift_attempts: doublings of ``τ`` before giving up: the update is
        then zero, ``reduction_ratio`` NaN and (adaptive) ``λ`` becomes
        ``2τ`` (at most ``max_damping``); ``shift`` keeps its last value.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`DampedNewtonState`; it needs ``value_fn``.

    References:
      Levenberg, 1944; Marquardt, 1963; Nocedal & Wright, *Numerical
      Optimization*, 2nd ed., §3.4; Martens, *Deep learning via Hessian-free
      optimization*, ICML 2010, §4.1.
    """
    _check_learning_rate(learning_rate, "damped_newton")
    _check_damping(damping, min_damping, max_damping)
    _check_count_setting(max_shift_attempts, "max_shift_attempts", 0)

    def init_fn(params):
        dtype = _flat_dtype(params)
        return DampedNewtonState(
            damping=jnp.asarray(damping, dtype), shift=jnp.asarray(damping, dtype),
            reduction_ratio=jnp.asarray(1.0, dtype), damping_setting=jnp.asarray(damping, dtype),
        )

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, **extra_args):
        del extra_args
        _require_value_fn(value_fn, params, "damped_newton")
        x, f, unravel, g, value = _prepare(value_fn, updates, params, value)
        hessian = _dense_hessian(f, x, "damped_newton")
        lam, setting = _damping_for_step(damping, state)
        chol, tau, ok = _shifted_cholesky(hessian, lam.astype(x.dtype), floor=min_damping,
                                          max_attempts=max_shift_attempts)
        # No shift tried made H + τI positive definite: no step (a failed
        # factorisation would give NaN), and λ grows from the last τ tried.
        step = jnp.where(ok, -jnp.asarray(learning_rate, x.dtype) * jax.scipy.linalg.cho_solve((chol, True), g), 0)
        predicted = -(jnp.vdot(g, step) + 0.5 * jnp.vdot(step, hessian @ step))
        step, new_damping, ratio = _judge_step(
            f, x, value, step, predicted, tau, adaptive=adaptive, reject_increase=reject_increase,
            min_damping=min_damping, max_damping=max_damping,
        )
        if adaptive:
            new_damping = jnp.where(ok, new_damping, jnp.minimum(2 * tau, max_damping))
        else:
            new_damping = lam
        ratio = jnp.where(ok, ratio, jnp.nan)
        return unravel(step), DampedNewtonState(damping=new_damping.astype(state.damping.dtype),
                                                shift=jnp.where(ok, tau, state.shift).astype(state.shift.dtype),
                                                reduction_ratio=ratio.astype(state.reduction_ratio.dtype),
                                                damping_setting=setting)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# Damped Newton, matrix-free (Hessian-free)
# ----------------------------------------------------------------------------------


def damped_newton_cg(
    learning_rate: float = 1.0,
    *,
    damping: float = 1.0,
    max_iters: int = 50,
    tol: float = 1e-5,
    adaptive: bool = True,
    reject_increase: bool = True,
    min_damping: float = 1e-6,
    max_damping: float = 1e8,
    max_restarts: int = 10,
) -> optax.GradientTransformationExtraArgs:
    r"""Damped Newton through Hessian-vector products and conjugate gradient ("Hessian-free").

    Solves ``(H + τI) d = g`` by CG (at most ``max_iters`` products
    ``Hv``, each a forward-over-reverse pass) and steps ``θ ← θ − η d``. When CG
    meets a direction ``p`` with ``pᵀ(H + τI)p ≤ 0`` the system is not positive
    definite: ``τ`` is raised past the curvature found,
    ``τ ← max(2(τ − pᵀ(H+τI)p/pᵀp), 2τ, min_damping)``, and CG restarts — the
    matrix-free counterpart of :func:`damped_newton`'s Cholesky test. ``λ``
    adapts as there. Memory is a few parameter vectors; no ``n × n`` matrix.

    Args:
      learning_rate: ``η``.
      damping: the initial ``λ``.
      max_iters: CG iterations (Hessian-vector products) per solve.
      tol: stop CG when ``‖r‖ ≤ tol ‖g‖`` (at least ``ε ‖g‖``: below that the
        residual is rounding).
      adaptive, reject_increase, min_damping, max_damping: as in :func:`damped_newton`.
      max_restarts: raises of ``τ`` before the step is taken as it is.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`DampedNewtonCGState`; it needs ``value_fn``.

    References:
      Martens, *Deep learning via Hessian-free optimization*, ICML 2010;
      Pearlmutter, *Fast exact multiplication by the Hessian*, 1994.
    """
    _check_learning_rate(learning_rate, "damped_newton_cg")
    _check_damping(damping, min_damping, max_damping)
    _check(tol, "tol")
    _check_count_setting(max_iters, "max_iters", 1)
    _check_count_setting(max_restarts, "max_restarts", 0)

    def init_fn(params):
        dtype = _flat_dtype(params)
        return DampedNewtonCGState(
            damping=jnp.asarray(damping, dtype), shift=jnp.asarray(damping, dtype),
            reduction_ratio=jnp.asarray(1.0, dtype), hvp_count=jnp.asarray(0, jnp.int32),
            damping_setting=jnp.asarray(damping, dtype),
        )

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, **extra_args):
        del extra_args
        _require_value_fn(value_fn, params, "damped_newton_cg")
        x, f, unravel, g, value = _prepare(value_fn, updates, params, value)
        _, hvp = _krylov.gradient_and_hvp(f, x)
        lam, setting = _damping_for_step(damping, state)

        def solve(tau):
            return _krylov.conjugate_gradient(lambda v: hvp(v) + tau * v, g, max_iters=max_iters, tol=tol)

        def cond(carry):
            _, result, _, k = carry
            return (result.curvature <= 0) & (k <= max_restarts)

        def body(carry):
            tau, result, spent, k = carry
            raised = jnp.maximum(jnp.maximum(2 * (tau - result.curvature), 2 * tau), min_damping)
            tau = jnp.where(k == 0, tau, raised)
            result = solve(tau)
            return tau, result, spent + result.iterations, k + 1

        start = _krylov.CGResult(x=jnp.zeros_like(g), iterations=jnp.asarray(0, jnp.int32),
                                 curvature=jnp.asarray(0, x.dtype), residual_norm=jnp.linalg.norm(g))
        tau, result, spent, _ = jax.lax.while_loop(
            cond, body, (lam.astype(x.dtype), start, jnp.asarray(0, jnp.int32),
                         jnp.asarray(0, jnp.int32)))
        step = -jnp.asarray(learning_rate, x.dtype) * result.x
        predicted = -(jnp.vdot(g, step) + 0.5 * jnp.vdot(step, hvp(step)))
        step, new_damping, ratio = _judge_step(
            f, x, value, step, predicted, tau, adaptive=adaptive, reject_increase=reject_increase,
            min_damping=min_damping, max_damping=max_damping,
        )
        if not adaptive:
            new_damping = lam
        return unravel(step), DampedNewtonCGState(
            damping=new_damping.astype(state.damping.dtype), shift=tau.astype(state.shift.dtype),
            reduction_ratio=ratio.astype(state.reduction_ratio.dtype), hvp_count=spent + 1,
            damping_setting=setting,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# Saddle-free Newton
# ----------------------------------------------------------------------------------


def _saddle_free_step(eigenvalues, coefficients, damping, learning_rate):
    """In an eigenbasis of the curvature: the step's coordinates and the
    model's predicted decrease ``−(gᵀu + ½ uᵀ|H|u)``.

    With ``λ = 0`` the eigenvalues ``|λᵢ| ≤ n ε max|λ|`` count as flat (the
    rank rule of :func:`_newton_direction`) and their coordinates stay 0; they
    gave 0/0 = NaN, or a step 10¹⁶ long, before."""
    absolute = jnp.abs(eigenvalues)
    cutoff = eigenvalues.shape[0] * jnp.finfo(absolute.dtype).eps * jnp.max(absolute)
    kept = (damping > 0) | (absolute > cutoff)
    denominator = jnp.where(kept, absolute + damping, 1)
    step = jnp.where(kept, -learning_rate * coefficients / denominator, 0)
    slope = jnp.vdot(coefficients, step)
    curvature = jnp.vdot(step, absolute * step)
    return step, -(slope + 0.5 * curvature)


def _saddle_free_init(damping):
    """``init(params) -> SaddleFreeNewtonState`` shared by the dense and Krylov versions."""

    def init_fn(params):
        dtype = _flat_dtype(params)
        return SaddleFreeNewtonState(damping=jnp.asarray(damping, dtype),
                                     reduction_ratio=jnp.asarray(1.0, dtype),
                                     min_curvature=jnp.asarray(0.0, dtype),
                                     damping_setting=jnp.asarray(damping, dtype))

    return init_fn


def saddle_free_newton(
    learning_rate: float = 1.0,
    *,
    damping: float = 1.0,
    adaptive: bool = True,
    reject_increase: bool = True,
    min_damping: float = 1e-8,
    max_damping: float = 1e8,
) -> optax.GradientTransformationExtraArgs:
    r"""Saddle-free Newton with the dense Hessian (Dauphin et al. 2014).

    .. math::
        θ \leftarrow θ - η\, (|H| + λI)^{-1} g, \qquad |H| = V |Λ| V^T \text{ for } H = VΛV^T

    Newton's step rescales each eigendirection by ``1/λ_i``, which for a
    negative eigenvalue points *up* the loss: Newton is attracted to saddles.
    Dividing by ``|λ_i|`` keeps Newton's step sizes but always moves downhill,
    so saddles repel (seed 000: "in high dimension saddles are far more common
    than minima"). With ``adaptive=True`` ``λ`` follows the Levenberg–Marquardt
    rule with the model ``½ uᵀ|H|u``.

    Args:
      learning_rate: ``η``.
      damping: the initial ``λ ≥ 0``; ``λ > 0`` keeps the step finite along
        flat directions (``λ_i ≈ 0``), of which a network has many. With
        ``λ = 0`` eigenvalues ``|λ_i| ≤ n ε max|λ|`` count as flat and the step
        leaves them alone (and with ``adaptive=True`` ``λ`` starts from
        ``min_damping``).
      adaptive, reject_increase, min_damping, max_damping: as in
        :func:`damped_newton`; with both off, the update is the formula above
        with a fixed ``λ`` and no extra loss evaluation.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`SaddleFreeNewtonState`; it needs ``value_fn``.

    References:
      Dauphin, Pascanu, Gulcehre, Cho, Ganguli & Bengio, *Identifying and
      attacking the saddle point problem in high-dimensional non-convex
      optimization*, NeurIPS 2014.
    """
    _check_learning_rate(learning_rate, "saddle_free_newton")
    _check_damping(damping, min_damping, max_damping)

    init_fn = _saddle_free_init(damping)

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, **extra_args):
        del extra_args
        _require_value_fn(value_fn, params, "saddle_free_newton")
        x, f, unravel, g, value = _prepare(value_fn, updates, params, value)
        hessian = _dense_hessian(f, x, "saddle_free_newton")
        eigenvalues, eigenvectors = eigh(hessian)
        lam, setting = _damping_for_step(damping, state)
        lam = lam.astype(x.dtype)
        coords, predicted = _saddle_free_step(eigenvalues, eigenvectors.T @ g, lam,
                                              jnp.asarray(learning_rate, x.dtype))
        step = eigenvectors @ coords
        return _finish_saddle_free(f, x, value, step, predicted, lam, jnp.min(eigenvalues), setting,
                                   state, unravel, adaptive=adaptive, reject_increase=reject_increase,
                                   min_damping=min_damping, max_damping=max_damping)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _finish_saddle_free(f, x, value, step, predicted, lam, min_curvature, setting, state, unravel, *,
                        adaptive, reject_increase, min_damping, max_damping):
    if adaptive or reject_increase:
        step, new_lam, ratio = _judge_step(
            f, x, value, step, predicted, lam, adaptive=adaptive, reject_increase=reject_increase,
            min_damping=min_damping, max_damping=max_damping,
        )
    else:  # no extra loss evaluation needed
        new_lam, ratio = lam, jnp.asarray(1.0, x.dtype)
    dtype = state.damping.dtype
    return unravel(step), SaddleFreeNewtonState(damping=new_lam.astype(dtype),
                                                reduction_ratio=ratio.astype(dtype),
                                                min_curvature=min_curvature.astype(dtype),
                                                damping_setting=setting)


def saddle_free_newton_lanczos(
    learning_rate: float = 1.0,
    *,
    damping: float = 1.0,
    num_steps: int = 20,
    adaptive: bool = True,
    reject_increase: bool = True,
    min_damping: float = 1e-8,
    max_damping: float = 1e8,
) -> optax.GradientTransformationExtraArgs:
    r"""Saddle-free Newton in a Krylov subspace, through Hessian-vector products.

    ``k = num_steps`` Lanczos steps from ``g`` give an orthonormal basis ``Q``
    of ``K_k(H, g) = span{g, Hg, …, H^{k−1}g}`` and ``T = Q H Qᵀ``
    (tridiagonal). With ``T = S Θ Sᵀ`` (Ritz values ``Θ``), the step is
    saddle-free Newton restricted to that subspace, which contains ``g``:

    .. math::
        θ \leftarrow θ - η\, Qᵀ S (|Θ| + λI)^{-1} Sᵀ Q g

    equal to :func:`saddle_free_newton` when ``k = n``. The extreme Ritz
    values converge first, so the strongly curved and the negative directions —
    the ones that matter near a saddle — are resolved with ``k ≪ n``. Cost:
    ``k`` Hessian-vector products and ``O(k n)`` memory per step.

    Args:
      learning_rate: ``η``.
      damping: the initial ``λ ≥ 0`` (as in :func:`saddle_free_newton`).
      num_steps: ``k``, the Krylov dimension (capped at the parameter count).
      adaptive, reject_increase, min_damping, max_damping: as in :func:`damped_newton`.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`SaddleFreeNewtonState`; it needs ``value_fn``.

    References:
      Dauphin et al., NeurIPS 2014, §6 (the Krylov-subspace version).
      Lanczos, 1950.
    """
    _check_learning_rate(learning_rate, "saddle_free_newton_lanczos", static="num_steps")
    _check_damping(damping, min_damping, max_damping)
    _check_count_setting(num_steps, "num_steps", 1)

    init_fn = _saddle_free_init(damping)

    def update_fn(updates, state, params=None, *, value_fn=None, value=None, **extra_args):
        del extra_args
        _require_value_fn(value_fn, params, "saddle_free_newton_lanczos")
        x, f, unravel, g, value = _prepare(value_fn, updates, params, value)
        _, hvp = _krylov.gradient_and_hvp(f, x)
        k = min(_static_int(num_steps, "num_steps"), x.shape[0])
        krylov = _krylov.lanczos(hvp, g, num_steps=k)
        ritz_values, ritz_vectors = eigh(krylov.tridiagonal)
        # Q g = ‖g‖ e₁ because the first Lanczos vector is g / ‖g‖.
        coefficients = _krylov.scaled_norm(g)[0] * ritz_vectors[0, :]
        lam, setting = _damping_for_step(damping, state)
        lam = lam.astype(x.dtype)
        coords, predicted = _saddle_free_step(ritz_values, coefficients, lam, jnp.asarray(learning_rate, x.dtype))
        step = krylov.basis.T @ (ritz_vectors @ coords)
        # Smallest Ritz value among those living in the Krylov space actually built.
        valid = jnp.arange(k) < krylov.rank
        weight = jnp.sum(jnp.where(valid[:, None], ritz_vectors**2, 0), axis=0)
        min_curvature = jnp.min(jnp.where(weight > 0.5, ritz_values, jnp.inf))
        min_curvature = jnp.where(krylov.rank > 0, min_curvature, jnp.nan)  # g = 0: no space, not measured
        return _finish_saddle_free(f, x, value, step, predicted, lam, min_curvature, setting, state,
                                   unravel, adaptive=adaptive, reject_increase=reject_increase,
                                   min_damping=min_damping, max_damping=max_damping)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


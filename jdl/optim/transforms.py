"""The small gradient transformations jdl's first-order optimizers are chained from.

Each ``scale_by_*`` turns a gradient ``g`` into a direction, elementwise, from
the formula in the docstring; the learning rate is applied separately by
``optax.scale_by_learning_rate`` (a constant or a schedule), so that
``optax.inject_hyperparams``, ``optax.MultiSteps``, clipping and every other
Optax transform compose with them. States are typed ``NamedTuple``s.

Notation: ``g`` the incoming gradient (or update), ``t`` the step count
starting at 1, ``β`` decay rates, ``ε`` the stabilising constant, and all
operations are elementwise.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jdl.optim._checks import check, check_eps, check_required

__all__ = [
    "AdadeltaState",
    "AdagradState",
    "AdamState",
    "AdamaxState",
    "CenteredRmsState",
    "MomentumState",
    "RmsState",
    "add_momentum",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_centered_rms",
    "scale_by_rms",
]


def _zeros_like(params):
    return jax.tree.map(jnp.zeros_like, params)


def _full_like(params, value):
    return jax.tree.map(lambda p: jnp.full_like(p, value), params)


def _bias_correction(decay, count):
    """``1 − β^t`` in the moment's precision (``count`` is an int32 scalar)."""
    return 1 - decay**count


def _wide(a) -> jnp.dtype:
    """At least float32: the dtype a half-precision update is divided in."""
    return jnp.promote_types(a.dtype, jnp.float32)


def _ratio(numerator, denominator):
    """``numerator / denominator(w)`` computed in ``w`` = at least float32 and
    returned in the numerator's dtype. In float16 Adam's ``ε = 1e-8`` rounds
    to 0 and a coordinate whose gradient was always 0 gave 0/0 = NaN (Optax's
    own Adam does); float32 and float64 are unchanged."""
    w = _wide(numerator)
    return (numerator.astype(w) / denominator(w)).astype(numerator.dtype)


def _increment(count):
    """``count + 1``, saturating instead of overflowing int32 (as Optax does)."""
    return optax.safe_increment(count)


# ----------------------------------------------------------------------------------
# Momentum
# ----------------------------------------------------------------------------------


class MomentumState(NamedTuple):
    """State of :func:`add_momentum`.

    Attributes:
      velocity: the previous weight change ``Δw(n−1)``.
    """

    velocity: optax.Updates


def add_momentum(momentum: float = 0.9, *, nesterov: bool = False) -> optax.GradientTransformation:
    r"""Add a momentum term to already-scaled updates (seed 001, "动量优化器").

    With ``u(n)`` the incoming update (for plain momentum ``u(n) = −η g(n)``,
    so this transform comes *after* the learning-rate scale):

    .. math::
        Δw(n) = u(n) + α\,Δw(n-1), \qquad Δw(0) = 0,

    which is the seed's rule :math:`Δw_{ji}(n) = η δ_j x_{ji} + α Δw_{ji}(n-1)`
    (``η δ_j x_{ji}`` is the delta rule's ``−η ∂E/∂w_{ji}``; the seed calls
    ``δ_j`` "the size of the inertia", but it is the unit's local error signal,
    and the momentum is ``α``).

    With ``nesterov=True`` the returned update is ``u(n) + α Δw(n)``: Nesterov's
    accelerated gradient in the form of Bengio et al. (2013, eq. 7), where the
    parameters stored are the look-ahead point ``w + α Δw`` and so no gradient
    needs to be evaluated anywhere but at the stored parameters.

    Args:
      momentum: ``α`` in ``[0, 1)``; a scalar or a traced value (it may be set
        per step through ``optax.inject_hyperparams`` and a schedule such as
        :func:`jdl.optim.momentum_schedule`).
      nesterov: use Nesterov's look-ahead form.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`MomentumState`.

    References:
      Rumelhart, Hinton & Williams, *Learning representations by
      back-propagating errors*, Nature 1986.
      Bengio, Boulanger-Lewandowski & Pascanu, *Advances in optimizing recurrent
      networks*, ICASSP 2013.
    """
    check_required(momentum, "momentum", below_one=True)

    def init_fn(params):
        return MomentumState(velocity=_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        velocity = jax.tree.map(lambda u, v: u + momentum * v, updates, state.velocity)
        if nesterov:
            updates = jax.tree.map(lambda u, v: u + momentum * v, updates, velocity)
        else:
            updates = velocity
        return updates, MomentumState(velocity=velocity)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# Adagrad
# ----------------------------------------------------------------------------------


class AdagradState(NamedTuple):
    """State of :func:`scale_by_adagrad`.

    Attributes:
      sum_of_squares: ``r``, the running sum of squared gradients.
    """

    sum_of_squares: optax.Updates


def scale_by_adagrad(
    *, eps: float = 1e-7, initial_accumulator_value: float = 0.0, eps_in_sqrt: bool = False
) -> optax.GradientTransformation:
    r"""Adagrad's per-parameter scaling (seed 001, "Adagrad优化器").

    .. math::
        r \leftarrow r + g^2, \qquad d = \frac{g}{ε + \sqrt{r}}

    with ``r`` starting at ``initial_accumulator_value`` (the seed: 0) and
    ``ε ≈ 1e-7``. The seed and Duchi et al. put ``ε`` outside the square
    root; Optax's ``optax.adagrad`` puts it inside (``g / sqrt(r + ε)``) and
    starts ``r`` at 0.1 — ``eps_in_sqrt=True, initial_accumulator_value=0.1``
    reproduces it.

    References:
      Duchi, Hazan & Singer, *Adaptive subgradient methods for online learning
      and stochastic optimization*, JMLR 2011.
    """
    check_eps(eps, other=initial_accumulator_value, other_name="initial_accumulator_value")

    def init_fn(params):
        return AdagradState(sum_of_squares=_full_like(params, initial_accumulator_value))

    def update_fn(updates, state, params=None):
        del params
        r = jax.tree.map(lambda g, s: s + g * g, updates, state.sum_of_squares)
        if eps_in_sqrt:
            updates = jax.tree.map(lambda g, s: g * jax.lax.rsqrt(s + eps), updates, r)
        else:
            updates = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps), updates, r)
        return updates, AdagradState(sum_of_squares=r)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# RMSProp
# ----------------------------------------------------------------------------------


class RmsState(NamedTuple):
    """State of :func:`scale_by_rms`.

    Attributes:
      mean_square: ``r``, the exponential moving average of ``g²``.
    """

    mean_square: optax.Updates


class CenteredRmsState(NamedTuple):
    """State of :func:`scale_by_centered_rms`.

    Attributes:
      mean: ``m``, the exponential moving average of ``g``.
      mean_square: ``r``, the exponential moving average of ``g²``.
    """

    mean: optax.Updates
    mean_square: optax.Updates


def _rms_denominator(mean_square, eps, eps_in_sqrt):
    if eps_in_sqrt:
        return jnp.sqrt(mean_square + eps)
    return jnp.sqrt(mean_square) + eps


def scale_by_rms(
    *, decay: float = 0.9, eps: float = 1e-7, eps_in_sqrt: bool = False, initial_scale: float = 0.0
) -> optax.GradientTransformation:
    r"""RMSProp's scaling (seed 001, "RMSprop优化器").

    .. math::
        r \leftarrow β r + (1 - β) g^2, \qquad d = \frac{g}{ε + \sqrt{r}}

    with ``r`` starting at ``initial_scale`` (0). The seed puts ``ε ≈ 1e-7``
    outside the root, as Hinton's lecture and PyTorch do; Optax's default is
    inside (``g / sqrt(r + ε)``, ``ε = 1e-8``), reproduced by
    ``eps_in_sqrt=True``.

    References:
      Tieleman & Hinton, *Lecture 6.5 — RMSProp*, COURSERA: Neural Networks for
      Machine Learning, 2012.
    """
    check(decay, "decay", below_one=True)
    check_eps(eps, other=initial_scale, other_name="initial_scale")

    def init_fn(params):
        return RmsState(mean_square=_full_like(params, initial_scale))

    def update_fn(updates, state, params=None):
        del params
        r = jax.tree.map(lambda g, s: decay * s + (1 - decay) * (g * g), updates, state.mean_square)
        updates = jax.tree.map(lambda g, s: g / _rms_denominator(s, eps, eps_in_sqrt), updates, r)
        return updates, RmsState(mean_square=r)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_centered_rms(
    *, decay: float = 0.9, eps: float = 1e-7, eps_in_sqrt: bool = False, initial_scale: float = 0.0
) -> optax.GradientTransformation:
    r"""Centred RMSProp: divide by an estimate of the gradient's standard deviation.

    .. math::
        m \leftarrow β m + (1-β) g, \quad r \leftarrow β r + (1-β) g^2, \quad
        d = \frac{g}{ε + \sqrt{r - m^2}}

    (``eps_in_sqrt=True``: ``g / sqrt(r − m² + ε)``, Optax's default).

    References:
      Graves, *Generating sequences with recurrent neural networks*,
      arXiv:1308.0850, 2013, eqs. 38–41.
    """
    check(decay, "decay", below_one=True)
    check_eps(eps)
    check(initial_scale, "initial_scale")

    def init_fn(params):
        return CenteredRmsState(mean=_zeros_like(params), mean_square=_full_like(params, initial_scale))

    def update_fn(updates, state, params=None):
        del params
        m = jax.tree.map(lambda g, s: decay * s + (1 - decay) * g, updates, state.mean)
        r = jax.tree.map(lambda g, s: decay * s + (1 - decay) * (g * g), updates, state.mean_square)
        updates = jax.tree.map(
            # r − m² ≥ 0 in exact arithmetic; for a steady gradient it rounds
            # below 0 (NaN from the root after ~100 steps, float32).
            lambda g, a, b: g / _rms_denominator(jnp.maximum(b - a * a, 0), eps, eps_in_sqrt), updates, m, r
        )
        return updates, CenteredRmsState(mean=m, mean_square=r)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# Adadelta
# ----------------------------------------------------------------------------------


class AdadeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`.

    Attributes:
      mean_square_grad: ``E[g²]``.
      mean_square_update: ``E[Δx²]``, of the unit-corrected steps.
    """

    mean_square_grad: optax.Updates
    mean_square_update: optax.Updates


def scale_by_adadelta(*, rho: float = 0.95, eps: float = 1e-6) -> optax.GradientTransformation:
    r"""Adadelta's unit-corrected step (seeds 001 and 003; Zeiler 2012, Algorithm 1).

    .. math::
        E[g^2]_t = ρ E[g^2]_{t-1} + (1-ρ) g_t^2, \qquad
        Δx_t = \frac{\sqrt{E[Δx^2]_{t-1} + ε}}{\sqrt{E[g^2]_t + ε}}\, g_t, \qquad
        E[Δx^2]_t = ρ E[Δx^2]_{t-1} + (1-ρ) Δx_t^2

    (returned with a positive sign; the learning-rate scale that follows
    flips it). Zeiler's defaults ``ρ = 0.95, ε = 1e-6``; the paper has no
    learning rate (η = 1). Identical to Optax's ``scale_by_adadelta``.

    References:
      Zeiler, *ADADELTA: an adaptive learning rate method*, arXiv:1212.5701, 2012.
    """
    check(rho, "rho", below_one=True)
    check_eps(eps)

    def init_fn(params):
        return AdadeltaState(mean_square_grad=_zeros_like(params), mean_square_update=_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        e_g = jax.tree.map(lambda g, s: rho * s + (1 - rho) * (g * g), updates, state.mean_square_grad)
        updates = jax.tree.map(
            lambda g, sg, sx: jnp.sqrt(sx + eps) / jnp.sqrt(sg + eps) * g,
            updates, e_g, state.mean_square_update,
        )
        e_x = jax.tree.map(lambda d, s: rho * s + (1 - rho) * (d * d), updates, state.mean_square_update)
        return updates, AdadeltaState(mean_square_grad=e_g, mean_square_update=e_x)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# Adam, Nadam, AdaMax
# ----------------------------------------------------------------------------------


class AdamState(NamedTuple):
    """State of :func:`scale_by_adam`.

    Attributes:
      count: steps taken, ``t`` (int32 scalar).
      mu: ``m``, the first-moment estimate.
      nu: ``v``, the (uncentred) second-moment estimate.
    """

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_adam(
    *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 0.0, nesterov: bool = False
) -> optax.GradientTransformation:
    r"""Adam's bias-corrected moment ratio (seed 001, "Adam优化器"); Nadam with ``nesterov``.

    .. math::
        m_t = β_1 m_{t-1} + (1-β_1) g_t, \quad v_t = β_2 v_{t-1} + (1-β_2) g_t^2, \\
        \hat m_t = \frac{m_t}{1-β_1^t}, \quad \hat v_t = \frac{v_t}{1-β_2^t}, \quad
        d_t = \frac{\hat m_t}{\sqrt{\hat v_t + ε_{root}} + ε}

    — the seed's :math:`w_{t+1} = w_t - \frac{η}{\sqrt{\hat v_t}+ε}\hat m_t` once
    the learning rate is applied (``ε_root = 0``). With ``nesterov=True``
    (Nadam, Dozat 2016) the first moment looks one step ahead:

    .. math::
        \hat m_t = \frac{β_1 m_t}{1-β_1^{t+1}} + \frac{(1-β_1) g_t}{1-β_1^t}

    without Dozat's momentum schedule and extra ``β_2`` factor on ``\hat v``,
    as in Optax (PyTorch's ``NAdam`` keeps the schedule).

    References:
      Kingma & Ba, *Adam: a method for stochastic optimization*, ICLR 2015.
      Dozat, *Incorporating Nesterov momentum into Adam*, ICLR workshop 2016.
    """
    check(b1, "b1", below_one=True)
    check(b2, "b2", below_one=True)
    check_eps(eps, other=eps_root, other_name="eps_root")

    def init_fn(params):
        return AdamState(count=jnp.zeros([], jnp.int32), mu=_zeros_like(params), nu=_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        count = _increment(state.count)
        mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
        nu = jax.tree.map(lambda g, v: b2 * v + (1 - b2) * (g * g), updates, state.nu)
        c1 = _bias_correction(b1, count)
        c2 = _bias_correction(b2, count)
        if nesterov:
            c1_next = _bias_correction(b1, _increment(count))
            mu_hat = jax.tree.map(
                lambda m, g: b1 * (m / c1_next.astype(m.dtype)) + (1 - b1) * (g / c1.astype(g.dtype)),
                mu, updates,
            )
        else:
            mu_hat = jax.tree.map(lambda m: m / c1.astype(m.dtype), mu)
        updates = jax.tree.map(
            lambda m, v: _ratio(m, lambda w: jnp.sqrt(v.astype(w) / c2.astype(w) + eps_root) + eps), mu_hat, nu
        )
        return updates, AdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


class AdamaxState(NamedTuple):
    """State of :func:`scale_by_adamax`.

    Attributes:
      count: steps taken, ``t`` (int32 scalar).
      mu: ``m``, the first-moment estimate.
      infinity_norm: ``u``, the exponentially weighted infinity norm.
    """

    count: jax.Array
    mu: optax.Updates
    infinity_norm: optax.Updates


def scale_by_adamax(*, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    r"""AdaMax: Adam with the infinity norm in place of the second moment (seed 001).

    .. math::
        m_t = β_1 m_{t-1} + (1-β_1) g_t, \quad
        u_t = \max(β_2 u_{t-1}, |g_t| + ε), \quad
        d_t = \frac{m_t}{(1-β_1^t)\, u_t}

    Kingma & Ba's §7.1 has no ``ε``; it is added to ``|g|`` inside the max so
    a parameter whose gradient has always been zero is not divided by zero
    (the placement used by PyTorch and Optax).

    References:
      Kingma & Ba, *Adam: a method for stochastic optimization*, ICLR 2015, §7.1.
    """
    check(b1, "b1", below_one=True)
    check(b2, "b2", below_one=True)
    check_eps(eps)

    def init_fn(params):
        return AdamaxState(count=jnp.zeros([], jnp.int32), mu=_zeros_like(params),
                           infinity_norm=_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        count = _increment(state.count)
        mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
        # u in at least float32 for the division (in float16 ε = 1e-8 rounds to 0, and a
        # gradient that was always 0 gave 0/0); stored in the state's dtype.
        u = jax.tree.map(lambda g, s: jnp.maximum(b2 * s.astype(_wide(s)), jnp.abs(g.astype(_wide(g))) + eps),
                         updates, state.infinity_norm)
        c1 = _bias_correction(b1, count)
        updates = jax.tree.map(lambda m, s: _ratio(m / c1.astype(m.dtype), lambda w: s.astype(w)), mu, u)
        u = jax.tree.map(lambda s, old: s.astype(old.dtype), u, state.infinity_norm)
        return updates, AdamaxState(count=count, mu=mu, infinity_norm=u)

    return optax.GradientTransformation(init_fn, update_fn)

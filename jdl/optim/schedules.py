r"""Learning-rate and momentum schedules: ``step -> value`` functions for Optax.

A schedule goes wherever a learning rate goes (``jdl.optim.adam(cosine_warm_restarts(...))``,
``optax.sgd(linear_decay(...))``) and, through ``optax.inject_hyperparams``,
wherever any numeric hyperparameter goes (``momentum=momentum_schedule(...)``),
which also makes its current value readable in ``opt_state.hyperparams`` for
logging. Where Optax already has the schedule these are thin, documented
compositions of Optax's own; only SGDR's growing periods are written here.

The plateau rule of seed 003 ("divide by 2–10 when the validation error stops
improving") depends on validation data, not on the step, so it is a
:class:`~jdl.training.callbacks.Callback`: :class:`jdl.optim.ReduceLROnPlateau`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import optax

from jdl.validation import check_count

__all__ = [
    "cosine_warm_restarts",
    "exponential_decay",
    "linear_decay",
    "momentum_schedule",
    "step_decay",
    "warmup",
]


def _check_steps(value, name: str) -> int:
    """A positive integer, Python's or NumPy's (``np.int64(n) // batch``), as a Python ``int``."""
    return check_count(value, name, hint="a number of steps")


def linear_decay(init_value: float, end_value: float, decay_steps: int) -> optax.Schedule:
    r"""Linear decay to a fixed small rate, then constant (seed 003, ch. 11; Goodfellow et al. eq. 8.14).

    .. math::
        η_k = (1 - α) η_0 + α η_τ, \quad α = \min(k/τ, 1)

    Args:
      init_value: ``η₀``.
      end_value: ``η_τ``, typically about 1% of ``η₀``.
      decay_steps: ``τ``, after which the rate stays at ``η_τ``.

    Example:
      >>> schedule = linear_decay(0.1, 0.001, 100)
      >>> [round(float(schedule(k)), 6) for k in (0, 50, 100, 1000)]
      [0.1, 0.0505, 0.001, 0.001]
    """
    return optax.linear_schedule(init_value, end_value, _check_steps(decay_steps, "decay_steps"))


def exponential_decay(
    init_value: float,
    decay_rate: float,
    decay_steps: int = 1,
    *,
    staircase: bool = False,
    end_value: float | None = None,
) -> optax.Schedule:
    r"""Exponential decay (seed 003, ch. 11): ``η_k = η₀ · r^{k / T}``.

    Args:
      init_value: ``η₀``.
      decay_rate: ``r``, the factor per ``T`` steps (``0 < r < 1`` decays).
      decay_steps: ``T``.
      staircase: use ``⌊k/T⌋`` (discrete drops every ``T`` steps).
      end_value: a floor (for ``r < 1``) the rate never goes below.
    """
    return optax.exponential_decay(
        init_value, transition_steps=_check_steps(decay_steps, "decay_steps"), decay_rate=decay_rate,
        staircase=staircase, end_value=end_value,
    )


def step_decay(init_value: float, *, factor: float, every: int) -> optax.Schedule:
    r"""Divide the rate by ``factor`` every ``every`` steps: ``η_k = η₀ / factor^{⌊k/every⌋}``.

    Example:
      >>> schedule = step_decay(1.0, factor=10.0, every=30)
      >>> [round(float(schedule(k)), 6) for k in (0, 29, 30, 60)]
      [1.0, 1.0, 0.1, 0.01]
    """
    if not factor >= 1:
        raise ValueError(f"factor must be >= 1 (the rate is divided by it; below 1 it would grow), got {factor!r}")
    return optax.exponential_decay(
        init_value, transition_steps=_check_steps(every, "every"), decay_rate=1.0 / factor, staircase=True
    )


def warmup(schedule: float | optax.Schedule, warmup_steps: int, *, init_value: float = 0.0) -> optax.Schedule:
    r"""Rise linearly from ``init_value`` to where ``schedule`` starts, then follow it.

    .. math::
        η_k = \begin{cases} η_{init} + (s(0) - η_{init})\, k / W & k < W \\ s(k - W) & k \ge W \end{cases}

    Args:
      schedule: a constant or a schedule (its step 0 comes at step ``W``).
      warmup_steps: ``W``.
      init_value: the rate at step 0.

    References:
      Goyal et al., *Accurate, large minibatch SGD: training ImageNet in 1 hour*, 2017.
    """
    warmup_steps = _check_steps(warmup_steps, "warmup_steps")
    if not callable(schedule):
        schedule = optax.constant_schedule(schedule)
    peak = float(schedule(0))
    ramp = optax.linear_schedule(init_value, peak, warmup_steps)
    return optax.join_schedules([ramp, schedule], [warmup_steps])


def cosine_warm_restarts(
    init_value: float,
    period: int,
    *,
    period_multiplier: int = 1,
    min_value: float = 0.0,
    restart_decay: float = 1.0,
) -> optax.Schedule:
    r"""Cosine annealing with warm restarts, SGDR (Loshchilov & Hutter 2017, eq. 5).

    .. math::
        η_k = η_{min} + \tfrac12 (γ^i η_{max} - η_{min}) \left(1 + \cos\frac{π\, T_{cur}}{T_i}\right)

    where cycle ``i`` lasts ``T_i = T₀ · m^i`` steps and ``T_cur`` counts steps
    since its restart. Raising the rate at each restart is the "raise the
    learning rate to escape a local minimum" of seed 000. Optax's
    ``sgdr_schedule`` needs every cycle listed; this takes ``m`` and ``γ``.

    Args:
      init_value: ``η_max``.
      period: ``T₀``, the first cycle's length in steps.
      period_multiplier: ``m`` (an integer ≥ 1), each cycle ``m`` times longer.
      min_value: ``η_min``.
      restart_decay: ``γ``, the peak's factor per restart.

    Example:
      >>> schedule = cosine_warm_restarts(1.0, 4, period_multiplier=2)
      >>> [round(float(schedule(k)), 3) for k in range(0, 13, 2)]
      [1.0, 0.5, 1.0, 0.854, 0.5, 0.146, 1.0]
    """
    period = _check_steps(period, "period")
    m = check_count(period_multiplier, "period_multiplier", hint="each cycle m times longer than the last")

    def schedule(count):
        count = jnp.asarray(count)
        real = jnp.result_type(float)  # float32, or float64 under x64
        k = count.astype(real)
        if m == 1 and jnp.issubdtype(count.dtype, jnp.integer):
            # In integers: float32 counts are not exact past 2²⁴ steps, and
            # k − start lost the place in the cycle (η was off by 1.5e-3 at
            # 3·10⁷ steps with T₀ = 1000).
            cycle = (count // period).astype(real)
            position = (count % period).astype(real)
            length = jnp.full_like(k, period)
        elif m == 1:
            cycle = jnp.floor(k / period)
            position = k - cycle * period
            length = jnp.full_like(k, period)
        else:
            # Cycle i starts at T₀ (mⁱ − 1)/(m − 1); invert for i, then guard rounding.
            # The cycles grow geometrically, so float32's relative error in k
            # stays a relative error in the place in the cycle.
            cycle = jnp.floor(jnp.log1p(k * (m - 1) / period) / math.log(m))
            start = period * (m**cycle - 1) / (m - 1)
            cycle = jnp.where(start > k, cycle - 1, cycle)
            start = period * (m**cycle - 1) / (m - 1)
            length = period * m**cycle
            nxt = start + length
            cycle = jnp.where(nxt <= k, cycle + 1, cycle)
            start = jnp.where(nxt <= k, nxt, start)
            length = period * m**cycle
            position = k - start
        peak = init_value * restart_decay**cycle
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * position / length))
        return min_value + (peak - min_value) * cosine

    return schedule


def momentum_schedule(
    boundaries: Sequence[int], values: Sequence[float] = (0.5, 0.9, 0.99)
) -> optax.Schedule:
    r"""Momentum rising in steps over training (seed 003, ch. 8: "0.5, 0.9, 0.99 … start small, increase").

    ``values[0]`` before ``boundaries[0]``, ``values[i]`` from ``boundaries[i−1]``
    on. Use it through ``optax.inject_hyperparams``, which also makes the
    current momentum readable for logging:

    >>> import optax, jdl.optim as jo
    >>> opt = optax.inject_hyperparams(jo.momentum)(
    ...     learning_rate=0.1, momentum=momentum_schedule([100, 1000]))
    >>> schedule = momentum_schedule([100, 1000])
    >>> [round(float(schedule(k)), 6) for k in (0, 100, 5000)]
    [0.5, 0.9, 0.99]

    Args:
      boundaries: the steps where the momentum changes, increasing.
      values: one more value than boundaries.
    """
    boundaries, values = list(boundaries), list(values)
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"momentum_schedule needs one more value than boundaries, got {len(values)} values for "
            f"{len(boundaries)} boundaries; e.g. boundaries=[1000, 5000], values=(0.5, 0.9, 0.99)"
        )
    if any(b <= a for a, b in zip(boundaries, boundaries[1:])) or any(b <= 0 for b in boundaries):
        raise ValueError(f"boundaries must be positive and increasing, got {boundaries}")
    return optax.join_schedules([optax.constant_schedule(v) for v in values], boundaries)

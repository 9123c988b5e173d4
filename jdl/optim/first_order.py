"""The classic first-order optimizers, each a chain of the small transforms in
:mod:`jdl.optim.transforms` and a learning-rate scale (a constant or a schedule).

Every factory closes over its hyperparameters and returns an
``optax.GradientTransformation``, so it drops into :func:`jdl.training.fit`,
composes with any Optax transform and works under ``optax.inject_hyperparams``
(learning rate and momentum readable, and settable, during training).

Defaults follow the seed notes (001 "优化器") where they give one and the
original paper otherwise; where they differ from Optax's, the docstring says
how to get Optax's behaviour, and :data:`jdl.optim.OPTAX_EQUIVALENTS` lists the
exact settings under which each one equals its Optax counterpart.
"""

from __future__ import annotations

import optax

from jdl.optim import transforms
from jdl.optim._checks import check as _check
from jdl.optim._checks import check_eps as _check_eps
from jdl.optim._checks import check_required as _check_required

__all__ = [
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "momentum",
    "nadam",
    "nesterov",
    "rmsprop",
    "sgd",
]

ScalarOrSchedule = optax.ScalarOrSchedule


def _check_rate(learning_rate) -> None:
    _check_required(learning_rate, "learning_rate", positive=True)


def sgd(learning_rate: ScalarOrSchedule) -> optax.GradientTransformation:
    r"""Gradient descent: ``w ← w − η g`` (seed 001).

    Batch GD, minibatch SGD and pure (one-example) SGD are the same rule; they
    differ in the batch the gradient is averaged over, which is ``fit``'s
    ``batch_size`` (``N``, 16…256, or 1). Same as ``optax.sgd(η)``.

    Args:
      learning_rate: ``η``, a constant or a schedule ``step -> η``.

    Example:
      >>> import jax.numpy as jnp
      >>> opt = sgd(0.1)
      >>> updates, _ = opt.update(jnp.array([1.0, -2.0]), opt.init(jnp.zeros(2)))
      >>> [round(float(u), 6) for u in updates]
      [-0.1, 0.2]
    """
    _check_rate(learning_rate)
    return optax.chain(optax.scale_by_learning_rate(learning_rate))


def momentum(learning_rate: ScalarOrSchedule, momentum: float = 0.9) -> optax.GradientTransformation:
    r"""Gradient descent with momentum, the seed's rule (001, "动量优化器").

    .. math::
        Δw(n) = -η\, g(n) + α\, Δw(n-1), \qquad w \leftarrow w + Δw(n)

    The learning rate multiplies each gradient as it enters the velocity.
    ``optax.sgd(η, momentum=α)`` multiplies the accumulated velocity instead,
    ``Δw(n) = -η (g(n) + α v(n-1))``: the two are the same sequence for a
    constant ``η``; under a schedule the seed's form lets a new ``η`` act
    gradually, Optax's at once.

    Args:
      learning_rate: ``η``, a constant or a schedule.
      momentum: ``α`` in ``[0, 1)``; 0.5, 0.9 and 0.99 are the usual values
        (seed 003), and it may rise over training with
        ``optax.inject_hyperparams(momentum)(η, momentum=momentum_schedule(...))``.

    References:
      Rumelhart, Hinton & Williams, Nature 1986; Polyak, *Some methods of
      speeding up the convergence of iteration methods*, 1964.
    """
    _check_rate(learning_rate)
    _check_required(momentum, "momentum", below_one=True)
    return optax.chain(
        optax.scale_by_learning_rate(learning_rate),
        transforms.add_momentum(momentum),
    )


def nesterov(learning_rate: ScalarOrSchedule, momentum: float = 0.9) -> optax.GradientTransformation:
    r"""Nesterov's accelerated gradient (seed 001), in the look-ahead-free form.

    .. math::
        Δw(n) = -η g(n) + α Δw(n-1), \qquad w \leftarrow w - η g(n) + α Δw(n)

    (Bengio et al. 2013, eq. 7: the stored ``w`` is Sutskever's look-ahead
    point ``θ + α v``, so the gradient is taken where the parameters are).
    Same as ``optax.sgd(η, momentum=α, nesterov=True)`` for a constant ``η``.

    References:
      Nesterov, *A method for solving the convex programming problem with
      convergence rate O(1/k²)*, 1983; Sutskever et al., *On the importance of
      initialization and momentum in deep learning*, ICML 2013.
    """
    _check_rate(learning_rate)
    _check_required(momentum, "momentum", below_one=True)
    return optax.chain(
        optax.scale_by_learning_rate(learning_rate),
        transforms.add_momentum(momentum, nesterov=True),
    )


def adagrad(
    learning_rate: ScalarOrSchedule,
    *,
    eps: float = 1e-7,
    initial_accumulator_value: float = 0.0,
    eps_in_sqrt: bool = False,
) -> optax.GradientTransformation:
    r"""Adagrad, the seed's formula (001, "Adagrad优化器").

    .. math::
        r \leftarrow r + g^2, \qquad Δw = -\frac{η}{ε + \sqrt{r}}\, g

    with ``r₀ = 0`` and ``ε = 1e-7``. ``optax.adagrad`` uses
    ``−η g / sqrt(r + ε)`` with ``r₀ = 0.1``; pass ``eps_in_sqrt=True,
    initial_accumulator_value=0.1`` for it.

    References:
      Duchi, Hazan & Singer, JMLR 2011.
    """
    _check_rate(learning_rate)
    _check_eps(eps, other=initial_accumulator_value, other_name="initial_accumulator_value")
    return optax.chain(
        transforms.scale_by_adagrad(
            eps=eps, initial_accumulator_value=initial_accumulator_value, eps_in_sqrt=eps_in_sqrt
        ),
        optax.scale_by_learning_rate(learning_rate),
    )


def adadelta(
    learning_rate: ScalarOrSchedule = 1.0, *, rho: float = 0.95, eps: float = 1e-6
) -> optax.GradientTransformation:
    r"""Adadelta (seeds 001, 003; Zeiler 2012): ``Δw = −η · RMS[Δx]_{t−1} / RMS[g]_t · g``.

    See :func:`jdl.optim.transforms.scale_by_adadelta` for the recursions. The
    paper has no learning rate (``η = 1``, the default here); it equals
    ``optax.adadelta(η, rho=ρ, eps=ε)`` (with ``η = None`` Optax returns
    ``+Δx``, a step up the loss).

    References:
      Zeiler, arXiv:1212.5701, 2012.
    """
    _check_rate(learning_rate)
    _check(rho, "rho", below_one=True)
    _check_eps(eps)
    return optax.chain(
        transforms.scale_by_adadelta(rho=rho, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    *,
    decay: float = 0.9,
    eps: float = 1e-7,
    eps_in_sqrt: bool = False,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""RMSProp, plain (seed 001) or with momentum (seed 003; Goodfellow et al. Alg. 8.6).

    .. math::
        r \leftarrow β r + (1-β) g^2, \qquad
        Δw(n) = -\frac{η}{ε + \sqrt{r}}\, g + α\, Δw(n-1)

    (``α = 0`` without momentum; ``centered=True`` divides by
    ``ε + sqrt(r − m²)`` with ``m`` the running mean of ``g``, Graves 2013).
    The seed puts ``ε ≈ 1e-7`` outside the root; ``optax.rmsprop`` defaults to
    ``sqrt(r + ε)`` with ``ε = 1e-8`` (pass ``eps_in_sqrt=True, eps=1e-8``).
    The momentum term adds already-scaled steps, as in Optax and the seed's
    momentum rule.

    Args:
      learning_rate: ``η``, a constant or a schedule.
      decay: ``β``, the decay of the squared-gradient average.
      eps: ``ε``.
      eps_in_sqrt: put ``ε`` inside the square root.
      centered: divide by the running standard deviation instead of the RMS.
      momentum: ``α``, or None for none.
      nesterov: Nesterov's form of the momentum term.

    References:
      Tieleman & Hinton, COURSERA lecture 6.5, 2012; Goodfellow, Bengio &
      Courville, *Deep Learning*, 2016, Algorithms 8.5–8.6.
    """
    _check_rate(learning_rate)
    _check(decay, "decay", below_one=True)
    _check_eps(eps)
    _check(momentum, "momentum", below_one=True)
    if nesterov and momentum is None:
        raise ValueError("nesterov=True needs a momentum (e.g. momentum=0.9); without one there is no "
                         "momentum term to take in Nesterov's form")
    scale = transforms.scale_by_centered_rms if centered else transforms.scale_by_rms
    parts = [
        scale(decay=decay, eps=eps, eps_in_sqrt=eps_in_sqrt),
        optax.scale_by_learning_rate(learning_rate),
    ]
    if momentum is not None:
        parts.append(transforms.add_momentum(momentum, nesterov=nesterov))
    return optax.chain(*parts)


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> optax.GradientTransformation:
    r"""Adam with bias correction (seed 001, "Adam优化器").

    .. math::
        w_{t+1} = w_t - \frac{η}{\sqrt{\hat v_t} + ε}\, \hat m_t

    with the moment recursions of :func:`jdl.optim.transforms.scale_by_adam`
    and the seed's (and the paper's) defaults ``η = 1e-3, β₁ = 0.9,
    β₂ = 0.999, ε = 1e-8``. Same as ``optax.adam``.

    References:
      Kingma & Ba, ICLR 2015, Algorithm 1.
    """
    _check_rate(learning_rate)
    _check(b1, "b1", below_one=True)
    _check(b2, "b2", below_one=True)
    _check_eps(eps, other=eps_root, other_name="eps_root")
    return optax.chain(
        transforms.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        optax.scale_by_learning_rate(learning_rate),
    )


def nadam(
    learning_rate: ScalarOrSchedule = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> optax.GradientTransformation:
    r"""Nadam: Adam with a Nesterov look-ahead first moment (seed 001).

    ``Δw = −η m̄ / (sqrt(v̂) + ε)`` with
    ``m̄ = β₁ m_t / (1 − β₁^{t+1}) + (1 − β₁) g_t / (1 − β₁^t)``; see
    :func:`jdl.optim.transforms.scale_by_adam`. Same as ``optax.nadam``.

    References:
      Dozat, ICLR workshop 2016.
    """
    _check_rate(learning_rate)
    _check(b1, "b1", below_one=True)
    _check(b2, "b2", below_one=True)
    _check_eps(eps, other=eps_root, other_name="eps_root")
    return optax.chain(
        transforms.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=True),
        optax.scale_by_learning_rate(learning_rate),
    )


def adamax(
    learning_rate: ScalarOrSchedule = 2e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    r"""AdaMax (seed 001): ``Δw = −η m_t / ((1 − β₁^t) u_t)``, ``u_t = max(β₂ u_{t−1}, |g_t| + ε)``.

    Default ``η = 2e-3`` from Kingma & Ba §7.1. Same as ``optax.adamax``.

    References:
      Kingma & Ba, ICLR 2015, §7.1 and Algorithm 2.
    """
    _check_rate(learning_rate)
    _check(b1, "b1", below_one=True)
    _check(b2, "b2", below_one=True)
    _check_eps(eps)
    return optax.chain(
        transforms.scale_by_adamax(b1=b1, b2=b2, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )

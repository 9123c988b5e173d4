"""Optimizers by name, for the CLI (``jdl train --optimizer NAME``) and for sweeps.

Naming convention:

- **jdl's own optimizers carry the prefix ``jdl:``** — ``jdl:adam``,
  ``jdl:momentum``, ``jdl:newton`` … (see :func:`available_optimizers`).
  Many classic names (adam, sgd, rmsprop, adagrad, …) are also Optax's, and a
  prefix keeps both reachable without one silently shadowing the other.
- **A bare name is Optax's** optimizer of that name: ``adam`` is
  ``optax.adam``, ``lbfgs`` is ``optax.lbfgs``, and so on for every Optax
  function that takes a ``learning_rate``.
- Names registered with :func:`register_optimizer` are looked up first, so a
  user can add their own (any name; the ``jdl:`` prefix is jdl's).

``get_optimizer(name, learning_rate, **options)`` builds one:
``get_optimizer("jdl:rmsprop", 1e-3, decay=0.95)``. For the Newton family the
learning rate is the fraction of the Newton step (``--lr 1`` is the full step).

:data:`FIRST_ORDER` and :data:`SECOND_ORDER` list jdl's names by family, and
:data:`OPTAX_EQUIVALENTS` gives, for each first-order one, the settings under
which it equals an Optax optimizer (the tests and ``benchmarks/optimizers.py``
compare each pair).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import NamedTuple

import optax

from jdl.optim import first_order, second_order
from jdl.validation import check_positive_float

__all__ = [
    "FIRST_ORDER",
    "JDL_PREFIX",
    "OPTAX_EQUIVALENTS",
    "OPTIMIZERS",
    "OptaxEquivalent",
    "SECOND_ORDER",
    "available_optimizers",
    "get_optimizer",
    "register_optimizer",
]

JDL_PREFIX = "jdl:"

# name -> factory(learning_rate, **kwargs) -> GradientTransformation
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {}


def register_optimizer(name: str, factory: Callable[..., optax.GradientTransformation], *,
                       overwrite: bool = False) -> None:
    """Make ``factory(learning_rate, **kwargs)`` available as ``name`` (CLI ``--optimizer``).

    A registered name is looked up before Optax's, so it may shadow one; the
    ``jdl:`` prefix is kept for jdl's own optimizers. A name already
    registered is refused unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an optimizer name must be a non-empty string, got {name!r}")
    if name.startswith(JDL_PREFIX):
        raise ValueError(f"the prefix {JDL_PREFIX!r} is kept for jdl's own optimizers; register "
                         f"{name[len(JDL_PREFIX):]!r} or another name without it")
    if not callable(factory):
        raise TypeError(f"an optimizer factory must be callable as factory(learning_rate, **options), got "
                        f"{type(factory).__name__}")
    if name in OPTIMIZERS and not overwrite:
        raise ValueError(f"the optimizer name {name!r} is already registered; pass overwrite=True to replace it")
    OPTIMIZERS[name] = factory


# Optax functions that take a learning rate but are transforms meant for chaining.
_NOT_OPTIMIZERS = {"scale_by_learning_rate", "scale_by_rprop"}


@functools.cache
def _optax_names() -> tuple[str, ...]:
    names = []
    for name, obj in vars(optax).items():
        # Optax defines some optimizers as functools.partial of another (nadam is adam
        # with nesterov=True): callables of either kind count.
        if name.startswith("_") or name in _NOT_OPTIMIZERS or not (
                inspect.isfunction(obj) or isinstance(obj, functools.partial)):
            continue
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        if "learning_rate" in params:
            names.append(name)
    return tuple(sorted(names))


def available_optimizers() -> list[str]:
    """jdl's registered names (``jdl:…``) plus every Optax optimizer taking ``learning_rate``."""
    return sorted(set(OPTIMIZERS) | set(_optax_names()))


def get_optimizer(name: str, learning_rate: float, **kwargs) -> optax.GradientTransformation:
    """Build the optimizer ``name`` with ``learning_rate`` and options.

    ``get_optimizer("jdl:adam", 1e-3)`` is jdl's Adam, ``get_optimizer("adam", 1e-3)``
    Optax's (module docstring for the convention).

    Raises:
      ValueError: for an unknown name (suggesting ``jdl:NAME`` when that exists)
        or a learning rate that is not a positive number.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an optimizer name must be a non-empty string such as 'adam' or 'jdl:adam', got {name!r}")
    learning_rate = check_positive_float(learning_rate, "learning_rate", hint="e.g. --lr 1e-3")
    if name in OPTIMIZERS:
        factory = OPTIMIZERS[name]
        _check_options(name, factory, (learning_rate,), kwargs)
        return factory(learning_rate, **kwargs)
    if name in _optax_names():
        factory = getattr(optax, name)
        _check_options(name, factory, (), dict(kwargs, learning_rate=learning_rate))
        return factory(learning_rate=learning_rate, **kwargs)
    hint = ""
    if JDL_PREFIX + name in OPTIMIZERS:
        hint = f" jdl's {name} is registered as {JDL_PREFIX + name!r}."
    raise ValueError(
        f"unknown optimizer {name!r}.{hint} Choose one of jdl's {sorted(OPTIMIZERS)} or an Optax "
        f"optimizer such as adam, sgd, adamw, rmsprop (all: {', '.join(available_optimizers())})"
    )


def _check_options(name: str, factory: Callable, args: tuple, kwargs: dict) -> None:
    """Options the factory does not take fail here, with the ones it does."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to check against: the call decides
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        options = [p for p in signature.parameters if p != "learning_rate"]
        raise ValueError(f"{name!r} does not take these options ({e}); its options are {options}") from None


# ----------------------------------------------------------------------------------
# jdl's optimizers
# ----------------------------------------------------------------------------------

_FIRST_ORDER_FACTORIES: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": first_order.sgd,
    "momentum": first_order.momentum,
    "nesterov": first_order.nesterov,
    "adagrad": first_order.adagrad,
    "adadelta": first_order.adadelta,
    "rmsprop": first_order.rmsprop,
    "rmsprop_momentum": functools.partial(first_order.rmsprop, momentum=0.9),
    "rmsprop_centered": functools.partial(first_order.rmsprop, centered=True),
    "adam": first_order.adam,
    "adamax": first_order.adamax,
    "nadam": first_order.nadam,
}

_SECOND_ORDER_FACTORIES: dict[str, Callable[..., optax.GradientTransformation]] = {
    "newton": second_order.newton,
    "damped_newton": second_order.damped_newton,
    "damped_newton_cg": second_order.damped_newton_cg,
    "saddle_free_newton": second_order.saddle_free_newton,
    "saddle_free_newton_lanczos": second_order.saddle_free_newton_lanczos,
}

FIRST_ORDER: tuple[str, ...] = tuple(JDL_PREFIX + n for n in _FIRST_ORDER_FACTORIES)
SECOND_ORDER: tuple[str, ...] = tuple(JDL_PREFIX + n for n in _SECOND_ORDER_FACTORIES)

for _name, _factory in {**_FIRST_ORDER_FACTORIES, **_SECOND_ORDER_FACTORIES}.items():
    OPTIMIZERS[JDL_PREFIX + _name] = _factory


class OptaxEquivalent(NamedTuple):
    """A jdl optimizer and the Optax optimizer it equals under the given settings.

    Attributes:
      jdl: ``learning_rate -> jdl optimizer`` with the matching settings.
      optax: ``learning_rate -> Optax optimizer``.
      difference: how jdl's defaults differ from Optax's ("" when they do not).
    """

    jdl: Callable[[float], optax.GradientTransformation]
    optax: Callable[[float], optax.GradientTransformation]
    difference: str


_SEED_RMS = "the seed's eps=1e-7 outside the root; Optax defaults to sqrt(r + 1e-8)"

OPTAX_EQUIVALENTS: dict[str, OptaxEquivalent] = {
    "jdl:sgd": OptaxEquivalent(first_order.sgd, optax.sgd, ""),
    "jdl:momentum": OptaxEquivalent(
        lambda lr: first_order.momentum(lr, 0.9),
        lambda lr: optax.sgd(lr, momentum=0.9),
        "η multiplies each gradient (seed) rather than the velocity; equal for a constant η",
    ),
    "jdl:nesterov": OptaxEquivalent(
        lambda lr: first_order.nesterov(lr, 0.9),
        lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
        "η multiplies each gradient rather than the velocity; equal for a constant η",
    ),
    "jdl:adagrad": OptaxEquivalent(
        lambda lr: first_order.adagrad(lr, eps_in_sqrt=True, initial_accumulator_value=0.1),
        optax.adagrad,
        "seed: g / (ε + sqrt(r)) from r = 0; Optax: g / sqrt(r + ε) from r = 0.1",
    ),
    "jdl:adadelta": OptaxEquivalent(
        lambda lr: first_order.adadelta(lr, rho=0.9, eps=1e-6),
        lambda lr: optax.adadelta(lr, rho=0.9, eps=1e-6),
        "Zeiler's ρ = 0.95 and η = 1 by default; Optax's ρ = 0.9 and no scaling",
    ),
    "jdl:rmsprop": OptaxEquivalent(
        first_order.rmsprop,
        lambda lr: optax.rmsprop(lr, eps=1e-7, eps_in_sqrt=False),
        _SEED_RMS,
    ),
    "jdl:rmsprop_momentum": OptaxEquivalent(
        lambda lr: first_order.rmsprop(lr, momentum=0.9),
        lambda lr: optax.rmsprop(lr, eps=1e-7, eps_in_sqrt=False, momentum=0.9),
        _SEED_RMS,
    ),
    "jdl:rmsprop_centered": OptaxEquivalent(
        lambda lr: first_order.rmsprop(lr, centered=True),
        lambda lr: optax.rmsprop(lr, eps=1e-7, eps_in_sqrt=False, centered=True),
        _SEED_RMS,
    ),
    "jdl:adam": OptaxEquivalent(first_order.adam, optax.adam, ""),
    "jdl:adamax": OptaxEquivalent(first_order.adamax, optax.adamax, ""),
    "jdl:nadam": OptaxEquivalent(first_order.nadam, optax.nadam, ""),
}

"""Hyperparameters inside a running optimizer: read them for logging, and divide
the learning rate when the validation loss stops improving.

Both work on optimizers wrapped in ``optax.inject_hyperparams``, whose state
keeps the current hyperparameters as arrays (``opt_state.hyperparams``), so a
callback of :func:`jdl.training.fit` can read or replace them between steps
without recompiling anything.

>>> import optax, jdl.optim as jo
>>> opt = optax.inject_hyperparams(jo.momentum)(learning_rate=0.1, momentum=0.9)
>>> # fit(model, loss, opt, data, epochs=50, batch_size=64,
>>> #     callbacks=[jo.ReduceLROnPlateau(factor=10, patience=3)])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jdl.training.callbacks import Callback, FitContext
from jdl.training.state import TrainState

__all__ = [
    "LogHyperparams",
    "ReduceLROnPlateau",
    "injected_hyperparams",
    "set_injected_hyperparam",
]

_INJECTED = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


def _is_injected(node) -> bool:
    return isinstance(node, _INJECTED)


def _children(node):
    if _is_injected(node):
        return [node.inner_state]
    if isinstance(node, tuple):  # NamedTuple states and chains
        return list(node)
    if isinstance(node, list):
        return node
    if isinstance(node, dict):
        return list(node.values())
    return []


def _injected_states(opt_state) -> list:
    """All ``inject_hyperparams`` states in ``opt_state``, outermost first."""
    found, stack = [], [opt_state]
    while stack:
        node = stack.pop(0)
        if _is_injected(node):
            found.append(node)
        stack.extend(_children(node))
    return found


def injected_hyperparams(opt_state) -> dict[str, float]:
    """The current values of every hyperparameter injected with ``optax.inject_hyperparams``.

    Looks through chains and wrappers; when several injected optimizers name the
    same hyperparameter, the outermost wins.

    Example:
      >>> import jax.numpy as jnp, optax, jdl.optim as jo
      >>> opt = optax.inject_hyperparams(jo.momentum)(learning_rate=0.1, momentum=0.9)
      >>> {k: round(v, 6) for k, v in injected_hyperparams(opt.init(jnp.zeros(3))).items()}
      {'learning_rate': 0.1, 'momentum': 0.9}
    """
    values: dict[str, float] = {}
    for state in reversed(_injected_states(opt_state)):
        for name, value in state.hyperparams.items():
            if jnp.ndim(value) == 0:
                values[name] = float(value)
    return values


def _replace_injected(node, fn: Callable):
    """Rebuild ``node`` with ``fn`` applied to every injected state (inner ones first)."""
    if _is_injected(node):
        node = node._replace(inner_state=_replace_injected(node.inner_state, fn))
        return fn(node)
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*[_replace_injected(c, fn) for c in node])
    if isinstance(node, tuple):
        return tuple(_replace_injected(c, fn) for c in node)
    if isinstance(node, list):
        return [_replace_injected(c, fn) for c in node]
    if isinstance(node, dict):
        return {k: _replace_injected(v, fn) for k, v in node.items()}
    return node


def set_injected_hyperparam(opt_state, name: str, value: float | Callable[[jax.Array], Any]):
    """Return ``opt_state`` with the injected hyperparameter ``name`` set to ``value``
    (or to ``value(old)`` if it is callable), in every injected state that has it.

    Raises:
      ValueError: if no injected state has ``name``, or it follows a schedule
        (which would overwrite the new value on the next step).
    """
    states = [s for s in _injected_states(opt_state) if name in s.hyperparams]
    if not states:
        available = sorted({k for s in _injected_states(opt_state) for k in s.hyperparams})
        raise ValueError(
            f"the optimizer state has no injected hyperparameter {name!r} (injected: {available}); "
            f"wrap the optimizer as optax.inject_hyperparams(factory)({name}=...)"
        )
    for s in states:
        if name in getattr(s, "hyperparams_states", {}):
            raise ValueError(
                f"hyperparameter {name!r} follows a schedule inside inject_hyperparams and would be "
                "recomputed from it on the next step; inject a constant instead"
            )

    def setter(state):
        if name not in state.hyperparams:
            return state
        old = state.hyperparams[name]
        new = value(old) if callable(value) else value
        hyperparams = dict(state.hyperparams)
        new = jnp.asarray(new, dtype=jnp.result_type(old)).reshape(jnp.shape(old))
        if isinstance(old, jax.Array):  # keep it where it was (replicated over a mesh, say)
            new = jax.device_put(new, old.sharding)
        hyperparams[name] = new
        return state._replace(hyperparams=hyperparams)

    return _replace_injected(opt_state, setter)


class LogHyperparams(Callback):
    """Record the injected hyperparameters (learning rate, momentum, …) in each epoch's log.

    Args:
      names: which ones (default: all scalars found).
    """

    def __init__(self, names: tuple[str, ...] | None = None):
        self.names = names

    def on_epoch_end(self, ctx: FitContext, state: TrainState, logs: dict):
        values = injected_hyperparams(state.opt_state)
        for name, value in values.items():
            if self.names is None or name in self.names:
                logs[name] = value
        return None


class ReduceLROnPlateau(Callback):
    """Divide the learning rate by ``factor`` when ``monitor`` stops improving (seed 003, ch. 11).

    "Decay the learning rate by a factor of 2–10 each time the validation error
    plateaus." After ``patience`` epochs without an improvement of more than
    ``min_delta`` (relative to the best value when ``relative=True``), the
    learning rate becomes ``max(η / factor, min_learning_rate)`` — a rate
    already at or below the floor stays where it is, and with several injected
    optimizer states (parameter groups) each one's own rate is divided; then
    ``cooldown`` epochs pass, improving or not, before the count starts again. The rate lives in
    the optimizer state (``optax.inject_hyperparams``), so it is checkpointed
    with it and a resumed run continues exactly; this callback's own counters
    are saved through ``get_state``. Each epoch's log records ``learning_rate``.

    Optax's ``optax.contrib.reduce_on_plateau`` does the same inside the
    optimizer from the *training* loss of each step; this one watches the
    validation loss, once per epoch.

    Args:
      monitor: the log entry to watch (``"val_loss"``).
      factor: ``k``, the divisor (> 1; 2–10 per the seed).
      patience: epochs without improvement before dividing.
      min_delta: the least change that counts as an improvement.
      relative: measure ``min_delta`` relative to the best value.
      cooldown: epochs to wait after a division before counting again.
      min_learning_rate: the floor.
      mode: ``"min"`` (losses) or ``"max"`` (accuracies).
      hyperparam: the injected hyperparameter to divide.
    """

    def __init__(self, monitor: str = "val_loss", *, factor: float = 10.0, patience: int = 3,
                 min_delta: float = 0.0, relative: bool = False, cooldown: int = 0,
                 min_learning_rate: float = 0.0, mode: str = "min", hyperparam: str = "learning_rate"):
        if not factor > 1:
            raise ValueError(f"factor must be > 1 (the learning rate is divided by it), got {factor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 0 or cooldown < 0:
            raise ValueError(f"patience and cooldown must be >= 0, got {patience}, {cooldown}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0 (the least improvement that counts), got {min_delta!r}")
        self.monitor, self.factor, self.patience = monitor, float(factor), int(patience)
        self.min_delta, self.relative, self.cooldown = float(min_delta), relative, int(cooldown)
        self.min_learning_rate, self.mode, self.hyperparam = float(min_learning_rate), mode, hyperparam
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_left = 0
        self.reductions = 0

    def _improved(self, value: float) -> bool:
        """Whether ``value`` beats the best by more than ``min_delta``. A NaN never
        does (a diverged epoch counts against patience, and never becomes the best
        that every later value is compared with)."""
        if math.isnan(value):
            return False
        sign = 1.0 if self.mode == "min" else -1.0
        if math.isinf(self.best):  # no best yet (or an infinite one): any finite value beats it
            return sign * value < sign * self.best
        delta = self.min_delta * abs(self.best) if self.relative else self.min_delta
        return sign * value < sign * self.best - delta

    def on_fit_start(self, ctx, state):
        if not ctx.resumed:  # a new run: nothing carries over from an earlier fit or a failed resume
            self._reset()
        # Fail before the first epoch, with the fix, rather than after it.
        set_injected_hyperparam(state.opt_state, self.hyperparam, lambda old: old)
        if self.hyperparam not in injected_hyperparams(state.opt_state):
            raise ValueError(
                f"ReduceLROnPlateau divides one scalar {self.hyperparam!r}, but the injected value is "
                "an array (one rate per ensemble member or per parameter?); control it per member "
                "with set_injected_hyperparam, or inject a scalar"
            )
        return None

    def on_epoch_end(self, ctx, state, logs):
        if self.monitor not in logs:
            raise ValueError(
                f"ReduceLROnPlateau monitors {self.monitor!r} but the epoch logs only have "
                f"{sorted(logs)}; pass validation data or monitor another entry"
            )
        value = float(logs[self.monitor])
        new_state = None
        improved = self._improved(value)
        if improved:
            self.best, self.wait = value, 0
        # The cooldown runs down every epoch, improving or not; its epochs do
        # not count against patience (PyTorch's order).
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
        elif not improved:
            self.wait += 1
            if self.wait >= self.patience:
                new_state = self._reduce(state)
                self.wait, self.cooldown_left = 0, self.cooldown
        logs[self.hyperparam] = injected_hyperparams((new_state or state).opt_state)[self.hyperparam]
        return new_state

    def _reduce(self, state: TrainState) -> TrainState | None:
        """Each injected rate above the floor divided by ``factor`` (not below the
        floor); a rate at or below it stays. Every optimizer state's own rate
        is divided: parameter groups with different rates keep their ratio.
        ``None`` when no rate moved (all at the floor), which is no reduction."""
        floor, factor = self.min_learning_rate, self.factor
        opt_state = set_injected_hyperparam(
            state.opt_state, self.hyperparam,
            lambda old: jnp.where(old > floor, jnp.maximum(old / factor, floor), old))
        def rates(opt_state):
            return [s.hyperparams[self.hyperparam] for s in _injected_states(opt_state)
                    if self.hyperparam in s.hyperparams]

        if all(bool(jnp.all(a == b)) for a, b in zip(rates(opt_state), rates(state.opt_state))):
            return None
        self.reductions += 1
        return state.replace(opt_state=opt_state)

    def get_state(self) -> dict:
        return {"best": self.best, "wait": self.wait, "cooldown_left": self.cooldown_left,
                "reductions": self.reductions}

    def set_state(self, state: dict) -> None:
        self.best, self.wait = state["best"], state["wait"]
        self.cooldown_left, self.reductions = state["cooldown_left"], state["reductions"]

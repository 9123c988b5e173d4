"""The callback protocol of :func:`jdl.training.fit`, and the basic callbacks.

A callback sees the run through a :class:`FitContext` and may return a new
train state (e.g. with a changed learning rate in ``opt_state``), add entries
to the epoch's log, or ask the run to stop. Callbacks with state of their own
implement ``get_state()``/``set_state()`` (JSON-serialisable), and those that
keep train states (a best epoch's parameters) ``get_train_states()``/
``set_train_states()``, so that all of it is checkpointed and an interrupted
run resumes exactly. ``fit`` calls the setters, when it resumes, before
``on_fit_start``; a callback that is not resumed starts afresh there, so one
instance can serve several fits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jdl.training.state import TrainState
from jdl.validation import check_count


@dataclasses.dataclass
class FitContext:
    """What a callback can see of a running :func:`fit`.

    Attributes:
      model, loss_fn, optimizer: as passed to ``fit``.
      train_data, val_data: device-resident ``{"x", "y"}`` dicts (val may be None).
      batch_size: minibatch size.
      epochs: the number of epochs the run is asked for.
      epoch: the current epoch (0-based); ``step`` the optimizer steps taken.
      history: the per-epoch logs so far.
      callbacks: every callback of the run (so one can check for others).
      out_dir: the run directory, or None.
      stop_training: set to True to end the run after the current epoch.
      resumed: this ``fit`` continues a checkpointed run (callback states were
        restored with ``set_state``); ``False`` for a new run, which a
        stateful callback starts afresh in ``on_fit_start``.
    """

    model: Any
    loss_fn: Any
    optimizer: Any
    train_data: dict
    val_data: dict | None
    batch_size: int
    epochs: int
    epoch: int = 0
    step: int = 0
    history: list = dataclasses.field(default_factory=list)
    callbacks: tuple = ()
    out_dir: str | None = None
    stop_training: bool = False
    resumed: bool = False


class Callback:
    """Base class: override what you need. Returning a state replaces the run's state."""

    def on_fit_start(self, ctx: FitContext, state: TrainState) -> TrainState | None:
        return None

    def on_steps_end(self, ctx: FitContext, state: TrainState, metrics: dict) -> TrainState | None:
        """After each fused call of steps, and after an epoch's final partial
        minibatch; ``metrics`` are stacked per step (a leading axis)."""
        return None

    def steps_until_call(self, step: int) -> int | None:
        """Optimizer steps from ``step`` until this callback wants :meth:`on_steps_end`.

        :func:`~jdl.training.fit` ends a fused call there (as well as after
        ``steps_per_call`` steps), so a callback that acts every ``N`` steps
        returns ``N - step % N``. ``None``: no wish. Each distinct number of
        steps in a fused call compiles that call once.
        """
        del step
        return None

    def on_epoch_end(self, ctx: FitContext, state: TrainState, logs: dict) -> TrainState | None:
        """After validation; add entries to ``logs`` to record them in the history."""
        return None

    def on_fit_end(self, ctx: FitContext, state: TrainState) -> TrainState | None:
        return None

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        del state

    def get_train_states(self) -> dict[str, TrainState]:
        """Train states this callback holds that a resumed run needs, by name
        (identifiers); checkpointed alongside the run's state."""
        return {}

    def set_train_states(self, states: dict[str, TrainState]) -> None:
        del states


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs (seed 003).

    Records ``best_epoch`` in each epoch's log; with ``restore_best`` the run
    ends with the state of the best epoch. ``fit`` checkpoints the counters,
    the best state and the decision to stop, so a resumed run ends as the
    uninterrupted one does (a run that stopped stays stopped), and the final
    checkpoint holds the state ``fit`` returned. Each fit that does not
    resume starts afresh.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "min",
        restore_best: bool = True,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        patience = check_count(patience, "patience", 0, hint="epochs without improvement before stopping")
        if not min_delta >= 0:  # a negative one would count every worse epoch as an improvement
            raise ValueError(f"min_delta must be >= 0 (the least improvement that counts), got {min_delta!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode, self.restore_best = mode, restore_best
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0
        self._best_state: TrainState | None = None

    def _improved(self, value: float) -> bool:
        if math.isnan(value):  # a diverged epoch is never the best
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_fit_start(self, ctx, state):
        # A new run starts afresh: nothing carries over from an earlier fit, nor
        # from the state a failed resume had restored (a flag set by set_state
        # outlived such a failure, and the next run stopped on its numbers).
        if not ctx.resumed:
            self._reset()
        if self.monitor.startswith("val_") and ctx.val_data is None:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r} but this fit has no validation data; "
                             "pass val_data (or a Dataset with a validation split), or monitor 'train_loss'")
        return None

    def on_epoch_end(self, ctx, state, logs):
        if self.monitor not in logs:
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r} but the epoch logs only have "
                f"{sorted(logs)}; pass validation data or monitor another metric"
            )
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, ctx.epoch, 0
            self._best_state = state
        else:
            self.wait += 1
            if self.wait >= self.patience:
                ctx.stop_training = True
        logs["best_epoch"] = self.best_epoch
        return None

    def on_fit_end(self, ctx, state):
        if self.restore_best and self._best_state is not None:
            return self._best_state
        return None

    def get_state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def set_state(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self._best_state = None

    def get_train_states(self) -> dict[str, TrainState]:
        if self.restore_best and self._best_state is not None:
            return {"best": self._best_state}
        return {}

    def set_train_states(self, states: dict[str, TrainState]) -> None:
        self._best_state = states.get("best")

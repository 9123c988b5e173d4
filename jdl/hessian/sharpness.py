"""Sharpness (λ_max of the training loss's Hessian) tracked during :func:`jdl.training.fit`.

Gradient descent with step ``η`` on a quadratic is stable only if every
Hessian eigenvalue satisfies ``λ < 2/η``: along an eigenvector the error is
multiplied by ``1 − ηλ`` per step. Full-batch training drives λ_max up to
about ``2/η`` and then hovers there ("the edge of stability", Cohen et al.
2021); SGD and Adam show related behaviour. :class:`SharpnessTracker`
records λ_max every ``every`` optimizer steps together with the ``2/η`` line,
so the relation can be read off the history (and plotted with
:func:`~jdl.hessian.plots.plot_sharpness`).

Each reading linearises the gradient once and runs at most ``num_matvecs``
Lanczos steps, started from the previous reading's top eigenvector (the top
eigenvector changes slowly between nearby readings, so a warm start converges
in a few products), stopping early when the residual falls below ``tol``.

References:
  J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, "Gradient descent on
  neural networks typically occurs at the edge of stability", ICLR 2021.
  G. Gur-Ari, D. Roberts, E. Dyer, "Gradient descent happens in a tiny
  subspace", arXiv:1812.04754 (the gradient's share in the top eigenspace).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jdl.hessian._flat import check_count, check_like, check_number, flatten, random_like
from jdl.hessian.lanczos import lanczos
from jdl.hessian.operators import linearize_hessian
from jdl.optim.plateau import _injected_states
from jdl.training.callbacks import Callback, FitContext
from jdl.training.step import make_loss

PyTree = Any

__all__ = ["SharpnessTracker", "learning_rate_of", "learning_rates_of"]


def _apply(v, hessian):
    return hessian(v)


def learning_rates_of(opt_state: PyTree) -> list[float]:
    """Every scalar ``learning_rate`` stored in ``optax.inject_hyperparams``
    states within ``opt_state`` (chains, wrappers and ``optax.multi_transform``
    groups included), outermost first."""
    return [float(np.asarray(state.hyperparams["learning_rate"])) for state in _injected_states(opt_state)
            if "learning_rate" in state.hyperparams and np.ndim(state.hyperparams["learning_rate"]) == 0]


def learning_rate_of(opt_state: PyTree) -> float | None:
    """The learning rate stored in ``optax.inject_hyperparams`` state: the value
    all such states agree on, or ``None`` when there is none or they differ
    (e.g. parameter groups of ``optax.multi_transform`` with their own rates).

    It is the rate of the step just taken: ``inject_hyperparams`` evaluates a
    schedule at the start of each update, so after ``t`` steps the state holds
    ``schedule(t − 1)``, one step behind the rate the next step will use.
    """
    rates = learning_rates_of(opt_state)
    return rates[0] if rates and all(r == rates[0] for r in rates) else None


class SharpnessTracker(Callback):
    """Record the top Hessian eigenvalue (sharpness) every ``every`` steps.

    Readings are taken once before training and after every ``every``
    optimizer steps: :func:`~jdl.training.fit` ends its fused calls at the
    multiples of ``every`` (:meth:`steps_until_call`), so the spacing is
    exact whatever ``steps_per_call`` and the epoch length are. Each distinct
    number of steps in a fused call compiles that call once; an ``every`` that
    divides the steps per epoch (or is a multiple of ``steps_per_call``, when
    that divides them) keeps it to one or two. Each epoch's log gets:

    - ``{name}`` (``sharpness``): the last λ_max reading;
    - ``{name}_readings``: every reading in the epoch, as dicts with ``step``,
      ``train`` (the mode), ``lambda_max``, ``residual`` and ``converged``
      (its Lanczos residual ``‖H v − λ v‖`` and whether it fell below
      ``tol · |λ_max|``), ``num_matvecs``, and when tracked ``lambda_min``,
      ``lambda_min_residual``, ``lambda_min_converged``,
      ``top_gradient_fraction``, and ``stability_threshold`` (``2/η``) when
      η is known;
    - ``stability_threshold`` (``{name}_stability_threshold`` for another
      ``name``): ``2/η`` at the last reading.

    Args:
      every: optimizer steps between readings.
      train: the model mode of the loss whose Hessian is read — ``False``
        (eval: BatchNorm running statistics, no dropout) or ``True`` (train
        mode: batch statistics; dropout masks from a fixed key). Stated here
        explicitly, with no default, because it changes the Hessian of models
        with BatchNorm; each reading records it (``train``).
      num_matvecs: the most Hessian-vector products per eigenvalue (Lanczos steps).
      num_examples: the first ``num_examples`` training examples form the
        fixed batch whose loss is analysed (``None``: all of them).
      learning_rate: ``η`` for the ``2/η`` line: a float, a schedule
        ``step -> η`` (the reading after ``t`` steps records ``2/η(t)``, the
        rate of the next step), or ``None`` to read it from an
        ``optax.inject_hyperparams`` state — which holds the rate of the step
        just taken, one step behind a changing schedule (pass the schedule
        for exact alignment). With several injected rates that differ
        (parameter groups) no line is recorded, with a warning.
      track_min: also record λ_min (another ``num_matvecs`` products). λ_min
        of a network's Hessian usually lies in the dense bulk of small
        eigenvalues, where Lanczos converges slowly: check
        ``lambda_min_converged`` (measured: 4–7 % off after 20 products on a
        small MLP, where λ_max was within 1e-6).
      gradient_top_k: if > 0, also record the fraction ``‖P_k g‖² / ‖g‖²`` of
        the gradient inside the span of the top-``k`` Ritz vectors.
      tol: Lanczos residual tolerance relative to λ_max (stop early below it).
      seed: for the first (cold) start vector.
      name: the history keys' prefix; give each tracker in one run its own
        (e.g. one in eval mode and one in train mode).

    A tracker may be passed to several :func:`~jdl.training.fit` calls: each
    builds its reading afresh for that call's model, loss and data, and the
    warm start carries over only while the parameters keep their shapes.
    Warm-start vectors are not part of :meth:`get_state`; after a resume the
    first reading starts cold (the readings stay correct, just a little costlier).
    """

    def __init__(
        self,
        every: int = 10,
        *,
        train: bool,
        num_matvecs: int = 20,
        num_examples: int | None = 1024,
        learning_rate: float | Callable[[int], float] | None = None,
        track_min: bool = False,
        gradient_top_k: int = 0,
        tol: float = 1e-4,
        seed: int = 0,
        name: str = "sharpness",
    ):
        every = check_count(every, "every (the optimizer steps between readings)")
        if not isinstance(train, bool):
            raise TypeError(f"train must be True or False (the model mode of the loss), got {train!r}")
        num_matvecs = check_count(num_matvecs, "num_matvecs", 2)
        if num_examples is not None:
            num_examples = check_count(num_examples, "num_examples (None: all training examples)")
        gradient_top_k = check_count(gradient_top_k, "gradient_top_k", 0)
        if gradient_top_k > num_matvecs:
            raise ValueError(f"gradient_top_k must be in [0, num_matvecs={num_matvecs}], got {gradient_top_k}")
        check_number(tol, "tol", hint="a residual relative to lambda_max")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string (the history keys' prefix), got {name!r}")
        if learning_rate is not None and not callable(learning_rate):
            learning_rate = float(learning_rate)
        self.every, self.train, self.num_matvecs = every, train, num_matvecs
        self.num_examples, self.learning_rate = num_examples, learning_rate
        self.track_min, self.gradient_top_k = bool(track_min), gradient_top_k
        self.tol, self.seed, self.name = None if tol is None else float(tol), seed, name
        self._pending: list[dict] = []
        self._last_step = -1
        self._top = None
        self._bottom = None
        self._reading = None
        self._batch = None
        self._warned_rates = False

    @property
    def history_keys(self) -> tuple[str, str, str]:
        """The keys this tracker writes: last reading, all readings, ``2/η``."""
        threshold = "stability_threshold" if self.name == "sharpness" else f"{self.name}_stability_threshold"
        return self.name, f"{self.name}_readings", threshold

    # -- the compiled reading --------------------------------------------------------

    def _build(self, ctx: FitContext) -> None:
        loss = make_loss(ctx.model, ctx.loss_fn, train=self.train)
        k = max(1, self.gradient_top_k)
        top_solver = lanczos(self.num_matvecs, k=k, which="LA", tol=self.tol)
        bottom_solver = lanczos(self.num_matvecs, k=1, which="SA", tol=self.tol)
        track_min, top_k = self.track_min, self.gradient_top_k
        key = jax.random.key_data(jax.random.key(self.seed)) if self.train else None

        def reading(params, model_state, batch, v_top, v_bottom):
            grad, hessian = linearize_hessian(lambda p: loss(p, model_state, batch, key)[0], params)
            top = top_solver(_apply, v_top, hessian)
            out = {
                "lambda_max": top.eigenvalues[0],
                "residual": top.residuals[0],
                "converged": top.converged[0],
                "num_matvecs": top.num_matvecs,
                "v_top": jax.tree.map(lambda a: a[0], top.eigenvectors),
            }
            if track_min:
                bottom = bottom_solver(_apply, v_bottom, hessian)
                out["lambda_min"] = bottom.eigenvalues[0]
                out["lambda_min_residual"] = bottom.residuals[0]
                out["lambda_min_converged"] = bottom.converged[0]
                out["num_matvecs"] = out["num_matvecs"] + bottom.num_matvecs
                out["v_bottom"] = jax.tree.map(lambda a: a[0], bottom.eigenvectors)
            if top_k:
                g, _ = flatten(grad)
                proj = _rows(top.eigenvectors) @ g
                out["top_gradient_fraction"] = jnp.sum(proj * proj) / jnp.maximum(jnp.vdot(g, g), 1e-30)
            return out

        self._reading = jax.jit(reading)
        n = int(np.shape(ctx.train_data["y"])[0])
        m = n if self.num_examples is None else min(self.num_examples, n)
        self._batch = {name: v[:m] for name, v in ctx.train_data.items()}

    def _eta(self, state) -> float | None:
        lr = self.learning_rate
        if callable(lr):
            return float(lr(int(state.step)))
        if lr is not None:
            return lr
        rates = set(learning_rates_of(state.opt_state))
        if len(rates) > 1 and not self._warned_rates:
            self._warned_rates = True
            warnings.warn(f"SharpnessTracker: the optimizer state holds several learning rates {sorted(rates)}; "
                          "no 2/eta line is recorded. Pass learning_rate= to choose one.", stacklevel=2)
        return rates.pop() if len(rates) == 1 else None

    def _read(self, ctx: FitContext, state) -> None:
        if self._top is None:
            k1, k2 = jax.random.split(jax.random.key(self.seed))
            self._top = random_like(k1, state.params)
            self._bottom = random_like(k2, state.params)
        out = self._reading(state.params, state.model_state, self._batch, self._top, self._bottom)
        self._top = out.pop("v_top")
        if "v_bottom" in out:
            self._bottom = out.pop("v_bottom")
        record = {"step": int(ctx.step), "train": self.train}
        for k, v in out.items():
            record[k] = int(v) if k == "num_matvecs" else bool(v) if k.endswith("converged") else float(v)
        eta = self._eta(state)
        if eta is not None and eta > 0:
            record["stability_threshold"] = 2.0 / eta
        self._pending.append(record)
        self._last_step = int(ctx.step)

    # -- callback hooks --------------------------------------------------------------

    def on_fit_start(self, ctx, state):
        same = [cb for cb in ctx.callbacks if isinstance(cb, SharpnessTracker) and cb is not self
                and cb.name == self.name]
        if same:
            raise ValueError(f"two SharpnessTrackers in one fit write the same history keys {self.history_keys}; "
                             "give each its own name= (e.g. name='sharpness_train')")
        # Built for this call's model, loss and data (a tracker may serve several fits).
        self._build(ctx)
        if self._top is not None:
            try:
                check_like(self._top, state.params)
            except (TypeError, ValueError):  # another model: the warm start does not carry over
                self._top = self._bottom = None
        self._pending = []
        step = int(ctx.step)
        self._last_step = min(self._last_step, step)  # a fit from an earlier state reads on from there
        if step == 0:
            self._read(ctx, state)
        return None

    def steps_until_call(self, step: int) -> int:
        return self.every - step % self.every

    def on_steps_end(self, ctx, state, metrics):
        step = int(ctx.step)
        if step // self.every > self._last_step // self.every:
            self._read(ctx, state)
        return None

    def on_epoch_end(self, ctx, state, logs):
        if self._pending:
            last, readings, threshold = self.history_keys
            logs[last] = self._pending[-1]["lambda_max"]
            logs[readings] = list(self._pending)
            if "stability_threshold" in self._pending[-1]:
                logs[threshold] = self._pending[-1]["stability_threshold"]
            self._pending = []
        return None

    def get_state(self) -> dict:
        return {"last_step": self._last_step}

    def set_state(self, state: dict) -> None:
        self._last_step = int(state.get("last_step", -1))


def _rows(stacked: PyTree) -> jax.Array:
    """A pytree with a leading axis ``k`` as a ``(k, n)`` matrix of flat vectors."""
    return jax.vmap(lambda t: flatten(t)[0])(stacked)

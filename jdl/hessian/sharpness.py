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

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jdl.hessian._flat import flatten, random_like
from jdl.hessian.lanczos import lanczos
from jdl.hessian.operators import linearize_hessian
from jdl.training.callbacks import Callback, FitContext
from jdl.training.step import make_loss

PyTree = Any

__all__ = ["SharpnessTracker", "learning_rate_of"]


def _apply(v, hessian):
    return hessian(v)


def learning_rate_of(opt_state: PyTree) -> float | None:
    """The learning rate stored in an ``optax.inject_hyperparams`` state, if any."""
    found = []

    def visit(node):
        hyper = getattr(node, "hyperparams", None)
        if isinstance(hyper, dict) and "learning_rate" in hyper:
            found.append(hyper["learning_rate"])
            return
        if isinstance(node, (tuple, list)):
            for child in node:
                visit(child)

    visit(opt_state)
    return float(np.asarray(found[0])) if found else None


class SharpnessTracker(Callback):
    """Record the top Hessian eigenvalue (sharpness) every ``every`` steps.

    Readings are taken after the fused call in which the step count reaches
    a multiple of ``every`` (so pass ``steps_per_call`` dividing ``every`` to
    :func:`~jdl.training.fit` for exact spacing) and once before training.
    Each epoch's log gets:

    - ``sharpness``: the last λ_max reading;
    - ``sharpness_readings``: every reading in the epoch, as dicts with
      ``step``, ``train`` (the mode), ``lambda_max``, ``residual``, ``num_matvecs`` (and
      ``lambda_min``, ``top_gradient_fraction`` when tracked);
    - ``stability_threshold``: ``2/η`` at the last reading (when η is known).

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
        ``step -> η``, or ``None`` to read it from an
        ``optax.inject_hyperparams`` state (otherwise no line is recorded).
      track_min: also record λ_min (another ``num_matvecs`` products).
      gradient_top_k: if > 0, also record the fraction ``‖P_k g‖² / ‖g‖²`` of
        the gradient inside the span of the top-``k`` Ritz vectors.
      tol: Lanczos residual tolerance relative to λ_max (stop early below it).
      seed: for the first (cold) start vector.

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
    ):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every!r}")
        if not isinstance(train, bool):
            raise TypeError(f"train must be True or False (the model mode of the loss), got {train!r}")
        if isinstance(num_matvecs, bool) or not isinstance(num_matvecs, int) or num_matvecs < 2:
            raise ValueError(f"num_matvecs must be an integer >= 2, got {num_matvecs!r}")
        if gradient_top_k < 0 or gradient_top_k > num_matvecs:
            raise ValueError(f"gradient_top_k must be in [0, num_matvecs={num_matvecs}], got {gradient_top_k}")
        self.every, self.train, self.num_matvecs = every, train, num_matvecs
        self.num_examples, self.learning_rate = num_examples, learning_rate
        self.track_min, self.gradient_top_k, self.tol, self.seed = track_min, gradient_top_k, tol, seed
        self._pending: list[dict] = []
        self._last_step = -1
        self._top = None
        self._bottom = None
        self._reading = None
        self._batch = None

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
                "num_matvecs": top.num_matvecs,
                "v_top": jax.tree.map(lambda a: a[0], top.eigenvectors),
            }
            if track_min:
                bottom = bottom_solver(_apply, v_bottom, hessian)
                out["lambda_min"] = bottom.eigenvalues[0]
                out["num_matvecs"] = out["num_matvecs"] + bottom.num_matvecs
                out["v_bottom"] = jax.tree.map(lambda a: a[0], bottom.eigenvectors)
            if top_k:
                g, _ = flatten(grad)
                proj = _rows(top.eigenvectors) @ g
                out["top_gradient_fraction"] = jnp.sum(proj * proj) / jnp.maximum(jnp.vdot(g, g), 1e-30)
            return out

        self._reading = jax.jit(reading)
        n = int(np.shape(ctx.train_data["y"])[0])
        m = n if self.num_examples is None else min(int(self.num_examples), n)
        self._batch = {name: v[:m] for name, v in ctx.train_data.items()}

    def _eta(self, ctx: FitContext, state, step: int) -> float | None:
        lr = self.learning_rate
        if callable(lr):
            return float(lr(step))
        if lr is not None:
            return float(lr)
        return learning_rate_of(state.opt_state)

    def _read(self, ctx: FitContext, state) -> None:
        if self._reading is None:
            self._build(ctx)
        if self._top is None:
            k1, k2 = jax.random.split(jax.random.key(self.seed))
            self._top = random_like(k1, state.params)
            self._bottom = random_like(k2, state.params)
        out = self._reading(state.params, state.model_state, self._batch, self._top, self._bottom)
        self._top = out.pop("v_top")
        if "v_bottom" in out:
            self._bottom = out.pop("v_bottom")
        record = {"step": int(ctx.step), "train": self.train}
        record.update({k: (int(v) if k == "num_matvecs" else float(v)) for k, v in out.items()})
        eta = self._eta(ctx, state, ctx.step)
        if eta is not None and eta > 0:
            record["stability_threshold"] = 2.0 / eta
        self._pending.append(record)
        self._last_step = int(ctx.step)

    # -- callback hooks --------------------------------------------------------------

    def on_fit_start(self, ctx, state):
        self._pending = []
        if int(ctx.step) == 0:
            self._read(ctx, state)
        return None

    def on_steps_end(self, ctx, state, metrics):
        step = int(ctx.step)
        if step // self.every > self._last_step // self.every:
            self._read(ctx, state)
        return None

    def on_epoch_end(self, ctx, state, logs):
        if self._pending:
            logs["sharpness"] = self._pending[-1]["lambda_max"]
            logs["sharpness_readings"] = list(self._pending)
            if "stability_threshold" in self._pending[-1]:
                logs["stability_threshold"] = self._pending[-1]["stability_threshold"]
            self._pending = []
        return None

    def get_state(self) -> dict:
        return {"last_step": self._last_step}

    def set_state(self, state: dict) -> None:
        self._last_step = int(state.get("last_step", -1))


def _rows(stacked: PyTree) -> jax.Array:
    """A pytree with a leading axis ``k`` as a ``(k, n)`` matrix of flat vectors."""
    return jax.vmap(lambda t: flatten(t)[0])(stacked)

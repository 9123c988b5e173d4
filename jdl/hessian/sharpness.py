"""Sharpness (λ_max of the training loss's Hessian) tracked during :func:`jdl.training.fit`.

Gradient descent with step ``η`` on a quadratic is stable only if every
Hessian eigenvalue satisfies ``λ < 2/η``: along an eigenvector the error is
multiplied by ``1 − ηλ`` per step. Full-batch training drives λ_max up to
about ``2/η`` and then hovers there ("the edge of stability", Cohen et al.
2021); SGD and Adam show related behaviour. :class:`SharpnessTracker`
records λ_max every ``every`` optimizer steps together with the ``2/η`` line,
so the relation can be read off the history (and plotted with
:func:`~jdl.hessian.plots.plot_sharpness`).

With heavy-ball momentum ``β`` the same quadratic is stable only for
``λ < 2(1 + β)/η``, and with Nesterov's momentum for ``λ < 2(1 + β)/(η(1 + 2β))``
(the roots of ``z² − (1 + β − ηλ) z + β`` and of its Nesterov counterpart
inside the unit circle); :func:`stability_threshold` gives the line recorded.

Each reading linearises the gradient once and runs at most ``num_matvecs``
Lanczos steps, started near the previous reading's top eigenvector (the top
eigenvector changes slowly between nearby readings, so a warm start converges
in a few products), stopping early when the residual falls below ``tol``.
The start is that eigenvector plus a fresh random vector of half its norm: a
Krylov space begun at an (almost) exact eigenvector barely sees the others,
and when the top two eigenvalues cross between readings it would stop, with
a small residual, at the old one — now the second (measured: 17 % low after
2 products on a synthetic crossing; with the random part, correct after 4–8).

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

__all__ = ["SharpnessTracker", "learning_rate_of", "learning_rates_of", "stability_threshold"]


def _apply(v, hessian):
    return hessian(v)


# The random part of each warm start, relative to the previous eigenvector (both unit).
_FRESH = 0.5


def stability_threshold(learning_rate: float, momentum: float = 0.0, nesterov: bool = False) -> float:
    """The largest curvature ``λ`` at which gradient descent on ``½ λ x²`` is stable.

    ``2/η`` for plain gradient descent; ``2(1 + β)/η`` with heavy-ball momentum
    ``β`` (``optax.sgd(η, momentum=β)``, :func:`jdl.optim.momentum`); and
    ``2(1 + β)/(η(1 + 2β))`` with Nesterov's (``nesterov=True``,
    :func:`jdl.optim.nesterov`) — where the iteration's characteristic roots
    leave the unit circle. For adaptive methods (Adam, RMSProp) the line is
    gradient descent's only: theirs applies to the preconditioned Hessian
    (Cohen et al., "Adaptive gradient methods at the edge of stability", 2022).

    Example:
      >>> [round(stability_threshold(0.1, *more), 4) for more in ((), (0.9,), (0.9, True))]
      [20.0, 38.0, 13.5714]
    """
    eta, beta = float(learning_rate), float(momentum)
    if not eta > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    if not 0 <= beta < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return 2 * (1 + beta) / (eta * (1 + 2 * beta)) if nesterov else 2 * (1 + beta) / eta


def _injected_momenta(opt_state: PyTree) -> list[float]:
    """Every scalar ``momentum`` stored in ``optax.inject_hyperparams`` states."""
    return [float(np.asarray(state.hyperparams["momentum"])) for state in _injected_states(opt_state)
            if "momentum" in state.hyperparams and np.ndim(state.hyperparams["momentum"]) == 0]


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
    that divides them) keeps it to one or two. The log of each epoch in which
    a reading was taken gets (an epoch shorter than ``every`` steps may have
    none, and then none of these keys):

    - ``{name}`` (``sharpness``): the last λ_max reading;
    - ``{name}_readings``: every reading in the epoch, as dicts with ``step``,
      ``train`` (the mode), ``lambda_max``, ``residual`` and ``converged``
      (its Lanczos residual ``‖H v − λ v‖`` and whether it fell below
      ``tol`` times the largest |Ritz value| of the reading's Krylov space —
      ``|λ_max|``, or ``|λ_min|`` where that is larger), ``num_matvecs``, and
      when tracked ``lambda_min``, ``lambda_min_residual``,
      ``lambda_min_converged``, ``top_gradient_fraction``, and
      ``stability_threshold`` (:func:`stability_threshold`: ``2/η``, or
      ``2(1 + β)/η`` with momentum ``β``, which is then recorded as
      ``momentum``) when η is known;
    - ``stability_threshold`` (``{name}_stability_threshold`` for another
      ``name``): that line at the last reading.

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
      momentum: the optimizer's momentum ``β`` for the line
        (:func:`stability_threshold`); ``None`` reads an injected
        ``momentum`` hyperparameter from the state (``optax.sgd`` and
        :func:`jdl.optim.momentum` under ``optax.inject_hyperparams``), else 0;
        an injected schedule is read one step behind, as the rate is. Any
        injected hyperparameter named ``momentum`` is read as heavy-ball ``β``
        — RMSProp's too, whose line it is not (for adaptive methods pass
        ``momentum=0``: their line is gradient descent's). Momenta that differ
        between parameter groups give no line, with a warning. Optimizers that
        take ``momentum`` as a fixed argument keep it out of their state: pass
        it here.
      nesterov: whether that momentum is Nesterov's (not visible in the state).
      track_min: also record λ_min (another ``num_matvecs`` products). λ_min
        of a network's Hessian usually lies in the dense bulk of small
        eigenvalues, where Lanczos converges slowly: check
        ``lambda_min_converged`` (measured: 4–7 % off after 20 products on a
        small MLP, where λ_max was within 1e-6).
      gradient_top_k: if > 0, also record the fraction ``‖P_k g‖² / ‖g‖²`` of
        the gradient inside the span of the top-``k`` Ritz vectors.
      tol: Lanczos residual tolerance relative to the largest |Ritz value|
        (stop early below it; see ``converged`` above).
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
        momentum: float | None = None,
        nesterov: bool = False,
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
            check_number(learning_rate, "learning_rate", positive=True,
                         hint="the step size η of the 2/η line, a schedule step -> η, or None")
            learning_rate = float(learning_rate)
        if momentum is not None:
            check_number(momentum, "momentum", hint="β in [0, 1), or None to read it from the state")
            if not momentum < 1:
                raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
            momentum = float(momentum)
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
        self.momentum, self.nesterov = momentum, nesterov
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
        self._warned_momenta = False

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

        def reading(params, model_state, batch, v_top, v_bottom, fresh_key):
            grad, hessian = linearize_hessian(lambda p: loss(p, model_state, batch, key)[0], params)
            k_top, k_bottom = jax.random.split(fresh_key)
            top = top_solver(_apply, _warm_start(v_top, k_top), hessian)
            out = {
                "lambda_max": top.eigenvalues[0],
                "residual": top.residuals[0],
                "converged": top.converged[0],
                "num_matvecs": top.num_matvecs,
                "v_top": jax.tree.map(lambda a: a[0], top.eigenvectors),
            }
            if track_min:
                bottom = bottom_solver(_apply, _warm_start(v_bottom, k_bottom), hessian)
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
        if len(rates) != 1 and not self._warned_rates:
            self._warned_rates = True
            found = (f"holds several learning rates {sorted(rates)}" if rates else
                     "holds no learning rate (wrap the optimizer in optax.inject_hyperparams to expose it)")
            warnings.warn(f"SharpnessTracker: the optimizer state {found}; no 2/eta line is recorded. "
                          "Pass learning_rate= to choose one.", stacklevel=2)
        return rates.pop() if len(rates) == 1 else None

    def _momentum(self, state) -> float | None:
        """β for the line, ``None`` (no line) when injected momenta disagree."""
        if self.momentum is not None:
            return self.momentum
        momenta = set(_injected_momenta(state.opt_state))
        if len(momenta) > 1:
            if not self._warned_momenta:
                self._warned_momenta = True
                warnings.warn(f"SharpnessTracker: the optimizer state holds several momenta {sorted(momenta)} "
                              "(parameter groups?), so no one stability line applies; none is recorded. "
                              "Pass momentum= (and learning_rate=) to choose one.", stacklevel=2)
            return None
        return momenta.pop() if momenta else 0.0

    def _read(self, ctx: FitContext, state) -> None:
        base = jax.random.key(self.seed)
        if self._top is None:
            k1, k2 = jax.random.split(base)
            # Placed as the params are (a mesh's sharding), so that the first
            # reading and the later ones — given the last eigenvectors — share
            # one compiled program.
            sharding = jax.tree.map(lambda a: getattr(a, "sharding", None), state.params)
            self._top = jax.device_put(random_like(k1, state.params), sharding)
            self._bottom = jax.device_put(random_like(k2, state.params), sharding)
        fresh = jax.random.fold_in(jax.random.fold_in(base, 1), int(ctx.step))
        out = self._reading(state.params, state.model_state, self._batch, self._top, self._bottom, fresh)
        self._top = out.pop("v_top")
        if "v_bottom" in out:
            self._bottom = out.pop("v_bottom")
        record = {"step": int(ctx.step), "train": self.train}
        for k, v in out.items():
            record[k] = int(v) if k == "num_matvecs" else bool(v) if k.endswith("converged") else float(v)
        eta = self._eta(state)
        beta = self._momentum(state) if eta is not None and eta > 0 else None
        if beta is not None:
            if beta:
                record["momentum"] = round(beta, 7)  # a float32 0.9 reads 0.8999999761581421
            record["stability_threshold"] = stability_threshold(eta, beta, self.nesterov)
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


def _warm_start(previous: PyTree, key: jax.Array) -> PyTree:
    """``v/‖v‖ + ½ r/‖r‖``: the previous eigenvector with a fresh random part
    (see the module docstring), so the Krylov space sees every direction."""
    v, unflatten = flatten(previous)
    r = jax.random.normal(key, v.shape, v.dtype)
    v = v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(v.dtype).tiny)
    return unflatten(v + _FRESH * r / jnp.linalg.norm(r))


def _rows(stacked: PyTree) -> jax.Array:
    """A pytree with a leading axis ``k`` as a ``(k, n)`` matrix of flat vectors."""
    return jax.vmap(lambda t: flatten(t)[0])(stacked)

"""Pure train and eval steps, single and fused over many minibatches.

    state, metrics = train_step(state, batch)
    state, metrics = fused_step(state, data, indices)   # K steps, one compiled call
    metrics = eval_step(state, batch)

Every function here is a pure function of pytrees: ``jax.jit`` compiles it once
per batch shape, ``jax.vmap`` runs it over a stack of states (ensembles,
hyperparameter sweeps), and it runs unchanged on batches sharded over devices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdl.training.model import Model, Variables
from jdl.training.state import TrainState, step_keys
from jdl.validation import check_batch, check_positive_int, check_step_batch

PyTree = Any
Batch = dict
LossFn = Callable[[jax.Array, jax.Array], jax.Array]
MetricsFn = Callable[[jax.Array, jax.Array], dict]


def classification_metrics(outputs: jax.Array, targets: jax.Array) -> dict:
    """Accuracy when targets are integer class labels and outputs are class scores.

    Anything else (regression targets, a model that returns a tuple such as
    ``(logits, aux)`` for its own ``loss_fn``) gets no default metrics.
    """
    if not (hasattr(outputs, "ndim") and hasattr(targets, "dtype")):
        return {}
    if jnp.issubdtype(targets.dtype, jnp.integer) and outputs.ndim == targets.ndim + 1:
        correct = jnp.argmax(outputs, axis=-1) == targets
        return {"accuracy": jnp.mean(correct.astype(jnp.float32))}
    return {}


def _mean_loss(loss_fn: LossFn, outputs, targets) -> jax.Array:
    loss = loss_fn(outputs, targets)
    return jnp.mean(loss) if jnp.ndim(loss) else loss


def make_loss(model: Model, loss_fn: LossFn, *, train: bool = False) -> Callable:
    """``loss(params, model_state, batch, key) -> (loss, (outputs, new_model_state))``.

    The objective the train step differentiates, exposed so that Hessian tools
    and diagnostics differentiate exactly the same function.
    """

    def loss(params, model_state, batch, key=None):
        outputs, new_model_state = model.apply(Variables(params, model_state), batch["x"], train=train, key=key)
        return _mean_loss(loss_fn, outputs, batch["y"]), (outputs, new_model_state)

    return loss


def _extra_metrics(metrics_fn, outputs, targets, *, reserved: tuple[str, ...]) -> dict:
    """``metrics_fn(outputs, targets)``, checked when the step is traced: a dict
    of scalars (the epoch's figure is a mean over steps weighted by minibatch
    size, so a per-example array has no place in it) that does not reuse the
    step's own names (a ``"loss"`` replaced the loss that early stopping and
    the learning-rate plateau rule read)."""
    extra = metrics_fn(outputs, targets)
    if not isinstance(extra, dict):
        raise TypeError(f"metrics_fn must return a dict of scalar metrics, got {type(extra).__name__}")
    taken = sorted(set(extra) & set(reserved))
    if taken:
        raise ValueError(f"metrics_fn returned {taken[0]!r}, a name the step reports itself ({', '.join(reserved)}); "
                         "rename that metric")
    shaped = {k: jnp.shape(v) for k, v in extra.items() if jnp.shape(v) != ()}
    if shaped:
        name, shape = next(iter(shaped.items()))
        raise ValueError(f"metrics_fn's {name!r} has shape {shape}; each metric must be a scalar for the "
                         f"minibatch (e.g. jnp.mean(...) over its examples)")
    return extra


def _train_step_fn(model: Model, loss_fn: LossFn, optimizer, metrics_fn: MetricsFn | None, grad_norm: bool = False):
    loss = make_loss(model, loss_fn, train=True)
    metrics_fn = metrics_fn or classification_metrics

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        dropout_key, _ = step_keys(state.key)
        key = jax.random.key_data(jax.random.fold_in(dropout_key, state.step))
        (value, (outputs, model_state)), grads = jax.value_and_grad(loss, has_aux=True)(
            state.params, state.model_state, batch, key
        )
        updates, opt_state = _optimizer_update(
            optimizer,
            grads,
            state.opt_state,
            state.params,
            value,
            lambda p: loss(p, state.model_state, batch, key)[0],
        )
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": value}
        if grad_norm:  # opt-in: it keeps the gradient alive past the update (≈5 % on a small MLP)
            metrics["grad_norm"] = optax.tree.norm(grads)
        metrics.update(_extra_metrics(metrics_fn, outputs, batch["y"], reserved=("loss", "grad_norm")))
        new_state = state.replace(params=params, model_state=model_state, opt_state=opt_state, step=state.step + 1)
        return new_state, metrics

    return train_step


def _optimizer_update(optimizer, grads, opt_state, params, value, value_fn):
    """``optimizer.update``, passing ``value``, ``grad`` and ``value_fn`` to optimizers
    that take extra arguments (``optax.GradientTransformationExtraArgs``): line
    searches (``optax.lbfgs``) and jdl's second-order methods read the loss
    function of the current minibatch from ``value_fn``. Plain transforms ignore them.
    """
    if isinstance(optimizer, optax.GradientTransformationExtraArgs):
        return optimizer.update(grads, opt_state, params, value=value, grad=grads, value_fn=value_fn)
    return optimizer.update(grads, opt_state, params)


def _check_single_state(state: TrainState) -> None:
    """A stack of train states (an ensemble from ``jax.vmap(create_train_state)``)
    given to an unbatched step failed deep inside ``jax.random.split``."""
    shape = jnp.shape(getattr(state, "step", ()))
    if shape != ():
        raise ValueError(
            f"the train state's step has shape {tuple(shape)}: this is a stack of {shape[0]} train states (an "
            "ensemble), not one; run the step under jax.vmap, e.g. jax.jit(jax.vmap(make_train_step(..., "
            "jit=False), in_axes=(0, None)))"
        )


def _checked(fn, *, leading_axes=1):
    """Check the batch against the state's spec at trace time, before XLA sees it."""

    def checked(state: TrainState, batch: Batch, *args):
        _check_single_state(state)
        check_batch(state.batch_spec, batch, leading_axes=leading_axes)
        return fn(state, batch, *args)

    return checked


def _jit_checked(fn, **jit_kwargs):
    """``jax.jit(fn)`` behind the checks a trace cannot make: JAX rounds
    float64 NumPy input to float32 (x64 off) before the traced function sees
    it (:func:`~jdl.validation.check_no_silent_downcast`), turns lists into
    arrays of its own choosing, and traces an empty batch into a failure deep
    inside (:func:`~jdl.validation.check_step_batch`). The jitted
    function's ``lower``, ``trace``, ``eval_shape`` and cache stay reachable."""
    jitted = jax.jit(fn, **jit_kwargs)

    @functools.wraps(fn)
    def step(state, batch, *args):
        check_step_batch(batch)
        return jitted(state, batch, *args)

    step.jitted = jitted
    step.lower, step.trace, step.eval_shape = jitted.lower, jitted.trace, jitted.eval_shape
    step._cache_size = jitted._cache_size
    return step


def make_train_step(
    model: Model,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    metrics_fn: MetricsFn | None = None,
    grad_norm: bool = False,
    jit: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """Build the pure step ``(state, batch) -> (state, metrics)``.

    One step: ``g = ∇_θ L(θ; batch)``, ``(u, s) = optimizer.update(g, s, θ)``,
    ``θ ← θ + u``. Dropout uses the key ``fold_in(dropout_key, step)``.

    Args:
      model: the model's pure ``init``/``apply`` pair.
      loss_fn: ``loss_fn(outputs, targets)``, per-example losses or their mean.
      optimizer: any ``optax.GradientTransformation``.
      metrics_fn: extra metrics of ``(outputs, targets)``; by default accuracy
        for integer labels.
      grad_norm: also report ``grad_norm``, ‖g‖₂ of the minibatch gradient
        (seed 000/003: its trace over time tells a minimum from a plateau).
        Off by default: it keeps the gradient alive past the update, which
        costs about 5 % of a small MLP's step on CPU.
      jit: return the ``jax.jit``-compiled step (``False`` for the raw function,
        e.g. to ``jax.vmap`` or ``lax.scan`` it yourself).

    Returns:
      ``train_step(state, batch) -> (state, metrics)`` with metrics ``loss``,
      ``accuracy`` for classification, and ``grad_norm`` if asked for.
    """
    step = _checked(_train_step_fn(model, loss_fn, optimizer, metrics_fn, grad_norm))
    return _jit_checked(step) if jit else step


def make_eval_step(
    model: Model,
    loss_fn: LossFn,
    *,
    metrics_fn: MetricsFn | None = None,
    jit: bool = True,
) -> Callable[[TrainState, Batch], dict]:
    """Build ``eval_step(state, batch) -> metrics`` (eval mode: no dropout, running BN stats)."""
    loss = make_loss(model, loss_fn, train=False)
    metrics_fn = metrics_fn or classification_metrics

    def eval_step(state: TrainState, batch: Batch) -> dict:
        value, (outputs, _) = loss(state.params, state.model_state, batch)
        return {"loss": value, **_extra_metrics(metrics_fn, outputs, batch["y"], reserved=("loss", "grad_norm"))}

    step = _checked(eval_step)
    return _jit_checked(step) if jit else step


# ----------------------------------------------------------------------------------
# Fused steps
# ----------------------------------------------------------------------------------

_CONV_PRIMITIVES = {"conv_general_dilated"}


def _primitives(jaxpr) -> set[str]:
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in _subjaxprs(eqn.params):
            names |= _primitives(sub)
    return names


def _subjaxprs(params):
    for v in params.values():
        for item in v if isinstance(v, (tuple, list)) else (v,):
            if hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
                yield item.jaxpr
            elif hasattr(item, "eqns"):
                yield item


def uses_convolution(fn: Callable, *args) -> bool:
    """Whether ``fn(*args)`` runs a convolution (inspects its jaxpr; no compilation)."""
    closed = jax.make_jaxpr(fn)(*args)
    return bool(_primitives(closed.jaxpr) & _CONV_PRIMITIVES)


def _check_indices(indices, n: int) -> None:
    """Minibatch indices: ``(steps, batch_size)`` integers in ``[0, n)``. Out of
    range, ``jnp.take`` fills rows with NaN and the run goes on with NaN
    parameters; a 1-D vector failed deep inside XLA. The range is checked when
    the indices are concrete (a host copy: the indices are small)."""
    shape, dtype = jnp.shape(indices), getattr(indices, "dtype", None)
    if len(shape) != 2 or dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(
            f"indices must be a 2-D integer array (steps, batch_size), one row of example indices per step; got "
            f"{dtype}{tuple(shape)} (e.g. jdl.data.epoch_indices(key, epoch, n, batch_size)[0])"
        )
    if isinstance(indices, jax.core.Tracer) or not shape[0]:
        return
    if not shape[1]:  # every step's minibatch empty: a NaN loss, and NaN parameters after the update
        raise ValueError(f"indices have shape {tuple(shape)}: {shape[0]} steps of 0 examples each; each step "
                         "needs at least one example")
    values = np.asarray(indices)
    low, high = values.min(), values.max()
    if low < 0 or high >= n:
        raise ValueError(f"indices range over [{low}, {high}] but the data has {n} examples (indices 0 to {n - 1})")


def _gather(data: Batch, idx: jax.Array) -> Batch:
    return {k: jnp.take(v, idx, axis=0) for k, v in data.items()}


LoopKind = Literal["auto", "scan", "unrolled", "python"]
_LOOPS = get_args(LoopKind)


def make_fused_train_step(
    model: Model,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    metrics_fn: MetricsFn | None = None,
    loop: LoopKind = "auto",
    batch_sharding: jax.sharding.Sharding | None = None,
    grad_norm: bool = False,
    jit: bool = True,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]:
    """K train steps in one call: ``fused(state, data, indices) -> (state, metrics)``.

    ``data`` is the whole (device-resident) dataset ``{"x": (N, ...), "y": (N, ...)}``
    and ``indices`` an ``int32[K, B]`` array of example indices: step ``k``
    trains on ``data[indices[k]]``. The K steps run inside one compiled
    ``lax.scan``, so a small network is not bound by Python dispatch. Metrics
    come back stacked, shape ``(K,)``. The result equals K calls of
    :func:`make_train_step` (a test checks this).

    Args:
      loop: how the K steps run.
        ``"scan"``: one ``lax.scan``.
        ``"unrolled"``: ``lax.scan(..., unroll=K)``, the body laid out K times.
        ``"python"``: a Python loop over one jitted step (no fusion).
        ``"auto"``: ``"scan"``, except on CPU for models with convolutions,
        where XLA's CPU backend runs convolutions inside loops far slower than
        outside them (about ten times, measured in ``benchmarks/train_step.py``),
        so it falls back to ``"python"``.
      batch_sharding: if given, each gathered minibatch is constrained to this
        sharding (e.g. ``NamedSharding(mesh, P("data"))``) for data parallelism.
      grad_norm: also report ‖g‖₂ per step (see :func:`make_train_step`).
      jit: ``False`` returns the raw ``lax.scan`` function (``loop`` must be
        ``"scan"`` or ``"auto"``), to ``jax.vmap`` over an ensemble of states.
    """
    if loop not in _LOOPS:
        raise ValueError(f"unknown loop {loop!r}; use one of {_LOOPS}")
    step_fn = _train_step_fn(model, loss_fn, optimizer, metrics_fn, grad_norm)

    def one(state, data, idx):
        batch = _gather(data, idx)
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return step_fn(state, batch)

    def fused_scan(state, data, indices, unroll=1):
        def body(s, idx):
            return one(s, data, idx)

        return jax.lax.scan(body, state, indices, unroll=unroll)

    if not jit:
        if loop not in ("auto", "scan"):
            raise ValueError(f"jit=False returns the raw lax.scan; loop={loop!r} needs jit=True")
        return fused_scan

    scan_jit = jax.jit(fused_scan)
    unrolled_jit = jax.jit(lambda s, d, i: fused_scan(s, d, i, unroll=i.shape[0]))
    one_jit = jax.jit(one)
    decided: dict[Any, str] = {}

    def python_loop(state, data, indices):
        # One host copy of the indices; each step then sends its row (a few hundred bytes)
        # rather than dispatching a device-side slice per step.
        rows = np.asarray(indices)
        history = []
        for row in rows:
            state, m = one_jit(state, data, row)
            history.append(m)
        return state, jax.tree.map(lambda *xs: jnp.stack(xs), *history)

    def resolve(state, data, indices) -> str:
        if loop != "auto":
            return loop
        spec = (state.batch_spec, tuple(sorted((k, jnp.shape(v)) for k, v in data.items())))
        if spec not in decided:
            on_cpu = jax.default_backend() == "cpu"
            sample = _gather(data, indices[0])
            conv = on_cpu and uses_convolution(step_fn, state, sample)
            decided[spec] = "python" if conv else "scan"
        return decided[spec]

    def fused(state: TrainState, data: Batch, indices: jax.Array):
        _check_single_state(state)
        check_batch(state.batch_spec, data, where="data")
        _check_indices(indices, int(jnp.shape(data["x"])[0]))
        if not np.shape(indices)[0]:  # no steps: the state as it is, metrics with a zero-length axis
            return scan_jit(state, data, indices)
        kind = resolve(state, data, indices)
        if kind == "scan":
            return scan_jit(state, data, indices)
        if kind == "unrolled":
            return unrolled_jit(state, data, indices)
        if kind == "python":
            return python_loop(state, data, indices)
        raise ValueError(f"unknown loop {kind!r}; use 'auto', 'scan', 'unrolled' or 'python'")

    fused.loop_kind = resolve  # exposed for benchmarks and tests
    return fused


def make_evaluate(
    model: Model,
    loss_fn: LossFn,
    *,
    batch_size: int = 512,
    metrics_fn: MetricsFn | None = None,
) -> Callable[[TrainState, Batch], dict]:
    """``evaluate(state, data) -> metrics`` averaged exactly over the whole dataset.

    Full batches run in one ``lax.scan``; a final partial batch runs once more,
    and the per-batch means are weighted by batch size.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    eval_step = make_eval_step(model, loss_fn, metrics_fn=metrics_fn, jit=False)

    @jax.jit
    def full_batches(state, data):
        def body(_, batch):
            return None, eval_step(state, batch)

        return jax.lax.scan(body, None, data)[1]

    partial = jax.jit(eval_step)

    def evaluate(state: TrainState, data: Batch) -> dict:
        _check_single_state(state)
        check_batch(state.batch_spec, data, where="evaluation data")
        n = int(jnp.shape(data["x"])[0])
        if n == 0:
            raise ValueError("evaluation data is empty: there is nothing to average; pass at least one example")
        full = (n // batch_size) * batch_size
        totals: dict[str, float] = {}
        if full:
            stacked = {
                k: jnp.reshape(v[:full], (full // batch_size, batch_size) + v.shape[1:]) for k, v in data.items()
            }
            for k, v in full_batches(state, stacked).items():
                totals[k] = float(jnp.sum(v)) * batch_size
        if n - full:
            rest = {k: v[full:] for k, v in data.items()}
            for k, v in partial(state, rest).items():
                totals[k] = totals.get(k, 0.0) + float(v) * (n - full)
        return {k: v / n for k, v in totals.items()}

    return evaluate

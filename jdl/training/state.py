"""The train state: one pytree that holds everything a training run changes."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jdl.training.model import Model, Variables

PyTree = Any


class ArraySpec(NamedTuple):
    """Shape (without the batch axis) and dtype of one batch entry."""

    shape: tuple[int, ...]
    dtype: str


@struct.dataclass
class TrainState:
    """Everything a training run updates, as one pytree.

    Attributes:
      params: the trainable parameters.
      model_state: non-trainable model variables (BatchNorm statistics).
      opt_state: the optimizer's state.
      step: number of optimizer steps taken (int32 scalar).
      key: the run's PRNG key as raw ``uint32[2]`` data. :func:`step_keys`
        splits it into a dropout stream and a shuffling stream; step ``t``'s
        dropout key is ``fold_in(dropout, t)`` and epoch ``e``'s order comes
        from ``fold_in(shuffle, e)``, so a run is reproducible and resumable exactly.
      batch_spec: static shapes/dtypes of the batch entries the model was
        initialised for, used to reject mismatched data before tracing.
    """

    params: PyTree
    model_state: PyTree
    opt_state: PyTree
    step: jax.Array
    key: jax.Array
    batch_spec: tuple[tuple[str, ArraySpec], ...] = struct.field(pytree_node=False, default=())


def batch_spec_of(batch: dict) -> tuple[tuple[str, ArraySpec], ...]:
    """The static spec of a batch: per entry, the shape after the batch axis, and the dtype."""
    spec = []
    for name in sorted(batch):
        a = batch[name]
        spec.append((name, ArraySpec(tuple(int(d) for d in np.shape(a)[1:]), str(jnp.result_type(a)))))
    return tuple(spec)


SEED_LIMIT = 2**32


def check_seed(seed, name: str = "seed") -> int:
    """An integer seed in ``[0, 2³²)``: JAX keeps 32 bits of a seed when 64-bit
    mode is off, so seed 2³² + 1 would give seed 1's key."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {seed!r}")
    if not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"{name} must be in [0, 2**32), got {seed}; JAX keeps 32 bits of a seed, so a seed "
                         "outside would give the key of one inside")
    return int(seed)


def _raw_key(key) -> jax.Array:
    """The key as raw ``uint32[2]`` data, from a seed, a typed key or raw key data."""
    if isinstance(key, (int, np.integer, bool, np.bool_)):
        return jax.random.key_data(jax.random.key(check_seed(key, "key")))
    key = jnp.asarray(key)
    if key.ndim == 0 and jnp.issubdtype(key.dtype, jnp.integer):  # a seed as an array: vmapped seeds, too
        if not isinstance(key, jax.core.Tracer):
            check_seed(int(key), "key")
        return jax.random.key_data(jax.random.key(key))
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    expected = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))  # uint32[2] for threefry
    if key.dtype != expected.dtype or key.shape != expected.shape:
        raise ValueError(
            f"key must be an integer seed, a key from jax.random.key, or its raw data "
            f"({expected.dtype}{tuple(expected.shape)}); got an array of "
            f"{key.dtype}{tuple(key.shape)}"
        )
    return key


def create_train_state(
    model: Model,
    optimizer: optax.GradientTransformation,
    *,
    key: jax.Array | int,
    batch: dict,
) -> TrainState:
    """Initialise a model and its optimizer into a :class:`TrainState`.

    Args:
      model: a :class:`~jdl.training.model.Model`.
      optimizer: any ``optax.GradientTransformation``.
      key: PRNG key (or an integer seed). It is split into the init key and
        the run key stored in the state.
      batch: a sample batch ``{"x": inputs, "y": targets}``; its shapes and
        dtypes become the state's ``batch_spec``.
    """
    from jdl.validation import check_batch_entries, check_no_silent_downcast, check_tree_no_silent_downcast

    check_batch_entries(batch)
    check_no_silent_downcast(batch, where="the sample batch")
    init_key, run_key = jax.random.split(jax.random.wrap_key_data(_raw_key(key)))
    variables = model.init(jax.random.key_data(init_key), jnp.asarray(batch["x"]))
    # NumPy float64 parameters (from_function with rng.normal(...)) would be
    # rounded by the first compiled step, and the checkpoint then no longer
    # matches a fresh state's dtypes.
    check_tree_no_silent_downcast(variables.params, where=f"model {model.name!r}'s initial parameters ")
    check_tree_no_silent_downcast(variables.model_state, where=f"model {model.name!r}'s initial state ")
    _check_model_accepts(model, variables, batch)
    opt_state = optimizer.init(variables.params)
    check_tree_no_silent_downcast(opt_state, where="the optimizer's initial state ")
    return TrainState(
        params=_strongly_typed(variables.params),
        model_state=_strongly_typed(variables.model_state),
        opt_state=_strongly_typed(opt_state),
        step=jnp.zeros((), jnp.int32),
        key=jax.random.key_data(run_key),
        batch_spec=batch_spec_of(batch),
    )


def _strongly_typed(tree: PyTree) -> PyTree:
    """Every leaf as an array of a fixed dtype. Some ``init`` functions leave
    weakly typed leaves (``optax.lbfgs``'s counters) or Python numbers, which the
    compiled step returns strongly typed: the second call's argument types would
    differ from the first's and the whole step (a fused epoch) compile twice."""

    def strong(a):
        if isinstance(a, jax.Array):
            return a.astype(a.dtype) if a.weak_type else a
        if isinstance(a, (np.ndarray, np.generic)):  # before float: np.float64 is a float
            return jnp.asarray(a)
        if isinstance(a, (bool, int, float, complex)):
            return jnp.asarray(a, dtype=jnp.result_type(a))
        return a

    return jax.tree.map(strong, tree)


def _check_model_accepts(model: Model, variables, batch: dict) -> None:
    """Run the model abstractly (``jax.eval_shape``: no compilation, no FLOPs) on
    the sample batch, so a shape or dtype mismatch between data and model is
    reported here, in the user's terms, rather than from inside a compiled step."""
    x = jnp.asarray(batch["x"])
    try:
        out, _ = jax.eval_shape(lambda v, a: model.apply(v, a, train=False, key=None), variables, x)
    except Exception as e:  # noqa: BLE001 - re-raised with context below
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"model {model.name!r} cannot be applied to inputs of shape {tuple(x.shape)} and dtype "
            f"{x.dtype}: {first_line}. Check that the data's feature shape matches the model's "
            "input size (e.g. in_features) and rebuild the model for this data"
        ) from None
    _check_label_range(batch["y"], out, "the sample batch")


def _check_label_range(labels, outputs, where: str) -> None:
    """Integer class labels must index the model's outputs (``0 ≤ y < k``): out
    of range, the loss is NaN (or, for −1, silently the last class). Outputs
    that are not one array (a model returning ``(logits, penalty)`` to its own
    loss) say nothing about classes and are left to that loss."""
    y = np.asarray(labels)
    if not hasattr(outputs, "shape"):
        return
    if np.issubdtype(y.dtype, np.integer) and len(outputs.shape) == y.ndim + 1 and y.size:
        num_classes = outputs.shape[-1]
        low, high = y.min(), y.max()
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{where} has labels in [{low}, {high}] but the model has {num_classes} outputs "
                f"(classes 0 to {num_classes - 1}); build the model with as many outputs as classes, "
                "or map the labels to 0 … k − 1"
            )


def check_labels(model: Model, state: TrainState, data: dict, *, where: str = "data") -> None:
    """Check every integer label of ``data`` against the model's output size
    (one abstract evaluation of the model, ``jax.eval_shape``, and the labels'
    minimum and maximum on the host) — not only a sample's."""
    x = jnp.asarray(data["x"][:1])
    out, _ = jax.eval_shape(lambda p, ms, a: model.apply(Variables(p, ms), a, train=False, key=None),
                            state.params, state.model_state, x)
    _check_label_range(data["y"], out, where)


def step_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split a run key into the dropout stream and the data-shuffling stream."""
    k = jax.random.wrap_key_data(key)
    dropout, data = jax.random.split(k)
    return dropout, data

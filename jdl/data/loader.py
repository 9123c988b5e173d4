"""Minibatches: per-epoch reshuffling, drop-last, deterministic for a key.

Two forms of the same order. :func:`epoch_indices` gives the ``int32[steps, B]``
index array that a fused train step gathers from device-resident data;
:func:`batches` yields the same minibatches as NumPy dicts for a plain loop.
Batch gradient descent is ``batch_size = N``; SGD in the strict sense is
``batch_size = 1``; minibatch SGD is anything between (16…256, powers of two,
are the usual choices, seeds 001/003).
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jdl.validation import as_key, check_batch_entries, check_count, check_positive_int


def _check_batch_size(batch_size: int, num_examples: int) -> int:
    """A positive batch size no larger than the data (what :func:`batches` can serve)."""
    num_examples = check_count(num_examples, "num_examples", 0, hint="the number of examples, e.g. len(data['y'])")
    batch_size = check_positive_int(batch_size, "batch_size")
    if num_examples == 0:
        raise ValueError("the data holds 0 examples: minibatches need at least one (check the split or filter "
                         "that produced the data)")
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {num_examples} training examples; "
            f"use batch_size <= {num_examples}"
        )
    return batch_size


def num_batches(num_examples: int, batch_size: int, *, drop_last: bool) -> int:
    """Number of minibatches in one epoch: as many as :func:`batches` yields.

    Raises:
      ValueError: for a batch size that is not a positive integer or exceeds
        ``num_examples`` (which :func:`batches` refuses too).
    """
    batch_size = _check_batch_size(batch_size, num_examples)
    full, rest = divmod(num_examples, batch_size)
    return full + (0 if drop_last or rest == 0 else 1)


def _check_epoch(epoch):
    """``epoch`` as ``fold_in`` takes it: an integer in ``[0, 2³²)``. A traced
    integer passes unchecked (its value is unknown until it runs)."""
    if isinstance(epoch, jax.Array) or hasattr(epoch, "dtype"):
        if not jnp.issubdtype(epoch.dtype, jnp.integer) or jnp.ndim(epoch) != 0:
            raise ValueError(f"epoch must be an integer scalar, got an array of {epoch.dtype}{list(jnp.shape(epoch))}")
        if isinstance(epoch, jax.core.Tracer):
            return epoch
        value = int(epoch)  # a concrete NumPy or JAX integer: fold_in would wrap -1 to 2**32 - 1
    else:
        value = epoch = check_count(epoch, "epoch", 0)
    if not 0 <= value < 2**32:
        raise ValueError(f"epoch must be an integer >= 0 and < 2**32 (fold_in takes a uint32), got {value}")
    return epoch


def epoch_permutation(key: jax.Array | int, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """The order of examples in ``epoch``: ``permutation(fold_in(key, epoch))``.

    ``key`` is a typed key, raw ``uint32[2]`` key data, or an integer seed
    (``jax.random.key(seed)``), as for :func:`batches`. ``epoch`` is an integer
    ``>= 0`` (a traced integer inside a compiled loop): ``1.5`` would be
    truncated to epoch 1, and ``fold_in`` cannot take ``-1``.
    """
    epoch = _check_epoch(epoch)
    num_examples = check_count(num_examples, "num_examples", 0, hint="the number of examples, e.g. len(data['y'])")
    return jax.random.permutation(jax.random.fold_in(as_key(key), epoch), num_examples)


def epoch_indices(
    key: jax.Array | int | None,
    epoch: int,
    num_examples: int,
    batch_size: int,
    *,
    shuffle: bool = True,
) -> tuple[jax.Array, jax.Array | None]:
    """Minibatch indices for one epoch.

    ``key`` is as for :func:`epoch_permutation` (unused when ``shuffle`` is
    false, so it may be ``None`` then).

    Returns:
      ``(full, rest)``: ``full`` is ``int32[N // B, B]``; ``rest`` holds the
      ``N mod B`` leftover indices (``None`` when there are none). Callers that
      drop the last partial batch ignore ``rest``.
    """
    batch_size = _check_batch_size(batch_size, num_examples)
    order = (epoch_permutation(key, epoch, num_examples) if shuffle else jnp.arange(num_examples)).astype(jnp.int32)
    steps = num_examples // batch_size
    full = order[: steps * batch_size].reshape(steps, batch_size)
    rest = order[steps * batch_size :] if num_examples % batch_size else None
    return full, rest


def batches(
    data: dict,
    batch_size: int,
    *,
    key: jax.Array | None = None,
    epoch: int = 0,
    drop_last: bool = False,
) -> Iterator[dict]:
    """Yield the minibatches of one epoch as dicts of NumPy arrays.

    Args:
      data: ``{"x": ..., "y": ...}`` with a leading example axis.
      batch_size: examples per minibatch.
      key: shuffling key (typed, raw ``uint32[2]`` data, or an int seed, which
        is ``jax.random.key(seed)``); ``None`` keeps the data order.
      epoch: the epoch number, folded into ``key`` so each epoch reshuffles.
      drop_last: skip the final partial batch.
    """
    # Checked here, not on the first next(): a generator function would defer
    # every error to the loop, far from the call that caused it.
    check_batch_entries(data)
    n = len(data["y"])
    if key is not None:
        key = as_key(key)
    full, rest = epoch_indices(key, epoch, n, batch_size, shuffle=key is not None)
    groups = list(np.asarray(full))
    if rest is not None and not drop_last:
        groups.append(np.asarray(rest))
    arrays = {k: np.asarray(v) for k, v in data.items()}  # once, not once per batch
    return ({k: v[idx] for k, v in arrays.items()} for idx in groups)

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


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """The order of examples in ``epoch``: ``permutation(fold_in(key, epoch))``.

    ``epoch`` is an integer ``>= 0`` (a traced integer inside a compiled loop):
    ``1.5`` would be truncated to epoch 1, and ``fold_in`` cannot take ``-1``.
    """
    if isinstance(epoch, jax.Array) or hasattr(epoch, "dtype"):
        if not jnp.issubdtype(epoch.dtype, jnp.integer) or jnp.ndim(epoch) != 0:
            raise ValueError(f"epoch must be an integer scalar, got an array of {epoch.dtype}{list(jnp.shape(epoch))}")
    else:
        epoch = check_count(epoch, "epoch", 0)
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def epoch_indices(
    key: jax.Array,
    epoch: int,
    num_examples: int,
    batch_size: int,
    *,
    shuffle: bool = True,
) -> tuple[jax.Array, jax.Array | None]:
    """Minibatch indices for one epoch.

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
    check_batch_entries(data)
    n = len(data["y"])
    if key is not None:
        key = as_key(key)
    full, rest = epoch_indices(key, epoch, n, batch_size, shuffle=key is not None)
    groups = list(np.asarray(full))
    if rest is not None and not drop_last:
        groups.append(np.asarray(rest))
    for idx in groups:
        yield {k: np.asarray(v)[idx] for k, v in data.items()}

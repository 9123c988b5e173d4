"""Pooling: max and average (Flax's), stochastic pooling, global pooling.

Inputs are channels-last, ``(N, *spatial, C)``: ``(N, H, W, C)`` images or
``(N, T, C)`` sequences. ``max_pool`` and ``avg_pool`` are Flax's
(``flax.nnx.max_pool``, ``flax.nnx.avg_pool``), re-exported as they are: with
``padding="SAME"`` ``avg_pool`` counts the padded zeros
(``count_include_pad=True`` by default, so an all-ones image averages to 0.5
in a corner; pass ``count_include_pad=False`` for the mean of the real
pixels), and with ``padding="VALID"`` a window larger than the input gives an
empty output rather than an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import avg_pool as avg_pool
from flax.nnx import max_pool as max_pool

Probabilities = Literal["softmax", "proportional"]


def _windows(x: jax.Array, window: Sequence[int]) -> jax.Array:
    """``(N, *spatial, C)`` → ``(N, *spatial // window, C, prod(window))``, non-overlapping
    windows (the remainder that does not fill a window is dropped, as in VALID pooling)."""
    spatial = x.shape[1:-1]
    if not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w > 0 for w in window):
        raise ValueError(f"window sizes must be positive integers, got {tuple(window)}; e.g. window=(2, 2)")
    if len(window) != len(spatial):
        raise ValueError(
            f"window {tuple(window)} has {len(window)} dimensions but the input has "
            f"{len(spatial)} spatial dimensions (shape {x.shape}, channels last)"
        )
    if any(w > s for w, s in zip(window, spatial)):
        raise ValueError(f"window {tuple(window)} is larger than the spatial size {spatial}")
    out = tuple(s // w for s, w in zip(spatial, window))
    x = x[(slice(None),) + tuple(slice(0, o * w) for o, w in zip(out, window))]
    split = (x.shape[0],) + tuple(d for o, w in zip(out, window) for d in (o, w)) + (x.shape[-1],)
    x = jnp.reshape(x, split)
    d = len(window)
    outer = tuple(1 + 2 * i for i in range(d))
    inner = tuple(2 + 2 * i for i in range(d))
    x = jnp.transpose(x, (0,) + outer + (2 * d + 1,) + inner)
    return jnp.reshape(x, x.shape[: d + 2] + (-1,))


def _window_tuple(window, x: jax.Array) -> tuple:
    """A window as a tuple; an integer is the same size along every spatial axis."""
    if isinstance(window, (int, np.integer)) and not isinstance(window, (bool, np.bool_)):
        return (int(window),) * (x.ndim - 2)
    return tuple(window)


def pooling_probabilities(windows: jax.Array, probabilities: Probabilities = "softmax") -> jax.Array:
    """The probabilities ``p_i`` of stochastic pooling within each window (last axis).

    ``"softmax"``: ``p_i = exp(a_i) / Σ_j exp(a_j)`` (stable; any sign of ``a``).
    ``"proportional"``: ``p_i = a_i / Σ_j a_j`` as in Zeiler & Fergus, for
    non-negative activations (after a ReLU; negative ones count as 0); a window
    with no positive activation gets uniform probabilities (its output is 0 for
    non-negative activations either way). Value and gradient stay finite for
    any window, however small its sum.
    """
    if probabilities == "softmax":
        return jax.nn.softmax(windows, axis=-1)
    if probabilities == "proportional":
        # a / Σa computed as b / Σb with b = a / max(a): p does not depend on the scale, so holding
        # it constant leaves the gradient exact, and Σb >= 1 keeps the 1/(Σb)² of the gradient finite
        # (a / Σa itself overflows there once Σa < ~1e-19 in float32 and the gradient turns NaN).
        # Both divisions are guarded by a where on their inputs as well as on the result: a where
        # on the result alone still lets NaN through the untaken branch's gradient.
        a = jnp.where(windows > 0, windows, jnp.zeros_like(windows))
        scale = jax.lax.stop_gradient(jnp.max(a, axis=-1, keepdims=True))
        positive = scale > 0
        # Divided by √scale twice: XLA computes a / scale as a · (1/scale), and
        # 1/scale is subnormal, flushed to 0, for a scale near float32's largest
        # value (1e38): p became 0/0.
        root = jnp.sqrt(jnp.where(positive, scale, jnp.ones_like(scale)))
        b = a / root / root
        total = jnp.sum(b, axis=-1, keepdims=True)
        uniform = jnp.full_like(a, 1.0 / a.shape[-1])
        return jnp.where(positive, b / jnp.where(positive, total, jnp.ones_like(total)), uniform)
    raise ValueError(f"probabilities must be 'softmax' or 'proportional', got {probabilities!r}")


def stochastic_pool(
    x: jax.Array,
    window: Sequence[int],
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    probabilities: Probabilities = "softmax",
) -> jax.Array:
    """Stochastic pooling over non-overlapping windows (stride = window, VALID).

    Within each window with activations ``a_1 … a_n`` and probabilities ``p_i``
    (:func:`pooling_probabilities`):

    - training (``deterministic=False``): output ``a_k`` with ``k ~ Categorical(p)``,
      one draw per window, channel and example. Between average and max pooling,
      and a regulariser in the spirit of dropout (seed 001).
    - evaluation (``deterministic=True``): the expectation ``Σ_i p_i a_i``, a
      probability-weighted average.

    Gradients flow to the sampled activation in training (like max pooling) and
    through ``Σ p_i a_i`` in evaluation.

    Args:
      x: ``(N, *spatial, C)``.
      window: window size per spatial dimension, e.g. ``(2, 2)``; an integer
        is that size along every spatial axis.
      key: PRNG key for the draws (required in training).
      deterministic: evaluation mode.
      probabilities: ``"softmax"`` (default) or ``"proportional"`` (Zeiler & Fergus).

    References:
      Zeiler & Fergus (2013), "Stochastic pooling for regularization of deep
      convolutional neural networks", ICLR.
    """
    windows = _windows(x, _window_tuple(window, x))
    p = pooling_probabilities(windows, probabilities)
    if deterministic:  # entries of probability 0 add 0, also where they are −inf (0 · −inf is NaN)
        return jnp.sum(jnp.where(p > 0, p * windows, jnp.zeros((), windows.dtype)), axis=-1)
    if key is None:
        raise ValueError("stochastic_pool in training needs a key (or pass deterministic=True)")
    # Categorical draws from log p (Gumbel-max), in at least float32: an entry
    # of probability 0 has log p = −inf and is never drawn. (Inverse-CDF
    # sampling with u drawn in bfloat16 hit u = 0, and so the first entry
    # whatever its probability, in 1 draw of 128.)
    logits = jnp.log(p.astype(jnp.promote_types(p.dtype, jnp.float32)))
    index = jax.random.categorical(key, logits, axis=-1)
    return jnp.take_along_axis(windows, index[..., None], axis=-1)[..., 0]


class StochasticPool(nnx.Module):
    """:func:`stochastic_pool` as a layer: sampling in ``train()``, expectation in ``eval()``.

    Args:
      window: window size per spatial dimension.
      probabilities: ``"softmax"`` or ``"proportional"``.
      deterministic: start in evaluation mode.
      rng_collection: the stream of ``rngs`` the draws come from.
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        window: Sequence[int],
        *,
        probabilities: Probabilities = "softmax",
        deterministic: bool = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ):
        self.window = tuple(window)
        self.probabilities = probabilities
        self.deterministic = deterministic
        self.rngs = rngs[rng_collection].fork()

    def __call__(self, x: jax.Array) -> jax.Array:
        key = None if self.deterministic else self.rngs()
        return stochastic_pool(
            x, self.window, key=key, deterministic=self.deterministic, probabilities=self.probabilities
        )


def global_average_pool(x: jax.Array) -> jax.Array:
    """Mean over every spatial axis: ``(N, *spatial, C) → (N, C)``.

    With a final 1×1 convolution to the classes, this replaces the dense head:
    the network works for any input size and has far fewer parameters (seed 000;
    Lin, Chen & Yan, 2014, "Network in network").
    """
    _check_spatial("global_average_pool", x)
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def global_max_pool(x: jax.Array) -> jax.Array:
    """Maximum over every spatial axis: ``(N, *spatial, C) → (N, C)``."""
    _check_spatial("global_max_pool", x)
    return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))


def _check_spatial(name: str, x: jax.Array) -> None:
    """An ``(N, C)`` input has no spatial axis to pool over (it came back unchanged)."""
    if x.ndim < 3:
        raise ValueError(f"{name} pools over the spatial axes of (N, *spatial, C) inputs, got shape "
                         f"{x.shape}; an (N, C) input is already pooled")

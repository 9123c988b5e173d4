"""Input layout of sequence models: ``(N, T)`` → ``(N, T, 1)``; images as sequences of rows."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def as_sequence(x: jax.Array) -> jax.Array:
    """``(N, T)`` → ``(N, T, 1)``; ``(N, T, C)`` unchanged; an image ``(N, H, W, C)`` →
    ``(N, H, W·C)``, its rows read top to bottom as time steps."""
    if x.ndim == 2:
        return x[..., None]
    if x.ndim == 3:
        return x
    if x.ndim == 4:
        return jnp.reshape(x, (x.shape[0], x.shape[1], -1))
    raise ValueError(f"a sequence model takes (N, T), (N, T, C) or image (N, H, W, C) inputs, got shape {x.shape}")


def sequence_shape(input_shape: Sequence[int]) -> tuple[int, int]:
    """``(T, C)`` of one example of shape ``input_shape`` (without the batch axis)."""
    shape = tuple(input_shape)
    if len(shape) == 1:
        return shape[0], 1
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 3:
        return shape[0], shape[1] * shape[2]
    raise ValueError(f"a sequence model takes examples of shape (T,), (T, C) or (H, W, C), got {shape}")

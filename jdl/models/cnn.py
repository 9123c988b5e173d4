"""A small convolutional network for 8×8 images (the digits)."""

from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx


class SmallCNN(nnx.Module):
    """``[Conv 3×3 (same) → ReLU] × len(channels) → max-pool 2×2 → Dense → ReLU → Dense``.

    Args:
      in_channels: channels of the input images ``(N, H, W, C)``.
      num_classes: outputs.
      channels: output channels of each convolution.
      hidden: width of the dense layer.
      image_size: input height = width (for the dense layer's fan-in).
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, in_channels: int, num_classes: int, *, channels: Sequence[int] = (16, 32),
                 hidden: int = 64, image_size: int = 8, rngs: nnx.Rngs):
        sizes = [in_channels, *channels]
        self.convs = nnx.List(
            [nnx.Conv(a, b, kernel_size=(3, 3), padding="SAME", rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        pooled = image_size // 2
        self.dense = nnx.Linear(pooled * pooled * sizes[-1], hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.convs:
            x = nnx.relu(conv(x))
        x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        return self.head(nnx.relu(self.dense(x)))

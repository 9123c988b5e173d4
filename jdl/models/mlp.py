"""Multilayer perceptron in Flax NNX."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
from flax import nnx


class MLP(nnx.Module):
    """``x → [Linear → (BatchNorm) → activation → (Dropout)] × depth → Linear``.

    Args:
      in_features: input size (inputs are flattened after the batch axis).
      hidden: widths of the hidden layers, e.g. ``(256, 256)``.
      out_features: number of outputs (classes).
      activation: elementwise nonlinearity.
      dropout_rate: drop probability after each hidden layer (0 disables).
      batch_norm: BatchNorm after each hidden Linear.
      rngs: ``nnx.Rngs``; give it a ``dropout`` stream when ``dropout_rate > 0``.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        activation: Callable[[jax.Array], jax.Array] = nnx.relu,
        dropout_rate: float = 0.0,
        batch_norm: bool = False,
        rngs: nnx.Rngs,
    ):
        sizes = [in_features, *hidden]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        self.norms = nnx.List([nnx.BatchNorm(b, rngs=rngs) for b in hidden] if batch_norm else [])
        self.dropouts = nnx.List(
            [nnx.Dropout(dropout_rate, rngs=rngs) for _ in hidden] if dropout_rate > 0 else []
        )
        self.head = nnx.Linear(sizes[-1], out_features, rngs=rngs)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.norms:
                x = self.norms[i](x)
            x = self.activation(x)
            if self.dropouts:
                x = self.dropouts[i](x)
        return self.head(x)

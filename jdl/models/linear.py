"""Linear classifiers: the perceptron (sign activation) and logistic regression."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jdl.models import _checks
from jdl.nn.activations import sign


class Perceptron(nnx.Module):
    """Rosenblatt's perceptron: ``o = sign(wᵀx + b)`` (seed 001).

    A single hyperplane ``wᵀx + b = 0`` splits the input space, so only linearly
    separable classes can be told apart — XOR cannot (Minsky & Papert, 1969).

    ``__call__`` returns class scores for the training core: for two classes
    ``(0, wᵀx + b)``, whose argmax is class 1 exactly where ``sign(wᵀx + b) = +1``;
    for ``k > 2`` classes one score per class (the multiclass perceptron,
    prediction ``argmax_j w_jᵀx + b_j``). Train it with
    :func:`jdl.nn.perceptron_loss` and SGD, which is the perceptron learning
    rule ``w ← w + η t x`` on each mistake; trained with
    :func:`jdl.nn.cross_entropy` instead, it is logistic regression.

    Args:
      in_features: input size (inputs are flattened after the batch axis).
      num_classes: 2 for the classic binary perceptron.
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, in_features: int, num_classes: int = 2, *, rngs: nnx.Rngs):
        in_features = _checks.count(in_features, "in_features")
        if isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"a perceptron separates at least 2 classes, got num_classes={num_classes}")
        num_classes = _checks.count(num_classes, "num_classes")
        self.num_classes = num_classes
        self.in_features = in_features
        self.linear = nnx.Linear(in_features, 1 if num_classes == 2 else num_classes, rngs=rngs)

    def net_input(self, x: jax.Array) -> jax.Array:
        """``wᵀx + b``: shape ``(N,)`` for two classes, ``(N, k)`` otherwise."""
        _checks.flat_features("Perceptron", x, self.in_features)
        net = self.linear(jnp.reshape(x, (x.shape[0], -1)))
        return net[:, 0] if self.num_classes == 2 else net

    def predict(self, x: jax.Array) -> jax.Array:
        """The perceptron's output: ``sign(wᵀx + b) ∈ {−1, +1}`` (binary) or the class index."""
        net = self.net_input(x)
        return sign(net) if self.num_classes == 2 else jnp.argmax(net, axis=-1)

    def __call__(self, x: jax.Array) -> jax.Array:
        net = self.net_input(x)
        if self.num_classes == 2:
            return jnp.stack([jnp.zeros_like(net), net], axis=-1)
        return net


class LogisticRegression(nnx.Module):
    """Multinomial logistic regression: logits ``Wx + b`` (train with cross-entropy).

    Args:
      in_features: input size (inputs are flattened after the batch axis).
      num_classes: outputs.
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, in_features: int, num_classes: int, *, rngs: nnx.Rngs):
        self.in_features = _checks.count(in_features, "in_features")
        self.linear = nnx.Linear(self.in_features, _checks.count(num_classes, "num_classes"), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        _checks.flat_features("LogisticRegression", x, self.in_features)
        return self.linear(jnp.reshape(x, (x.shape[0], -1)))

"""Multilayer perceptron in Flax NNX: any depth, width and activation, with optional
dropout (keep-probabilities), BatchNorm and residual connections."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jdl.models import _checks
from jdl.nn.activations import get_activation
from jdl.nn.initializers import Initializer, get_initializer
from jdl.nn.regularization import HIDDEN_KEEP_PROB, INPUT_KEEP_PROB


class MLP(nnx.Module):
    """``x → (Dropout) → [Linear → (BatchNorm) → activation (+ x) → (Dropout)] × depth → Linear``.

    Args:
      in_features: input size (inputs are flattened after the batch axis).
      hidden: widths of the hidden layers, e.g. ``(256, 256)``; ``()`` is a
        linear model.
      out_features: number of outputs (classes).
      activation: elementwise nonlinearity, a function or a name from
        :data:`jdl.nn.ACTIVATIONS` (``"relu"``, ``"tanh"``, ``"sigmoid"``, …).
      dropout: turn dropout on with seed 003's keep-probabilities,
        ``input_keep_prob`` (default 0.8) on the inputs and ``hidden_keep_prob``
        (default 0.5) after each hidden layer.
      input_keep_prob, hidden_keep_prob: the keep-probabilities when ``dropout``
        is on (1 disables that dropout); giving one without ``dropout=True`` is
        an error (it would have no effect).
      dropout_rate: shorthand kept for the CLI: if > 0, dropout with drop rate
        ``dropout_rate`` after each hidden layer only (keep ``1 − dropout_rate``);
        not together with ``dropout=True``.
      batch_norm: BatchNorm between each hidden Linear and its activation (the
        Linear then has no bias: BatchNorm's β replaces it, seed 003).
      batch_norm_momentum: decay ``m`` of BatchNorm's running averages
        ``μ ← m μ + (1 − m) μ_B``, which evaluation uses. 0.9 (PyTorch's
        default) tracks the changing statistics of a deep network within tens of
        steps; Flax's default 0.99 needs hundreds, and a short run on a small
        dataset then evaluates with stale statistics.
      residual: add each hidden layer's input to its output when their widths
        match, ``h ← h + f(h)`` (He et al., 2016): gradients reach early layers
        through the identity paths.
      kernel_init: initialiser (or name) for the Linear kernels (default Flax's
        LeCun normal).
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        activation: str | Callable[[jax.Array], jax.Array] = nnx.relu,
        dropout: bool = False,
        input_keep_prob: float | None = None,
        hidden_keep_prob: float | None = None,
        dropout_rate: float = 0.0,
        batch_norm: bool = False,
        batch_norm_momentum: float = 0.9,
        residual: bool = False,
        kernel_init: str | Initializer | None = None,
        rngs: nnx.Rngs,
    ):
        in_features = _checks.count(in_features, "in_features")
        out_features = _checks.count(out_features, "out_features")
        hidden = _checks.widths(hidden, "hidden")
        dropout_rate = _checks.rate(dropout_rate, "dropout_rate")
        batch_norm_momentum = _checks.momentum(batch_norm_momentum)
        given = [
            name
            for name, p in (("input_keep_prob", input_keep_prob), ("hidden_keep_prob", hidden_keep_prob))
            if p is not None
        ]
        if given and not dropout:
            # without dropout=True the keep-probabilities were silently ignored: no dropout at all
            raise ValueError(
                f"{' and '.join(given)} set(s) dropout's keep-probability, which only applies "
                "with dropout=True; pass dropout=True as well"
            )
        if dropout and dropout_rate > 0:
            raise ValueError(
                f"dropout=True (keep-probabilities on the inputs and hidden layers) and "
                f"dropout_rate={dropout_rate} (hidden layers only) both set dropout; give one"
            )
        input_keep_prob = INPUT_KEEP_PROB if input_keep_prob is None else input_keep_prob
        hidden_keep_prob = HIDDEN_KEEP_PROB if hidden_keep_prob is None else hidden_keep_prob
        for name, p in (("input_keep_prob", input_keep_prob), ("hidden_keep_prob", hidden_keep_prob)):
            if isinstance(p, bool) or not 0.0 < p <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {p}")
        input_rate, hidden_rate = (1.0 - input_keep_prob, 1.0 - hidden_keep_prob) if dropout else (0.0, 0.0)
        if dropout_rate > 0:
            input_rate, hidden_rate = 0.0, dropout_rate
        linear_kw = {} if kernel_init is None else {"kernel_init": get_initializer(kernel_init)}
        sizes = [in_features, *hidden]
        self.layers = nnx.List(
            [nnx.Linear(a, b, use_bias=not batch_norm, rngs=rngs, **linear_kw) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        self.norms = nnx.List(
            [nnx.BatchNorm(b, momentum=batch_norm_momentum, rngs=rngs) for b in hidden] if batch_norm else []
        )
        self.input_dropout = nnx.Dropout(input_rate, rngs=rngs) if input_rate > 0 else None
        self.dropouts = nnx.List([nnx.Dropout(hidden_rate, rngs=rngs) for _ in hidden] if hidden_rate > 0 else [])
        self.skips = tuple(residual and a == b for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nnx.Linear(sizes[-1], out_features, rngs=rngs, **linear_kw)
        self.activation = get_activation(activation)
        self.in_features = in_features

    def features(self, x: jax.Array) -> jax.Array:
        """The last hidden layer's activations."""
        _checks.flat_features("MLP", x, self.in_features)
        x = jnp.reshape(x, (x.shape[0], -1))
        if self.input_dropout is not None:
            x = self.input_dropout(x)
        for i, layer in enumerate(self.layers):
            h = layer(x)
            if self.norms:
                h = self.norms[i](h)
            h = self.activation(h)
            x = x + h if self.skips[i] else h
            if self.dropouts:
                x = self.dropouts[i](x)
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))

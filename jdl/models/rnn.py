"""Recurrent classifiers: plain RNN, LSTM, GRU, stacked and bidirectional.

Each layer is Flax's ``nnx.RNN`` (a ``lax.scan`` over time, so the step is
compiled once and backpropagation through time is the scan's derivative);
bidirectional layers are ``nnx.Bidirectional``. Clip gradients when training
them (``optax.clip_by_global_norm``): the recurrence can make them explode
(seed 003, 004).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from jdl.models import _checks
from jdl.models.sequence import as_sequence
from jdl.nn.recurrent import CellKind, recurrent_cell, zero_carry

Readout = Literal["last", "mean"]


class RecurrentClassifier(nnx.Module):
    """``(N, T[, C])`` → stacked recurrent layers → readout → Linear → logits.

    Args:
      in_features: features per time step ``C`` (1 for ``(N, T)`` inputs; ``W·C``
        for images read row by row).
      num_classes: outputs.
      cell: ``"rnn"`` (tanh Elman cell), ``"lstm"`` or ``"gru"``.
      hidden: hidden size of each stacked layer, e.g. ``(64,)``.
      bidirectional: run each layer forwards and backwards and concatenate.
      readout: ``"last"``: the final hidden state (for a bidirectional layer, the
        forward direction's last and the backward direction's first step);
        ``"mean"``: the average over time.
      forget_bias: initial LSTM forget-gate bias (``None``: seed 003's 1);
        LSTM cells only.
      radius: spectral radius of the plain RNN's initial recurrent matrix
        (``None``: orthogonal, radius 1); plain RNN cells only.
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        cell: CellKind = "lstm",
        hidden: Sequence[int] = (64,),
        bidirectional: bool = False,
        readout: Readout = "last",
        forget_bias: float | None = None,
        radius: float | None = None,
        rngs: nnx.Rngs,
    ):
        in_features = _checks.count(in_features, "in_features")
        num_classes = _checks.count(num_classes, "num_classes")
        hidden = _checks.widths(hidden, "hidden", allow_empty=False)
        if readout not in ("last", "mean"):
            raise ValueError(f"readout must be 'last' or 'mean', got {readout!r}")
        self.bidirectional = bidirectional
        self.readout = readout
        self.last_width = hidden[-1]
        self.in_features = in_features

        def make_rnn(a: int, b: int, reverse: bool) -> nnx.RNN:
            c = recurrent_cell(cell, a, b, forget_bias=forget_bias, radius=radius, rngs=rngs)
            return nnx.RNN(c, reverse=reverse, keep_order=True, rngs=rngs)

        layers = []
        width = in_features
        for h in hidden:
            if bidirectional:
                layers.append(nnx.Bidirectional(make_rnn(width, h, False), make_rnn(width, h, True), rngs=rngs))
                width = 2 * h
            else:
                layers.append(make_rnn(width, h, False))
                width = h
        self.layers = nnx.List(layers)
        self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def sequence_features(self, x: jax.Array) -> jax.Array:
        """Hidden states of the last layer at every step, ``(N, T, width)``.

        Each layer starts from a zero state in its computation dtype (that of its
        input and params): Flax's ``nnx.RNN`` would start it in the cell's
        ``param_dtype`` (float32), which ``lax.scan`` rejects as a carry when the
        params and inputs are float64.
        """
        x = as_sequence(x)
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"RecurrentClassifier was built for {self.in_features} feature(s) per time step, got inputs of "
                f"shape {x.shape} as a sequence (N, T, C) ({x.shape[-1]} per step)"
            )
        for layer in self.layers:
            if self.bidirectional:
                carry = (zero_carry(layer.forward_rnn, x), zero_carry(layer.backward_rnn, x))
            else:
                carry = zero_carry(layer, x)
            x = layer(x, initial_carry=carry)
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.sequence_features(x)
        if self.readout == "mean":
            features = jnp.mean(h, axis=1)
        elif self.bidirectional:
            w = self.last_width
            features = jnp.concatenate([h[:, -1, :w], h[:, 0, w:]], axis=-1)
        else:
            features = h[:, -1]
        return self.head(features)


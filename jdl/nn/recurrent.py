"""Recurrent layers: Flax's cells and scan, re-exported, and cells set up as the notes advise.

Re-exported from Flax NNX: ``SimpleCell`` (``h' = tanh(W_i x + W_h h + b)``),
``LSTMCell`` and ``OptimizedLSTMCell`` (the same LSTM, with the four gates in
one matrix product), ``GRUCell``, ``RNN`` (runs a cell over the time axis with
``nnx.scan``, i.e. ``jax.lax.scan``: one compiled step body, backpropagation
through time by differentiating the scan) and ``Bidirectional`` (a forward and
a reversed ``RNN``, outputs concatenated).

Written here: constructors that apply seed 003's advice — an LSTM whose
forget-gate bias starts at 1 (:func:`lstm_cell`) and a plain RNN whose
recurrent matrix has a chosen spectral radius (:func:`simple_rnn_cell`) — and
:func:`recurrent_cell` to pick a cell by name.
"""

from __future__ import annotations

from typing import Literal

from flax import nnx
from flax.nnx import RNN as RNN
from flax.nnx import Bidirectional as Bidirectional
from flax.nnx import GRUCell as GRUCell
from flax.nnx import LSTMCell as LSTMCell
from flax.nnx import OptimizedLSTMCell as OptimizedLSTMCell
from flax.nnx import SimpleCell as SimpleCell

from jdl.nn.initializers import lstm_forget_gate_bias, orthogonal, spectral_radius

CellKind = Literal["rnn", "lstm", "gru"]


def lstm_cell(
    in_features: int, hidden_features: int, *, forget_bias: float = 1.0, rngs: nnx.Rngs
) -> nnx.OptimizedLSTMCell:
    """An LSTM cell (Flax's fused ``OptimizedLSTMCell``) with forget-gate bias ``forget_bias``.

    ``i, f, g, o = σ(·), σ(·), tanh(·), σ(·)`` of ``W_i x + W_h h + b``;
    ``c' = f ⊙ c + i ⊙ g``; ``h' = o ⊙ tanh(c')``; ``b_f`` starts at
    ``forget_bias`` (:func:`jdl.nn.initializers.lstm_forget_gate_bias`).
    """
    return nnx.OptimizedLSTMCell(in_features, hidden_features, bias_init=lstm_forget_gate_bias(forget_bias), rngs=rngs)


def simple_rnn_cell(
    in_features: int, hidden_features: int, *, radius: float | None = None, rngs: nnx.Rngs
) -> nnx.SimpleCell:
    """A plain (Elman) RNN cell ``h' = tanh(W_i x + W_h h + b)``.

    ``radius=None`` initialises ``W_h`` orthogonal (all eigenvalues on the unit
    circle); a number rescales a Gaussian ``W_h`` to that spectral radius
    (:func:`jdl.nn.initializers.spectral_radius`; seed 003 suggests 1.2). The step
    computes in the dtype of its inputs and params (float64 ones give float64).
    """
    init = orthogonal() if radius is None else spectral_radius(radius)
    # dtype=None: compute in the dtype of the inputs and params, as Flax's LSTM and GRU
    # cells do (SimpleCell's own default, float32, would run a float64 model in float32).
    return nnx.SimpleCell(in_features, hidden_features, recurrent_kernel_init=init, dtype=None, rngs=rngs)


def gru_cell(in_features: int, hidden_features: int, *, rngs: nnx.Rngs) -> nnx.GRUCell:
    """A GRU cell (Flax's ``GRUCell``): reset and update gates, no separate memory."""
    return nnx.GRUCell(in_features, hidden_features, rngs=rngs)


def recurrent_cell(
    kind: CellKind,
    in_features: int,
    hidden_features: int,
    *,
    forget_bias: float = 1.0,
    radius: float | None = None,
    rngs: nnx.Rngs,
):
    """A cell by name: ``"rnn"`` (:func:`simple_rnn_cell`), ``"lstm"`` (:func:`lstm_cell`) or
    ``"gru"`` (:func:`gru_cell`)."""
    if kind == "rnn":
        return simple_rnn_cell(in_features, hidden_features, radius=radius, rngs=rngs)
    if kind == "lstm":
        return lstm_cell(in_features, hidden_features, forget_bias=forget_bias, rngs=rngs)
    if kind == "gru":
        return gru_cell(in_features, hidden_features, rngs=rngs)
    raise ValueError(f"unknown recurrent cell {kind!r}; choose 'rnn', 'lstm' or 'gru'")

"""Recurrent layers: Flax's cells and scan, re-exported, and cells set up as the notes advise.

Re-exported from Flax NNX: ``SimpleCell`` (``h' = tanh(W_i x + W_h h + b)``),
``LSTMCell`` and ``OptimizedLSTMCell`` (the same LSTM, with the four gates in
one matrix product), ``GRUCell``, ``RNN`` (runs a cell over the time axis with
``nnx.scan``, i.e. ``jax.lax.scan``: one compiled step body, backpropagation
through time by differentiating the scan) and ``Bidirectional`` (a forward and
a reversed ``RNN``, outputs concatenated).

Written here: constructors that apply seed 003's advice — an LSTM whose
forget-gate bias starts at 1 (:func:`lstm_cell`) and a plain RNN whose
recurrent matrix has a chosen spectral radius (:func:`simple_rnn_cell`) —,
:func:`recurrent_cell` to pick a cell by name, and :func:`zero_carry`, a zero
initial state in the dtype the cell computes in.

Dtypes: each constructor takes ``param_dtype`` (the parameters', float32 by
default) and ``dtype`` (the computation's; ``None``: that of the inputs and
parameters). Flax's ``initialize_carry``, which ``RNN`` calls when no
``initial_carry`` is passed, builds the carry in ``param_dtype``: a cell with
float32 parameters run on float64 inputs therefore needs
``initial_carry=zero_carry(rnn, x)`` (or ``param_dtype=jnp.float64``).
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import RNN as RNN
from flax.nnx import Bidirectional as Bidirectional
from flax.nnx import GRUCell as GRUCell
from flax.nnx import LSTMCell as LSTMCell
from flax.nnx import OptimizedLSTMCell as OptimizedLSTMCell
from flax.nnx import SimpleCell as SimpleCell

from jdl.nn.initializers import lstm_forget_gate_bias, orthogonal, spectral_radius

CellKind = Literal["rnn", "lstm", "gru"]
DType = Any


def lstm_cell(
    in_features: int, hidden_features: int, *, forget_bias: float = 1.0, param_dtype: DType = jnp.float32,
    dtype: DType | None = None, rngs: nnx.Rngs
) -> nnx.OptimizedLSTMCell:
    """An LSTM cell (Flax's fused ``OptimizedLSTMCell``) with forget-gate bias ``forget_bias``.

    ``i, f, g, o = σ(·), σ(·), tanh(·), σ(·)`` of ``W_i x + W_h h + b``;
    ``c' = f ⊙ c + i ⊙ g``; ``h' = o ⊙ tanh(c')``; ``b_f`` starts at
    ``forget_bias`` (:func:`jdl.nn.initializers.lstm_forget_gate_bias`, which
    is laid out for this fused cell's single bias). ``param_dtype``, ``dtype``:
    module docstring.
    """
    return nnx.OptimizedLSTMCell(in_features, hidden_features, bias_init=lstm_forget_gate_bias(forget_bias),
                                 param_dtype=param_dtype, dtype=dtype, rngs=rngs)


def simple_rnn_cell(
    in_features: int, hidden_features: int, *, radius: float | None = None, param_dtype: DType = jnp.float32,
    dtype: DType | None = None, rngs: nnx.Rngs
) -> nnx.SimpleCell:
    """A plain (Elman) RNN cell ``h' = tanh(W_i x + W_h h + b)``.

    ``radius=None`` initialises ``W_h`` orthogonal (all eigenvalues on the unit
    circle); a number rescales a Gaussian ``W_h`` to that spectral radius
    (:func:`jdl.nn.initializers.spectral_radius`; seed 003 suggests 1.2).
    ``dtype=None`` computes in the dtype of the inputs and params, as Flax's
    LSTM and GRU cells do (``SimpleCell``'s own default, float32, would run a
    float64 model in float32); ``param_dtype``: module docstring.
    """
    init = orthogonal() if radius is None else spectral_radius(radius)
    return nnx.SimpleCell(in_features, hidden_features, recurrent_kernel_init=init, param_dtype=param_dtype,
                          dtype=dtype, rngs=rngs)


def gru_cell(in_features: int, hidden_features: int, *, param_dtype: DType = jnp.float32,
             dtype: DType | None = None, rngs: nnx.Rngs) -> nnx.GRUCell:
    """A GRU cell (Flax's ``GRUCell``): reset and update gates, no separate memory.
    ``param_dtype``, ``dtype``: module docstring."""
    return nnx.GRUCell(in_features, hidden_features, param_dtype=param_dtype, dtype=dtype, rngs=rngs)


def recurrent_cell(
    kind: CellKind,
    in_features: int,
    hidden_features: int,
    *,
    forget_bias: float | None = None,
    radius: float | None = None,
    param_dtype: DType = jnp.float32,
    dtype: DType | None = None,
    rngs: nnx.Rngs,
):
    """A cell by name: ``"rnn"`` (:func:`simple_rnn_cell`), ``"lstm"`` (:func:`lstm_cell`) or
    ``"gru"`` (:func:`gru_cell`).

    ``forget_bias`` (LSTM only, 1 by default) and ``radius`` (plain RNN only)
    are refused for a cell they do not apply to, rather than dropped.
    """
    if kind not in ("rnn", "lstm", "gru"):
        raise ValueError(f"unknown recurrent cell {kind!r}; choose 'rnn', 'lstm' or 'gru'")
    if forget_bias is not None and kind != "lstm":
        raise ValueError(f"forget_bias applies to 'lstm' cells only, not {kind!r}; leave it out")
    if radius is not None and kind != "rnn":
        raise ValueError(f"radius (the recurrent matrix's spectral radius) applies to 'rnn' cells only, "
                         f"not {kind!r}; leave it out")
    dtypes = dict(param_dtype=param_dtype, dtype=dtype, rngs=rngs)
    if kind == "rnn":
        return simple_rnn_cell(in_features, hidden_features, radius=radius, **dtypes)
    if kind == "lstm":
        return lstm_cell(in_features, hidden_features, forget_bias=1.0 if forget_bias is None else forget_bias,
                         **dtypes)
    return gru_cell(in_features, hidden_features, **dtypes)


def zero_carry(rnn: nnx.RNN, x: jax.Array):
    """A zero initial state for ``rnn`` over the batch-major sequence ``x`` ``(N, T, C)``,
    in the dtype the cell computes in: ``jnp.result_type`` of ``x`` and the cell's params.

    Pass it as ``rnn(x, initial_carry=zero_carry(rnn, x))``: Flax's own
    ``initialize_carry`` uses the parameters' dtype, and a scan whose step
    computes in another (float64 inputs, float32 parameters) refuses it. The
    carry's structure (``(c, h)`` for an LSTM, ``h`` otherwise) and shapes come
    from the cell's ``initialize_carry``, evaluated abstractly, so no float32
    array enters the computation.
    """
    cell = rnn.cell
    dtype = jnp.result_type(x, *jax.tree.leaves(nnx.state(cell, nnx.Param)))
    step_shape = x.shape[:1] + x.shape[2:]  # one time step: (N, C)
    shapes = jax.eval_shape(lambda: cell.initialize_carry(step_shape, nnx.Rngs(0)))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, dtype), shapes)

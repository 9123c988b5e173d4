"""Weight initialisers: JAX's own, re-exported, and the three the notes name that JAX lacks.

Every initialiser is ``init(key, shape, dtype) -> array`` (``jax.nn.initializers``'
protocol, which Flax's ``kernel_init=`` arguments take). Kernels are laid out
``(..., fan_in, fan_out)``: the last axis is the output units.

Re-exported from :mod:`jax.nn.initializers`:

- ``glorot_uniform`` — ``W_ij ~ U(−√(6/(m+n)), √(6/(m+n)))`` with ``m`` inputs and
  ``n`` outputs, exactly the bound of Glorot & Bengio (2010) in seed 004 §1
  (JAX's ``variance_scaling(1, "fan_avg", "uniform")``: bound ``√(3/((m+n)/2))``).
- ``glorot_normal``, ``lecun_normal``, ``he_normal``, ``he_uniform`` (He et al.,
  2015: variance ``2/m``, for ReLU networks).
- ``normal(stddev)`` and ``truncated_normal(stddev, lower=-2, upper=2)``
  (seed 004 §1: "(truncated) Gaussian"); note that JAX's ``stddev`` is that
  of the distribution *before* truncation at ``±2σ`` (the truncated one has
  standard deviation ≈ 0.88σ).
- ``orthogonal(scale)`` — a random orthogonal matrix (Saxe, McClelland &
  Ganguli, 2013).
- ``uniform``, ``zeros``, ``ones``, ``constant``, ``variance_scaling``.

Written here: :func:`sparse` (Martens, 2010), :func:`spectral_radius`
(echo-state scaling of a recurrent matrix, seed 003: radius 1.2) and
:func:`lstm_forget_gate_bias` (seed 003: forget-gate bias 1).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.nn.initializers import Initializer as Initializer
from jax.nn.initializers import constant as constant
from jax.nn.initializers import glorot_normal as glorot_normal
from jax.nn.initializers import glorot_uniform as glorot_uniform
from jax.nn.initializers import he_normal as he_normal
from jax.nn.initializers import he_uniform as he_uniform
from jax.nn.initializers import lecun_normal as lecun_normal
from jax.nn.initializers import normal as normal
from jax.nn.initializers import ones as ones
from jax.nn.initializers import orthogonal as orthogonal
from jax.nn.initializers import truncated_normal as truncated_normal
from jax.nn.initializers import uniform as uniform
from jax.nn.initializers import variance_scaling as variance_scaling
from jax.nn.initializers import zeros as zeros


def sparse(num_nonzero: int = 15, *, stddev: float = 1.0) -> Initializer:
    """Sparse initialisation: each output unit gets exactly ``num_nonzero`` nonzero
    incoming weights, drawn from ``N(0, stddev²)``; all others are zero.

    With few nonzero weights per unit, their scale need not shrink as the layer
    widens, so units start out different from each other without saturating
    (Martens, 2010; seed 003 recommends sparse initialisation for recurrent nets).

    Args:
      num_nonzero: nonzero incoming weights per output unit (capped at the fan-in).
      stddev: standard deviation of the nonzero weights.

    Returns:
      ``init(key, shape, dtype)`` for a kernel ``(..., fan_in, fan_out)``; the
      leading axes count towards the fan-in (a conv kernel's receptive field).

    References:
      Martens (2010), "Deep learning via Hessian-free optimization", ICML, §5.
    """
    if isinstance(num_nonzero, bool) or not isinstance(num_nonzero, (int, np.integer)) or num_nonzero < 1:
        raise ValueError(f"num_nonzero must be an integer ≥ 1 (nonzero weights per unit), got {num_nonzero!r}")

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        if len(shape) < 2:
            raise ValueError(f"sparse initialisation needs a kernel of rank >= 2, got shape {shape}")
        fan_in, fan_out = math.prod(shape[:-1]), shape[-1]
        k = min(num_nonzero, fan_in)
        pick_key, value_key = jax.random.split(key)
        # rank the inputs of each unit in a random order; keep the first k
        ranks = jnp.argsort(jnp.argsort(jax.random.uniform(pick_key, (fan_in, fan_out)), axis=0), axis=0)
        mask = ranks < k
        values = stddev * jax.random.normal(value_key, (fan_in, fan_out), dtype)
        return jnp.reshape(jnp.where(mask, values, jnp.zeros_like(values)), shape)

    return init


def spectral_radius(radius: float = 1.2, base: Initializer | None = None) -> Initializer:
    """A square recurrent matrix rescaled to a chosen spectral radius ``max_i |λ_i(W)|``.

    ``W = radius · W₀ / ρ(W₀)`` with ``W₀`` drawn from ``base`` (default
    ``N(0, 1)``). The spectral radius sets how fast a linear recurrence
    ``h_t = W h_{t−1}`` forgets (ρ < 1) or amplifies (ρ > 1) its past; echo
    state networks use this, and seed 003 reports that an initial radius of
    1.2 works well for trainable RNNs too.

    The eigenvalues come from ``jnp.linalg.eigvals`` (a general, non-symmetric
    eigensolver), run once at initialisation. JAX implements it on CPU and GPU
    (on GPU via LAPACK on the host) but not on TPU: there, initialise the model
    on the CPU (``with jax.default_device(jax.devices("cpu")[0]): ...``).

    References:
      Jaeger (2001), "The 'echo state' approach to analysing and training
      recurrent neural networks"; Sutskever, Martens, Dahl & Hinton (2013),
      "On the importance of initialization and momentum in deep learning", ICML.
    """
    if not 0 < radius < math.inf:
        raise ValueError(f"radius must be a positive finite number, got {radius}")
    base = base or normal(1.0)

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(
                f"spectral_radius scales a square recurrent matrix, got shape {shape}; use it as recurrent_kernel_init"
            )
        # Drawn and scaled in at least float32: eigvals has no bfloat16 or float16 kernel.
        wide = jnp.promote_types(dtype, jnp.float32)
        w = base(key, shape, wide)
        rho = jnp.max(jnp.abs(jnp.linalg.eigvals(w)))
        return (w * (radius / rho)).astype(dtype)

    return init


LSTM_GATE_ORDER = ("input", "forget", "cell", "output")


def lstm_forget_gate_bias(forget_bias: float = 1.0) -> Initializer:
    """Bias of a fused LSTM gate layer: ``forget_bias`` for the forget gate, 0 elsewhere.

    For a bias of shape ``(4H,)`` laid out as the gates ``(i, f, g, o)`` — the
    layout of ``flax.nnx.OptimizedLSTMCell``'s ``dense_h`` — the slice
    ``[H, 2H)`` is ``forget_bias``. It is for that fused cell only (use
    :func:`jdl.nn.lstm_cell`). Flax's unfused ``LSTMCell`` keeps four
    ``(H,)`` biases and applies ``bias_init`` to each of them; this
    initialiser cannot tell such a bias from a fused one and would lay four
    "gates" of ``H/4`` into every one of them (an error only when ``H`` is not a
    multiple of 4). For that cell, initialise ``hf``'s bias with
    ``constant(forget_bias)`` instead. With ``b_f = 1`` the forget gate starts at
    ``σ(1) ≈ 0.73``: the cell keeps most of its memory from the first step and
    gradients flow through time (seed 003: "adding a bias of 1 to the forget
    gate makes the LSTM as strong as the best gated variants").

    References:
      Gers, Schmidhuber & Cummins (2000), "Learning to forget"; Jozefowicz,
      Zaremba & Sutskever (2015), "An empirical exploration of recurrent
      network architectures", ICML.
    """

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        del key
        if len(shape) != 1 or shape[0] % 4:
            raise ValueError(f"lstm_forget_gate_bias initialises a (4·hidden,) gate bias, got shape {shape}")
        hidden = shape[0] // 4
        gate = jnp.repeat(jnp.arange(4), hidden)
        return jnp.where(gate == 1, jnp.asarray(forget_bias, dtype), jnp.zeros((), dtype)).astype(dtype)

    return init


INITIALIZERS = {
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "lecun_normal": lecun_normal,
    "orthogonal": orthogonal,
    "sparse": sparse,
}


def get_initializer(init: str | Initializer) -> Initializer:
    """A kernel initialiser by name (``"glorot_uniform"``, ``"he_normal"``, ``"orthogonal"``,
    ``"sparse"``, …) with its default settings, or the initialiser itself."""
    if callable(init) and not isinstance(init, str):
        return init
    try:
        return INITIALIZERS[init]()
    except KeyError:
        raise ValueError(
            f"unknown initializer {init!r}; choose one of {sorted(INITIALIZERS)} or pass init(key, shape, dtype)"
        ) from None


__all__ = [
    "INITIALIZERS",
    "Initializer",
    "LSTM_GATE_ORDER",
    "constant",
    "get_initializer",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lstm_forget_gate_bias",
    "normal",
    "ones",
    "orthogonal",
    "sparse",
    "spectral_radius",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "zeros",
]

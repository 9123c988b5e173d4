"""Activation functions: JAX's own, re-exported, and the few the notes name that JAX lacks.

Re-exported from :mod:`jax.nn` (Flax NNX re-exports the same functions):
``sigmoid``, ``tanh``, ``soft_sign``, ``relu``, ``leaky_relu``, ``softplus``,
``softmax`` and ``log_softmax``. JAX's ``softmax`` and ``log_softmax`` already
subtract the maximum before exponentiating (seed 004 §8)::

    softmax(z)_j     = exp(z_j − m) / Σ_k exp(z_k − m),         m = max_k z_k
    log_softmax(z)_j = (z_j − m) − log Σ_k exp(z_k − m)

so the largest exponent is ``exp(0) = 1``: nothing overflows, and the
denominator is at least 1, so nothing divides by zero. Logits of ±1e4 give
exactly ``[1, 0]`` and ``[0, −2e4]`` (a test checks this).

Written here: the perceptron's ``sign`` (seed 001), noisy ReLU (Nair & Hinton,
2010; seed 003), and maxout (Goodfellow et al., 2013; seed 004 §4), plus
:func:`get_activation` to look an activation up by name.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.nn import leaky_relu as leaky_relu
from jax.nn import log_softmax as log_softmax
from jax.nn import relu as relu
from jax.nn import sigmoid as sigmoid
from jax.nn import soft_sign as soft_sign
from jax.nn import softmax as softmax
from jax.nn import softplus as softplus
from jax.numpy import tanh as tanh

Activation = Callable[[jax.Array], jax.Array]


def sign(x: jax.Array) -> jax.Array:
    """The perceptron's threshold: ``+1`` where ``x > 0``, ``−1`` otherwise (seed 001).

    Unlike ``jnp.sign`` it never returns 0: the seed's perceptron outputs −1 on
    the decision boundary ``wᵀx = 0``. Its derivative is zero almost everywhere,
    so a perceptron is trained with the perceptron rule
    (:func:`jdl.nn.perceptron_loss`), not by backpropagating through ``sign``.

    >>> sign(jnp.array([-2.0, 0.0, 3.0])).tolist()
    [-1.0, -1.0, 1.0]
    """
    return jnp.where(x > 0, jnp.ones_like(x), -jnp.ones_like(x))


def identity(x: jax.Array) -> jax.Array:
    """``f(x) = x`` (a linear layer with no nonlinearity)."""
    return x


def _check_stddev(stddev) -> None:
    """``None``, a traced value, or a finite number ``≥ 0``."""
    if stddev is None or isinstance(stddev, jax.core.Tracer):
        return
    if not 0 <= stddev < float("inf"):  # NaN fails too
        raise ValueError(f"stddev must be a finite number >= 0 (or None for sqrt(sigmoid(x))), got {stddev}")


def noisy_relu(x: jax.Array, key: jax.Array, *, stddev: float | None = None) -> jax.Array:
    """Noisy rectified linear unit ``max(0, x + ε)``.

    Args:
      x: pre-activations.
      key: PRNG key for the noise.
      stddev: standard deviation of the Gaussian noise ε. ``None`` uses Nair &
        Hinton's choice ``Var ε = sigmoid(x)``, which adds most noise to units
        that are on.

    Returns:
      ``max(0, x + ε)``, ``ε ~ N(0, σ²)``.

    References:
      Nair & Hinton (2010), "Rectified linear units improve restricted Boltzmann
      machines", ICML.
    """
    _check_stddev(stddev)
    scale = jnp.sqrt(jax.nn.sigmoid(x)) if stddev is None else jnp.asarray(stddev, x.dtype)
    noise = jax.random.normal(key, x.shape, x.dtype)
    return jax.nn.relu(x + scale * noise)


def maxout(x: jax.Array, num_pieces: int, *, axis: int = -1) -> jax.Array:
    """Maxout over groups of ``num_pieces`` consecutive units: ``h_i = max_j z_{i,j}``.

    ``x`` has ``m · k`` units along ``axis`` (``k = num_pieces``); unit ``i`` of
    the output is the maximum of inputs ``i·k, …, i·k + k − 1``. A maxout unit
    is a learned piecewise-linear convex function: with enough pieces it
    approximates any convex function (seed 004 §4).

    References:
      Goodfellow, Warde-Farley, Mirza, Courville & Bengio (2013), "Maxout
      networks", ICML.
    """
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"maxout axis {axis} is out of range for an input of shape {x.shape} "
                         f"(axes {-x.ndim} … {x.ndim - 1})" if x.ndim else "maxout needs an input of rank ≥ 1, "
                         "the units to group")
    axis = axis % x.ndim
    size = x.shape[axis]
    if isinstance(num_pieces, bool) or not isinstance(num_pieces, int) or num_pieces < 1 or size % num_pieces:
        raise ValueError(
            f"maxout needs the {size} units along axis {axis} to split into groups of "
            f"num_pieces={num_pieces}; choose a num_pieces that divides {size}"
        )
    shape = x.shape[:axis] + (size // num_pieces, num_pieces) + x.shape[axis + 1 :]
    return jnp.max(jnp.reshape(x, shape), axis=axis + 1)


class NoisyReLU(nnx.Module):
    """:func:`noisy_relu` as a layer: noise in training, plain ReLU in evaluation.

    At test time Nair & Hinton use the noise-free ``max(0, x)``; ``model.eval()``
    (``deterministic=True``) does the same.

    Args:
      stddev: the noise's standard deviation (``None``: ``sqrt(sigmoid(x))``).
      deterministic: start in evaluation mode.
      rng_collection: the stream of ``rngs`` the noise is drawn from.
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        stddev: float | None = None,
        *,
        deterministic: bool = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ):
        _check_stddev(stddev)
        self.stddev = stddev
        self.deterministic = deterministic
        self.rngs = rngs[rng_collection].fork()

    def set_view(self, deterministic: bool | None = None):
        """What ``nnx.view(model, deterministic=...)`` calls, as for ``nnx.Dropout``."""
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.deterministic:
            return jax.nn.relu(x)
        return noisy_relu(x, self.rngs(), stddev=self.stddev)


class Maxout(nnx.Module):
    """A maxout layer: ``h_i = max_j (xᵀW_{·,ij} + b_ij)``, ``k`` linear pieces per unit.

    Args:
      in_features: input size.
      out_features: number of maxout units.
      num_pieces: linear pieces per unit (``k``).
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, in_features: int, out_features: int, num_pieces: int = 2, *, rngs: nnx.Rngs):
        self.num_pieces = num_pieces
        self.linear = nnx.Linear(in_features, out_features * num_pieces, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return maxout(self.linear(x), self.num_pieces)


ACTIVATIONS: dict[str, Activation] = {
    "identity": identity,
    "leaky_relu": leaky_relu,
    "relu": relu,
    "sigmoid": sigmoid,
    "sign": sign,
    "softplus": softplus,
    "softsign": soft_sign,
    "tanh": tanh,
}


def get_activation(activation: str | Activation) -> Activation:
    """An activation by name (``"relu"``, ``"tanh"``, …) or the callable itself."""
    if callable(activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)} or pass a function"
        ) from None

"""Regularising layers: dropout with keep-probabilities, BatchNorm, noise injection.

``Dropout``, ``BatchNorm`` and ``LayerNorm`` are Flax's (re-exported). Both
Flax layers switch behaviour with the module's mode, which jdl's model protocol
bakes into its train and eval graphs:

- ``Dropout`` in training zeroes each unit with probability ``rate = 1 − p``
  (``p`` the keep-probability) and scales the survivors by ``1/p`` (inverted
  dropout), so evaluation — which passes inputs through unchanged — sees the
  same expected activation. Masks come from the explicit key of the train step.
- ``BatchNorm`` in training normalises with the minibatch's mean and variance,
  ``y = γ (x − μ_B) / √(σ²_B + ε) + β``, and updates running averages
  ``μ ← m·μ + (1 − m)·μ_B`` held in the model state (Flax's default momentum
  is ``m = 0.99``; jdl's models use 0.9, see :class:`jdl.models.MLP`);
  in evaluation it uses the running averages (seed 002: "prediction needs no
  BN" statistics of its own).

Written here: :func:`dropout` (constructed from a keep-probability, seed 003's
0.8 for inputs and 0.5 for hidden units) and :class:`GaussianNoise` (input or
hidden noise injection, seed 001).
"""

from __future__ import annotations

import jax
from flax import nnx
from flax.nnx import BatchNorm as BatchNorm
from flax.nnx import Dropout as Dropout
from flax.nnx import LayerNorm as LayerNorm

INPUT_KEEP_PROB = 0.8
"""Keep-probability for input units (seed 003)."""

HIDDEN_KEEP_PROB = 0.5
"""Keep-probability for hidden units (seed 003)."""


def dropout(keep_prob: float, *, rngs: nnx.Rngs) -> nnx.Dropout:
    """A Flax ``Dropout`` layer that keeps each unit with probability ``keep_prob``.

    The notes speak in keep-probabilities (0.8 for inputs, 0.5 for hidden
    units: :data:`INPUT_KEEP_PROB`, :data:`HIDDEN_KEEP_PROB`); Flax's layer takes
    the drop rate ``1 − keep_prob``.

    References:
      Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov (2014),
      "Dropout: a simple way to prevent neural networks from overfitting", JMLR.
    """
    if isinstance(keep_prob, bool) or not 0.0 < keep_prob <= 1.0:
        raise ValueError(
            f"keep_prob must be in (0, 1], got {keep_prob}; it is the probability of keeping a unit "
            f"(seed 003: {INPUT_KEEP_PROB} for inputs, {HIDDEN_KEEP_PROB} for hidden units)"
        )
    return nnx.Dropout(rate=1.0 - keep_prob, rngs=rngs)


class GaussianNoise(nnx.Module):
    """Additive Gaussian noise ``x + σε``, ``ε ~ N(0, I)``, in training only.

    Noise on the inputs is a form of data augmentation; on hidden units it is a
    regulariser akin to dropout (seed 001); evaluation passes ``x`` unchanged.

    Args:
      stddev: σ.
      deterministic: start in evaluation mode.
      rng_collection: the stream of ``rngs`` the noise is drawn from.
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, stddev: float, *, deterministic: bool = False, rng_collection: str = "dropout", rngs: nnx.Rngs):
        if not stddev >= 0 or stddev == float("inf"):  # NaN fails the first test
            raise ValueError(f"stddev must be a finite number >= 0, got {stddev}")
        self.stddev = stddev
        self.deterministic = deterministic
        self.rngs = rngs[rng_collection].fork()

    def set_view(self, deterministic: bool | None = None):
        """What ``nnx.view(model, deterministic=...)`` calls, as for ``nnx.Dropout``."""
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.deterministic or self.stddev == 0:
            return x
        return x + self.stddev * jax.random.normal(self.rngs(), x.shape, x.dtype)

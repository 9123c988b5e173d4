"""Losses of ``(outputs, targets)``, per example (the train step takes the mean).

Class scores are logits; softmax and log-softmax are evaluated stably as
``z - max(z) - log Σ exp(z - max(z))`` (Optax's implementation does this).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy (negative log-likelihood) of integer labels under softmax(logits).

    ``ℓ(z, y) = −log softmax(z)_y = log Σ_j exp z_j − z_y``. Seed 001 writes the
    cross-entropy with a stray square; this is the standard, correct form.
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def mean_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """``½ Σ_i (ŷ_i − y_i)²`` per example, the seed's ½-scaled squared error."""
    diff = predictions - targets
    return 0.5 * jnp.sum(jnp.reshape(diff * diff, (diff.shape[0], -1)), axis=-1)

"""Variational autoencoder (seed 000, 003) for data in [0, 1] with a Bernoulli decoder.

The encoder gives ``q(z|x) = N(μ(x), diag σ²(x))``; the decoder gives the
logits of ``p(x|z)``. Training minimises the negative evidence lower bound

    −ELBO(x) = E_q[−log p(x|z)] + KL(q(z|x) ‖ N(0, I)),

the expectation estimated with one reparameterised sample ``z = μ + σ ⊙ ε``,
``ε ~ N(0, I)``, so gradients flow through ``μ`` and ``σ``.

References:
  Kingma & Welling (2014), "Auto-encoding variational Bayes", ICLR.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jdl.models import _checks
from jdl.nn.losses import binary_cross_entropy, kl_divergence_standard_normal


class VAEOutput(NamedTuple):
    """What :class:`VAE` returns: decoder logits (shaped like the input) and ``q(z|x)``."""

    logits: jax.Array
    mean: jax.Array
    log_variance: jax.Array


def _mlp(widths: Sequence[int], rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])


class VAE(nnx.Module):
    """``x → MLP → (μ, log σ²) → z → MLP → logits of p(x|z)``.

    In training ``z`` is sampled (reparameterisation trick); in evaluation
    (``model.eval()``) ``z = μ``, so reconstructions are deterministic.

    Args:
      in_features: input size ``d`` (inputs are flattened; outputs take the
        input's shape).
      latent_features: dimension of ``z``.
      hidden: encoder widths (the decoder mirrors them), ReLU.
      deterministic: start in evaluation mode.
      rngs: ``nnx.Rngs`` (the ``dropout`` stream draws ``ε``).
    """

    def __init__(
        self,
        in_features: int,
        latent_features: int = 8,
        hidden: Sequence[int] = (128,),
        *,
        deterministic: bool = False,
        rngs: nnx.Rngs,
    ):
        in_features = _checks.count(in_features, "in_features")
        latent_features = _checks.count(latent_features, "latent_features")
        hidden = _checks.widths(hidden, "hidden")
        self.in_features = in_features
        self.latent_features = latent_features
        self.encoder = _mlp([in_features, *hidden], rngs)
        last = hidden[-1] if hidden else in_features
        self.mean = nnx.Linear(last, latent_features, rngs=rngs)
        self.log_variance = nnx.Linear(last, latent_features, rngs=rngs)
        self.decoder = _mlp([latent_features, *reversed(tuple(hidden)), in_features], rngs)
        self.deterministic = deterministic
        self.rngs = rngs["dropout"].fork()

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(μ, log σ²)`` of ``q(z|x)``."""
        _checks.flat_features("VAE", x, self.in_features)
        h = jnp.reshape(x, (x.shape[0], -1))
        for layer in self.encoder:
            h = nnx.relu(layer(h))
        return self.mean(h), self.log_variance(h)

    def decode(self, z: jax.Array) -> jax.Array:
        """Logits of ``p(x|z)`` (flat); ``sigmoid`` of them is the mean image."""
        h = z
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            if i < len(self.decoder) - 1:
                h = nnx.relu(h)
        return h

    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """Mean images ``sigmoid(decode(z))`` of ``z ~ N(0, I)`` (flat, ``(num_samples, d)``)."""
        z = jax.random.normal(key, (num_samples, self.latent_features))
        return jax.nn.sigmoid(self.decode(z))

    def __call__(self, x: jax.Array) -> VAEOutput:
        mean, log_variance = self.encode(x)
        if self.deterministic:
            z = mean
        else:
            eps = jax.random.normal(self.rngs(), mean.shape, mean.dtype)
            z = mean + jnp.exp(0.5 * log_variance) * eps
        logits = jnp.reshape(self.decode(z), x.shape)
        return VAEOutput(logits, mean, log_variance)


def vae_loss(outputs: VAEOutput, targets: jax.Array) -> jax.Array:
    """Negative ELBO per example: Bernoulli reconstruction cross-entropy + KL to ``N(0, I)``.

    ``targets`` are the inputs in [0, 1]. In evaluation mode (``z = μ``) the
    first term is the reconstruction at the posterior mean, a deterministic
    stand-in for the expectation.
    """
    reconstruction = binary_cross_entropy(outputs.logits, targets)
    return reconstruction + kl_divergence_standard_normal(outputs.mean, outputs.log_variance)

"""Autoencoders: linear (≈ PCA), tied weights, denoising (seed 000, 002).

All map ``(N, d)`` (or any shape, flattened) to a reconstruction of the same
shape; train them with ``{"x": x, "y": x}`` batches and
:func:`jdl.nn.mean_squared_error`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jdl.models import _checks
from jdl.nn.activations import get_activation
from jdl.nn.augmentation import Corruption, corrupt


def _flatten(model: nnx.Module, x: jax.Array) -> jax.Array:
    _checks.flat_features(type(model).__name__, x, model.in_features)
    return jnp.reshape(x, (x.shape[0], -1))


class LinearAutoencoder(nnx.Module):
    """``x̂ = W_d (W_e x + b_e) + b_d`` with a ``k``-dimensional code.

    Minimising the squared reconstruction error over ``W_e, W_d`` has its global
    minima where ``W_d``'s columns span the top-``k`` principal subspace of the
    (centred) data — the same subspace PCA finds, though not necessarily the
    orthonormal principal directions themselves; every other critical point is
    a saddle (Baldi & Hornik, 1989; seed 000: "a one-layer encoder and decoder
    correspond to PCA").

    Args:
      in_features: input size ``d``.
      latent_features: code size ``k``.
      rngs: ``nnx.Rngs``.

    References:
      Baldi & Hornik (1989), "Neural networks and principal component analysis:
      learning from examples without local minima", Neural Networks 2(1).
    """

    def __init__(self, in_features: int, latent_features: int, *, rngs: nnx.Rngs):
        self.in_features = in_features = _checks.count(in_features, "in_features")
        latent_features = _checks.count(latent_features, "latent_features (the code size)")
        self.encoder = nnx.Linear(in_features, latent_features, rngs=rngs)
        self.decoder = nnx.Linear(latent_features, in_features, rngs=rngs)

    def encode(self, x: jax.Array) -> jax.Array:
        return self.encoder(_flatten(self, x))

    def decode(self, code: jax.Array) -> jax.Array:
        return self.decoder(code)

    def decoder_basis(self) -> jax.Array:
        """``W_d`` as a ``(d, k)`` matrix whose columns span the learned subspace."""
        return self.decoder.kernel[...].T

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.reshape(self.decode(self.encode(x)), x.shape)


class TiedAutoencoder(nnx.Module):
    """Encoder and decoder share one matrix: ``h = f(W x + b)``, ``x̂ = g(Wᵀ h + c)``.

    Half the parameters of an untied autoencoder (seed 000: the encoder and
    decoder *may* share parameters, "though it is not necessary"). With linear
    ``f`` and ``g`` the optimum has ``W``'s rows orthonormal, spanning the
    principal subspace.

    Args:
      in_features: input size ``d``.
      latent_features: code size ``k``.
      activation: ``f`` (a function or a name; default identity).
      output_activation: ``g`` (default identity; ``"sigmoid"`` for data in [0, 1]).
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        in_features: int,
        latent_features: int,
        *,
        activation: str | Callable = "identity",
        output_activation: str | Callable = "identity",
        rngs: nnx.Rngs,
    ):
        self.in_features = in_features = _checks.count(in_features, "in_features")
        latent_features = _checks.count(latent_features, "latent_features (the code size)")
        self.encoder = nnx.Linear(in_features, latent_features, rngs=rngs)
        self.decoder_bias = nnx.Param(jnp.zeros((in_features,), jnp.float32))
        self.activation = get_activation(activation)
        self.output_activation = get_activation(output_activation)

    def encode(self, x: jax.Array) -> jax.Array:
        return self.activation(self.encoder(_flatten(self, x)))

    def decode(self, code: jax.Array) -> jax.Array:
        kernel = self.encoder.kernel[...]  # (d, k): the decoder uses its transpose
        return self.output_activation(code @ kernel.T + self.decoder_bias[...][None])

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.reshape(self.decode(self.encode(x)), x.shape)


class DenoisingAutoencoder(nnx.Module):
    """An MLP autoencoder that learns to undo corruption of its input.

    In training (``model.train()``) the input is corrupted with
    :func:`jdl.nn.corrupt` before encoding and the loss compares the
    reconstruction with the *clean* input, so the network must learn the data's
    structure rather than the identity (seed 000: denoising makes the model
    robust). In evaluation the input is used as given: feed it noisy images to
    clean them.

    ``encoder: d → hidden… → latent``, ``decoder: latent → reversed(hidden)… → d``,
    hidden activations ``activation``, output ``output_activation``.

    Args:
      in_features: input size ``d``.
      hidden: encoder widths before the code (the decoder mirrors them).
      latent_features: code size.
      corruption: ``"gaussian"``, ``"masking"`` or ``"salt_and_pepper"``.
      noise_level: σ of Gaussian noise, or the fraction of entries masked / flipped.
      activation: hidden nonlinearity.
      output_activation: ``"sigmoid"`` for data in [0, 1] (the digits).
      deterministic: start in evaluation mode.
      rngs: ``nnx.Rngs`` (the ``dropout`` stream draws the corruption).

    References:
      Vincent, Larochelle, Bengio & Manzagol (2008), ICML.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (64,),
        latent_features: int = 16,
        *,
        corruption: Corruption = "gaussian",
        noise_level: float = 0.3,
        activation: str | Callable = "relu",
        output_activation: str | Callable = "sigmoid",
        deterministic: bool = False,
        rngs: nnx.Rngs,
    ):
        self.in_features = in_features = _checks.count(in_features, "in_features")
        hidden = _checks.widths(hidden, "hidden")
        latent_features = _checks.count(latent_features, "latent_features (the code size)")
        if corruption not in ("gaussian", "masking", "salt_and_pepper"):
            raise ValueError(f"unknown corruption {corruption!r}; choose 'gaussian', 'masking' or 'salt_and_pepper'")
        if (
            isinstance(noise_level, bool)
            or not isinstance(noise_level, numbers.Real)
            or not (0 <= noise_level < math.inf if corruption == "gaussian" else 0 <= noise_level <= 1)
        ):
            need = "a finite standard deviation >= 0" if corruption == "gaussian" else "a probability in [0, 1]"
            raise ValueError(f"noise_level for {corruption!r} corruption must be {need}, got {noise_level!r}")
        widths = [in_features, *hidden, latent_features]
        self.encoder = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
        back = widths[::-1]
        self.decoder = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(back[:-1], back[1:])])
        self.corruption = corruption
        self.noise_level = noise_level
        self.activation = get_activation(activation)
        self.output_activation = get_activation(output_activation)
        self.deterministic = deterministic
        self.rngs = rngs["dropout"].fork()

    def encode(self, x: jax.Array) -> jax.Array:
        h = _flatten(self, x)
        for i, layer in enumerate(self.encoder):
            h = layer(h)
            if i < len(self.encoder) - 1:
                h = self.activation(h)
        return h

    def decode(self, code: jax.Array) -> jax.Array:
        h = code
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            h = self.activation(h) if i < len(self.decoder) - 1 else self.output_activation(h)
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        if not self.deterministic:
            x = corrupt(x, self.rngs(), kind=self.corruption, level=self.noise_level)
        return jnp.reshape(self.decode(self.encode(x)), x.shape)

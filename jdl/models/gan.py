"""Generative adversarial networks (seed 001, 003): MLP generator and discriminator, and a
pure two-player train step.

Each step updates the discriminator ``D`` on a batch of real samples and a batch
of fakes ``G(z)``, then the generator against the updated ``D``:

    D: minimise  −log D(x) − log(1 − D(G(z)))
    G: minimise  −log D(G(z))          (non-saturating; seed 001)

``D`` has dropout (seed 003: "use dropout in the discriminator, results are
poor without it"). The whole step is a pure function of a :class:`GANState`
pytree, so it jits, and ``lax.scan`` fuses many steps into one call.

References:
  Goodfellow et al. (2014), "Generative adversarial nets", NeurIPS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jdl.models import _checks
from jdl.nn.losses import discriminator_loss, generator_loss
from jdl.nn.regularization import HIDDEN_KEEP_PROB, dropout
from jdl.training.model import Model, Variables
from jdl.validation import as_key

PyTree = Any


class Generator(nnx.Module):
    """``z ∈ R^latent → [Linear → ReLU] × len(hidden) → Linear → x̂ ∈ R^out``.

    Args:
      latent_features: dimension of the noise ``z``.
      out_features: dimension of a sample.
      hidden: hidden widths.
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, latent_features: int, out_features: int, hidden: Sequence[int] = (64, 64), *, rngs: nnx.Rngs):
        latent_features = _checks.count(latent_features, "latent_features")
        out_features = _checks.count(out_features, "out_features")
        widths = [latent_features, *_checks.widths(hidden, "hidden"), out_features]
        self.latent_features = latent_features
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])

    def __call__(self, z: jax.Array) -> jax.Array:
        if z.ndim != 2 or z.shape[1] != self.latent_features:
            raise ValueError(f"Generator takes noise (N, {self.latent_features}), got shape {z.shape}")
        h = z
        for layer in self.layers[:-1]:
            h = nnx.relu(layer(h))
        return self.layers[-1](h)


class Discriminator(nnx.Module):
    """``x → [Linear → leaky ReLU → Dropout(keep p)] × len(hidden) → Linear → logit``.

    Returns one logit per example, shape ``(N,)``; ``D(x) = sigmoid(logit)``.

    Args:
      in_features: dimension of a sample (inputs are flattened).
      hidden: hidden widths.
      keep_prob: dropout keep-probability after each hidden layer (seed 003: 0.5).
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self, in_features: int, hidden: Sequence[int] = (64, 64), *, keep_prob: float = HIDDEN_KEEP_PROB, rngs: nnx.Rngs
    ):
        self.in_features = in_features = _checks.count(in_features, "in_features")
        hidden = _checks.widths(hidden, "hidden")
        widths = [in_features, *hidden]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])
        self.dropouts = nnx.List([dropout(keep_prob, rngs=rngs) for _ in hidden])
        self.head = nnx.Linear(widths[-1], 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        _checks.flat_features("Discriminator", x, self.in_features)
        h = jnp.reshape(x, (x.shape[0], -1))
        for layer, drop in zip(self.layers, self.dropouts):
            h = drop(nnx.leaky_relu(layer(h), 0.2))
        return self.head(h)[:, 0]


@struct.dataclass
class GANState:
    """Both players' parameters, model state and optimizer state, the step and the key."""

    generator: Variables
    discriminator: Variables
    generator_opt_state: PyTree
    discriminator_opt_state: PyTree
    step: jax.Array
    key: jax.Array


def init_gan(
    generator: Model,
    discriminator: Model,
    generator_optimizer: optax.GradientTransformation,
    discriminator_optimizer: optax.GradientTransformation,
    *,
    latent_features: int,
    sample: jax.Array,
    key: jax.Array | int,
) -> GANState:
    """Initialise both players from ``key`` (an integer seed, raw ``uint32[2]`` key data or a typed key).

    Args:
      sample: a batch of real data (for the discriminator's input shape).
    """
    key = as_key(key)  # NumPy integer seeds and typed keys were refused
    g_key, d_key, run_key = jax.random.split(key, 3)
    z = jnp.zeros((sample.shape[0], latent_features), jnp.float32)
    g_vars = generator.init(jax.random.key_data(g_key), z)
    d_vars = discriminator.init(jax.random.key_data(d_key), sample)
    return GANState(
        generator=g_vars,
        discriminator=d_vars,
        generator_opt_state=generator_optimizer.init(g_vars.params),
        discriminator_opt_state=discriminator_optimizer.init(d_vars.params),
        step=jnp.zeros((), jnp.int32),
        key=jax.random.key_data(run_key),
    )


def make_gan_step(
    generator: Model,
    discriminator: Model,
    generator_optimizer: optax.GradientTransformation,
    discriminator_optimizer: optax.GradientTransformation,
    *,
    latent_features: int,
    non_saturating: bool = True,
    jit: bool = True,
) -> Callable[[GANState, jax.Array], tuple[GANState, dict]]:
    """Build ``step(state, real) -> (state, metrics)``: one D update, then one G update.

    Keys for the noise ``z`` and the discriminator's dropout are
    ``fold_in(state.key, state.step)``, split per use: a run is reproducible.

    Returns:
      The step; metrics are ``d_loss``, ``g_loss``, ``d_real`` (mean ``D(x)``) and
      ``d_fake`` (mean ``D(G(z))``, before D's update).
    """

    def apply(model: Model, variables: Variables, x, key):
        return model.apply(variables, x, train=True, key=jax.random.key_data(key))

    def step(state: GANState, real: jax.Array) -> tuple[GANState, dict]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        z_d_key, z_g_key, g_key1, g_key2, d_real_key, d_fake_key, d_g_key = jax.random.split(key, 7)
        n = real.shape[0]
        g_vars, d_vars = state.generator, state.discriminator

        # discriminator
        z = jax.random.normal(z_d_key, (n, latent_features), real.dtype)
        fake, g_model_state = apply(generator, g_vars, z, g_key1)
        fake = jax.lax.stop_gradient(fake)

        def d_objective(d_params):
            real_logits, d_model_state = apply(discriminator, Variables(d_params, d_vars.model_state), real, d_real_key)
            fake_logits, d_model_state = apply(discriminator, Variables(d_params, d_model_state), fake, d_fake_key)
            return discriminator_loss(real_logits, fake_logits), (real_logits, fake_logits, d_model_state)

        (d_loss, (real_logits, fake_logits, d_model_state)), d_grads = jax.value_and_grad(d_objective, has_aux=True)(
            d_vars.params
        )
        d_updates, d_opt_state = discriminator_optimizer.update(d_grads, state.discriminator_opt_state, d_vars.params)
        d_vars = Variables(optax.apply_updates(d_vars.params, d_updates), d_model_state)

        # generator, against the updated discriminator
        z = jax.random.normal(z_g_key, (n, latent_features), real.dtype)

        def g_objective(g_params):
            fake, g_state = apply(generator, Variables(g_params, g_model_state), z, g_key2)
            logits, _ = apply(discriminator, d_vars, fake, d_g_key)
            return generator_loss(logits, non_saturating=non_saturating), g_state

        (g_loss, g_model_state), g_grads = jax.value_and_grad(g_objective, has_aux=True)(g_vars.params)
        g_updates, g_opt_state = generator_optimizer.update(g_grads, state.generator_opt_state, g_vars.params)
        g_vars = Variables(optax.apply_updates(g_vars.params, g_updates), g_model_state)

        metrics = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
            "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
        }
        new_state = state.replace(
            generator=g_vars,
            discriminator=d_vars,
            generator_opt_state=g_opt_state,
            discriminator_opt_state=d_opt_state,
            step=state.step + 1,
        )
        return new_state, metrics

    return jax.jit(step) if jit else step


def generate(generator: Model, state: GANState, key: jax.Array, num_samples: int, *, latent_features: int) -> jax.Array:
    """``num_samples`` samples ``G(z)``, ``z ~ N(0, I)``, from the generator in evaluation mode."""
    z = jax.random.normal(key, (num_samples, latent_features))
    samples, _ = jax.jit(generator.apply, static_argnames="train")(state.generator, z, train=False, key=None)
    return samples

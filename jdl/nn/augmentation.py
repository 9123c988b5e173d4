"""Data augmentation and noise on inputs: corruption, translation, adversarial noise.

Pure functions of an explicit key (seed 000, 001): apply them to a batch before
the train step, or inside a model (:class:`jdl.models.DenoisingAutoencoder`
corrupts its own input in training with :func:`corrupt`).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Corruption = Literal["gaussian", "masking", "salt_and_pepper"]


def _concrete(value) -> bool:
    """A setting to check now; a traced one (a sweep under ``jax.vmap`` or
    ``jax.jit``) passes through unchecked."""
    return not isinstance(value, jax.core.Tracer)


def corrupt(x: jax.Array, key: jax.Array, *, kind: Corruption = "gaussian", level: float = 0.3) -> jax.Array:
    """Corrupt inputs as a denoising autoencoder's training does.

    - ``"gaussian"``: ``x + level · ε``, ``ε ~ N(0, I)``.
    - ``"masking"``: each entry set to 0 with probability ``level``.
    - ``"salt_and_pepper"``: each entry set to 0 or 1 (equally likely) with
      probability ``level``.

    References:
      Vincent, Larochelle, Bengio & Manzagol (2008), "Extracting and composing
      robust features with denoising autoencoders", ICML.

    ``level`` may be traced (``jax.vmap`` over noise levels); it is checked
    only when concrete.
    """
    if kind not in ("gaussian", "masking", "salt_and_pepper"):
        raise ValueError(f"unknown corruption {kind!r}; choose 'gaussian', 'masking' or 'salt_and_pepper'")
    if _concrete(level) and kind == "gaussian" and not 0 <= level < np.inf:
        raise ValueError(f"'gaussian' corruption needs a finite noise level (standard deviation) >= 0, got {level}")
    if _concrete(level) and kind != "gaussian" and not 0 <= level <= 1:
        raise ValueError(f"{kind!r} corruption needs a level (a probability) in [0, 1], got {level}")
    if kind == "gaussian":
        return x + level * jax.random.normal(key, x.shape, x.dtype)
    if kind == "masking":
        keep = jax.random.bernoulli(key, 1.0 - level, x.shape)
        return jnp.where(keep, x, jnp.zeros_like(x))
    # salt and pepper
    hit_key, value_key = jax.random.split(key)
    hit = jax.random.bernoulli(hit_key, level, x.shape)
    value = jax.random.bernoulli(value_key, 0.5, x.shape).astype(x.dtype)
    return jnp.where(hit, value, x)


def random_translate(images: jax.Array, key: jax.Array, *, max_shift: int = 1) -> jax.Array:
    """Shift each image ``(N, H, W, C)`` by its own random offset in
    ``[−max_shift, max_shift]²`` pixels, filling the border with zeros.

    A label-preserving transformation for digits (seed 001: augment only with
    changes that cannot change the class; rotations would turn a 6 into a 9).
    """
    if images.ndim != 4:
        raise ValueError(f"random_translate expects images (N, H, W, C), got shape {images.shape}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, (int, np.integer)) or max_shift < 0:
        raise ValueError(
            f"max_shift must be a non-negative integer number of pixels, got {max_shift!r}; "
            "max_shift=0 leaves the images unchanged"
        )
    n, h, w, _ = images.shape
    s = max_shift
    shifts = jax.random.randint(key, (n, 2), -s, s + 1)
    padded = jnp.pad(images, ((0, 0), (s, s), (s, s), (0, 0)))

    def crop(image, shift):
        return jax.lax.dynamic_slice(image, (s - shift[0], s - shift[1], 0), (h, w, image.shape[-1]))

    return jax.vmap(crop)(padded, shifts)


def adversarial_perturbation(gradient: jax.Array, *, epsilon: float, norm: float = jnp.inf) -> jax.Array:
    """The worst-case input perturbation of p-norm ``epsilon`` to first order.

    Maximises the linearised loss increase ``⟨g, δ⟩`` subject to
    ``‖δ‖_p ≤ ε``, per example (every axis but the first): the maximum is
    ``ε ‖g‖_q`` with ``1/p + 1/q = 1``, attained by

    - ``p = ∞``: ``δ = ε sign(g)`` (the fast gradient sign method);
    - ``p = 2``: ``δ = ε g / ‖g‖₂``;
    - ``p = 1``: ``δ = ε sign(g_i) e_i`` at ``i = argmax |g_i|``.

    Seed 000: adversarial noise, bounded in p-norm, makes a model more robust
    than random noise. Pass ``g = ∇_x loss`` (e.g. ``jax.grad`` of
    :func:`jdl.training.make_loss` with respect to ``batch["x"]``).

    References:
      Goodfellow, Shlens & Szegedy (2015), "Explaining and harnessing
      adversarial examples", ICLR.

    ``epsilon`` may be traced (``jax.vmap`` over budgets); it is checked only
    when concrete. For ``p = 2`` each row is divided by its largest entry
    before the norm is taken, so ``‖δ‖₂ = ε`` holds for gradients whose
    squares would underflow or overflow (float16, or |g| near 1e±20 in float32).
    """
    if _concrete(epsilon) and not 0 <= epsilon < np.inf:
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
    flat = jnp.reshape(gradient, (gradient.shape[0], -1))
    if norm == jnp.inf:
        delta = epsilon * jnp.sign(flat)
    elif norm == 2:
        peak = jnp.max(jnp.abs(flat), axis=-1, keepdims=True)
        unit = flat / jnp.where(peak > 0, peak, 1)  # entries in [−1, 1]: the norm neither under- nor overflows
        length = jnp.linalg.norm(unit.astype(jnp.promote_types(unit.dtype, jnp.float32)), axis=-1, keepdims=True)
        delta = epsilon * (unit / jnp.where(length > 0, length, 1).astype(unit.dtype))
    elif norm == 1:
        index = jnp.argmax(jnp.abs(flat), axis=-1)
        one_hot = jax.nn.one_hot(index, flat.shape[-1], dtype=flat.dtype)
        delta = epsilon * one_hot * jnp.sign(flat)
    else:
        raise ValueError(f"norm must be 1, 2 or inf, got {norm}")
    return jnp.reshape(delta, gradient.shape)

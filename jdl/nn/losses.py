"""Losses of ``(outputs, targets)``, per example (the train step takes the mean).

Class scores are logits; softmax and log-softmax are evaluated stably as
``z - max(z) - log Σ exp(z - max(z))`` (Optax's implementation does this).

Losses of real-valued targets (:func:`mean_squared_error`,
:func:`binary_cross_entropy`, :func:`kl_divergence_standard_normal`) sum over
every axis but the batch axis: one value per example. Class losses
(:func:`cross_entropy`, :func:`negative_log_likelihood`,
:func:`label_smoothing_cross_entropy`, :func:`perceptron_loss`) give one value
per labelled position — ``(N,)`` for ``(N, k)`` scores, ``(N, T)`` for a
sequence's per-step scores ``(N, T, k)`` — so the train step's mean is a mean
over positions (tokens), as is usual for sequence models. Either plugs into
:func:`jdl.training.make_train_step` unchanged. Penalties on parameters
(:func:`l1_penalty`, :func:`l2_penalty`) return scalars to add to a loss.

Shapes are checked when the loss is traced, not broadcast: outputs and targets
of the same kind must have the same shape (as Optax's ``check_shapes_equal``
demands), integer labels the shape of the scores without their class axis. An
integer label outside ``[0, k)`` for ``k`` classes gives a NaN loss (gradient
zero for that example), so a bad label shows up in the loss instead of
wrapping around (``−1`` as the last class) or giving a plausible wrong value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any


def _per_example_sum(values: jax.Array) -> jax.Array:
    """Sum over every axis but the first (a scalar per example)."""
    if values.ndim <= 1:
        return values
    return jnp.sum(jnp.reshape(values, (values.shape[0], -1)), axis=-1)


def _check_same_shape(name: str, outputs, targets, outputs_name: str, targets_name: str) -> None:
    """Refuse, at trace time, outputs and targets of different shapes: broadcasting
    ``(N, 1)`` against ``(N,)`` would silently pair every output with every target."""
    a, b = jnp.shape(outputs), jnp.shape(targets)
    if a == b:
        return
    if a[:-1] == b and a[-1:] == (1,):
        fix = f"squeeze the {outputs_name}' last axis ({outputs_name}[..., 0]) or reshape the {targets_name} to {a}"
    elif b[:-1] == a and b[-1:] == (1,):
        fix = f"squeeze the {targets_name}' last axis ({targets_name}[..., 0]) or reshape the {outputs_name} to {b}"
    else:
        fix = "reshape one to the shape of the other"
    raise ValueError(
        f"{name}: {outputs_name} have shape {a} but {targets_name} have shape {b}; the shapes must be equal "
        f"(broadcasting would pair every example's output with every other example's target); {fix}"
    )


def _check_label_shape(name: str, scores, labels) -> None:
    """Integer labels have the scores' shape without the class axis: ``(N,)`` for ``(N, k)``.

    Labels of any other dtype are refused: casting ``1.5`` to an integer would
    truncate it to class 1 and ``one_hot`` would give it no class at all, a
    plausible wrong loss either way.
    """
    dtype = jnp.result_type(labels)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(
            f"{name}: labels must be integer class indices, got dtype {dtype}; cast them "
            "(labels.astype(jnp.int32)) if they hold whole numbers, or use a loss of soft targets "
            "(optax.softmax_cross_entropy) for probabilities"
        )
    if jnp.shape(labels) != jnp.shape(scores)[:-1]:
        raise ValueError(
            f"{name}: scores have shape {jnp.shape(scores)} (classes last), so integer labels need shape "
            f"{jnp.shape(scores)[:-1]}, got {jnp.shape(labels)}; pass one integer class per example "
            "(labels[..., 0] for labels of shape (N, 1), labels.argmax(-1) for one-hot labels)"
        )


def _nan_where_out_of_range(loss: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """``loss`` where ``0 <= label < num_classes``, NaN elsewhere (the gradient there is zero).
    ``labels`` as given, before any cast (int64 2³² + 1 cast to int32 is class 1)."""
    valid = (labels >= 0) & (labels < num_classes)
    return jnp.where(valid, loss, jnp.asarray(jnp.nan, loss.dtype))


def _check_smoothing(smoothing) -> None:
    if isinstance(smoothing, jax.core.Tracer):  # a sweep under jit or vmap: checked by the caller, if at all
        return
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy (negative log-likelihood) of integer labels under softmax(logits).

    ``ℓ(z, y) = −log softmax(z)_y = log Σ_j exp z_j − z_y``. Seed 001 writes the
    cross-entropy with a stray square; this is the standard, correct form.

    ``labels`` has the shape of ``logits`` without the last (class) axis; a
    label outside ``[0, k)`` gives a NaN loss.
    """
    _check_label_shape("cross_entropy", logits, labels)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return _nan_where_out_of_range(loss, labels, logits.shape[-1])


def mean_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """``½ Σ_i (ŷ_i − y_i)²`` per example, the seed's ½-scaled squared error.

    ``predictions`` and ``targets`` must have the same shape: a one-output
    model's ``(N, 1)`` against ``(N,)`` targets is refused (squeeze one side).
    """
    _check_same_shape("mean_squared_error", predictions, targets, "predictions", "targets")
    diff = predictions - targets
    return 0.5 * jnp.sum(jnp.reshape(diff * diff, (diff.shape[0], -1)), axis=-1)


def negative_log_likelihood(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """``−log p_y`` for models whose outputs already are log-probabilities (e.g. a
    final :func:`jax.nn.log_softmax`); equals :func:`cross_entropy` of the logits.

    A label outside ``[0, k)`` gives a NaN loss.
    """
    _check_label_shape("negative_log_likelihood", log_probs, labels)
    given = jnp.asarray(labels)
    picked = jnp.take_along_axis(log_probs, given.astype(jnp.int32)[..., None], axis=-1)
    return _nan_where_out_of_range(-picked[..., 0], given, log_probs.shape[-1])


def binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Binary cross-entropy of targets in [0, 1] under ``sigmoid(logits)``, per example.

    ``ℓ(z, t) = −[t log σ(z) + (1 − t) log(1 − σ(z))] = softplus(z) − t·z``,
    evaluated stably (Optax's ``sigmoid_binary_cross_entropy``) and summed over
    every axis but the batch axis (pixels of an image, say). Seed 001 writes
    this loss as ``(1/n) Σ (t ln o + (1 − t) ln(1 − o))²``: the square is a slip
    and the sign is missing (that expression is not a likelihood); this is the
    standard form.

    ``logits`` and ``labels`` must have the same shape: a one-output model's
    ``(N, 1)`` against ``(N,)`` labels is refused (squeeze one side).
    """
    _check_same_shape("binary_cross_entropy", logits, labels, "logits", "labels")
    labels = jnp.asarray(labels, logits.dtype)
    return _per_example_sum(optax.sigmoid_binary_cross_entropy(logits, labels))


def smooth_labels(labels: jax.Array, num_classes: int, smoothing: float, dtype=None) -> jax.Array:
    """Soft targets for integer labels: ``1 − (k−1)ε/k`` on the true class, ``ε/k`` elsewhere.

    Seed 001's label smoothing with ``k = num_classes`` and ``ε = smoothing``;
    Optax's ``smooth_labels`` computes ``(1 − ε)·onehot + ε/k``, the same thing.
    ``dtype``: of the targets (``None``: JAX's default float, float64 under x64;
    pass the logits' dtype to keep a loss in it).
    """
    _check_smoothing(smoothing)
    return optax.smooth_labels(jax.nn.one_hot(labels, num_classes, dtype=dtype), smoothing)


def label_smoothing_cross_entropy(smoothing: float = 0.1) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """A loss ``(logits, labels) -> ℓ``: cross-entropy against :func:`smooth_labels`.

    ``ℓ = −Σ_j q_j log softmax(z)_j`` with ``q`` the smoothed targets; ``smoothing=0``
    gives :func:`cross_entropy`. Label smoothing is noise injected at the output
    (seed 001): the model is never asked for probability 1, so its logits stay finite.
    A label outside ``[0, k)`` gives a NaN loss.

    References:
      Szegedy, Vanhoucke, Ioffe, Shlens & Wojna (2016), "Rethinking the
      Inception architecture", CVPR, §7.
    """
    _check_smoothing(smoothing)

    def loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
        _check_label_shape("label_smoothing_cross_entropy", logits, labels)
        targets = smooth_labels(labels, logits.shape[-1], smoothing, dtype=logits.dtype)
        # A class of target weight 0 contributes 0, also where its logit is −inf
        # (0 · −inf is NaN in optax.softmax_cross_entropy; cross_entropy is finite there).
        log_p = jax.nn.log_softmax(logits, axis=-1)
        terms = jnp.where(targets > 0, targets * log_p, jnp.zeros((), log_p.dtype))
        return _nan_where_out_of_range(-jnp.sum(terms, axis=-1), labels, logits.shape[-1])

    return loss


def perceptron_loss(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """The perceptron criterion ``max_j s_j − s_y ≥ 0`` (zero when the prediction is right).

    For a binary perceptron with scores ``(0, w·x + b)`` (see
    :class:`jdl.models.Perceptron`) and ``t = 2y − 1 ∈ {−1, +1}`` this is
    ``max(0, −t (w·x + b))``, whose gradient on a mistake is ``−t x``: one SGD
    step with rate η is the perceptron rule ``w ← w + η t x`` (seed 001 writes
    it ``Δw = η (t − o) x`` with ``o = sign(w·x)``, which on a mistake is
    ``2 η t x`` — the same rule with the rate doubled). With more classes it is
    the multiclass perceptron. A label outside ``[0, k)`` gives a NaN loss.

    A tie (``max_{j≠y} s_j = s_y``, e.g. every score 0 from a zero
    initialisation) counts as a mistake, as in Rosenblatt's rule, which
    updates whenever ``t (w·x + b) ≤ 0``: the loss is written
    ``max(0, max_{j≠y} s_j − s_y)`` with the gradient of the margin taken at
    0, not ``max_j s_j − s_y``, whose gradient JAX splits among tied maxima
    (half a step, or none for ``k`` tied classes).

    References:
      Rosenblatt (1958); Duda, Hart & Stork, "Pattern classification", §5.5.
    """
    _check_label_shape("perceptron_loss", scores, labels)
    given = jnp.asarray(labels)
    labels = given.astype(jnp.int32)
    k = scores.shape[-1]
    true_score = jnp.take_along_axis(scores, labels[..., None], axis=-1)[..., 0]
    others = jnp.where(jax.nn.one_hot(labels, k, dtype=bool), -jnp.inf, scores)
    margin = jnp.max(others, axis=-1) - true_score
    return _nan_where_out_of_range(jnp.where(margin >= 0, margin, 0), given, k)


def l1_penalty(params: PyTree) -> jax.Array:
    """``‖w‖₁ = Σ |w|`` over every leaf of ``params``; its gradient is ``sign(w)`` (seed 001).

    Add ``α · l1_penalty(params)`` to a loss; filter ``params`` first (e.g. only
    kernels) to leave biases unpenalised. At ``w = 0`` the gradient is
    ``sign(0) = 0``, the minimum-norm subgradient (as in
    :func:`jdl.optim.add_l1_penalty`): ``jax.grad`` of ``jnp.abs`` would give 1
    there and push every zero weight to ``−η α``.
    """
    leaves = jax.tree.leaves(params)
    # |w| = sign(w)·w with sign(w) held constant: the same value, gradient sign(w)
    return sum((jnp.sum(jax.lax.stop_gradient(jnp.sign(p)) * p, dtype=_sum_dtype(p)) for p in leaves),
               jnp.zeros((), jnp.float32))


def l2_penalty(params: PyTree) -> jax.Array:
    """``½ ‖w‖₂² = ½ Σ w²`` over every leaf of ``params`` (seed 001's ``½ α ‖w‖²`` without α).

    Its gradient is ``w``, so gradient descent on ``J + α·l2_penalty`` shrinks
    the weights by ``(1 − ηα)`` each step: weight decay.
    """
    leaves = jax.tree.leaves(params)
    return 0.5 * sum((jnp.sum(jnp.square(p.astype(_sum_dtype(p)))) for p in leaves), jnp.zeros((), jnp.float32))


def _sum_dtype(p) -> jnp.dtype:
    """At least float32 for a penalty's sum: a float16 leaf's sum overflowed at 65 504."""
    return jnp.promote_types(jnp.result_type(p), jnp.float32)


def kl_divergence_standard_normal(mean: jax.Array, log_variance: jax.Array) -> jax.Array:
    """``KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − log σ² − 1)`` per example.

    The closed-form regulariser of a VAE's evidence lower bound
    (Kingma & Welling, 2014, appendix B). ``mean`` and ``log_variance`` must
    have the same shape.
    """
    _check_same_shape("kl_divergence_standard_normal", mean, log_variance, "means", "log_variances")
    return 0.5 * _per_example_sum(mean * mean + jnp.exp(log_variance) - log_variance - 1.0)


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """The GAN discriminator's loss ``−log D(x) − log(1 − D(G(z)))``, averaged.

    ``D = sigmoid(logits)``; ``−log σ(a) = softplus(−a)`` and
    ``−log(1 − σ(a)) = softplus(a)`` keep it stable. Minimising it maximises
    the value function ``V(D, G)`` of seed 001 over ``D``.
    """
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def generator_loss(fake_logits: jax.Array, *, non_saturating: bool = True) -> jax.Array:
    """The GAN generator's loss, averaged over the fake samples.

    ``non_saturating=True``: ``−log D(G(z)) = softplus(−a)``, the loss seed 001
    recommends — early in training, when ``D`` rejects the fakes confidently,
    ``log(1 − D(G(z)))`` saturates (its gradient vanishes) while this one does not.
    ``non_saturating=False``: the minimax form ``log(1 − D(G(z))) = −softplus(a)``.

    References:
      Goodfellow et al. (2014), "Generative adversarial nets", NeurIPS, §3.
    """
    if non_saturating:
        return jnp.mean(jax.nn.softplus(-fake_logits))
    return -jnp.mean(jax.nn.softplus(fake_logits))

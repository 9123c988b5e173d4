"""Building blocks against closed forms and references (NumPy, Optax, Flax, plain loops)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jdl.nn as jnn
from jdl.nn import initializers as init
from jdl.training import Variables, from_nnx, from_nnx_factory

KEY = jax.random.key(0)


def keydata(i):
    return jax.random.key_data(jax.random.key(i))


def sigmoid_np(x):
    return 1.0 / (1.0 + np.exp(-x))


# --- activations ---------------------------------------------------------------------------


def test_softmax_and_log_softmax_are_exact_for_huge_logits():
    z = jnp.array([[1e4, -1e4], [-1e4, 1e4], [1e4, 1e4 - 1.0]], jnp.float32)
    p = jnn.softmax(z)
    log_p = jnn.log_softmax(z)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(log_p))
    np.testing.assert_array_equal(np.asarray(p[0]), [1.0, 0.0])
    np.testing.assert_array_equal(np.asarray(p[1]), [0.0, 1.0])
    np.testing.assert_array_equal(np.asarray(log_p[0]), [0.0, -2e4])
    np.testing.assert_array_equal(np.asarray(log_p[1]), [-2e4, 0.0])
    # shift invariance: softmax(z + c) = softmax(z); the reference is computed at small scale
    np.testing.assert_allclose(np.asarray(p[2]), sigmoid_np(np.array([1.0, -1.0])), rtol=1e-6)


def test_activations_match_closed_forms():
    x = np.linspace(-6, 6, 101).astype(np.float32)
    xj = jnp.asarray(x)
    np.testing.assert_allclose(jnn.sigmoid(xj), sigmoid_np(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jnn.tanh(xj), np.tanh(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jnn.soft_sign(xj), x / (1 + np.abs(x)), rtol=1e-6)
    np.testing.assert_allclose(jnn.relu(xj), np.maximum(x, 0))
    np.testing.assert_allclose(jnn.leaky_relu(xj, 0.1), np.where(x > 0, x, 0.1 * x), rtol=1e-6)
    np.testing.assert_allclose(jnn.softplus(xj), np.log1p(np.exp(x)), rtol=1e-5)
    np.testing.assert_array_equal(jnn.sign(jnp.array([-2.0, 0.0, 1e-30, 3.0])), [-1.0, -1.0, 1.0, 1.0])
    for name, fn in jnn.ACTIVATIONS.items():
        assert jnn.get_activation(name) is fn
    with pytest.raises(ValueError, match="unknown activation"):
        jnn.get_activation("swishy")


def test_noisy_relu_statistics_and_modes():
    x = jnp.full((20000,), 5.0)
    fixed = jnn.noisy_relu(x, KEY, stddev=0.5) - 5.0
    assert abs(float(jnp.std(fixed)) - 0.5) < 0.01 and abs(float(jnp.mean(fixed))) < 0.01
    nair_hinton = jnn.noisy_relu(x, KEY) - 5.0  # Var ε = sigmoid(5)
    assert abs(float(jnp.std(nair_hinton)) - math.sqrt(sigmoid_np(5.0))) < 0.02
    np.testing.assert_array_equal(
        jnn.noisy_relu(jnp.arange(-3.0, 3.0), KEY, stddev=0.0), np.maximum(np.arange(-3, 3), 0)
    )
    model = from_nnx(jnn.NoisyReLU(0.3, rngs=nnx.Rngs(0)))
    v = model.init(keydata(0), x[:4])
    xs = jnp.linspace(-1, 1, 8)[None]
    a, _ = model.apply(v, xs, train=True, key=keydata(1))
    b, _ = model.apply(v, xs, train=True, key=keydata(1))
    c, _ = model.apply(v, xs, train=True, key=keydata(2))
    e, _ = model.apply(v, xs, train=False, key=keydata(1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(e, np.maximum(np.asarray(xs), 0))


def test_maxout_against_numpy():
    x = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    np.testing.assert_array_equal(jnn.maxout(jnp.asarray(x), 3), x.reshape(3, 4, 3).max(-1))
    with pytest.raises(ValueError, match="num_pieces"):
        jnn.maxout(jnp.asarray(x), 5)
    layer = jnn.Maxout(12, 4, num_pieces=3, rngs=nnx.Rngs(0))
    z = np.asarray(layer.linear(jnp.asarray(x)))
    np.testing.assert_allclose(layer(jnp.asarray(x)), z.reshape(3, 4, 3).max(-1), rtol=1e-6)


# --- initialisers ----------------------------------------------------------------------------


def test_glorot_uniform_has_the_seed_bound():
    m, n = 300, 100
    w = np.asarray(init.glorot_uniform()(KEY, (m, n)))
    bound = math.sqrt(6.0 / (m + n))
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound
    assert abs(w.var() - bound**2 / 3) < 0.02 * bound**2 / 3  # variance of U(-a, a) = a²/3 = 2/(m+n)


def test_he_normal_truncated_normal_and_orthogonal():
    w = np.asarray(init.he_normal()(KEY, (500, 400)))
    assert abs(w.std() - math.sqrt(2 / 500)) < 0.01 * math.sqrt(2 / 500)
    t = np.asarray(init.truncated_normal(0.1)(KEY, (100_000,)))
    assert np.abs(t).max() <= 0.2 + 1e-6
    q = np.asarray(init.orthogonal()(KEY, (64, 64)))
    np.testing.assert_allclose(q.T @ q, np.eye(64), atol=1e-5)
    assert init.get_initializer("glorot_uniform")(KEY, (3, 4)).shape == (3, 4)
    with pytest.raises(ValueError, match="unknown initializer"):
        init.get_initializer("xavier_magic")


def test_sparse_initialiser_has_k_nonzeros_per_unit():
    w = np.asarray(jax.jit(init.sparse(15, stddev=2.0), static_argnums=1)(KEY, (200, 300)))
    np.testing.assert_array_equal((w != 0).sum(axis=0), np.full(300, 15))
    assert abs(w[w != 0].std() - 2.0) < 0.1
    conv = np.asarray(init.sparse(4)(KEY, (3, 3, 2, 5)))  # fan-in 18 per output channel
    np.testing.assert_array_equal((conv.reshape(18, 5) != 0).sum(axis=0), np.full(5, 4))
    small = np.asarray(init.sparse(15)(KEY, (5, 3)))  # capped at the fan-in
    assert (small != 0).all()


def test_spectral_radius_against_numpy_eigenvalues():
    for radius in (0.9, 1.2):
        w = np.asarray(init.spectral_radius(radius)(KEY, (50, 50)))
        np.testing.assert_allclose(np.abs(np.linalg.eigvals(w.astype(np.float64))).max(), radius, rtol=1e-4)
    with pytest.raises(ValueError, match="square"):
        init.spectral_radius(1.2)(KEY, (3, 4))
    cell = jnn.simple_rnn_cell(2, 16, radius=1.2, rngs=nnx.Rngs(0))
    w = np.asarray(cell.dense_h.kernel[...], np.float64)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(w)).max(), 1.2, rtol=1e-4)


def test_lstm_forget_gate_bias_is_one_and_acts_as_the_forget_gate():
    b = np.asarray(init.lstm_forget_gate_bias(1.0)(KEY, (12,)))
    np.testing.assert_array_equal(b, [0] * 3 + [1] * 3 + [0] * 6)
    cell = jnn.lstm_cell(2, 3, rngs=nnx.Rngs(0))
    # zero input, zero hidden state, memory 1: c' = σ(b_f)·1 + σ(0)·tanh(0) = σ(1)
    (c, h), _ = cell((jnp.ones((1, 3)), jnp.zeros((1, 3))), jnp.zeros((1, 2)))
    np.testing.assert_allclose(c, np.full((1, 3), sigmoid_np(1.0)), rtol=1e-6)
    np.testing.assert_allclose(h, sigmoid_np(0.0) * np.tanh(c), rtol=1e-6)


# --- losses --------------------------------------------------------------------------------


def test_cross_entropy_nll_and_mse_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 2, 3])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_p[np.arange(5), labels]
    np.testing.assert_allclose(jnn.cross_entropy(jnp.asarray(logits), jnp.asarray(labels)), expected, rtol=1e-5)
    np.testing.assert_allclose(
        jnn.negative_log_likelihood(jnn.log_softmax(jnp.asarray(logits)), jnp.asarray(labels)), expected, rtol=1e-5
    )
    y = rng.normal(size=(5, 2, 3)).astype(np.float32)
    t = rng.normal(size=(5, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(
        jnn.mean_squared_error(jnp.asarray(y), jnp.asarray(t)), 0.5 * ((y - t) ** 2).reshape(5, -1).sum(-1), rtol=1e-5
    )


def test_binary_cross_entropy_is_stable_and_matches_the_formula():
    z = np.array([[-3.0, 0.5], [2.0, -0.1]], np.float32)
    t = np.array([[0.0, 1.0], [1.0, 0.3]], np.float32)
    s = sigmoid_np(z)
    expected = -(t * np.log(s) + (1 - t) * np.log(1 - s)).sum(-1)
    np.testing.assert_allclose(jnn.binary_cross_entropy(jnp.asarray(z), jnp.asarray(t)), expected, rtol=1e-5)
    big = jnn.binary_cross_entropy(jnp.array([100.0, -100.0]), jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(big, [100.0, 100.0], rtol=1e-6)


def test_label_smoothing_targets_and_loss():
    k, eps = 4, 0.2
    q = np.asarray(jnn.smooth_labels(jnp.array([2]), k, eps))
    np.testing.assert_allclose(q, [[eps / k, eps / k, 1 - (k - 1) * eps / k, eps / k]], rtol=1e-6)
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(3, k)), jnp.float32)
    labels = jnp.array([0, 1, 3])
    np.testing.assert_allclose(
        jnn.label_smoothing_cross_entropy(0.0)(logits, labels), jnn.cross_entropy(logits, labels), rtol=1e-6
    )
    log_p = np.asarray(jnn.log_softmax(logits))
    targets = np.full((3, k), eps / k)
    targets[np.arange(3), np.asarray(labels)] = 1 - (k - 1) * eps / k
    np.testing.assert_allclose(
        jnn.label_smoothing_cross_entropy(eps)(logits, labels), -(targets * log_p).sum(-1), rtol=1e-5
    )
    with pytest.raises(ValueError, match="smoothing"):
        jnn.label_smoothing_cross_entropy(1.5)


def test_penalties_and_kl_against_closed_forms():
    params = {"a": jnp.array([[1.0, -2.0]]), "b": jnp.array([3.0])}
    assert float(jnn.l1_penalty(params)) == 6.0
    assert float(jnn.l2_penalty(params)) == 7.0
    grads = jax.grad(jnn.l2_penalty)(params)
    np.testing.assert_array_equal(grads["a"], params["a"])
    mean = np.array([[0.5, -1.0]], np.float32)
    log_var = np.array([[0.2, -0.7]], np.float32)
    var = np.exp(log_var)
    # KL(N(μ,σ²) ‖ N(0,1)) = log(1/σ) + (σ² + μ²)/2 − 1/2, per dimension
    expected = (-0.5 * log_var + (var + mean**2) / 2 - 0.5).sum(-1)
    np.testing.assert_allclose(
        jnn.kl_divergence_standard_normal(jnp.asarray(mean), jnp.asarray(log_var)), expected, rtol=1e-5
    )
    assert float(jnn.kl_divergence_standard_normal(jnp.zeros((1, 3)), jnp.zeros((1, 3)))[0]) == 0.0


def test_gan_losses_and_saturation():
    r = np.array([1.5, -0.3], np.float32)
    f = np.array([-2.0, 0.4], np.float32)
    expected_d = np.mean(-np.log(sigmoid_np(r))) + np.mean(-np.log(1 - sigmoid_np(f)))
    np.testing.assert_allclose(jnn.discriminator_loss(jnp.asarray(r), jnp.asarray(f)), expected_d, rtol=1e-5)
    np.testing.assert_allclose(jnn.generator_loss(jnp.asarray(f)), np.mean(-np.log(sigmoid_np(f))), rtol=1e-5)
    np.testing.assert_allclose(
        jnn.generator_loss(jnp.asarray(f), non_saturating=False), np.mean(np.log(1 - sigmoid_np(f))), rtol=1e-5
    )
    # when D confidently rejects a fake (logit −10) the minimax loss has almost no gradient; −log D(G(z)) has
    confident = jnp.array([-10.0])
    assert abs(float(jax.grad(lambda a: jnn.generator_loss(a, non_saturating=False))(confident)[0])) < 1e-4
    assert float(jax.grad(jnn.generator_loss)(confident)[0]) < -0.99


def test_perceptron_loss_sgd_step_is_the_perceptron_rule():
    from jdl.models import Perceptron

    model = from_nnx(Perceptron(2, rngs=nnx.Rngs(0)))
    v = model.init(keydata(0), jnp.zeros((1, 2)))
    x = jnp.array([[0.5, -1.0]])
    net = float(model.apply(v, x, train=False, key=None)[0][0, 1])
    t = -1.0 if net > 0 else 1.0  # make the point a mistake
    label = jnp.array([int(t > 0)])

    def loss(p):
        scores, _ = model.apply(Variables(p, v.model_state), x, train=True, key=None)
        return jnp.mean(jnn.perceptron_loss(scores, label))

    np.testing.assert_allclose(loss(v.params), max(0.0, -t * net), rtol=1e-6)
    eta = 0.1
    updates, _ = optax.sgd(eta).update(jax.grad(loss)(v.params), optax.sgd(eta).init(v.params))
    new = optax.apply_updates(v.params, updates)
    w0, w1 = v.params["linear"]["kernel"][...], new["linear"]["kernel"][...]
    np.testing.assert_allclose(w1 - w0, eta * t * np.asarray(x).T, rtol=1e-6)  # w ← w + η t x
    np.testing.assert_allclose(new["linear"]["bias"][...] - v.params["linear"]["bias"][...], [eta * t], rtol=1e-6)


def test_perceptron_loss_counts_a_tie_as_a_mistake():
    """From zero weights every score is 0: Rosenblatt's rule updates (t·net ≤ 0),
    but the gradient of max_j s_j − s_y split the tie and took half a step
    (binary) or none at all (three tied classes, label 0: −1 + ⅓·3 … ≠ the rule)."""
    x = jnp.array([[0.5, -1.0]])
    for t in (1.0, -1.0):
        label = jnp.array([int(t > 0)])

        def loss(w):  # the binary perceptron's scores (0, w·x)
            scores = jnp.concatenate([jnp.zeros((1, 1)), x @ w], axis=1)
            return jnp.mean(jnn.perceptron_loss(scores, label))

        g = jax.grad(loss)(jnp.zeros((2, 1)))
        np.testing.assert_allclose(-g, t * np.asarray(x).T)  # a full step w ← w + η t x
    tied = jax.grad(lambda s: jnn.perceptron_loss(s, jnp.array([0])).sum())(jnp.zeros((1, 3)))
    assert float(tied[0, 0]) == -1.0 and float(tied.sum()) == 0.0
    right = jax.grad(lambda s: jnn.perceptron_loss(s, jnp.array([1])).sum())(jnp.array([[0.0, 1.0]]))
    assert not np.any(np.asarray(right))  # a right prediction takes no step


def test_losses_refuse_outputs_and_targets_of_different_shapes():
    # a one-output model's (N, 1) against (N,) targets used to broadcast to (N, N): loss 7 for every example
    pred, t = jnp.zeros((4, 1)), jnp.arange(4.0)
    with pytest.raises(ValueError, match=r"\(4, 1\).*\(4,\).*squeeze"):
        jnn.mean_squared_error(pred, t)
    with pytest.raises(ValueError, match=r"\(4, 1\).*\(4,\).*squeeze"):
        jax.jit(jnn.binary_cross_entropy)(pred, jnp.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        jnn.mean_squared_error(jnp.zeros(4), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match="shape"):
        jnn.kl_divergence_standard_normal(jnp.zeros((4, 2)), jnp.zeros((4, 1)))
    # the fix the message names gives Optax's per-example values
    np.testing.assert_allclose(jnn.mean_squared_error(pred[..., 0], t), optax.l2_loss(pred[..., 0], t))
    np.testing.assert_allclose(
        jnn.binary_cross_entropy(pred[..., 0], jnp.array([0.0, 1.0, 0.0, 1.0])), np.full(4, np.log(2.0)), rtol=1e-6
    )
    logits, labels = jnp.zeros((4, 3)), jnp.zeros((4, 1), jnp.int32)
    label_losses = (jnn.cross_entropy, jnn.negative_log_likelihood, jnn.perceptron_loss)
    for loss in (*label_losses, jnn.label_smoothing_cross_entropy()):
        with pytest.raises(ValueError, match=r"labels need shape \(4,\)"):
            loss(logits, labels)


_INTEGER_LABEL_LOSSES = {
    "cross_entropy": (jnn.cross_entropy, optax.softmax_cross_entropy_with_integer_labels),
    "negative_log_likelihood": (
        lambda z, y: jnn.negative_log_likelihood(jax.nn.log_softmax(z), y),
        optax.softmax_cross_entropy_with_integer_labels,
    ),
    "perceptron_loss": (jnn.perceptron_loss, lambda z, y: z.max(-1) - z[jnp.arange(len(y)), y]),
    "label_smoothing_cross_entropy": (
        jnn.label_smoothing_cross_entropy(0.1),
        lambda z, y: optax.softmax_cross_entropy(z, optax.smooth_labels(jax.nn.one_hot(y, z.shape[-1]), 0.1)),
    ),
}


@pytest.mark.parametrize("name", sorted(_INTEGER_LABEL_LOSSES))
def test_out_of_range_labels_give_nan_and_in_range_labels_the_reference(name):
    loss, reference = _INTEGER_LABEL_LOSSES[name]
    logits = jnp.asarray(np.random.default_rng(8).normal(size=(5, 3)), jnp.float32)
    good = jnp.array([0, 2, 1, 2, 0])
    np.testing.assert_allclose(jax.jit(loss)(logits, good), reference(logits, good), rtol=1e-6, atol=1e-6)
    # label 3 of 3 classes used to give NaN or a plausible finite value, label −1 the last class's loss
    bad = jnp.array([0, 3, 1, -1, 7])
    got = np.asarray(jax.jit(loss)(logits, bad))
    np.testing.assert_array_equal(np.isnan(got), [False, True, False, True, True])
    np.testing.assert_allclose(got[[0, 2]], np.asarray(reference(logits, good))[[0, 2]], rtol=1e-6, atol=1e-6)
    # the bad examples contribute nothing to the gradient; the good ones what they always did
    grad = jax.grad(lambda z: jnp.sum(jnp.where(jnp.isnan(loss(z, bad)), 0.0, loss(z, bad))))(logits)
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_array_equal(grad[jnp.array([1, 3, 4])], 0.0)


@pytest.mark.parametrize("name", ["cross_entropy", "negative_log_likelihood", "label_smoothing", "perceptron"])
def test_class_losses_refuse_float_labels(name):
    # 1.5 was truncated to class 1 (nll, perceptron) or one-hot to no class at all (label smoothing)
    loss = {"cross_entropy": jnn.cross_entropy, "negative_log_likelihood": jnn.negative_log_likelihood,
            "label_smoothing": jnn.label_smoothing_cross_entropy(0.1), "perceptron": jnn.perceptron_loss}[name]
    z = jnp.array([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])
    with pytest.raises(TypeError, match="labels must be integer class indices, got dtype float32"):
        loss(z, jnp.array([1.0, 1.5]))
    assert loss(z, jnp.array([1, 1])).shape == (2,)


def test_label_smoothing_keeps_the_logits_dtype_under_x64():
    with jax.enable_x64(True):
        for dtype in (jnp.float32, jnp.bfloat16):
            z = jnp.zeros((2, 3), dtype)
            assert jnn.label_smoothing_cross_entropy(0.1)(z, jnp.array([0, 2])).dtype == dtype
            assert jnn.smooth_labels(jnp.array([0, 2]), 3, 0.1, dtype=dtype).dtype == dtype


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_stochastic_pool_never_draws_an_entry_of_probability_zero(dtype):
    # Inverse-CDF sampling drew u = 0 (1 in 128 in bfloat16) and took the
    # first entry whatever its probability: here −1, of probability 0.
    x = jnp.array([-1.0, 1.0, 2.0, 0.0], dtype).reshape(1, 2, 2, 1)
    keys = jax.random.split(jax.random.key(1), 20000)
    draws = jax.vmap(lambda k: jnn.stochastic_pool(x, (2, 2), key=k, probabilities="proportional"))(keys)
    values, counts = np.unique(np.asarray(draws, np.float32).ravel(), return_counts=True)
    assert set(values.tolist()) <= {1.0, 2.0}
    np.testing.assert_allclose(counts / counts.sum(), [1 / 3, 2 / 3], atol=0.02)


def test_separable_conv_takes_numpy_integers_and_gaussian_noise_refuses_nan():
    layer = jnn.SeparableConv(2, 3, kernel_size=np.int64(3), rngs=nnx.Rngs(0))
    assert layer(jnp.ones((1, 5, 5, 2))).shape == (1, 5, 5, 3)
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="stddev must be a finite number >= 0"):
            jnn.GaussianNoise(bad, rngs=nnx.Rngs(0))


def test_l1_penalty_gradient_is_the_sign_and_zero_at_zero():
    w = {"a": jnp.array([-1.5, 0.0, 2.0]), "b": jnp.zeros((2, 2))}
    assert float(jnn.l1_penalty(w)) == 3.5
    grads = jax.grad(jnn.l1_penalty)(w)
    np.testing.assert_array_equal(grads["a"], [-1.0, 0.0, 1.0])  # sign(0) = 0, not jnp.abs's +1
    np.testing.assert_array_equal(grads["b"], 0.0)
    # SGD on the penalty alone, started at its minimum 0, stays there
    p = jnp.zeros(3)
    for _ in range(3):
        p = p - 0.1 * jax.grad(jnn.l1_penalty)(p)
    np.testing.assert_array_equal(p, 0.0)


# --- dropout and BatchNorm -----------------------------------------------------------------


class _DropoutNet(nnx.Module):
    def __init__(self, keep, rngs):
        self.drop = jnn.dropout(keep, rngs=rngs)

    def __call__(self, x):
        return self.drop(x)


def test_dropout_keep_probability_train_eval_and_key():
    assert jnn.INPUT_KEEP_PROB == 0.8 and jnn.HIDDEN_KEEP_PROB == 0.5
    layer = jnn.dropout(0.8, rngs=nnx.Rngs(0))
    assert isinstance(layer, nnx.Dropout) and abs(layer.rate - 0.2) < 1e-12
    with pytest.raises(ValueError, match="keep_prob"):
        jnn.dropout(0.0, rngs=nnx.Rngs(0))
    model = from_nnx_factory(lambda rngs: _DropoutNet(0.5, rngs))
    x = jnp.ones((1, 20000))
    v = model.init(keydata(0), x)
    a, _ = model.apply(v, x, train=True, key=keydata(1))
    b, _ = model.apply(v, x, train=True, key=keydata(1))
    c, _ = model.apply(v, x, train=True, key=keydata(2))
    e, _ = model.apply(v, x, train=False, key=keydata(1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(e, x)
    values = np.unique(np.asarray(a))
    np.testing.assert_allclose(values, [0.0, 2.0])  # inverted dropout: survivors scaled by 1/p
    assert abs(float((a == 0).mean()) - 0.5) < 0.02


def test_batchnorm_train_and_eval_against_formulas():
    model = from_nnx(jnn.BatchNorm(3, momentum=0.9, rngs=nnx.Rngs(0)))
    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, size=(64, 3)), jnp.float32)
    v = model.init(keydata(0), x)
    y, state = model.apply(v, x, train=True, key=None)
    mu, var = np.asarray(x).mean(0), np.asarray(x).var(0)
    np.testing.assert_allclose(y, (np.asarray(x) - mu) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state["mean"][...], 0.1 * mu, rtol=1e-5)  # μ ← 0.9·0 + 0.1·μ_B
    np.testing.assert_allclose(state["var"][...], 0.9 + 0.1 * var, rtol=1e-5)
    y_eval, same = model.apply(Variables(v.params, state), x, train=False, key=None)
    mean_run, var_run = np.asarray(state["mean"][...]), np.asarray(state["var"][...])
    np.testing.assert_allclose(y_eval, (np.asarray(x) - mean_run) / np.sqrt(var_run + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(same["mean"][...], state["mean"][...])  # eval leaves the statistics alone
    y2, _ = model.apply(v, x, train=True, key=None)
    np.testing.assert_array_equal(y, y2)  # deterministic


def test_gaussian_noise_layer():
    model = from_nnx(jnn.GaussianNoise(0.5, rngs=nnx.Rngs(0)))
    x = jnp.zeros((1, 50000))
    v = model.init(keydata(0), x)
    a, _ = model.apply(v, x, train=True, key=keydata(3))
    assert abs(float(jnp.std(a)) - 0.5) < 0.01
    np.testing.assert_array_equal(model.apply(v, x, train=False, key=keydata(3))[0], x)


# --- pooling and convolutions ----------------------------------------------------------------


def _window_reference(x, probabilities):
    """Plain-loop stochastic pooling expectation over 2×2 windows."""
    n, h, w, c = x.shape
    out = np.zeros((n, h // 2, w // 2, c))
    for i in range(n):
        for a in range(h // 2):
            for b in range(w // 2):
                for k in range(c):
                    win = x[i, 2 * a : 2 * a + 2, 2 * b : 2 * b + 2, k].ravel()
                    if probabilities == "softmax":
                        p = np.exp(win - win.max()) / np.exp(win - win.max()).sum()
                    else:
                        p = win / win.sum()
                    out[i, a, b, k] = (p * win).sum()
    return out


def test_stochastic_pool_expectation_and_sampling():
    x = np.abs(np.random.default_rng(0).normal(size=(2, 4, 5, 3))).astype(np.float32) + 0.01
    for probabilities in ("softmax", "proportional"):
        got = jnn.stochastic_pool(jnp.asarray(x), (2, 2), deterministic=True, probabilities=probabilities)
        np.testing.assert_allclose(got, _window_reference(x[:, :4, :4], probabilities), rtol=1e-5)
    # training: every output is one of its window's activations, drawn with probability p
    window = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 2, 2, 1)
    keys = jax.random.split(KEY, 4000)
    draws = jax.jit(
        jax.vmap(lambda k: jnn.stochastic_pool(jnp.asarray(window), (2, 2), key=k, probabilities="proportional"))
    )(keys)
    draws = np.asarray(draws).ravel()
    assert set(np.unique(draws)) <= {1.0, 2.0, 3.0, 4.0}
    freq = np.array([(draws == v).mean() for v in (1, 2, 3, 4)])
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.025)
    one = jnn.stochastic_pool(jnp.asarray(x), (2, 2), key=KEY)
    np.testing.assert_array_equal(one, jnn.stochastic_pool(jnp.asarray(x), (2, 2), key=KEY))
    with pytest.raises(ValueError, match="needs a key"):
        jnn.stochastic_pool(jnp.asarray(x), (2, 2))


@pytest.mark.parametrize("tiny", [1e-3, 1e-19, 1e-25, 0.0])
def test_proportional_stochastic_pool_has_finite_gradients_for_tiny_windows(tiny):
    # Σa²/Σa: its gradient overflowed to NaN once a window's sum fell below ~1e-19 in float32
    x = jnp.zeros((1, 2, 4, 1)).at[0, 1, 1, 0].set(tiny).at[0, :, 2:, 0].set(jnp.array([[1.0, 2.0], [3.0, 0.5]]))
    f = lambda t: jnn.stochastic_pool(t, (2, 2), deterministic=True, probabilities="proportional").sum()  # noqa: E731
    np.testing.assert_allclose(f(x), tiny + (1 + 4 + 9 + 0.25) / 6.5, rtol=1e-6)
    g = np.asarray(jax.jit(jax.grad(f))(x))[0, :, :, 0]
    assert np.isfinite(g).all()
    # the second window, against the closed form ∂/∂a_j (Σa²/Σa) = 2a_j/S − Σa²/S²
    a = np.array([1.0, 2.0, 3.0, 0.5])
    np.testing.assert_allclose(g[:, 2:].ravel(), 2 * a / a.sum() - (a**2).sum() / a.sum() ** 2, rtol=1e-5)
    if tiny > 0:  # one positive activation: the output is that activation
        np.testing.assert_allclose(g[1, 1], 1.0, rtol=1e-5)


_BAD_SETTINGS = {
    "window of 0": (lambda x: jnn.stochastic_pool(x, (0, 2), key=KEY), "positive integers"),
    "negative shift": (lambda x: jnn.random_translate(x, KEY, max_shift=-1), "max_shift must be a non-negative"),
    "unknown corruption": (lambda x: jnn.corrupt(x, KEY, kind="typo", level=2.0), "unknown corruption 'typo'"),
    "masking level 2": (lambda x: jnn.corrupt(x, KEY, kind="masking", level=2.0), r"\[0, 1\]"),
    "negative noise": (lambda x: jnn.corrupt(x, KEY, kind="gaussian", level=-0.1), ">= 0"),
}


@pytest.mark.parametrize("case", sorted(_BAD_SETTINGS))
def test_pooling_and_augmentation_refuse_bad_settings_with_a_clear_message(case):
    call, message = _BAD_SETTINGS[case]
    with pytest.raises(ValueError, match=message):
        call(jnp.ones((2, 4, 4, 1)))


def test_stochastic_pool_layer_train_and_eval_1d():
    model = from_nnx(jnn.StochasticPool((2,), rngs=nnx.Rngs(0)))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 8, 2)), jnp.float32)
    v = model.init(keydata(0), x)
    train, _ = model.apply(v, x, train=True, key=keydata(1))
    evaluation, _ = model.apply(v, x, train=False, key=None)
    assert train.shape == evaluation.shape == (3, 4, 2)
    pairs = np.asarray(x).reshape(3, 4, 2, 2)  # (N, T/2, window, C)
    assert np.all((train == pairs[:, :, 0]) | (train == pairs[:, :, 1]))
    p = np.exp(pairs) / np.exp(pairs).sum(2, keepdims=True)
    np.testing.assert_allclose(evaluation, (p * pairs).sum(2), rtol=1e-5)


def test_global_pooling():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 4, 5)), jnp.float32)
    np.testing.assert_allclose(jnn.global_average_pool(x), np.asarray(x).mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(jnn.global_max_pool(x), np.asarray(x).max((1, 2)))


def test_separable_conv_against_per_channel_loops():
    layer = jnn.SeparableConv(3, 4, 3, padding="VALID", rngs=nnx.Rngs(0))
    x = np.random.default_rng(3).normal(size=(1, 5, 5, 3)).astype(np.float32)
    dw = np.asarray(layer.depthwise.kernel[...])  # (3, 3, 1, 3)
    pw = np.asarray(layer.pointwise.kernel[...])[0, 0]  # (3, 4)
    mid = np.zeros((1, 3, 3, 3))
    for c in range(3):
        for i in range(3):
            for j in range(3):
                mid[0, i, j, c] = (x[0, i : i + 3, j : j + 3, c] * dw[:, :, 0, c]).sum()
    expected = mid @ pw + np.asarray(layer.pointwise.bias[...])
    np.testing.assert_allclose(layer(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-5)
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(layer, nnx.Param)))
    # k²·C_in + C_in·C_out + C_out: a depthwise bias only duplicated the pointwise one
    # (C_in exactly flat directions of the loss, zero Hessian eigenvalues at a minimum).
    assert count == 3 * 3 * 3 + 3 * 4 + 4


def _receptive_field(layer, shape, centre):
    """Input pixels that influence output pixel ``centre`` (channel 0), via the gradient."""
    x = jnp.asarray(np.random.default_rng(4).normal(size=shape), jnp.float32)
    g = jax.jit(jax.grad(lambda x: layer(x)[(0, *centre, 0)]))(x)
    return np.argwhere(np.abs(np.asarray(g)[0]).sum(-1) > 0)


def test_asymmetric_and_dilated_receptive_fields():
    asym = jnn.AsymmetricConv(2, 3, 3, rngs=nnx.Rngs(0))
    field = _receptive_field(asym, (1, 9, 9, 2), (4, 4))
    assert {tuple(p) for p in field} == {(i, j) for i in range(3, 6) for j in range(3, 6)}  # the 3×3 field
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(asym, nnx.Param)))
    assert count == (1 * 3 * 2 * 3 + 3) + (3 * 1 * 3 * 3 + 3)
    with pytest.raises(ValueError, match="images"):
        asym(jnp.ones((1, 8, 2)))
    dilated = nnx.Conv(2, 3, (3, 3), kernel_dilation=2, rngs=nnx.Rngs(0))
    field = _receptive_field(dilated, (1, 9, 9, 2), (4, 4))
    assert {tuple(p) for p in field} == {(i, j) for i in (2, 4, 6) for j in (2, 4, 6)}  # 5×5 span, 9 taps
    pointwise = nnx.Conv(2, 3, (1, 1), rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(5).normal(size=(1, 4, 4, 2)), jnp.float32)
    np.testing.assert_allclose(
        pointwise(x),
        np.asarray(x) @ np.asarray(pointwise.kernel[...])[0, 0] + np.asarray(pointwise.bias[...]),
        rtol=1e-5,
        atol=1e-6,
    )


# --- noise and augmentation -----------------------------------------------------------------


def test_corruptions():
    x = jnp.full((1, 40000), 0.5)
    assert abs(float(jnp.std(jnn.corrupt(x, KEY, kind="gaussian", level=0.3))) - 0.3) < 0.01
    masked = jnn.corrupt(x, KEY, kind="masking", level=0.25)
    assert abs(float((masked == 0).mean()) - 0.25) < 0.01 and set(np.unique(masked)) <= {0.0, 0.5}
    salt = np.asarray(jnn.corrupt(x, KEY, kind="salt_and_pepper", level=0.2))
    assert abs((salt != 0.5).mean() - 0.2) < 0.01 and set(np.unique(salt)) <= {0.0, 0.5, 1.0}
    with pytest.raises(ValueError, match="unknown corruption"):
        jnn.corrupt(x, KEY, kind="blur")


def test_random_translate():
    images = jnp.asarray(np.random.default_rng(6).random((5, 8, 8, 1)), jnp.float32)
    np.testing.assert_array_equal(jnn.random_translate(images, KEY, max_shift=0), images)
    shifted = np.asarray(jnn.random_translate(images, KEY, max_shift=2))
    for i in range(5):  # each output is the image moved by some (dy, dx) with zero fill
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = np.zeros((8, 8, 1), np.float32)
                src = np.asarray(images[i])
                ref[max(dy, 0) : 8 + min(dy, 0), max(dx, 0) : 8 + min(dx, 0)] = src[
                    max(-dy, 0) : 8 - max(dy, 0), max(-dx, 0) : 8 - max(dx, 0)
                ]
                found |= np.array_equal(ref, shifted[i])
        assert found


def test_adversarial_perturbation_attains_the_dual_norm():
    g = jnp.asarray(np.random.default_rng(7).normal(size=(4, 3, 5)), jnp.float32)
    flat = np.asarray(g).reshape(4, -1)
    eps = 0.1
    for p, q_norm in ((np.inf, np.abs(flat).sum(-1)), (2, np.linalg.norm(flat, axis=-1)), (1, np.abs(flat).max(-1))):
        d = np.asarray(jnn.adversarial_perturbation(g, epsilon=eps, norm=p)).reshape(4, -1)
        np.testing.assert_allclose(np.linalg.norm(d, ord=p, axis=-1), eps, rtol=1e-5)
        np.testing.assert_allclose((d * flat).sum(-1), eps * q_norm, rtol=1e-5)  # max ⟨g, δ⟩ = ε‖g‖_q
    with pytest.raises(ValueError, match="norm"):
        jnn.adversarial_perturbation(g, epsilon=eps, norm=3)


# --- recurrent layers -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_rnn_scan_matches_a_python_loop_over_the_cell(kind):
    cell = jnn.recurrent_cell(kind, 2, 5, rngs=nnx.Rngs(0))
    rnn = jnn.RNN(cell)
    x = jnp.asarray(np.random.default_rng(8).normal(size=(3, 7, 2)), jnp.float32)

    @nnx.jit
    def both(rnn, x):
        carry = rnn.cell.initialize_carry((3, 2), nnx.Rngs(0))
        outputs = []
        for t in range(7):  # a plain Python loop, unrolled: the reference for the scan
            carry, y = rnn.cell(carry, x[:, t])
            outputs.append(y)
        return rnn(x), jnp.stack(outputs, axis=1)

    scanned, looped = both(rnn, x)
    np.testing.assert_allclose(scanned, looped, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown recurrent cell"):
        jnn.recurrent_cell("transformer", 2, 5, rngs=nnx.Rngs(0))


# --- from a review of recurrent layers, initialisers, activations, augmentation ------------


@pytest.mark.parametrize("scale, dtype", [(1e-4, jnp.float16), (1e3, jnp.float16), (1e-25, jnp.float32),
                                          (1e25, jnp.float32)])
def test_l2_adversarial_perturbation_has_norm_epsilon_at_any_scale(scale, dtype):
    # The squares underflowed (‖δ‖ = 0.39 for ε = 0.1 in float16) or overflowed (δ = 0).
    g = jnp.asarray(np.random.default_rng(0).normal(size=(2, 10)) * scale, dtype)
    delta = jnn.adversarial_perturbation(g, epsilon=0.1, norm=2)
    assert delta.dtype == dtype
    np.testing.assert_allclose(np.linalg.norm(np.float64(delta), axis=-1), 0.1, rtol=2e-3)


def test_noise_level_and_budget_can_be_swept_under_vmap_and_bad_ones_are_refused():
    x, key = jnp.ones((2, 3)), jax.random.key(0)
    levels = jnp.array([0.0, 0.5])
    noisy = jax.vmap(lambda level: jnn.corrupt(x, key, level=level))(levels)
    np.testing.assert_array_equal(noisy[0], x)
    budgets = jax.vmap(lambda e: jnn.adversarial_perturbation(x, epsilon=e))(jnp.array([0.1, 0.2]))
    np.testing.assert_allclose(budgets[:, 0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite noise level"):
        jnn.corrupt(x, key, level=float("inf"))
    with pytest.raises(ValueError, match="epsilon must be a finite number"):
        jnn.adversarial_perturbation(x, epsilon=float("nan"))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_recurrent_cells_run_in_float64_and_take_a_param_dtype(kind):
    # With float32 parameters Flax's carry was float32 and the float64 scan refused it;
    # no dtype could be chosen.
    with jax.enable_x64(True):
        x = jnp.ones((2, 5, 3), jnp.float64)
        cell = jnn.recurrent_cell(kind, 3, 4, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        assert jnn.RNN(cell)(x).dtype == jnp.float64
        narrow = jnn.RNN(jnn.recurrent_cell(kind, 3, 4, rngs=nnx.Rngs(0)))
        assert narrow(x, initial_carry=jnn.zero_carry(narrow, x)).dtype == jnp.float64


def test_recurrent_cell_refuses_options_of_another_kind():
    # recurrent_cell("gru", radius=1.2) dropped the radius without a word.
    with pytest.raises(ValueError, match="radius .* applies to 'rnn' cells only, not 'gru'"):
        jnn.recurrent_cell("gru", 3, 4, radius=1.2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="forget_bias applies to 'lstm' cells only, not 'rnn'"):
        jnn.recurrent_cell("rnn", 3, 4, forget_bias=3.0, rngs=nnx.Rngs(0))


def test_spectral_radius_in_low_precision_and_bad_initialiser_settings():
    # eigvals has no bfloat16 kernel: the initialiser raised NotImplementedError.
    w = jnn.initializers.spectral_radius(1.2)(jax.random.key(0), (6, 6), jnp.bfloat16)
    assert w.dtype == jnp.bfloat16
    assert abs(np.max(np.abs(np.linalg.eigvals(np.float64(w)))) - 1.2) < 0.02
    for radius in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ValueError, match="radius must be a positive finite number"):
            jnn.initializers.spectral_radius(radius)
    for k in (2.5, True, 0):  # 2.5 put 3 nonzeros per unit
        with pytest.raises(ValueError, match="num_nonzero must be an integer ≥ 1"):
            jnn.initializers.sparse(k)


def test_noise_layers_follow_nnx_view():
    # nnx.view(model, deterministic=True) left GaussianNoise and NoisyReLU noisy.
    class Model(nnx.Module):
        def __init__(self):
            self.noise = jnn.GaussianNoise(0.5, rngs=nnx.Rngs(0))
            self.act = jnn.NoisyReLU(rngs=nnx.Rngs(1))

        def __call__(self, x):
            return self.act(self.noise(x))

    x = jnp.linspace(-1.0, 1.0, 8)
    quiet = nnx.view(Model(), deterministic=True)
    np.testing.assert_array_equal(quiet(x), jax.nn.relu(x))
    with pytest.raises(ValueError, match="stddev must be a finite number"):
        jnn.NoisyReLU(float("nan"), rngs=nnx.Rngs(0))


def test_maxout_refuses_an_axis_out_of_range():
    # axis=2 of a (2, 6) input wrapped to axis 0.
    z = jnp.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(jnn.maxout(z, 2), [[1, 3, 5], [7, 9, 11]])
    for axis in (2, -3):
        with pytest.raises(ValueError, match=f"maxout axis {axis} is out of range"):
            jnn.maxout(z, 2, axis=axis)


def test_factorised_convolutions_keep_a_chosen_dtype_and_refuse_zero_sizes():
    x = jnp.ones((1, 5, 5, 2), jnp.bfloat16)
    for layer in (jnn.SeparableConv(2, 3, 3, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)),
                  jnn.AsymmetricConv(2, 3, 3, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))):
        assert layer(x).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="hidden_features must be an integer ≥ 1, got 0"):
        jnn.AsymmetricConv(2, 3, 3, hidden_features=0, rngs=nnx.Rngs(0))  # was silently out_features
    with pytest.raises(ValueError, match="depth_multiplier must be an integer ≥ 1"):
        jnn.SeparableConv(2, 3, 3, depth_multiplier=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="keep_prob must be in"):
        jnn.dropout(True, rngs=nnx.Rngs(0))


def test_class_losses_with_minus_infinite_logits_and_traced_smoothing():
    z, y = jnp.array([[0.0, -jnp.inf, 1.0]]), jnp.array([0])
    # Smoothing 0 gave NaN (0 · −inf) where cross_entropy is finite.
    np.testing.assert_allclose(jnn.label_smoothing_cross_entropy(0.0)(z, y), jnn.cross_entropy(z, y), rtol=1e-6)
    soft = jax.vmap(lambda e: jnn.smooth_labels(jnp.array([0, 1]), 3, e))(jnp.array([0.0, 0.3]))
    np.testing.assert_allclose(soft[1, 0], [0.8, 0.1, 0.1], rtol=1e-6)


def test_labels_beyond_int32_are_out_of_range_not_wrapped():
    with jax.enable_x64(True):
        scores = jnp.zeros((1, 3))
        wide = jnp.array([2**32 + 1], jnp.int64)  # cast to int32 it is class 1, a plausible loss
        assert bool(jnp.isnan(jnn.negative_log_likelihood(scores, wide))[0])
        assert bool(jnp.isnan(jnn.perceptron_loss(scores, wide))[0])


def test_penalties_of_half_precision_parameters_do_not_overflow():
    assert float(jnn.l2_penalty({"w": jnp.full((1000,), 10.0, jnp.float16)})) == 50_000.0
    assert float(jnn.l1_penalty({"w": jnp.full((10_000,), 10.0, jnp.float16)})) == 100_000.0


def test_pooling_edge_cases():
    x = jnp.array([[[[-jnp.inf], [1.0]], [[2.0], [3.0]]]])
    # the expectation skips an entry of probability 0, also when it is −inf (it was NaN)
    expected = float(jnp.sum(jax.nn.softmax(jnp.array([2.0, 1.0, 3.0])) * jnp.array([2.0, 1.0, 3.0])))
    assert float(jnn.stochastic_pool(x, 2, deterministic=True)[0, 0, 0, 0]) == pytest.approx(expected, rel=1e-6)
    assert bool(jnp.isfinite(jnn.stochastic_pool(x, (2, 2), deterministic=True, probabilities="proportional")))
    from jdl.nn.pooling import pooling_probabilities
    np.testing.assert_allclose(pooling_probabilities(jnp.array([1e38, 5e37, 0.0]), "proportional"),
                               [2 / 3, 1 / 3, 0.0], rtol=1e-6)  # NaN: 1/scale was flushed to 0
    with pytest.raises(ValueError, match="an \\(N, C\\) input is already pooled"):
        jnn.global_average_pool(jnp.ones((2, 3)))

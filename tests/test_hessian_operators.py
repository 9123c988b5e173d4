"""Curvature operators against references: closed forms, ``jax.hessian``, explicit
Jacobians and per-example loops (float64, scoped)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from jdl.hessian import (
    dataset_hvp,
    dataset_operator,
    dense_eigenvalues,
    dense_hessian,
    dense_matrix,
    dense_spectrum,
    empirical_fisher,
    fisher,
    gauss_newton,
    hessian_operator,
    hvp,
    linearize_hessian,
    model_objective,
)
from jdl.hessian.operators import check_dense_fits
from jdl.models import get_model
from jdl.nn import cross_entropy, mean_squared_error
from jdl.training import from_nnx_factory, make_loss


def _f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


@pytest.fixture(scope="module")
def _tiny_x64():
    """A 5→4→3 MLP on 37 random examples, in float64: (objective, params, batch)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(37, 5)))
        y = jnp.asarray(rng.integers(0, 3, size=37), jnp.int32)
        model = get_model("mlp", (5,), 3, hidden=(4,))
        v = model.init(jax.random.key_data(jax.random.key(1)), x[:2])
        params = _f64(v.params)
        obj = model_objective(model, cross_entropy, v.model_state, train=False)
        return obj, params, {"x": x, "y": y}, model


@pytest.fixture
def tiny(_tiny_x64):
    """The module's float64 problem, with float64 on for this test only (enabling it
    around a module fixture's ``yield`` left it on for every later test of the module)."""
    with jax.enable_x64(True):
        yield _tiny_x64


def _flat_hessian(loss, params, *args):
    """The reference: ``jax.hessian`` of the loss of the flattened parameters."""
    flat, unravel = ravel_pytree(params)
    return jax.jit(jax.hessian(lambda z, *a: loss(unravel(z), *a)))(flat, *args)


def test_hvp_closed_form_on_pytree():
    loss = lambda p: 5 * p["x"] ** 2 - p["y"] ** 2 + 3 * p["x"] * p["y"]  # noqa: E731
    hv = hvp(loss, {"x": 0.7, "y": -0.2}, {"x": 1.0, "y": 2.0})
    # H = [[10, 3], [3, -2]]
    assert float(hv["x"]) == pytest.approx(10 + 6)
    assert float(hv["y"]) == pytest.approx(3 - 4)


def test_hvp_and_linearized_hessian_match_jax_hessian(tiny):
    obj, params, batch, _ = tiny
    with jax.enable_x64(True):
        h = _flat_hessian(obj.loss, params, batch)
        flat, unravel = ravel_pytree(params)
        v = jnp.asarray(np.random.default_rng(1).normal(size=flat.shape))
        ref = h @ v
        got = jax.jit(lambda v, p, b: ravel_pytree(hessian_operator(obj.loss)(unravel(v), p, b))[0])(
            v, params, batch)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)

        @jax.jit
        def linearized(v, p, b):
            grad, lin = linearize_hessian(obj.loss, p, b)
            return ravel_pytree(grad)[0], ravel_pytree(lin(unravel(v)))[0]

        grad, hv = linearized(v, params, batch)
        np.testing.assert_allclose(hv, ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grad, ravel_pytree(jax.jit(jax.grad(obj.loss))(params, batch))[0],
                                   rtol=1e-12)
        # The model objective is exactly the train step's (eval-mode) loss.
        ref_loss = make_loss(tiny[3], cross_entropy, train=False)(params, {}, batch)[0]
        assert float(obj.loss(params, batch)) == float(ref_loss)


@pytest.mark.parametrize("batch_size", [1, 8, 37, 100])
def test_dataset_hvp_equals_full_batch(tiny, batch_size):
    obj, params, batch, _ = tiny
    with jax.enable_x64(True):
        v = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape), params)
        full = ravel_pytree(jax.jit(lambda p, v, b: hvp(obj.loss, p, v, b))(params, v, batch))[0]
        acc = jax.jit(lambda p, v, d: dataset_hvp(obj.loss, p, v, d, batch_size=batch_size))(params, v, batch)
        np.testing.assert_allclose(ravel_pytree(acc)[0], full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("batch_size", [1, 8, 37])
def test_dataset_operator_accumulates_gauss_newton_and_fisher(tiny, batch_size):
    """Gauss–Newton and both Fishers are means over examples too: accumulated
    over minibatches (37 examples, sizes that do not divide it) they equal the
    full-batch products."""
    obj, params, batch, _ = tiny
    with jax.enable_x64(True):
        v = jax.tree.map(lambda a: jnp.sin(1 + jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape), params)
        for op in (gauss_newton(obj.predict, obj.output_loss), fisher(obj.predict),
                   empirical_fisher(obj.per_example_loss)):
            full = ravel_pytree(jax.jit(op)(v, params, batch))[0]
            acc = ravel_pytree(jax.jit(dataset_operator(op, batch_size=batch_size))(v, params, batch))[0]
            np.testing.assert_allclose(acc, full, rtol=1e-10, atol=1e-13)


def test_dataset_hvp_rejects_bad_batch_size(tiny):
    obj, params, batch, _ = tiny
    with pytest.raises(ValueError, match="batch_size"):
        dataset_hvp(obj.loss, params, params, batch, batch_size=0)


def test_gauss_newton_is_jt_h_j(tiny):
    obj, params, batch, _ = tiny
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(params)
        jac = jax.jit(jax.jacobian(lambda z: obj.predict(unravel(z), batch).reshape(-1)))(flat)  # (N·C, n)
        logits = jax.jit(obj.predict)(params, batch)
        h_out = jax.jit(jax.hessian(lambda z: obj.output_loss(z.reshape(logits.shape), batch)))(
            logits.reshape(-1))
        g_ref = jac.T @ h_out @ jac
        g = jax.jit(lambda p, b: dense_matrix(gauss_newton(obj.predict, obj.output_loss), p, p, b))(
            params, batch)
        np.testing.assert_allclose(g, g_ref, rtol=1e-9, atol=1e-12)
        assert np.linalg.eigvalsh(np.asarray(g)).min() > -1e-12  # PSD for a convex output loss


def test_gauss_newton_equals_hessian_for_linear_least_squares():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        x = jnp.asarray(rng.normal(size=(20, 3)))
        t = jnp.asarray(rng.normal(size=(20, 2)))
        predict = lambda w, x: x @ w  # noqa: E731
        out_loss = lambda z, x: jnp.mean(mean_squared_error(z, t))  # noqa: E731
        loss = lambda w, x: out_loss(predict(w, x), x)  # noqa: E731
        w = jnp.asarray(rng.normal(size=(3, 2)))
        g = jax.jit(lambda w, x: dense_matrix(gauss_newton(predict, out_loss), w, w, x))(w, x)
        np.testing.assert_allclose(g, _flat_hessian(loss, w, x), rtol=1e-12, atol=1e-12)


def test_fisher_equals_gauss_newton_and_explicit_expectation(tiny):
    obj, params, batch, _ = tiny
    with jax.enable_x64(True):
        f = jax.jit(lambda p, b: dense_matrix(fisher(obj.predict), p, p, b))(params, batch)
        g = jax.jit(lambda p, b: dense_matrix(gauss_newton(obj.predict, obj.output_loss), p, p, b))(
            params, batch)
        np.testing.assert_allclose(f, g, rtol=1e-9, atol=1e-12)
        # (1/N) Σ_i Σ_c p(c|x_i) ∇log p(c|x_i) ∇log p(c|x_i)ᵀ, summed by explicit loops.
        flat, unravel = ravel_pytree(params)
        log_probs = lambda z: jax.nn.log_softmax(obj.predict(unravel(z), batch), axis=-1)  # noqa: E731
        grads = np.asarray(jax.jit(jax.jacobian(log_probs))(flat))        # (N, C, n)
        probs = np.asarray(jax.nn.softmax(obj.predict(params, batch), axis=-1))
        n = batch["x"].shape[0]
        ref = np.zeros((flat.size, flat.size))
        for i in range(n):
            for c in range(3):
                ref += probs[i, c] * np.outer(grads[i, c], grads[i, c]) / n
        np.testing.assert_allclose(f, ref, rtol=1e-8, atol=1e-12)


def test_gaussian_fisher_equals_gauss_newton_of_squared_error():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x = jnp.asarray(rng.normal(size=(15, 2)))
        t = jnp.asarray(rng.normal(size=(15, 2)))
        predict = lambda w, x: jnp.tanh(x @ w["a"]) @ w["b"]  # noqa: E731
        out_loss = lambda z, x: jnp.mean(mean_squared_error(z, t))  # noqa: E731
        w = {"a": jnp.asarray(rng.normal(size=(2, 3))), "b": jnp.asarray(rng.normal(size=(3, 2)))}
        f = jax.jit(lambda w, x: dense_matrix(fisher(predict, likelihood="gaussian"), w, w, x))(w, x)
        g = jax.jit(lambda w, x: dense_matrix(gauss_newton(predict, out_loss), w, w, x))(w, x)
        np.testing.assert_allclose(f, g, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="likelihood"):
        fisher(predict, likelihood="poisson")


def test_empirical_fisher_matches_per_example_loop(tiny):
    obj, params, batch, _ = tiny
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(params)
        v = jnp.asarray(np.random.default_rng(4).normal(size=flat.shape))
        got = ravel_pytree(jax.jit(lambda v, p, b: empirical_fisher(obj.per_example_loss)(unravel(v), p, b))(
            v, params, batch))[0]
        per_example = jax.jit(jax.grad(lambda z, i: obj.per_example_loss(unravel(z), batch)[i]))
        n = batch["x"].shape[0]
        ref = sum(np.asarray(per_example(flat, i)) * float(np.asarray(per_example(flat, i)) @ np.asarray(v))
                  for i in range(n)) / n
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-13)


def test_dense_hessian_matches_jax_hessian(tiny):
    obj, params, batch, _ = tiny
    with jax.enable_x64(True):
        h = jax.jit(lambda p, b: dense_hessian(obj.loss, p, b, chunk_size=7))(params, batch)
        np.testing.assert_allclose(h, _flat_hessian(obj.loss, params, batch), rtol=1e-10, atol=1e-13)
        np.testing.assert_array_equal(h, h.T)


def test_dense_matrices_of_edge_cases():
    # No parameters: the 0 × 0 matrix, and no eigenvalues.
    h = dense_hessian(lambda p: jnp.array(0.0), {})
    assert h.shape == (0, 0) and dense_eigenvalues(h).shape == (0,)
    assert dense_matrix(lambda v: v, {}).shape == (0, 0)
    # An integer or bool matrix is solved in floating point, eagerly as under jit.
    a = jnp.array([[1, 1], [1, 0]])
    golden = (1 + np.sqrt(5)) / 2
    for got in (dense_eigenvalues(a), jax.jit(dense_eigenvalues)(a)):
        assert jnp.issubdtype(got.dtype, jnp.floating)
        np.testing.assert_allclose(got, [1 - golden, golden], rtol=1e-6)
    np.testing.assert_allclose(dense_eigenvalues(jnp.ones((2, 2), bool)), [0.0, 2.0], atol=1e-6)
    # Called eagerly it runs as one compiled program; arguments that are not
    # arrays stay Python values (here a loop count).
    def loss(p, data, terms):
        return sum(jnp.sum(data * p ** 2) / (i + 1) for i in range(terms))

    h = dense_hessian(loss, jnp.ones(3), jnp.arange(1.0, 4.0), 2)
    np.testing.assert_allclose(h, np.diag(2 * 1.5 * np.arange(1.0, 4.0)), rtol=1e-6)


def test_empirical_fisher_refuses_a_mean_loss(tiny):
    obj, params, batch, _ = tiny
    with pytest.raises(ValueError, match=r"one loss per example, shape \(N,\), got shape \(\); pass "
                                         r"model_objective\(...\).per_example_loss"):
        empirical_fisher(obj.loss)(params, params, batch)


def test_linearized_hessian_built_inside_jit_compiles_once(tiny):
    """The documented way: linearise inside the jitted function; new points reuse the program."""
    obj, params, batch, _ = tiny
    with jax.enable_x64(True):
        traces = []

        @jax.jit
        def product(p, b, v):
            traces.append(1)
            _, h = linearize_hessian(obj.loss, p, b)
            return h(v)

        for scale in (1.0, 1.1, 0.9):
            moved = jax.tree.map(lambda a, s=scale: a * s, params)
            product(moved, batch, params)
        assert len(traces) == 1


def test_dense_hessian_refuses_before_allocating():
    big = {"w": jnp.zeros((300_000,), jnp.float32)}   # a 360 GB Hessian
    calls = []

    def loss(p):
        calls.append(1)
        return jnp.sum(p["w"] ** 2)

    with pytest.raises(MemoryError, match=r"300,000 parameters needs .*lanczos"):
        dense_hessian(loss, big)
    assert not calls  # refused before tracing the loss
    small = {"w": jnp.zeros((100,), jnp.float32)}
    with pytest.raises(MemoryError, match="max_bytes"):
        dense_hessian(loss, small, max_bytes=1000)
    # The estimate covers what the compiled computation really holds.
    w = jnp.ones(600)
    tanh_loss = lambda p: jnp.sum(jnp.tanh(p) ** 2) + jnp.sum(p[:-1] * p[1:])  # noqa: E731
    memory = jax.jit(lambda p: dense_hessian(tanh_loss, p)).lower(w).compile().memory_analysis()
    if memory is not None:
        estimate = check_dense_fits(600, w.dtype, chunk_size=32, max_bytes=1 << 60)
        assert estimate >= memory.temp_size_in_bytes + memory.output_size_in_bytes


def test_dense_matrices_check_the_compiled_programs_memory():
    # 50 parameters, 20 000 examples: the n² estimate is 33 KB, but each chunk
    # of 32 products holds the whole batch's activations — megabytes.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(20_000, 10)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(10, 5)), jnp.float32) / 3
    loss = lambda w, x: jnp.mean(jnp.tanh(x @ w) ** 2)  # noqa: E731
    estimate = check_dense_fits(50, jnp.float32, chunk_size=32, max_bytes=1 << 60)
    memory = jax.jit(lambda w, x: dense_hessian(loss, w, x)).lower(w, x).compile().memory_analysis()
    if memory is None:
        pytest.skip("this backend reports no memory figures for compiled programs")
    need = memory.temp_size_in_bytes + memory.output_size_in_bytes
    assert need > 20 * estimate
    budget = 10 * estimate  # passes the estimate, not the compiled program
    with pytest.raises(MemoryError, match=r"50 parameters needs .*compiled program.*max_bytes"):
        dense_hessian(loss, w, x, max_bytes=budget)
    with pytest.raises(MemoryError, match="compiled program"):
        dense_matrix(lambda v, w, x: hvp(loss, w, v, x), w, w, x, max_bytes=budget)
    with pytest.raises(MemoryError, match="compiled program"):
        dense_spectrum(loss, w, x, max_bytes=budget)
    # Within budget it runs, and the result is the jitted one's.
    h = dense_hessian(loss, w, x, max_bytes=2 * need)
    np.testing.assert_allclose(h, jax.jit(lambda w, x: dense_hessian(loss, w, x))(w, x), rtol=1e-6, atol=1e-7)
    m = dense_matrix(lambda v, w, x: hvp(loss, w, v, x), w, w, x, symmetrize=True)
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(m, h, rtol=1e-4, atol=1e-6)


def test_model_objective_mode_is_explicit_and_matters():
    with pytest.raises(TypeError):
        model_objective(None, cross_entropy, {})  # train= is required

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(3, 4, rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)
            self.out = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.relu(self.bn(self.lin(x))))

    model = from_nnx_factory(Net)
    x = jnp.asarray(np.random.default_rng(5).normal(2.0, 3.0, size=(16, 3)), jnp.float32)
    batch = {"x": x, "y": jnp.asarray(np.arange(16) % 2, jnp.int32)}
    v = model.init(jax.random.key_data(jax.random.key(0)), x)
    def hessian(train):
        loss = model_objective(model, cross_entropy, v.model_state, train=train).loss
        return jax.jit(lambda p, b: dense_hessian(loss, p, b))(v.params, batch)

    h_eval, h_train = hessian(False), hessian(True)
    assert float(jnp.max(jnp.abs(h_eval - h_train))) > 1e-3  # batch statistics change the Hessian
    with pytest.raises(TypeError, match="train must be True or False"):
        model_objective(model, cross_entropy, v.model_state, train="eval")


def test_model_objective_dropout_key_takes_a_seed_or_a_key():
    model = get_model("mlp", (5,), 3, hidden=(8,), dropout_rate=0.5)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(12, 5)), jnp.float32)
    batch = {"x": x, "y": jnp.asarray(np.arange(12) % 3, jnp.int32)}
    v = model.init(jax.random.key_data(jax.random.key(0)), x[:2])

    def loss_with(key):
        return float(model_objective(model, cross_entropy, v.model_state, train=True, key=key).loss(v.params, batch))

    assert loss_with(3) == loss_with(jax.random.key(3)) == loss_with(jax.random.PRNGKey(3))
    assert loss_with(3) != loss_with(4)
    with pytest.raises(TypeError, match="integer seed or a PRNG key"):
        model_objective(model, cross_entropy, v.model_state, train=True, key=0.5)


def test_reverse_linearization_equals_forward(tiny):
    obj, params, batch, _ = tiny
    with jax.enable_x64(True):
        vs = jax.tree.map(lambda a: jnp.stack([jnp.cos(jnp.arange(a.size, dtype=a.dtype) * (i + 1)).reshape(a.shape)
                                               for i in range(3)]), params)

        @jax.jit
        def both(p, b, vs):
            g_f, fwd = linearize_hessian(obj.loss, p, b)
            g_r, rev = linearize_hessian(obj.loss, p, b, mode="reverse")
            return g_f, g_r, jax.vmap(fwd)(vs), jax.vmap(rev)(vs)

        g_f, g_r, hf, hr = both(params, batch, vs)
        np.testing.assert_allclose(ravel_pytree(g_r)[0], ravel_pytree(g_f)[0], rtol=1e-13)
        for a, b in zip(jax.tree.leaves(hf), jax.tree.leaves(hr)):
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="'forward' or 'reverse'"):
        linearize_hessian(obj.loss, params, batch, mode="sideways")


def test_bad_inputs_get_one_clear_error_before_tracing():
    calls = []

    def loss(p, *args):
        calls.append(1)
        return jnp.sum(p["w"] ** 2) * p["n"]

    mixed = {"w": jnp.ones(2), "n": 3}  # an integer leaf cannot be differentiated
    with pytest.raises(TypeError, match=r"\['n'\]: int"):
        hvp(loss, mixed, mixed)
    with pytest.raises(TypeError, match=r"\['n'\]: int"):
        dense_hessian(loss, mixed)
    assert not calls
    square = lambda p, b: jnp.mean((b["x"] @ p) ** 2)  # noqa: E731
    with pytest.raises(ValueError, match=r"\['s'\] is a scalar"):
        dataset_hvp(square, jnp.ones(2), jnp.ones(2), {"x": jnp.ones((5, 2)), "s": 1.0}, batch_size=2)
    with pytest.raises(ValueError, match="0 examples"):
        dataset_hvp(square, jnp.ones(2), jnp.ones(2), {"x": jnp.ones((0, 2))}, batch_size=2)


def test_model_objective_train_mode_without_a_key_is_the_key_0_for_linen_too():
    # key=None reached a Linen model's apply as None, which builds no dropout stream:
    # InvalidRngError, where the docstring promises the key 0.
    import flax.linen as nn

    from jdl.hessian import model_objective
    from jdl.training import from_linen

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            h = nn.Dropout(0.5, deterministic=not train)(nn.Dense(6)(x))
            return nn.Dense(3)(h)

    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
    data = {"x": x, "y": jnp.arange(8) % 3}
    model = from_linen(Net())
    params, model_state = model.init(jax.random.key(0), x)
    default = model_objective(model, cross_entropy, model_state, train=True).loss(params, data)
    zero = model_objective(model, cross_entropy, model_state, train=True, key=0).loss(params, data)
    other = model_objective(model, cross_entropy, model_state, train=True, key=1).loss(params, data)
    assert float(default) == float(zero) != float(other)


def test_dense_builders_refuse_a_bad_chunk_size():
    f = lambda p: jnp.sum(p**2)  # noqa: E731
    for bad in (0, -3, 2.7):  # ran silently as 1, 1 and 2
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            dense_hessian(f, jnp.ones(4), chunk_size=bad)
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            dense_matrix(lambda v: v, jnp.ones(4), chunk_size=bad)


def test_categorical_fisher_refuses_one_logit_and_matches_bernoulli_when_stacked():
    # A sigmoid model's (N, 1) logits passed as a categorical: softmax over one
    # logit is constant, and the Fisher came out as the zero matrix silently.
    from jdl.nn import binary_cross_entropy

    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        x = jnp.asarray(rng.normal(size=(9, 3)))
        y = jnp.asarray(rng.integers(0, 2, size=(9, 1)), jnp.float64)
        w = jnp.asarray(rng.normal(size=(3, 1)))
        one_logit = lambda w, x: x @ w  # noqa: E731
        with pytest.raises(ValueError, match="at least two logits per example"):
            fisher(one_logit)(w, w, x)
        # The way out the message names: the Bernoulli Fisher Σ p(1−p) x xᵀ / N.
        stacked = lambda w, x: jnp.concatenate([-x @ w / 2, x @ w / 2], axis=-1)  # noqa: E731
        f = dense_matrix(fisher(stacked), w, w, x)
        p = np.asarray(jax.nn.sigmoid(x @ w))[:, 0]
        ref = (np.asarray(x).T * (p * (1 - p))) @ np.asarray(x) / 9
        np.testing.assert_allclose(f, ref, rtol=1e-10, atol=1e-14)
        g = dense_matrix(gauss_newton(one_logit, lambda z, x: jnp.mean(binary_cross_entropy(z, y))), w, w, x)
        np.testing.assert_allclose(f, g, rtol=1e-10, atol=1e-14)


def test_dense_matrix_refuses_a_product_not_shaped_like_its_input():
    like = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
    # Too few numbers: a non-square 3 × 7 "matrix" came back silently.
    with pytest.raises(ValueError, match="vectors of 7 numbers .* returned 3"):
        dense_matrix(lambda v: {"a": v["a"]}, like)
    # As many numbers under other keys: flattened in another order, a permuted matrix.
    with pytest.raises(ValueError, match="pytree shaped like its input"):
        dense_matrix(lambda v: {"b": v["b"], "x": v["a"]}, like)

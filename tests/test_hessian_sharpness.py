"""The sharpness callback inside ``fit``: readings every N steps, the 2/η line,
warm-started Lanczos within its product budget, checked against a dense ``eigh``."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jdl.data.datasets import load_digits_arrays
from jdl.hessian import SharpnessTracker, dense_hessian, model_objective, plot_sharpness
from jdl.hessian.sharpness import learning_rate_of, learning_rates_of
from jdl.models import get_model
from jdl.nn import cross_entropy
from jdl.training import fit
from jdl.training.callbacks import Callback

# Most fits here use a bare optax.sgd, whose rate is not in its state (no line; one warning each).
pytestmark = pytest.mark.filterwarnings("ignore:SharpnessTracker. the optimizer state holds no learning rate")


@pytest.fixture(scope="module")
def data():
    images, labels = load_digits_arrays()
    return {"x": (images.reshape(-1, 64)[:320] / 16.0).astype(np.float32), "y": labels[:320]}


def test_sharpness_tracked_every_n_steps_with_stability_line(data, tmp_path):
    model = get_model("mlp", (64,), 10, hidden=(8,))
    # η is read from the optimizer state (optax.inject_hyperparams) for the 2/η line.
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.5)
    assert learning_rate_of(opt.init({"w": jnp.zeros(3)})) == 0.5
    tracker = SharpnessTracker(5, train=False, num_matvecs=20, num_examples=256, track_min=True,
                               gradient_top_k=2)
    result = fit(model, cross_entropy, opt, data, epochs=2, batch_size=64, steps_per_call=5,
                 callbacks=[tracker], seed=1)
    readings = [r for rec in result.history for r in rec["sharpness_readings"]]
    assert [r["step"] for r in readings] == [0, 5, 10]
    for r in readings:
        assert r["stability_threshold"] == pytest.approx(4.0)
        assert r["num_matvecs"] <= 40                     # ≤ 20 per eigenvalue (λmax and λmin)
        assert r["lambda_min"] <= r["lambda_max"]
        assert 0.0 <= r["top_gradient_fraction"] <= 1.0 + 1e-6
    last = result.history[-1]
    assert last["sharpness"] == readings[-1]["lambda_max"] and last["stability_threshold"] == 4.0
    # The last reading against the dense Hessian of the same loss at the final parameters.
    loss = model_objective(model, cross_entropy, result.state.model_state, train=False).loss
    batch = {k: jnp.asarray(v[:256]) for k, v in data.items()}
    eig = np.linalg.eigvalsh(np.asarray(jax.jit(lambda p, b: dense_hessian(loss, p, b))(result.state.params, batch)))
    assert readings[-1]["lambda_max"] == pytest.approx(eig[-1], rel=1e-3)
    assert readings[-1]["lambda_min"] == pytest.approx(eig[0], rel=0.05, abs=1e-3 * eig[-1])
    # The gradient's share in the top-2 eigenspace, against the dense eigenvectors.
    _, vecs = np.linalg.eigh(np.asarray(jax.jit(lambda p, b: dense_hessian(loss, p, b))(result.state.params, batch),
                                        np.float64))
    g = np.asarray(jax.flatten_util.ravel_pytree(jax.grad(loss)(result.state.params, batch))[0], np.float64)
    share = np.sum((vecs[:, -2:].T @ g) ** 2) / (g @ g)
    assert readings[-1]["top_gradient_fraction"] == pytest.approx(share, rel=0.02, abs=1e-4)
    assert all(r["train"] is False for r in readings)
    plot_sharpness(result.history, str(tmp_path / "sharpness.png"))
    assert (tmp_path / "sharpness.png").exists()


def test_readings_warm_start_from_the_previous_top_eigenvector(data):
    # With a small η the point moves little: each later reading starts from the
    # previous top eigenvector and needs about half the products of a cold start
    # (measured 9-10 cold, 4-5 warm; a cold start every time would not pass).
    model = get_model("mlp", (64,), 10, hidden=(8,))
    tracker = SharpnessTracker(5, train=False, num_matvecs=30, num_examples=256, tol=1e-4)
    result = fit(model, cross_entropy, optax.sgd(1e-3), data, epochs=2, batch_size=64, steps_per_call=5,
                 callbacks=[tracker], seed=1)
    readings = [r for rec in result.history for r in rec["sharpness_readings"]]
    cold, warm = readings[0]["num_matvecs"], [r["num_matvecs"] for r in readings[1:]]
    assert cold >= 8 and max(warm) <= 6, (cold, warm)
    np.testing.assert_allclose([r["lambda_max"] for r in readings[1:]], readings[0]["lambda_max"], rtol=1e-2)


def test_sharpness_tracker_rejects_bad_arguments():
    with pytest.raises(TypeError, match="train"):
        SharpnessTracker(5)  # the model mode is an explicit choice
    with pytest.raises(ValueError, match="every"):
        SharpnessTracker(0, train=False)
    with pytest.raises(TypeError, match="train"):
        SharpnessTracker(5, train="eval")
    with pytest.raises(ValueError, match="gradient_top_k"):
        SharpnessTracker(5, train=False, num_matvecs=10, gradient_top_k=11)


def _readings(history, name="sharpness"):
    return [r for rec in history for r in rec.get(f"{name}_readings", [])]


def test_readings_are_exactly_every_n_steps_whatever_the_fused_calls(data):
    # 320 examples in batches of 48: 6 full steps and a partial one per epoch.
    # fit ends its fused calls at the tracker's multiples, and the partial
    # batch's step calls the hooks too (with every=7 it is the reading step).
    model = get_model("mlp", (64,), 10, hidden=(8,))
    for every, steps_per_call, expected in ((3, None, [0, 3, 6, 9, 12]), (7, None, [0, 7, 14]),
                                            (5, 4, [0, 5, 10])):
        tracker = SharpnessTracker(every, train=False, num_matvecs=10, num_examples=128)
        result = fit(model, cross_entropy, optax.sgd(0.1), data, epochs=2, batch_size=48,
                     steps_per_call=steps_per_call, callbacks=[tracker], seed=1)
        assert result.history[-1]["step"] == 14
        assert [r["step"] for r in _readings(result.history)] == expected, (every, steps_per_call)


def test_fused_calls_keep_their_default_length_without_callbacks_that_ask(data):
    # The split happens only where a callback asks: plain fit runs one fused
    # call per epoch, as before (5 steps of 64, no partial batch).
    class Count(Callback):
        calls = []

        def on_steps_end(self, ctx, state, metrics):
            self.calls.append(int(np.shape(metrics["loss"])[0]))

    model = get_model("mlp", (64,), 10, hidden=(8,))
    fit(model, cross_entropy, optax.sgd(0.1), data, epochs=2, batch_size=64, callbacks=[Count()], seed=1)
    assert Count.calls == [5, 5]


def test_a_tracker_reused_in_a_second_fit_reads_that_fits_data_and_model(data):
    model = get_model("mlp", (64,), 10, hidden=(8,))
    tracker = SharpnessTracker(5, train=False, num_matvecs=20, num_examples=160)
    first = fit(model, cross_entropy, optax.sgd(0.1), {k: v[:160] for k, v in data.items()}, epochs=1,
                batch_size=32, callbacks=[tracker], seed=1)
    other = {k: v[160:] for k, v in data.items()}
    second = fit(model, cross_entropy, optax.sgd(0.1), other, epochs=1, batch_size=32, callbacks=[tracker],
                 state=first.state)
    loss = model_objective(model, cross_entropy, second.state.model_state, train=False).loss
    batch = {k: jnp.asarray(v) for k, v in other.items()}
    h = jax.jit(lambda p, b: dense_hessian(loss, p, b))(second.state.params, batch)
    assert [r["step"] for r in _readings(second.history)] == [10]
    assert _readings(second.history)[-1]["lambda_max"] == pytest.approx(np.linalg.eigvalsh(np.asarray(h))[-1], rel=1e-3)
    # Another model (other shapes): the reading is rebuilt and starts cold.
    wider = get_model("mlp", (64,), 10, hidden=(12,))
    third = fit(wider, cross_entropy, optax.sgd(0.1), data, epochs=1, batch_size=64, callbacks=[tracker], seed=2)
    assert [r["step"] for r in _readings(third.history)] == [0, 5]


def test_two_trackers_need_their_own_names(data):
    model = get_model("mlp", (64,), 10, hidden=(8,))
    a, b = SharpnessTracker(5, train=False, num_matvecs=10), SharpnessTracker(5, train=True, num_matvecs=10)
    with pytest.raises(ValueError, match="name="):
        fit(model, cross_entropy, optax.sgd(0.1), data, epochs=1, batch_size=64, callbacks=[a, b])
    b = SharpnessTracker(5, train=True, num_matvecs=10, name="sharpness_train", learning_rate=0.1)
    result = fit(model, cross_entropy, optax.sgd(0.1), data, epochs=1, batch_size=64, callbacks=[a, b])
    assert [r["train"] for r in _readings(result.history)] == [False, False]
    assert [r["train"] for r in _readings(result.history, "sharpness_train")] == [True, True]
    assert result.history[-1]["sharpness_train_stability_threshold"] == pytest.approx(20.0)
    plot_sharpness(result.history, name="sharpness_train")
    with pytest.raises(ValueError, match="sharpness_train_readings"):
        plot_sharpness(result.history, name="sharp")


def test_readings_say_whether_each_end_converged(data):
    model = get_model("mlp", (64,), 10, hidden=(8,))
    tracker = SharpnessTracker(5, train=False, num_matvecs=20, track_min=True, tol=1e-4)
    result = fit(model, cross_entropy, optax.sgd(0.1), data, epochs=1, batch_size=64, callbacks=[tracker], seed=1)
    for r in _readings(result.history):
        for end, residual in (("converged", "residual"), ("lambda_min_converged", "lambda_min_residual")):
            assert isinstance(r[end], bool)
            assert r[end] == (r[residual] <= 1e-4 * abs(r["lambda_max"]) * (1 + 1e-6))


def test_learning_rate_from_the_state_and_from_a_schedule(data):
    # multi_transform groups with one rate give it; with two rates, no line and a warning.
    same = optax.multi_transform({"a": optax.inject_hyperparams(optax.sgd)(learning_rate=0.5),
                                  "b": optax.inject_hyperparams(optax.sgd)(learning_rate=0.5)},
                                 {"w": "a", "v": "b"})
    params = {"w": jnp.zeros(2), "v": jnp.zeros(2)}
    assert learning_rate_of(same.init(params)) == 0.5
    two = optax.multi_transform({"a": optax.inject_hyperparams(optax.sgd)(learning_rate=0.5),
                                 "b": optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)},
                                {"w": "a", "v": "b"})
    assert learning_rate_of(two.init(params)) is None
    assert learning_rates_of(two.init(params)) == pytest.approx([0.5, 0.1])

    # Two parameter groups on the MLP: its kernels and its biases.
    model = get_model("mlp", (64,), 10, hidden=(8,))
    labels = lambda p: jax.tree.map(lambda a: "a" if a.ndim == 2 else "b", p)  # noqa: E731
    grouped = optax.multi_transform({"a": optax.inject_hyperparams(optax.sgd)(learning_rate=0.5),
                                     "b": optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)}, labels)
    with pytest.warns(UserWarning, match="several learning rates"):
        result = fit(model, cross_entropy, grouped, data, epochs=1, batch_size=64, seed=1,
                     callbacks=[SharpnessTracker(5, train=False, num_matvecs=10)])
    assert all("stability_threshold" not in r for r in _readings(result.history))
    with pytest.warns(UserWarning, match="holds no learning rate .*inject_hyperparams"):
        result = fit(model, cross_entropy, optax.sgd(0.5), data, epochs=1, batch_size=64, seed=1,
                     callbacks=[SharpnessTracker(5, train=False, num_matvecs=10)])
    assert all("stability_threshold" not in r for r in _readings(result.history))
    # A schedule: the reading after t steps records 2/η(t), the rate of the next step.
    schedule = optax.piecewise_constant_schedule(0.4, {5: 0.5})
    result = fit(model, cross_entropy, optax.sgd(schedule), data, epochs=2, batch_size=64, seed=1,
                 callbacks=[SharpnessTracker(5, train=False, num_matvecs=10, learning_rate=schedule)])
    assert [round(r["stability_threshold"], 4) for r in _readings(result.history)] == [5.0, 10.0, 10.0]


def test_sharpness_tracker_checks_its_counts():
    assert SharpnessTracker(np.int64(5), train=False).every == 5
    for bad in (dict(num_examples=0), dict(num_examples=-100), dict(gradient_top_k=True),
                dict(gradient_top_k=1.5), dict(tol=-1.0), dict(name="")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SharpnessTracker(5, train=False, **bad)


def test_warm_start_follows_the_top_eigenvalue_through_a_crossing():
    """The top two eigenvalues cross while the eigenvectors turn slowly. Started
    at the previous top eigenvector alone, Lanczos stops after 2 products at the
    old one — now the second — with a small residual (17 % low at the end);
    the tracker's start (that vector plus a fresh random part) reads the top."""
    import scipy.linalg

    from jdl.hessian import lanczos
    from jdl.hessian.sharpness import _warm_start

    rng = np.random.default_rng(0)
    n = 200
    q0, _ = np.linalg.qr(rng.standard_normal((n, n)))
    k = rng.standard_normal((n, n))
    k = 0.002 * (k - k.T) / np.sqrt(n)
    bulk = rng.uniform(0, 2, n - 2)
    solver = jax.jit(lambda v, a: lanczos(20, k=1, which="LA", tol=1e-4)(lambda x, a: a @ x, v, a))
    plain = tracked = jnp.asarray(rng.standard_normal(n), jnp.float32)
    plain_errors, tracked_errors = [], []
    for i, s in enumerate(np.linspace(0, 2, 11)):
        q = scipy.linalg.expm(s * k) @ q0
        a = jnp.asarray((q * np.r_[10 - s, 9 + s, bulk]) @ q.T, jnp.float32)
        top = max(10 - s, 9 + s)
        r = solver(plain, a)
        plain, plain_errors = r.eigenvectors[0], plain_errors + [abs(float(r.eigenvalues[0]) - top) / top]
        r = solver(_warm_start(tracked, jax.random.key(i)), a)
        tracked, tracked_errors = r.eigenvectors[0], tracked_errors + [abs(float(r.eigenvalues[0]) - top) / top]
        assert bool(r.converged[0]) and int(r.num_matvecs) <= 12
    assert max(plain_errors) > 0.1  # the failure the random part prevents
    assert max(tracked_errors) < 1e-5, tracked_errors


def test_stability_line_with_momentum(data):
    from jdl.hessian import stability_threshold

    assert stability_threshold(0.1) == pytest.approx(20.0)
    assert stability_threshold(0.1, 0.9) == pytest.approx(38.0)
    assert stability_threshold(0.1, 0.9, nesterov=True) == pytest.approx(38.0 / 2.8)
    # Gradient descent with momentum on ½λx² diverges just above the line and not below it.
    for beta, nesterov in ((0.0, False), (0.9, False), (0.5, True), (0.9, True)):
        line = stability_threshold(0.1, beta, nesterov)
        opt = optax.sgd(0.1, momentum=beta or None, nesterov=nesterov)
        for lam, stable in ((0.98 * line, True), (1.02 * line, False)):
            x, state = jnp.ones(()), opt.init(jnp.ones(()))
            for _ in range(2000):
                updates, state = opt.update(lam * x, state)
                x = x + updates
            assert (abs(float(x)) < 1) == stable, (beta, nesterov, lam, line)
    for bad in (dict(momentum=1.0), dict(momentum=-0.1), dict(learning_rate=0.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SharpnessTracker(5, train=False, **bad)
    # Read from an injected momentum, or given.
    model = get_model("mlp", (64,), 10, hidden=(8,))
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    for tracker, line in ((SharpnessTracker(5, train=False, num_matvecs=8), 38.0),
                          (SharpnessTracker(5, train=False, num_matvecs=8, learning_rate=0.1, momentum=0.9,
                                            nesterov=True), 38.0 / 2.8)):
        result = fit(model, cross_entropy, opt, data, epochs=1, batch_size=64, seed=1, callbacks=[tracker])
        readings = _readings(result.history)
        assert [r["stability_threshold"] for r in readings] == pytest.approx([line] * len(readings))
        assert all(r["momentum"] == pytest.approx(0.9) for r in readings)


def test_readings_compile_once_per_fit_on_a_mesh(data):
    """The first reading's random start is placed as the params are, so it and
    the later ones (given the last eigenvectors, replicated) share one program."""
    from jdl.training import data_parallel_mesh

    model = get_model("mlp", (64,), 10, hidden=(8,))
    tracker = SharpnessTracker(2, train=False, num_matvecs=8, num_examples=256, track_min=True)
    batch = {k: v[:256] for k, v in data.items()}
    result = fit(model, cross_entropy, optax.sgd(0.1), batch, epochs=1, batch_size=64, seed=0,
                 callbacks=[tracker], mesh=data_parallel_mesh())
    assert len(_readings(result.history)) == 3
    assert tracker._reading._cache_size() == 1


def test_momenta_that_differ_between_groups_give_no_line_and_a_warning(data):
    # They fell back to β = 0 without a word: 2/η = 20 recorded where the groups' lines are 38 and 30.
    model = get_model("mlp", (64,), 10, hidden=(8,))
    labels = lambda p: jax.tree.map(lambda a: "a" if a.ndim == 2 else "b", p)  # noqa: E731
    grouped = optax.multi_transform({"a": optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9),
                                     "b": optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.5)},
                                    labels)
    with pytest.warns(UserWarning, match="several momenta"):
        result = fit(model, cross_entropy, grouped, data, epochs=1, batch_size=64, seed=1,
                     callbacks=[SharpnessTracker(5, train=False, num_matvecs=10)])
    assert all("stability_threshold" not in r for r in _readings(result.history))
    one = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    result = fit(model, cross_entropy, one, data, epochs=1, batch_size=64, seed=1,
                 callbacks=[SharpnessTracker(5, train=False, num_matvecs=10)])
    readings = _readings(result.history)
    assert all(r["momentum"] == 0.9 and r["stability_threshold"] == pytest.approx(38.0, rel=1e-6) for r in readings)

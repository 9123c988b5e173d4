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
from jdl.hessian.sharpness import learning_rate_of
from jdl.models import get_model
from jdl.nn import cross_entropy
from jdl.training import fit


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

"""Every example of the models issue runs its core on a tiny budget, prints a table and saves its plot.

Where the claim is cheap to check, the tiny run checks it: the perceptron fails on
XOR and an MLP solves it; the linear autoencoder's subspace is within 5° of PCA's.
"""

import math

import numpy as np

from jdl.data import Dataset, mnist1d


def test_perceptron_xor(tmp_path, load_example):
    ex = load_example("perceptron_xor", "run")
    r = ex.run(perceptron_epochs=20, mlp_epochs=100)
    assert r["perceptron_and_accuracy"] == 1.0  # linearly separable: the perceptron rule converges
    assert r["perceptron_xor_best_accuracy"] <= 0.75  # XOR: never more than 3 of 4 points
    assert r["mlp_xor_accuracy"] == 1.0
    assert "XOR" in ex.table(r)
    ex.plot(r, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_digits_models(tmp_path, load_example):
    ex = load_example("digits_models", "run")
    r = ex.run(epochs=1, models=("MLP 64-256-256-10",))
    ((label, result),) = r.items()
    assert 0.1 < result["test_accuracy"] <= 1.0 and result["parameters"] > 0
    assert label in ex.table(r)
    ex.plot(r, tmp_path / "d.png")


def test_mnist1d_models(tmp_path, load_example):
    ex = load_example("mnist1d_models", "run")
    full = mnist1d()
    small = Dataset("mnist1d", *({k: v[:256] for k, v in s.items()} for s in (full.train, full.val, full.test)), 10)
    perm = np.random.default_rng(0).permutation(40)
    shuffled = ex.permute_positions(small, perm)
    np.testing.assert_array_equal(shuffled.test["x"][:, 0], small.test["x"][:, perm[0]])
    r = ex.run(dataset=small, epochs=1, models=("logistic regression",))
    for label in r:
        for variant in ("original", "shuffled"):
            assert 0.0 <= r[label][variant]["test_accuracy"] <= 1.0
    assert "shuffled" in ex.table(r)
    ex.plot(r, tmp_path / "m.png")


def test_sequence_memory(tmp_path, load_example):
    ex = load_example("sequence_memory", "run")
    data = ex.adding_problem(64, 20, seed=0)
    marked = data["x"][..., 1] == 1
    assert (marked.sum(1) == 2).all()
    np.testing.assert_allclose(data["y"][:, 0], (data["x"][..., 0] * marked).sum(1), rtol=1e-6)
    r = ex.run(lengths=(6,), cells=("lstm",), seeds=(0,), hidden=4, num_train=128, epochs=1, batch_size=32)
    assert math.isfinite(r["lstm"][6]["test_mse"][0])
    assert "LSTM" in ex.table(r)
    ex.plot(r, tmp_path / "s.png")


def test_autoencoders(tmp_path, load_example):
    ex = load_example("autoencoders", "run")
    lin = ex.linear_autoencoder(latent=3, steps=1000, learning_rate=3e-2)
    assert lin["angles_degrees"].max() < 5.0  # the learned subspace is PCA's
    assert lin["train_loss"] < 1.02 * lin["pca_loss"]
    den = ex.denoising_autoencoder(epochs=1)
    r = {"linear": lin, "denoising": den}
    assert "principal angles" in ex.table(r)
    ex.plot_pca(r, tmp_path / "a.png")
    ex.plot_denoising(r, tmp_path / "b.png")


def test_gan_mixture(tmp_path, load_example):
    ex = load_example("gan_mixture", "run")
    cov = ex.mode_coverage(np.asarray(ex.sample_mixture(ex.jax.random.key(0), 4000)))
    # real data covers every mode; P(‖ε‖ < 3σ) = 1 − e^(−9/2) ≈ 98.9 % in 2-D
    assert cov["modes_covered"] == 8 and abs(cov["high_quality"] - (1 - math.exp(-4.5))) < 0.01
    r = ex.run(steps=20, batch_size=32, snapshots=1)
    assert r["steps"] == 20 and 0 <= r["coverage"]["modes_covered"] <= 8
    assert "modes covered" in ex.table(r)
    ex.plot(r, tmp_path / "g.png")


def test_vae_digits(tmp_path, load_example):
    ex = load_example("vae_digits", "run")
    r = ex.run(epochs=1, latents=(2,))
    assert math.isfinite(r[2]["test_negative_elbo"]) and r[2]["samples"].shape == (40, 64)
    assert "ELBO" in ex.table(r)
    ex.plot(r, tmp_path / "v.png")


def test_vanishing_gradients(tmp_path, load_example):
    ex = load_example("vanishing_gradients", "run")
    r = ex.run(
        depth=6,
        width=8,
        epochs=0,
        activations=(("sigmoid", "glorot_uniform"), ("relu", "he_normal")),
        variants=("plain", "residual"),
    )
    sigmoid = r[("plain", "sigmoid")]["norms"]
    assert len(sigmoid) == 6 and sigmoid[0] < sigmoid[-1]  # the gradient shrinks towards the input
    assert "sigmoid, plain" in ex.table(r)
    ex.plot(r, tmp_path / "vg.png")

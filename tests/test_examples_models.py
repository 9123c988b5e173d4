"""Every example of the models issue runs its core on a tiny budget, prints a table and saves its plot.

Where the claim is cheap to check, the tiny run checks it: the perceptron fails on
XOR and an MLP solves it; the linear autoencoder's subspace is within 5° of PCA's.
Most run through ``main`` into a temporary results directory, so that the
Markdown record is checked to state the settings the run actually used.
"""

import math
import re

import numpy as np
import pytest

from jdl.data import Dataset, mnist1d


def _main(ex, directory, monkeypatch, **options):
    """``ex.main(**options)`` writing into ``directory`` instead of examples/results."""
    monkeypatch.setattr(ex, "RESULTS", directory)
    return ex.main(**options)


def test_perceptron_xor(tmp_path, load_example, monkeypatch):
    ex = load_example("perceptron_xor", "run")
    r = _main(ex, tmp_path, monkeypatch, perceptron_epochs=20, mlp_epochs=100)
    assert r["perceptron_and_accuracy"] == 1.0  # linearly separable: the perceptron rule converges
    assert r["perceptron_xor_best_accuracy"] <= 0.75  # XOR: never more than 3 of 4 points
    assert r["mlp_xor_accuracy"] == 1.0
    assert "XOR" in (tmp_path / "perceptron_xor.md").read_text()
    assert (tmp_path / "perceptron_xor.png").stat().st_size > 0
    # main wrote the record first and then plotted: a plot that failed left a new
    # record beside the old plot. Now nothing is replaced until everything is written.
    (tmp_path / "perceptron_xor.md").write_text("earlier results")
    picture = (tmp_path / "perceptron_xor.png").read_bytes()

    def broken_plot(results, path):
        path.write_bytes(b"half a plot")
        raise RuntimeError("the plot failed")

    monkeypatch.setattr(ex, "run", lambda **options: r)
    monkeypatch.setattr(ex, "plot", broken_plot)
    with pytest.raises(RuntimeError, match="the plot failed"):
        ex.main()
    assert (tmp_path / "perceptron_xor.md").read_text() == "earlier results"
    assert (tmp_path / "perceptron_xor.png").read_bytes() == picture
    assert sorted(p.name for p in tmp_path.iterdir()) == ["perceptron_xor.md", "perceptron_xor.png"]


def test_digits_models(tmp_path, load_example, monkeypatch):
    ex = load_example("digits_models", "run")
    with pytest.raises(ValueError, match=r"unknown models \['MLP'\]; choose from \['MLP 64-256-256-10'"):
        ex.run(models=("MLP 64-256-256-10", "MLP"))  # was a KeyError after training the first model
    r = _main(ex, tmp_path, monkeypatch, epochs=1, learning_rate=3e-3, models=("MLP 64-256-256-10",))
    ((label, result),) = r.items()
    assert 0.1 < result["test_accuracy"] <= 1.0 and result["parameters"] > 0
    record = (tmp_path / "digits_models.md").read_text()
    # the record said "30 epochs, Adam 2e-3" whatever the run used
    assert re.search(r"\b1 epochs?, Adam 0\.003 with cosine decay, batch 64, seed 0;", record), record
    assert label in record and (tmp_path / "digits_models.png").stat().st_size > 0


def test_mnist1d_models(tmp_path, load_example, monkeypatch):
    ex = load_example("mnist1d_models", "run")
    with pytest.raises(ValueError, match=r"unknown models \['GRU'\]"):
        ex.run(models=("GRU",))
    full = mnist1d()
    small = Dataset("mnist1d", *({k: v[:256] for k, v in s.items()} for s in (full.train, full.val, full.test)), 10)
    perm = np.random.default_rng(0).permutation(40)
    shuffled = ex.permute_positions(small, perm)
    np.testing.assert_array_equal(shuffled.test["x"][:, 0], small.test["x"][:, perm[0]])
    r = _main(ex, tmp_path, monkeypatch, dataset=small, epochs=1, models=("logistic regression",))
    for label in r:
        for variant in ("original", "shuffled"):
            assert 0.0 <= r[label][variant]["test_accuracy"] <= 1.0
    record = (tmp_path / "mnist1d_models.md").read_text()
    assert "256 train / 256 test" in record and "shuffled" in record
    assert re.search(r"\b1 epochs? of AdamW \(0\.003, .*\), batch 128, seed 0\.", record), record
    assert (tmp_path / "mnist1d_models.png").stat().st_size > 0


def test_sequence_memory(tmp_path, load_example, monkeypatch):
    ex = load_example("sequence_memory", "run")
    data = ex.adding_problem(64, 20, seed=0)
    marked = data["x"][..., 1] == 1
    assert (marked.sum(1) == 2).all()
    # one marker among the first 10 % of the steps, one among the last 10 %
    assert marked[:, :2].any(1).all() and marked[:, -2:].any(1).all() and not marked[:, 2:-2].any()
    np.testing.assert_allclose(data["y"][:, 0], (data["x"][..., 0] * marked).sum(1), rtol=1e-6)
    r = _main(ex, tmp_path, monkeypatch, lengths=(6,), cells=("lstm",), seeds=(0,), hidden=4, num_train=128,
              epochs=1, batch_size=32)
    assert math.isfinite(r["lstm"][6]["test_mse"][0])
    record = (tmp_path / "sequence_memory.md").read_text()
    assert "LSTM" in record
    assert re.search(r"\b1 epochs? over 128 training sequences \(4 steps\), hidden size 4, Adam 0\.003, "
                     r"gradient clipping 1, batch 32, seed 0\.", record), record
    assert (tmp_path / "sequence_memory.png").stat().st_size > 0


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


def test_gan_mixture(tmp_path, load_example, monkeypatch):
    ex = load_example("gan_mixture", "run")
    cov = ex.mode_coverage(np.asarray(ex.sample_mixture(ex.jax.random.key(0), 4000)))
    # real data covers every mode; P(‖ε‖ < 3σ) = 1 − e^(−9/2) ≈ 98.9 % in 2-D
    assert cov["modes_covered"] == 8 and abs(cov["high_quality"] - (1 - math.exp(-4.5))) < 0.01
    # 2 steps in 4 snapshots trained 4 steps (and snapshots=0 divided by zero): refused before any work
    for snapshots in (0, 4):
        with pytest.raises(ValueError, match="snapshots must be from 1 to steps"):
            ex.run(steps=2, snapshots=snapshots)
    r = _main(ex, tmp_path, monkeypatch, steps=20, batch_size=32, snapshots=1)
    assert r["steps"] == 20 and 0 <= r["coverage"]["modes_covered"] <= 8
    record = (tmp_path / "gan_mixture.md").read_text()
    assert "modes covered" in record and "20 steps, batch 32, Adam 0.001" in record, record
    assert (tmp_path / "gan_mixture.png").stat().st_size > 0


def test_vae_digits(tmp_path, load_example, monkeypatch):
    ex = load_example("vae_digits", "run")
    r = _main(ex, tmp_path, monkeypatch, epochs=1, latents=(2,))
    assert math.isfinite(r[2]["test_negative_elbo"]) and r[2]["samples"].shape == (40, 64)
    record = (tmp_path / "vae_digits.md").read_text()
    assert "ELBO" in record and re.search(r"\b1 epochs? of Adam .*, batch 64, seed 0\.", record), record
    assert (tmp_path / "vae_digits.png").stat().st_size > 0


def test_vanishing_gradients(tmp_path, load_example, monkeypatch):
    ex = load_example("vanishing_gradients", "run")
    with pytest.raises(ValueError, match=r"unknown variants \['batchnorm'\]; choose from \['plain', 'BatchNorm'"):
        ex.run(variants=("plain", "batchnorm"))
    r = _main(
        ex,
        tmp_path,
        monkeypatch,
        depth=6,
        width=8,
        epochs=0,
        activations=(("sigmoid", "glorot_uniform"), ("relu", "he_normal")),
        variants=("plain", "residual"),
    )
    sigmoid = r[("plain", "sigmoid")]["norms"]
    assert len(sigmoid) == 6 and sigmoid[0] < sigmoid[-1]  # the gradient shrinks towards the input
    record = (tmp_path / "vanishing_gradients.md").read_text()
    assert "sigmoid, plain" in record and "relu (he_normal), residual" in record
    assert "6 hidden layers of width 8," in record and "no training" in record, record
    assert (tmp_path / "vanishing_gradients.png").stat().st_size > 0

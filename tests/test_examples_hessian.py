"""The three Hessian examples run on a tiny budget, and the claims they print hold there.

Each example is loaded from ``examples/`` and its ``run`` called with small
sizes; the checks are those the example's docstring states, against
references computed independently where that is cheap (the dense spectrum,
Cauchy interlacing for the per-layer blocks, the loss at the trained point).
"""

import numpy as np


def test_hessian_sharpness_rises_to_the_stability_bound(tmp_path, load_example):
    ex = load_example("hessian_sharpness", "run", "table", "plot")
    r = ex.run(epochs=40)
    np.testing.assert_array_equal(r["steps"], np.arange(0, 41, 5))
    lam, bound = r["lambda_max"], r["stability_threshold"]
    assert bound == 4.0
    # Progressive sharpening from below 2/η up to it, and GD keeps it there: not far above.
    assert lam[0] < 0.6 * bound
    assert 0.95 * bound <= lam.max() <= 1.1 * bound
    assert np.all(r["lambda_min"] < 0) and np.all(r["lambda_min"] > -lam)
    assert np.all(r["num_matvecs"] <= 2 * 20)  # at most 20 products per eigenvalue
    assert r["train_loss"][-1] < 0.5 * r["train_loss"][0]
    assert "2/η = 4.000" in ex.table(r)
    ex.plot(r, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0


def test_hessian_critical_points_index_rises_with_the_loss(tmp_path, load_example):
    ex = load_example("hessian_critical_points", "run", "table", "plot")
    r = ex.run(num_starts=8, max_steps=100)
    rows = r["rows"]
    assert r["num_converged"] >= 6 and len(rows) >= 4
    for row in rows:
        assert row["gradient_norm"] <= 1e-8
        assert (row["class"] == "saddle") == (0 < row["index"] < 1)
    # Seed 000: higher loss, more negative directions; lower loss, a minimum.
    assert r["spearman"] > 0
    t = r["trained"]
    assert t["converged"] and t["class"] == "minimum" and t["index"] == 0
    assert t["loss"] < min(row["loss"] for row in rows)
    e = r["escape"]
    assert e["eigenvalue"] < 0 and e["loss_after"] < e["loss_before"]
    assert "Spearman" in ex.table(r)
    ex.plot(r, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0


def test_hessian_landscape_matches_the_dense_spectrum(tmp_path, load_example):
    ex = load_example("hessian_landscape", "run", "table", "plot")
    r = ex.run(epochs=2, hidden=(16,), num_steps=40, num_probes=4, bn_epochs=3, bn_hidden=(16, 16))
    n = r["network"]
    eig = n["eigenvalues"]
    assert eig.size == n["num_params"] == 64 * 16 + 16 + 16 * 10 + 10
    scale = np.abs(eig).max()
    ends = n["lanczos_eigenvalues"]
    np.testing.assert_allclose(ends[:2], eig[:2], atol=1e-4 * scale)
    np.testing.assert_allclose(ends[2:], eig[-2:], atol=1e-4 * scale)
    assert abs(n["trace_estimate"] - eig.sum()) <= max(3 * n["trace_standard_error"], 0.02 * abs(eig.sum()))
    grid, density = np.asarray(n["density"].grid), np.asarray(n["density"].density)
    assert abs(np.sum(density) * (grid[1] - grid[0]) - 1) < 0.02  # a uniform grid
    # Cauchy interlacing: a diagonal block's spectrum lies inside the whole one.
    assert sum(size for size, _ in n["blocks"].values()) == eig.size
    for _, block in n["blocks"].values():
        assert eig[0] - 1e-5 * scale <= block[0] and block[-1] <= eig[-1] + 1e-5 * scale
    # The slices pass through the trained point; along the top eigenvector the loss curves up.
    middle = len(n["alphas"]) // 2
    top = n["slices"][0]
    np.testing.assert_allclose(top[middle], n["loss"], rtol=1e-5)
    assert top[0] > top[middle] and top[-1] > top[middle]
    assert n["surface"].shape == (len(n["alphas"]), len(n["betas"]))
    # Seed 004 §3.1.1: standardising the inputs lowers the condition number by orders of magnitude.
    kappa = r["preconditioning"]
    assert kappa["standardised"]["value"] < 1e-3 * kappa["raw pixels 0…16"]["value"]
    # Seed 000: BatchNorm lowers λ_max and flattens the top of the spectrum.
    without, with_bn = r["batch_norm"]
    assert not without["batch_norm"] and with_bn["batch_norm"]
    assert with_bn["lambda_max"] < without["lambda_max"]
    assert with_bn["ratio_10"] > without["ratio_10"]
    assert "Hutch++" in ex.table(r)
    paths = ex.plot(r, tmp_path)
    assert [p.name for p in paths] == ["hessian_density_vs_exact.png", "hessian_slices.png", "hessian_surface.png"]
    assert all(p.stat().st_size > 0 for p in paths)

"""The curvature of a trained digits MLP, and what input standardisation does to it.

1. Train an MLP 64-32-10 (2 410 parameters) on the digits for a few epochs.
2. Its Hessian: the exact spectrum (dense ``eigh``) against stochastic Lanczos
   quadrature; the top and bottom eigenpairs by Lanczos; the trace by Hutch++.
3. Per-layer curvature: the eigenvalues of each layer's diagonal block.
4. The loss along the top and the bottom eigenvector (1-D) and over their plane (2-D).
5. Seed 004 §3.1.1 — preconditioning: the condition number of a logistic-regression
   Hessian on raw pixels (0…16) against standardised pixels.
6. Seed 000 ("add BatchNorm layers to improve the parameters' consistency"): the
   top of the Hessian spectrum of an MLP 64-32-32-10 trained with and without
   BatchNorm. Without it a few large outlier eigenvalues stand apart from the
   rest; with it λ_max is lower and the top of the spectrum is flat (the
   effect Ghorbani, Krishnan & Xiao, "An Investigation into Neural Net
   Optimization via Hessian Eigenvalue Density", ICML 2019, report at scale).
   The Hessian is of the train-mode loss (BatchNorm normalising with the
   batch's statistics), the objective the optimizer sees, over the 1 259
   training digits. Measured with seeds 0, 1 and 2: λ_max 9.4–10.5 without
   BatchNorm against 1.1–1.2 with it, λ_10/λ_1 0.05–0.07 against 0.42–0.48,
   and the BatchNorm network reaches the lower loss (0.08 against 0.15–0.18).

    python examples/hessian_landscape.py       # ~1 min on a laptop CPU
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdl.data import load_dataset
from jdl.data.datasets import load_digits_arrays
from jdl.hessian import (
    block_eigenvalues,
    condition_number,
    dense_spectrum,
    hessian_operator,
    hutch_plus_plus,
    lanczos,
    loss_slice,
    loss_surface,
    model_objective,
    parameter_blocks,
    plot_loss_slice,
    plot_loss_surface,
    plot_spectral_density,
    spectral_density,
)
from jdl.models import get_model
from jdl.nn import cross_entropy
from jdl.training import fit

OUT = os.path.join(os.path.dirname(__file__), "results")


def network_curvature() -> None:
    ds = load_dataset("digits")
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=(32,))
    result = fit(model, cross_entropy, optax.adam(2e-3), ds, epochs=10, batch_size=64, seed=0, progress=False)
    params = result.state.params
    loss = model_objective(model, cross_entropy, result.state.model_state, train=False).loss
    batch = {k: jnp.asarray(v) for k, v in ds.train.items()}
    print(f"trained: train loss {result.history[-1]['train_loss']:.4f}, "
          f"val accuracy {result.history[-1]['val_accuracy']:.3f}")

    eig = np.asarray(dense_spectrum(loss, params, batch))
    print(f"dense spectrum of {eig.size} eigenvalues: [{eig[0]:.4f}, {eig[-1]:.4f}], "
          f"trace {eig.sum():.4f}, index {np.mean(eig < -1e-4 * np.abs(eig).max()):.3f}")

    op = hessian_operator(loss)
    ends = jax.jit(lambda v, p, b: lanczos(80, k=4, which="BE")(op, v, p, b))(
        jax.tree.map(jnp.ones_like, params), params, batch)
    print(f"Lanczos ({int(ends.num_matvecs)} products): bottom {np.asarray(ends.eigenvalues[:2])}, "
          f"top {np.asarray(ends.eigenvalues[2:])}; dense: {eig[:2]}, {eig[-2:]}")
    tr = jax.jit(lambda p, b: hutch_plus_plus(99)(op, p, p, b, key=0))(params, batch)
    print(f"Hutch++ trace {float(tr.estimate):.4f} ± {float(tr.standard_error):.4f} (exact {eig.sum():.4f})")

    density = jax.jit(lambda p, b: spectral_density(op, p, p, b, key=1, num_steps=80, num_probes=10))(
        params, batch)
    os.makedirs(OUT, exist_ok=True)
    plot_spectral_density(density, os.path.join(OUT, "hessian_density_vs_exact.png"), eigenvalues=eig,
                          title="digits MLP: SLQ density and the exact spectrum")

    for block, size in parameter_blocks(params).items():
        b = np.asarray(block_eigenvalues(loss, params, batch, block=block))
        print(f"block {block:>9} ({size:5d} params): λ ∈ [{b[0]:.4f}, {b[-1]:.4f}]")

    top = jax.tree.map(lambda a: a[-1], ends.eigenvectors)
    bottom = jax.tree.map(lambda a: a[0], ends.eigenvectors)
    alphas = jnp.linspace(-1.5, 1.5, 61)
    slices = [loss_slice(loss, params, d, batch, alphas=alphas) for d in (top, bottom)]
    plot_loss_slice(alphas, slices, os.path.join(OUT, "hessian_slices.png"),
                    labels=[f"top eigenvector (λ = {float(ends.eigenvalues[-1]):.3f})",
                            f"bottom eigenvector (λ = {float(ends.eigenvalues[0]):.3f})"],
                    title="loss along Hessian eigenvectors")
    betas = jnp.linspace(-3.0, 3.0, 41)
    surface = loss_surface(loss, params, top, bottom, batch, alphas=alphas, betas=betas)
    plot_loss_surface(alphas, betas, surface, os.path.join(OUT, "hessian_surface.png"),
                      labels=("α (top eigenvector)", "β (bottom eigenvector)"),
                      title="loss over the top/bottom eigenvector plane")


def batch_norm_curvature() -> None:
    """λ_max and the top of the spectrum with and without BatchNorm, same data, seed and optimizer."""
    ds = load_dataset("digits")
    batch = {k: jnp.asarray(v) for k, v in ds.train.items()}
    for batch_norm in (False, True):
        model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=(32, 32), batch_norm=batch_norm)
        state = fit(model, cross_entropy, optax.adam(2e-3), ds, epochs=10, batch_size=64, seed=0,
                    progress=False).state
        loss = model_objective(model, cross_entropy, state.model_state, train=True).loss
        eig = np.asarray(dense_spectrum(loss, state.params, batch))[::-1]  # descending
        print(f"MLP 64-32-32-10 {'with' if batch_norm else 'without':>7} BatchNorm: "
              f"train-mode loss {float(loss(state.params, batch)):.3f}, λ_max {eig[0]:.3f}, "
              f"λ_2/λ_1 {eig[1] / eig[0]:.2f}, λ_10/λ_1 {eig[9] / eig[0]:.2f}, "
              f"λ_1 / mean of the top 50 {eig[0] / eig[:50].mean():.2f}")


def preconditioning() -> None:
    """Logistic regression (one digit against the rest) on raw vs standardised pixels."""
    jax.config.update("jax_enable_x64", True)
    images, labels = load_digits_arrays()
    x = images.reshape(-1, 64).astype(np.float64)
    x = x[:, x.std(0) > 0]                       # constant pixels carry no curvature at all
    y = (labels == 3).astype(np.float64)

    def loss(w, x):
        logits = x @ w["w"] + w["b"]
        return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)

    w0 = {"b": jnp.zeros(()), "w": jnp.zeros(x.shape[1])}
    for name, inputs in (("raw pixels 0…16", x), ("standardised", (x - x.mean(0)) / x.std(0))):
        c = condition_number(dense_spectrum(loss, w0, jnp.asarray(inputs)))
        print(f"logistic regression, {name:>16}: κ = {float(c.value):10.1f} ({c.definition})")


if __name__ == "__main__":
    network_curvature()
    batch_norm_curvature()
    preconditioning()

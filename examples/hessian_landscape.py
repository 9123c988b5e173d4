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

Section 6 of ``main`` runs seed 0 only; ``batch_norm_curvature(seeds=(0, 1, 2))``
gives the ranges above.

    python examples/hessian_landscape.py       # ~1 min on a laptop CPU
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _cli import publish  # the examples' shared helpers (examples/_cli.py)

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

RESULTS = Path(__file__).resolve().parent / "results"


def network_curvature(*, epochs: int = 10, hidden: tuple[int, ...] = (32,), num_steps: int = 80,
                      num_probes: int = 10) -> dict:
    """Sections 1–4: a trained digits MLP's Hessian, exactly and matrix-free, per layer, and along its ends."""
    ds = load_dataset("digits")
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=hidden)
    result = fit(model, cross_entropy, optax.adam(2e-3), ds, epochs=epochs, batch_size=64, seed=0,
                 progress=False)
    params = result.state.params
    loss = model_objective(model, cross_entropy, result.state.model_state, train=False).loss
    batch = {k: jnp.asarray(v) for k, v in ds.train.items()}
    eig = np.asarray(dense_spectrum(loss, params, batch))

    op = hessian_operator(loss)
    ends = jax.jit(lambda v, p, b: lanczos(num_steps, k=4, which="BE")(op, v, p, b))(
        jax.tree.map(jnp.ones_like, params), params, batch)
    trace = jax.jit(lambda p, b: hutch_plus_plus(99)(op, p, p, b, key=0))(params, batch)
    density = jax.jit(lambda p, b: spectral_density(op, p, p, b, key=1, num_steps=num_steps,
                                                    num_probes=num_probes))(params, batch)
    blocks = {block: (size, np.asarray(block_eigenvalues(loss, params, batch, block=block)))
              for block, size in parameter_blocks(params).items()}

    top = jax.tree.map(lambda a: a[-1], ends.eigenvectors)
    bottom = jax.tree.map(lambda a: a[0], ends.eigenvectors)
    alphas = jnp.linspace(-1.5, 1.5, 61)
    betas = jnp.linspace(-3.0, 3.0, 41)
    return {
        "num_params": int(eig.size),
        "train_loss": result.history[-1]["train_loss"],
        "val_accuracy": result.history[-1]["val_accuracy"],
        "loss": float(loss(params, batch)),
        "eigenvalues": eig,
        "lanczos_eigenvalues": np.asarray(ends.eigenvalues),
        "lanczos_num_matvecs": int(ends.num_matvecs),
        "trace_estimate": float(trace.estimate),
        "trace_standard_error": float(trace.standard_error),
        "density": density,
        "blocks": blocks,
        "alphas": np.asarray(alphas),
        "betas": np.asarray(betas),
        "slices": [np.asarray(loss_slice(loss, params, d, batch, alphas=alphas)) for d in (top, bottom)],
        "surface": np.asarray(loss_surface(loss, params, top, bottom, batch, alphas=alphas, betas=betas)),
    }


def batch_norm_curvature(*, epochs: int = 10, hidden: tuple[int, ...] = (32, 32),
                         seeds: tuple[int, ...] = (0,)) -> list[dict]:
    """Section 6: λ_max and the top of the spectrum with and without BatchNorm, same data, seed and optimizer."""
    ds = load_dataset("digits")
    batch = {k: jnp.asarray(v) for k, v in ds.train.items()}
    rows = []
    for seed in seeds:
        for batch_norm in (False, True):
            model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=hidden, batch_norm=batch_norm)
            state = fit(model, cross_entropy, optax.adam(2e-3), ds, epochs=epochs, batch_size=64, seed=seed,
                        progress=False).state
            loss = model_objective(model, cross_entropy, state.model_state, train=True).loss
            eig = np.asarray(dense_spectrum(loss, state.params, batch))[::-1]  # descending
            rows.append({"seed": seed, "batch_norm": batch_norm, "hidden": hidden,
                         "loss": float(loss(state.params, batch)), "lambda_max": float(eig[0]),
                         "ratio_2": float(eig[1] / eig[0]), "ratio_10": float(eig[9] / eig[0]),
                         "top_over_mean_50": float(eig[0] / eig[:50].mean())})
    return rows


def preconditioning() -> dict:
    """Section 5: logistic regression (one digit against the rest) on raw vs standardised pixels."""
    with jax.enable_x64(True):
        images, labels = load_digits_arrays()
        x = images.reshape(-1, 64).astype(np.float64)
        x = x[:, x.std(0) > 0]                       # constant pixels carry no curvature at all
        y = (labels == 3).astype(np.float64)

        def loss(w, x):
            logits = x @ w["w"] + w["b"]
            return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)

        w0 = {"b": jnp.zeros(()), "w": jnp.zeros(x.shape[1])}
        out = {}
        for name, inputs in (("raw pixels 0…16", x), ("standardised", (x - x.mean(0)) / x.std(0))):
            c = condition_number(dense_spectrum(loss, w0, jnp.asarray(inputs)))
            out[name] = {"value": float(c.value), "definition": c.definition}
        return out


def run(*, epochs: int = 10, hidden: tuple[int, ...] = (32,), num_steps: int = 80, num_probes: int = 10,
        bn_epochs: int = 10, bn_hidden: tuple[int, ...] = (32, 32), bn_seeds: tuple[int, ...] = (0,)) -> dict:
    return {"network": network_curvature(epochs=epochs, hidden=hidden, num_steps=num_steps,
                                         num_probes=num_probes),
            "preconditioning": preconditioning(),
            "batch_norm": batch_norm_curvature(epochs=bn_epochs, hidden=bn_hidden, seeds=bn_seeds)}


def table(results: dict) -> str:
    n = results["network"]
    eig, ends = n["eigenvalues"], n["lanczos_eigenvalues"]
    lines = [
        f"trained: train loss {n['train_loss']:.4f}, val accuracy {n['val_accuracy']:.3f}",
        f"dense spectrum of {eig.size} eigenvalues: [{eig[0]:.4f}, {eig[-1]:.4f}], trace {eig.sum():.4f}, "
        f"index {np.mean(eig < -1e-4 * np.abs(eig).max()):.3f}",
        f"Lanczos ({n['lanczos_num_matvecs']} products): bottom {ends[:2]}, top {ends[2:]}; "
        f"dense: {eig[:2]}, {eig[-2:]}",
        f"Hutch++ trace {n['trace_estimate']:.4f} ± {n['trace_standard_error']:.4f} (exact {eig.sum():.4f})",
    ]
    lines += [f"block {block:>9} ({size:5d} params): λ ∈ [{b[0]:.4f}, {b[-1]:.4f}]"
              for block, (size, b) in n["blocks"].items()]
    lines += [f"logistic regression, {name:>16}: κ = {c['value']:10.1f} ({c['definition']})"
              for name, c in results["preconditioning"].items()]
    for r in results["batch_norm"]:
        layers = "-".join(str(h) for h in (64, *r["hidden"], 10))
        lines.append(f"MLP {layers} {'with' if r['batch_norm'] else 'without':>7} BatchNorm (seed {r['seed']}): "
                     f"train-mode loss {r['loss']:.3f}, λ_max {r['lambda_max']:.3f}, "
                     f"λ_2/λ_1 {r['ratio_2']:.2f}, λ_10/λ_1 {r['ratio_10']:.2f}, "
                     f"λ_1 / mean of the top 50 {r['top_over_mean_50']:.2f}")
    return "\n".join(lines)


def plot(results: dict, directory) -> list[Path]:
    """The SLQ density against the exact spectrum, the 1-D slices and the 2-D surface; returns the paths."""
    n, directory = results["network"], Path(directory)
    paths = [directory / f"hessian_{name}.png" for name in ("density_vs_exact", "slices", "surface")]
    plot_spectral_density(n["density"], os.fspath(paths[0]), eigenvalues=n["eigenvalues"],
                          title="digits MLP: SLQ density and the exact spectrum")
    ends = n["lanczos_eigenvalues"]
    plot_loss_slice(n["alphas"], n["slices"], os.fspath(paths[1]),
                    labels=[f"top eigenvector (λ = {ends[-1]:.3f})", f"bottom eigenvector (λ = {ends[0]:.3f})"],
                    title="loss along Hessian eigenvectors")
    plot_loss_surface(n["alphas"], n["betas"], n["surface"], os.fspath(paths[2]),
                      labels=("α (top eigenvector)", "β (bottom eigenvector)"),
                      title="loss over the top/bottom eigenvector plane")
    return paths


def main(**options) -> dict:
    results = run(**options)
    print(table(results))
    for path in publish(RESULTS, lambda staging: plot(results, staging)):  # all three plots, or none
        print(f"wrote {path}")
    return results


if __name__ == "__main__":
    from _cli import options

    main(**options(run, __doc__))

"""Autoencoders on the digits: a linear autoencoder finds the PCA subspace; a denoising
autoencoder cleans noisy images (seed 000, 002: "PCA is a special autoencoder").

1. A linear autoencoder ``x̂ = W_d W_e x + b`` with a ``k``-dimensional code is
   trained by minimising the squared reconstruction error. At its minimum the
   columns of ``W_d`` span the top-``k`` principal subspace of the data (Baldi &
   Hornik, 1989) — the same subspace PCA finds from the covariance's
   eigenvectors, although the learned basis is not orthonormal. The script
   measures the principal angles between the two subspaces (from the singular
   values of ``Q_AEᵀ Q_PCA``); all should be a few degrees at most.
2. A denoising autoencoder is trained on images corrupted with Gaussian noise
   (σ = 0.3) to reproduce the clean images; on noisy test images it removes
   most of the noise. The plot shows clean, noisy and cleaned test digits.

Run:  python examples/autoencoders.py   (under a minute on a laptop CPU;
writes examples/results/autoencoders_pca.png, autoencoders_denoising.png and
autoencoders.md)
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _cli import publish  # the examples' shared helpers (examples/_cli.py)

from jdl.data import digits
from jdl.models import bind, build_module, get_model
from jdl.nn import corrupt, mean_squared_error
from jdl.training import Variables, create_train_state, fit, make_fused_train_step

RESULTS = Path(__file__).resolve().parent / "results"


def as_reconstruction(split: dict) -> dict:
    """Targets are the inputs themselves."""
    return {"x": split["x"], "y": split["x"]}


def pca_basis(x: np.ndarray, k: int) -> np.ndarray:
    """The top-``k`` principal directions of ``x`` (rows are examples), as ``(d, k)`` columns."""
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    return vt[:k].T


def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (degrees) between the column spaces of ``a`` and ``b``:
    ``arccos`` of the singular values of ``Q_aᵀ Q_b`` (Björck & Golub, 1973)."""
    qa, _ = np.linalg.qr(np.asarray(a, np.float64))
    qb, _ = np.linalg.qr(np.asarray(b, np.float64))
    cosines = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1.0, 1.0)
    return np.degrees(np.arccos(cosines))


def linear_autoencoder(*, latent: int = 4, steps: int = 2000, learning_rate: float = 1e-2, seed: int = 0) -> dict:
    """Train a linear autoencoder on the (centred) training images by full-batch Adam; compare with PCA.

    PCA is defined on centred data; the autoencoder's biases could absorb the
    mean, but centring first decouples them from the weights and speeds up
    convergence. All ``steps`` full-batch steps run in one fused call.
    """
    ds = digits()
    x = ds.train["x"] - ds.train["x"].mean(axis=0, keepdims=True)
    data = {"x": jnp.asarray(x), "y": jnp.asarray(x)}
    model = get_model("linear_autoencoder", ds.input_shape, 0, latent=latent)
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01))
    state = create_train_state(model, optimizer, key=seed, batch=data)
    fused = make_fused_train_step(model, mean_squared_error, optimizer)
    every_example = jnp.broadcast_to(jnp.arange(len(x), dtype=jnp.int32), (steps, len(x)))
    state, metrics = fused(state, data, every_example)
    module = bind(
        build_module("linear_autoencoder", ds.input_shape, 0, latent=latent), Variables(state.params, state.model_state)
    )
    learned = np.asarray(module.decoder_basis())
    reference = pca_basis(ds.train["x"], latent)
    # the best possible rank-k reconstruction error: half the variance PCA discards
    eigenvalues = np.linalg.svd(x.astype(np.float64), compute_uv=False) ** 2 / len(x)
    return {
        "latent": latent,
        "angles_degrees": principal_angles(learned, reference),
        "train_loss": float(metrics["loss"][-1]),
        "pca_loss": 0.5 * float(eigenvalues[latent:].sum()),
        "learned": learned,
        "reference": reference,
    }


def denoising_autoencoder(
    *, epochs: int = 100, noise_level: float = 0.3, learning_rate: float = 2e-3, seed: int = 0
) -> dict:
    """Train a denoising autoencoder on the digits and clean noisy test images."""
    ds = digits()
    options = {"hidden": (128,), "latent": 32, "noise_level": noise_level}
    model = get_model("denoising_autoencoder", ds.input_shape, 0, **options)
    result = fit(
        model,
        mean_squared_error,
        optax.adam(learning_rate),
        as_reconstruction(ds.train),
        val_data=as_reconstruction(ds.val),
        epochs=epochs,
        batch_size=64,
        seed=seed,
        progress=False,
    )
    clean = jnp.asarray(ds.test["x"])
    noisy = corrupt(clean, jax.random.key(seed + 1), kind="gaussian", level=noise_level)
    variables = Variables(result.state.params, result.state.model_state)
    cleaned, _ = model.apply(variables, noisy, train=False, key=None)
    mse = lambda a: float(jnp.mean((a - clean) ** 2))  # noqa: E731
    return {
        "noise_level": noise_level,
        "mse_noisy": mse(noisy),
        "mse_cleaned": mse(cleaned),
        "mse_clean_input": mse(model.apply(variables, clean, train=False, key=None)[0]),
        "images": (np.asarray(clean), np.asarray(noisy), np.asarray(cleaned)),
    }


def run(*, pca_steps: int = 2000, denoising_epochs: int = 100, latent: int = 4, seed: int = 0) -> dict:
    return {
        "linear": linear_autoencoder(latent=latent, steps=pca_steps, seed=seed),
        "denoising": denoising_autoencoder(epochs=denoising_epochs, seed=seed),
    }


def table(results: dict) -> str:
    lin, den = results["linear"], results["denoising"]
    angles = ", ".join(f"{a:.3f}°" for a in lin["angles_degrees"])
    return "\n".join(
        [
            f"Linear autoencoder, code size {lin['latent']}: principal angles to the top-{lin['latent']} "
            f"PCA subspace {angles}; reconstruction loss ½‖x − x̂‖² {lin['train_loss']:.4f} "
            f"(PCA's optimum {lin['pca_loss']:.4f}).",
            "",
            f"Denoising autoencoder (Gaussian noise σ = {den['noise_level']}), per-pixel MSE to the clean test images:",
            "",
            "| input | MSE |",
            "|---|---:|",
            f"| noisy image | {den['mse_noisy']:.4f} |",
            f"| denoised (autoencoder output) | {den['mse_cleaned']:.4f} |",
            f"| autoencoder output for the clean image | {den['mse_clean_input']:.4f} |",
        ]
    )


def plot_pca(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt

    lin = results["linear"]
    k = lin["latent"]
    # the learned basis, orthonormalised and rotated onto the PCA directions (orthogonal
    # Procrustes) so that the two rows can be compared picture by picture
    q, _ = np.linalg.qr(lin["learned"])
    u, _, vt = np.linalg.svd(q.T @ lin["reference"])
    q = q @ (u @ vt)
    fig, axes = plt.subplots(2, k, figsize=(2.2 * k, 4.6))
    for i in range(k):
        axes[0, i].imshow(lin["reference"][:, i].reshape(8, 8), cmap="RdBu")
        axes[0, i].set_title(f"PCA {i + 1}", fontsize=9)
        axes[1, i].imshow(q[:, i].reshape(8, 8), cmap="RdBu")
        axes[1, i].set_title(f"AE basis {i + 1}", fontsize=9)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    angles = ", ".join(f"{a:.1f}°" for a in lin["angles_degrees"])
    fig.suptitle(
        f"principal directions vs a linear autoencoder's (orthonormalised) decoder\nprincipal angles {angles}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_denoising(results: dict, path: Path, *, count: int = 12) -> None:
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt

    den = results["denoising"]
    pad = 1
    picture = np.ones((3 * (8 + pad) + pad, count * (8 + pad) + pad))
    for r, images in enumerate(den["images"]):  # rows: clean, noisy, denoised
        for c in range(count):
            y, x = pad + r * (8 + pad), pad + c * (8 + pad)
            picture[y : y + 8, x : x + 8] = 1.0 - np.clip(images[c].reshape(8, 8), 0, 1)
    fig, ax = plt.subplots(figsize=(1.0 * count, 3.4))
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([pad + 4 + r * (8 + pad) for r in range(3)], ["clean", "noisy", "denoised"])
    ax.set_title(
        f"denoising autoencoder on test digits: MSE {den['mse_noisy']:.3f} (noisy) → "
        f"{den['mse_cleaned']:.3f} (denoised)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(**options) -> dict:
    results = run(**options)
    text = table(results)
    print(text)
    publish(RESULTS, {"autoencoders_pca.png": lambda path: plot_pca(results, path),
                      "autoencoders_denoising.png": lambda path: plot_denoising(results, path),
                      "autoencoders.md": lambda path: path.write_text(f"# Autoencoders on the digits\n\n{text}\n")})
    print(f"wrote {RESULTS / 'autoencoders_pca.png'}, autoencoders_denoising.png and autoencoders.md")
    return results


if __name__ == "__main__":
    from _cli import options

    main(**options(run, __doc__))

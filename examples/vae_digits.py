"""A variational autoencoder on the digits: reconstructions and new samples (seed 000, 003).

The encoder maps an 8×8 digit to ``q(z|x) = N(μ, diag σ²)`` over a small latent
space, the decoder maps ``z`` to Bernoulli pixel probabilities, and training
maximises the evidence lower bound (reconstruction + KL to ``N(0, I)``). Unlike
a plain autoencoder, whose code space has holes, the KL term makes the whole
prior region decode to digit-like images, so decoding ``z ~ N(0, I)`` generates
new digits (seed 000). The script reports the test negative ELBO (nats per
image, averaged over 16 posterior samples per image), plots test
reconstructions, samples from the prior and the decoded grid of a 2-D latent
space.

Run:  python examples/vae_digits.py   (under a minute on a laptop CPU;
writes examples/results/vae_digits.png and vae_digits.md)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _cli import publish, run_settings  # the examples' shared helpers (examples/_cli.py)

from jdl.data import digits
from jdl.models import bind, build_module, get_model, vae_loss
from jdl.training import Variables, fit

RESULTS = Path(__file__).resolve().parent / "results"


def negative_elbo(model, variables: Variables, x: jax.Array, *, key: jax.Array, num_samples: int = 16) -> float:
    """Mean over images of the single-sample −ELBO estimate, averaged over ``num_samples`` draws of z."""

    def one(k):
        outputs, _ = model.apply(variables, x, train=True, key=jax.random.key_data(k))
        return jnp.mean(vae_loss(outputs, x))

    return float(jnp.mean(jax.lax.map(one, jax.random.split(key, num_samples))))


def train_vae(*, latent: int, epochs: int, hidden=(128,), learning_rate: float = 2e-3, seed: int = 0) -> dict:
    ds = digits()
    options = {"latent": latent, "hidden": hidden}
    model = get_model("vae", ds.input_shape, 0, **options)
    steps = epochs * -(-len(ds.train["x"]) // 64)
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.05))
    data = {"x": ds.train["x"], "y": ds.train["x"]}
    start = time.perf_counter()
    result = fit(
        model,
        vae_loss,
        optimizer,
        data,
        val_data={"x": ds.val["x"], "y": ds.val["x"]},
        epochs=epochs,
        batch_size=64,
        seed=seed,
        progress=False,
    )
    seconds = time.perf_counter() - start
    variables = Variables(result.state.params, result.state.model_state)
    test = jnp.asarray(ds.test["x"])
    module = bind(build_module("vae", ds.input_shape, 0, **options), variables)
    reconstructions = np.asarray(jax.nn.sigmoid(model.apply(variables, test, train=False, key=None)[0].logits))
    return {
        "latent": latent,
        "test_negative_elbo": negative_elbo(model, variables, test, key=jax.random.key(seed + 3)),
        "train_loss": result.history[-1]["train_loss"],
        "seconds": seconds,
        "test": np.asarray(test),
        "reconstructions": reconstructions,
        "samples": np.asarray(module.sample(jax.random.key(seed + 5), 40)),
        "module": module,
    }


def run(*, epochs: int = 150, latents=(2, 8), seed: int = 0) -> dict:
    """Train a VAE for each latent size; ``{latent: {...}}``."""
    return {k: train_vae(latent=k, epochs=epochs, seed=seed) for k in latents}


def table(results: dict) -> str:
    lines = ["| latent dimensions | test −ELBO (nats / image) | train loss | train time |", "|---:|---:|---:|---:|"]
    for k, r in results.items():
        lines.append(f"| {k} | {r['test_negative_elbo']:.2f} | {r['train_loss']:.2f} | {r['seconds']:.0f} s |")
    return "\n".join(lines)


def mosaic(images: np.ndarray, rows: int, cols: int, *, pad: int = 1) -> np.ndarray:
    """Tile ``rows × cols`` flat 8×8 images into one picture with ``pad`` pixels between them."""
    tiles = np.ones((rows * (8 + pad) + pad, cols * (8 + pad) + pad))
    for i, image in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        tiles[pad + r * (8 + pad) : pad + r * (8 + pad) + 8, pad + c * (8 + pad) : pad + c * (8 + pad) + 8] = (
            1.0 - np.reshape(image, (8, 8))
        )
    return tiles


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt

    big = results[max(results)]
    panels = []
    rows = []
    for r in range(3):  # a row of test digits, then the row of their reconstructions
        rows.append(big["test"][5 * r : 5 * r + 5])
        rows.append(big["reconstructions"][5 * r : 5 * r + 5])
    panels.append(
        (mosaic(np.concatenate(rows), 6, 5), f"test digits (odd rows) and\nreconstructions, latent {big['latent']}")
    )
    panels.append((mosaic(big["samples"], 6, 5), f"new digits: decoded z ~ N(0, I),\nlatent {big['latent']}"))
    if 2 in results:
        n = 8
        q = jax.scipy.stats.norm.ppf(jnp.linspace(0.05, 0.95, n))
        zs = jnp.stack(jnp.meshgrid(q, q[::-1]), axis=-1).reshape(-1, 2)
        grid = np.asarray(jax.nn.sigmoid(results[2]["module"].decode(zs)))
        panels.append((mosaic(grid, n, n), "2-D latent space decoded\non a grid of prior quantiles"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6))
    for ax, (picture, title) in zip(np.atleast_1d(axes), panels):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: dict, settings: dict) -> str:
    """The Markdown record: the settings the numbers were computed with, then the table."""
    return (
        "# VAE on the digits\n\nMLP encoder/decoder (64-128-z), Bernoulli likelihood, "
        f"{settings['epochs']} epochs of Adam (2e-3, cosine decay), batch 64, seed {settings['seed']}. "
        "The test −ELBO averages 16 posterior samples per image.\n\n" + table(results) + "\n"
    )


def main(**options) -> dict:
    settings = run_settings(run, options)  # an unknown option fails here, before any training
    results = run(**options)
    print(table(results))
    publish(RESULTS, {"vae_digits.png": lambda path: plot(results, path),
                      "vae_digits.md": lambda path: path.write_text(report(results, settings))})
    print(f"wrote {RESULTS / 'vae_digits.png'} and vae_digits.md")
    return results


if __name__ == "__main__":
    from _cli import options

    main(**options(run, __doc__))

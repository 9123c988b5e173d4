"""Vanishing gradients in a deep plain MLP: sigmoid vs tanh vs ReLU, and the same network
with BatchNorm and with residual connections (seed 001, 002, 004 §3.3).

A 20-hidden-layer MLP (width 64, Glorot-uniform weights, zero biases) is
evaluated at initialisation on a batch of digits. Backpropagation multiplies
one Jacobian ``diag(f'(z_l)) W_l`` per layer. With the sigmoid, ``f' ≤ 1/4``
and the gradient reaching the first layer is ~10¹² times smaller than at the
last (seed 001: "|σ'(z) w| ≤ 1/4, so the more layers, the smaller ∂C/∂b₁"):
the network does not learn at all. Tanh (``f'(0) = 1``) keeps the norms level.
ReLU with Glorot's initialisation halves the signal's variance at every layer,
so all gradients are small (the output barely depends on the input); He's
initialisation (variance 2/fan-in) restores them. BatchNorm before each
activation rescues the sigmoid network completely; residual connections
``h ← h + f(W h)`` give every layer an identity path for the gradient (the
unnormalised ReLU residual network's activations and gradients grow with
depth instead). In a deep ReLU network BatchNorm makes gradients grow towards
the input (Yang et al., 2019, "A mean field theory of batch normalization"):
with He's initialisation it then trains worse than without (53.5 % against
92.8 % test accuracy after 15 epochs); with Glorot's it is on a par (73.5 %
against 73.0 %). The script plots ‖∂L/∂W_l‖ per layer for all twelve
networks and trains each for 15 epochs to show which ones learn.

Run:  python examples/vanishing_gradients.py   (about a minute on a laptop CPU;
writes examples/results/vanishing_gradients.png and vanishing_gradients.md)
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
from jdl.models import get_model
from jdl.nn import cross_entropy
from jdl.training import fit, make_evaluate, make_loss

RESULTS = Path(__file__).resolve().parent / "results"
# (activation, kernel initialiser): Glorot uniform for all, plus ReLU with He's initialiser
ACTIVATIONS = (
    ("sigmoid", "glorot_uniform"),
    ("tanh", "glorot_uniform"),
    ("relu", "glorot_uniform"),
    ("relu", "he_normal"),
)
VARIANTS = {"plain": {}, "BatchNorm": {"batch_norm": True}, "residual": {"residual": True}}


def build(activation: str, init: str, variant: str, *, depth: int, width: int):
    return get_model(
        "mlp", (64,), 10, hidden=(width,) * depth, activation=activation, kernel_init=init, **VARIANTS[variant]
    )


def layer_gradient_norms(model, *, batch: dict, seed: int = 0) -> np.ndarray:
    """``‖∂L/∂W_l‖_F`` for each hidden layer's kernel, at initialisation, in layer order."""
    variables = model.init(jax.random.key_data(jax.random.key(seed)), batch["x"])
    loss = make_loss(model, cross_entropy, train=True)
    grads = jax.grad(lambda p: loss(p, variables.model_state, batch)[0])(variables.params)
    norms = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        if keys[0] == "layers" and keys[-1] == "kernel":
            norms[int(keys[1])] = float(jnp.linalg.norm(leaf))
    return np.array([norms[i] for i in sorted(norms)])


def run(
    *,
    depth: int = 20,
    width: int = 64,
    epochs: int = 15,
    activations=ACTIVATIONS,
    variants=tuple(VARIANTS),
    seed: int = 0,
) -> dict:
    """Gradient norms at initialisation and test accuracy after ``epochs`` epochs of Adam."""
    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown:  # before any training, not after the variants listed earlier
        raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    ds = digits()
    batch = {k: jnp.asarray(v[:256]) for k, v in ds.train.items()}
    test = {k: jnp.asarray(v) for k, v in ds.test.items()}
    results = {}
    for variant in variants:
        for activation, init in activations:
            model = build(activation, init, variant, depth=depth, width=width)
            norms = layer_gradient_norms(model, batch=batch, seed=seed)
            start = time.perf_counter()
            trained = (
                fit(model, cross_entropy, optax.adam(1e-3), ds, epochs=epochs, batch_size=64, seed=seed, progress=False)
                if epochs
                else None
            )
            seconds = time.perf_counter() - start
            accuracy = (
                make_evaluate(model, cross_entropy)(trained.state, test)["accuracy"]
                if trained is not None
                else float("nan")
            )
            label = activation if init == "glorot_uniform" else f"{activation} ({init})"
            results[(variant, label)] = {"norms": norms, "test_accuracy": accuracy, "seconds": seconds}
    return results


def table(results: dict) -> str:
    depth = len(next(iter(results.values()))["norms"])
    lines = [
        f"| network | ‖∂L/∂W_1‖ | ‖∂L/∂W_{depth}‖ | first / last | test accuracy after training |",
        "|---|---:|---:|---:|---:|",
    ]
    for (variant, activation), r in results.items():
        n = r["norms"]
        lines.append(
            f"| {activation}, {variant} | {n[0]:.2e} | {n[-1]:.2e} | {n[0] / n[-1]:.1e} | {r['test_accuracy']:.1%} |"
        )
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(v for v, _ in results))
    fig, axes = plt.subplots(1, len(variants), figsize=(4.6 * len(variants), 4), sharey=True, squeeze=False)
    colors = {"sigmoid": "tab:red", "tanh": "tab:blue", "relu": "tab:green", "relu (he_normal)": "tab:olive"}
    for ax, variant in zip(axes[0], variants):
        for (v, activation), r in results.items():
            if v != variant:
                continue
            layers = np.arange(1, len(r["norms"]) + 1)
            ax.semilogy(
                layers,
                r["norms"],
                "o-",
                ms=3,
                color=colors.get(activation),
                label=f"{activation} (test {r['test_accuracy']:.0%})",
            )
        ax.set_title(f"{variant} MLP, {len(r['norms'])} hidden layers")
        ax.set_xlabel("layer l (1 = nearest the input)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("‖∂L/∂W_l‖ at initialisation")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: dict, settings: dict) -> str:
    """The Markdown record: the settings the numbers were computed with, then the table."""
    s = settings
    trained = f"then {s['epochs']} epochs of Adam 1e-3 (batch 64)" if s["epochs"] else "no training"
    return (
        f"# Vanishing gradients in a deep MLP\n\n{s['depth']} hidden layers of width {s['width']}, Glorot-uniform "
        "weights (another initialiser where a row names it), digits; gradient norms of a 256-example batch at "
        f"initialisation, {trained}, seed {s['seed']}; BatchNorm momentum 0.9.\n\n" + table(results) + "\n"
    )


def main(**options) -> dict:
    settings = run_settings(run, options)  # an unknown option fails here, before any training
    results = run(**options)
    print(table(results))
    publish(RESULTS, {"vanishing_gradients.png": lambda path: plot(results, path),
                      "vanishing_gradients.md": lambda path: path.write_text(report(results, settings))})
    print(f"wrote {RESULTS / 'vanishing_gradients.png'} and vanishing_gradients.md")
    return results


if __name__ == "__main__":
    from _cli import options

    main(**options(run, __doc__))

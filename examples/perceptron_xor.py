"""The perceptron cannot learn XOR; one hidden layer can (seed 001).

A perceptron ``o = sign(wᵀx + b)`` draws one straight line through the plane.
Trained with the perceptron rule (SGD on :func:`jdl.nn.perceptron_loss`) it
converges on AND, which a line separates, but on XOR it cycles forever and
never gets more than 3 of the 4 points right. An MLP with one hidden layer of
tanh units bends the boundary and classifies all four.

Run:  python examples/perceptron_xor.py   (a few seconds; writes
examples/results/perceptron_xor.png and perceptron_xor.md)
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
from _cli import publish  # the examples' shared helpers (examples/_cli.py)

from jdl.data import xor
from jdl.models import get_model
from jdl.nn import cross_entropy, perceptron_loss
from jdl.training import Variables, fit

RESULTS = Path(__file__).resolve().parent / "results"


def and_points() -> dict:
    """The four corners labelled ``x₁ AND x₂`` — linearly separable."""
    return {"x": np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32), "y": np.array([0, 0, 0, 1], np.int32)}


def train_perceptron(data: dict, *, epochs: int, seed: int = 0):
    """The perceptron rule: SGD with rate 1 on the perceptron criterion, one point per step."""
    model = get_model("perceptron", (2,), 2)
    result = fit(
        model,
        perceptron_loss,
        optax.sgd(1.0),
        data,
        val_data=data,
        epochs=epochs,
        batch_size=1,
        seed=seed,
        progress=False,
    )
    return model, result


def train_mlp(data: dict, *, epochs: int, hidden: int = 4, seed: int = 0):
    """One hidden tanh layer, cross-entropy, full-batch Adam."""
    model = get_model("mlp", (2,), 2, hidden=(hidden,), activation="tanh")
    result = fit(
        model,
        cross_entropy,
        optax.adam(0.05),
        data,
        val_data=data,
        epochs=epochs,
        batch_size=4,
        seed=seed,
        progress=False,
    )
    return model, result


def run(*, perceptron_epochs: int = 100, mlp_epochs: int = 300, seed: int = 0) -> dict:
    """Train the perceptron on AND and XOR and the MLP on XOR; return accuracies and the trained models."""
    data = xor().train
    p_and, r_and = train_perceptron(and_points(), epochs=perceptron_epochs, seed=seed)
    p_xor, r_xor = train_perceptron(data, epochs=perceptron_epochs, seed=seed)
    m_xor, r_mlp = train_mlp(data, epochs=mlp_epochs, seed=seed)
    xor_acc = [h["val_accuracy"] for h in r_xor.history]
    return {
        "perceptron_and_accuracy": r_and.history[-1]["val_accuracy"],
        "perceptron_xor_accuracy": xor_acc[-1],
        "perceptron_xor_best_accuracy": max(xor_acc),
        "mlp_xor_accuracy": r_mlp.history[-1]["val_accuracy"],
        "mlp_xor_loss": r_mlp.history[-1]["val_loss"],
        "models": {"perceptron": (p_xor, r_xor.state), "mlp": (m_xor, r_mlp.state)},
        "perceptron_xor_curve": xor_acc,
    }


def _decision(model, state, grid: np.ndarray) -> np.ndarray:
    logits, _ = model.apply(Variables(state.params, state.model_state), jnp.asarray(grid), train=False, key=None)
    return np.asarray(jnp.argmax(logits, axis=-1))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt

    data = xor().train
    g = np.linspace(-0.5, 1.5, 200, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    titles = {
        "perceptron": f"perceptron on XOR: {results['perceptron_xor_accuracy']:.0%}",
        "mlp": f"MLP (1 hidden layer) on XOR: {results['mlp_xor_accuracy']:.0%}",
    }
    for ax, (name, (model, state)) in zip(axes, results["models"].items()):
        regions = _decision(model, state, grid).reshape(gx.shape)
        ax.contourf(gx, gy, regions, levels=[-0.5, 0.5, 1.5], colors=["#cfe0f3", "#f6d5c5"])
        for label, marker, color in ((0, "o", "tab:blue"), (1, "s", "tab:red")):
            sel = data["y"] == label
            ax.scatter(
                data["x"][sel, 0],
                data["x"][sel, 1],
                marker=marker,
                s=120,
                c=color,
                edgecolors="k",
                label=f"class {label}",
            )
        ax.set_title(titles[name])
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
        ax.legend(loc="upper center", fontsize=8, framealpha=0.9)
    axes[2].plot(np.arange(1, len(results["perceptron_xor_curve"]) + 1), results["perceptron_xor_curve"])
    axes[2].axhline(1.0, color="gray", ls="--")
    axes[2].set_ylim(0, 1.05)
    axes[2].set_xlabel("epoch (4 perceptron-rule steps each)")
    axes[2].set_ylabel("accuracy on the 4 XOR points")
    axes[2].set_title("the perceptron never reaches 100 %")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results: dict) -> str:
    rows = [
        ("perceptron (perceptron rule)", "AND", results["perceptron_and_accuracy"]),
        ("perceptron (perceptron rule)", "XOR", results["perceptron_xor_accuracy"]),
        ("perceptron, best epoch", "XOR", results["perceptron_xor_best_accuracy"]),
        ("MLP, 4 tanh hidden units", "XOR", results["mlp_xor_accuracy"]),
    ]
    lines = ["| model | data | accuracy on the 4 points |", "|---|---|---|"]
    lines += [f"| {m} | {d} | {a:.0%} |" for m, d, a in rows]
    return "\n".join(lines)


def main(**options) -> dict:
    results = run(**options)
    text = table(results)
    print(text)
    publish(RESULTS, {"perceptron_xor.png": lambda path: plot(results, path),
                      "perceptron_xor.md": lambda path: path.write_text(f"# Perceptron vs MLP on XOR\n\n{text}\n")})
    print(f"wrote {RESULTS / 'perceptron_xor.png'} and perceptron_xor.md")
    return results


if __name__ == "__main__":
    from _cli import options

    main(**options(run, __doc__))

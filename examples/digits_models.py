"""Digits (8×8 handwritten, 10 classes): MLP vs CNN vs ResNet test accuracy.

The same data, three architectures with different priors (seed 000: a
convolution is a dense layer with tied, local weights): an MLP on the 64 pixels,
a small CNN, and a small ResNet with BatchNorm and a global-pooling head. Each
is trained with Adam for the same number of epochs; the script prints test
accuracy, parameter count and training time and plots validation accuracy per
epoch.

Run:  python examples/digits_models.py   (about a minute on a laptop CPU;
writes examples/results/digits_models.png and digits_models.md)
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from _cli import publish, run_settings  # the examples' shared helpers (examples/_cli.py)

from jdl.data import digits
from jdl.models import get_model
from jdl.nn import cross_entropy
from jdl.training import fit, make_evaluate

RESULTS = Path(__file__).resolve().parent / "results"

# name -> (registry name, options, image input?)
MODELS = {
    "MLP 64-256-256-10": ("mlp", {"hidden": (256, 256)}, False),
    "CNN (2 conv + dense)": ("cnn", {}, True),
    "ResNet (2 stages, BN)": ("resnet", {"stages": (16, 32), "blocks_per_stage": 1}, True),
}


def count_parameters(params) -> int:
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


def run(
    *, epochs: int = 30, batch_size: int = 64, learning_rate: float = 2e-3, models=tuple(MODELS), seed: int = 0
) -> dict:
    """Train each model on the digits; return test accuracy, parameters, time and histories."""
    unknown = [label for label in models if label not in MODELS]
    if unknown:  # before any training, not after the models listed earlier
        raise ValueError(f"unknown models {unknown}; choose from {list(MODELS)}")
    out = {}
    for label in models:
        name, options, image = MODELS[label]
        ds = digits(flatten=not image)
        model = get_model(name, ds.input_shape, ds.num_classes, **options)
        steps = epochs * -(-len(ds.train["y"]) // batch_size)
        optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1)))
        start = time.perf_counter()
        result = fit(
            model, cross_entropy, optimizer, ds, epochs=epochs, batch_size=batch_size, seed=seed, progress=False
        )
        seconds = time.perf_counter() - start
        test = make_evaluate(model, cross_entropy)(result.state, {k: jnp.asarray(v) for k, v in ds.test.items()})
        out[label] = {
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "parameters": count_parameters(result.state.params),
            "seconds": seconds,
            "test_size": len(ds.test["y"]),
            "history": result.history,
        }
    return out


def table(results: dict) -> str:
    lines = ["| model | parameters | test accuracy | test loss | train time |", "|---|---:|---:|---:|---:|"]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r['parameters']:,} | {r['test_accuracy']:.2%} | {r['test_loss']:.3f} | "
            f"{r['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, r in results.items():
        epochs = [h["epoch"] + 1 for h in r["history"]]
        axes[0].plot(epochs, [h["train_loss"] for h in r["history"]], label=label)
        axes[1].plot(epochs, [h["val_accuracy"] for h in r["history"]], label=f"{label}: test {r['test_accuracy']:.1%}")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training loss")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("validation accuracy")
    axes[1].set_ylim(0.8, 1.005)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("digits (8×8): MLP vs CNN vs ResNet")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: dict, settings: dict) -> str:
    """The Markdown record: the settings the numbers were computed with, then the table."""
    n_test = next(iter(results.values()))["test_size"]
    return (
        f"# Digits: MLP vs CNN vs ResNet\n\n{settings['epochs']} epochs, Adam {settings['learning_rate']:g} with "
        f"cosine decay, batch {settings['batch_size']}, seed {settings['seed']}; test split of {n_test} images.\n\n"
        + table(results) + "\n"
    )


def main(**options) -> dict:
    settings = run_settings(run, options)  # an unknown option fails here, before any training
    results = run(**options)
    print(table(results))
    publish(RESULTS, {"digits_models.png": lambda path: plot(results, path),
                      "digits_models.md": lambda path: path.write_text(report(results, settings))})
    print(f"wrote {RESULTS / 'digits_models.png'} and digits_models.md")
    return results


if __name__ == "__main__":
    from _cli import options

    main(**options(run, __doc__))

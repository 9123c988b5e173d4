"""Plots a person would rather look at than read (learning curves)."""

from __future__ import annotations

import os


def _pyplot():
    import matplotlib

    if not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: list[dict], path: str, *, title: str = "") -> str:
    """Loss (log scale) and accuracy per epoch, train and validation, saved as PNG
    (``.png`` is added to a path without an extension); returns the path written.
    Every epoch is marked, so a one-epoch run, or a finite epoch between
    diverged ones, still shows.

    Seed 003 advises choosing the learning rate by plotting the objective over
    time: a curve that falls fast then flattens is a good rate; a flat or
    rising one is too small or too large.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    if not os.path.splitext(path)[1]:  # matplotlib would add the extension itself
        path = f"{path}.png"
    epochs = [r["epoch"] + 1 for r in history]
    has_acc = any("train_accuracy" in r for r in history)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5, 3.8), squeeze=False)
    ax = axes[0, 0]
    for split, style in (("train", "-"), ("val", "--")):
        key = f"{split}_loss"
        if any(key in r for r in history):
            ax.plot(epochs, [r.get(key) for r in history], style, marker="o", markersize=3, label=split)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if has_acc:
        ax = axes[0, 1]
        for split, style in (("train", "-"), ("val", "--")):
            key = f"{split}_accuracy"
            if any(key in r for r in history):
                ax.plot(epochs, [r.get(key) for r in history], style, marker="o", markersize=3, label=split)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path

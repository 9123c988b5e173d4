"""Plots a person would rather look at than read (learning curves)."""

from __future__ import annotations

import os

import numpy as np


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
    # A loss of exactly 0 (reachable in float32) has no place on a log axis: it
    # is drawn a decade below the smallest positive loss instead of vanishing.
    finite = [r[k] for r in history for k in ("train_loss", "val_loss")
              if isinstance(r.get(k), (int, float)) and np.isfinite(r[k])]
    positive = [v for v in finite if v > 0]
    floor = min(positive) / 10 if positive else 1.0

    def loss_values(key):
        return [floor if v == 0 else v for v in (r.get(key) for r in history)]

    def epoch_axis(ax):
        # whole epochs only: with one or two epochs MaxNLocator falls back to fractions
        ax.set_xlim(min(epochs, default=1) - 0.5, max(epochs, default=1) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch")
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5, 3.8), squeeze=False)
    ax = axes[0, 0]
    for split, style in (("train", "-"), ("val", "--")):
        key = f"{split}_loss"
        if any(key in r for r in history):
            ax.plot(epochs, loss_values(key), style, marker="o", markersize=3, label=split)
    if finite:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "loss not finite (diverged)", transform=ax.transAxes, ha="center", va="center")
        ax.set_yticks([])
    epoch_axis(ax)
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if has_acc:
        ax = axes[0, 1]
        for split, style in (("train", "-"), ("val", "--")):
            key = f"{split}_accuracy"
            if any(key in r for r in history):
                ax.plot(epochs, [r.get(key) for r in history], style, marker="o", markersize=3, label=split)
        epoch_axis(ax)
        ax.set_ylabel("accuracy")
        ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path

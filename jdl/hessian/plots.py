"""Plots of curvature: spectral density, loss slices and surfaces, sharpness during training.

Each function draws into a new figure, saves it as PNG when ``path`` is given,
and returns the figure (closed after saving) — matplotlib is imported only
when a plot is made, with the non-interactive Agg backend unless
``MPLBACKEND`` says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jdl.hessian.density import SpectralDensity

__all__ = ["plot_loss_slice", "plot_loss_surface", "plot_sharpness", "plot_spectral_density"]


def _pyplot():
    import matplotlib

    if not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Resolution of every saved plot.
DPI = 110


def _finish(fig, path: str | None, title: str):
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=DPI)
        _pyplot().close(fig)
    return fig


def plot_spectral_density(
    density: SpectralDensity,
    path: str | None = None,
    *,
    eigenvalues: np.ndarray | None = None,
    title: str = "Hessian eigenvalue density",
    log_scale: bool = True,
):
    """The SLQ density on a log axis (outliers stay visible next to the bulk).

    Args:
      density: from :func:`~jdl.hessian.spectral_density`.
      path: PNG to write.
      eigenvalues: exact eigenvalues to overlay as a histogram (e.g. from a
        dense ``eigh``), for comparison; fewer than 50, or all equal, are
        drawn as ticks at their values instead (a histogram of a handful
        draws bars beside them).
      log_scale: log-scaled density axis (showing seven decades below the maximum).

    Raises:
      ValueError: the density or the eigenvalues are not finite (a Hessian at
        a point where the loss diverged), before anything is drawn or written.
    """
    grid, dens = np.asarray(density.grid), np.asarray(density.density)
    ev = None if eigenvalues is None else np.asarray(eigenvalues, dtype=float).ravel()
    if not all(np.all(np.isfinite(a)) for a in (grid, dens, () if ev is None else ev)):
        raise ValueError("the spectral density or the eigenvalues are not finite (NaN or inf): there is no "
                         "spectrum to plot; the loss was probably not finite at these parameters")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    floor = max(dens.max(), 1e-300) * 1e-7
    ax.plot(grid, np.maximum(dens, 1e-300), lw=1.5, color="C0",
            label=f"SLQ: {density.num_probes} probes × {density.num_steps} steps, σ = {float(density.sigma):.3g}")
    if ev is not None and ev.size:
        label = f"exact eigenvalues (n = {ev.size})"
        if ev.size < 50 or np.ptp(ev) == 0:
            ax.plot(ev, np.full(ev.shape, floor if log_scale else 0.0), "|", ms=14, color="C1", label=label,
                    clip_on=False)
        else:
            ax.hist(ev, bins=min(100, max(10, ev.size // 20)), density=True, alpha=0.35, color="C1", label=label)
    ax.set_xlim(grid.min(), grid.max())  # the density's own range: the zero line must not stretch it
    if grid.min() <= 0.0 <= grid.max():
        ax.axvline(0.0, color="k", lw=0.6, alpha=0.5)
    if log_scale:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, path, title)


def plot_loss_slice(
    alphas,
    losses,
    path: str | None = None,
    *,
    labels: Sequence[str] | None = None,
    title: str = "loss along directions",
):
    """``L(θ + α d)`` against ``α``; ``losses`` may be one curve or a list of curves."""
    plt = _pyplot()
    alphas = np.asarray(alphas)
    curves = np.atleast_2d(np.asarray(losses))
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for i, curve in enumerate(curves):
        ax.plot(alphas, curve, label=None if labels is None else labels[i])
    ax.axvline(0.0, color="k", lw=0.6, alpha=0.5)
    ax.set_xlabel("step α along the direction")
    ax.set_ylabel("loss")
    if labels is not None:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, path, title)


def plot_loss_surface(
    alphas,
    betas,
    surface,
    path: str | None = None,
    *,
    labels: tuple[str, str] = ("α (direction 1)", "β (direction 2)"),
    title: str = "loss surface",
    levels: int = 30,
):
    """Contours of ``L(θ + α d₁ + β d₂)`` (``surface[i, j]`` at ``alphas[i], betas[j]``)."""
    plt = _pyplot()
    a, b = np.meshgrid(np.asarray(alphas), np.asarray(betas), indexing="ij")
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    cs = ax.contourf(a, b, np.asarray(surface), levels=levels, cmap="viridis")
    ax.contour(a, b, np.asarray(surface), levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    fig.colorbar(cs, ax=ax, label="loss")
    ax.plot([0], [0], "r*", ms=10, label="θ")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.legend(fontsize=8)
    return _finish(fig, path, title)


def plot_sharpness(history: list[dict], path: str | None = None, *, title: str = "sharpness during training",
                   name: str = "sharpness"):
    """λ_max readings (from :class:`~jdl.hessian.SharpnessTracker`) against the step, with ``2/η``.

    ``name``: the tracker's ``name`` (its readings are under ``{name}_readings``).
    """
    plt = _pyplot()
    readings = [r for rec in history for r in rec.get(f"{name}_readings", [])]
    if not readings:
        found = sorted({k for rec in history for k in rec if k.endswith("_readings")})
        raise ValueError(f"the history has no {name}_readings; train with callbacks=[SharpnessTracker(...)]"
                         + (f", or pass name= for one of {found}" if found else ""))
    steps = np.array([r["step"] for r in readings])
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(steps, [r["lambda_max"] for r in readings], "o-", ms=3, label="λ_max (sharpness)")
    if any("lambda_min" in r for r in readings):
        ax.plot(steps, [r.get("lambda_min", np.nan) for r in readings], "s-", ms=3, label="λ_min")
    if any("stability_threshold" in r for r in readings):
        ax.plot(steps, [r.get("stability_threshold", np.nan) for r in readings], "k--", lw=1,
                label="2/η (stability bound)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("eigenvalue")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, path, title)

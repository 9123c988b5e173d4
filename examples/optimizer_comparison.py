"""The optimizer family side by side: the comparison figure seed 001 promises.

Every jdl optimizer — GD, momentum, Nesterov, Adagrad, Adadelta, RMSProp
(plain and with momentum), Adam, AdaMax, Nadam, and Newton, damped Newton and
saddle-free Newton — runs from the same start on

- an ill-conditioned quadratic ``½ (u² + κ v²)`` (κ = 25, axes rotated 30° so
  no per-coordinate method gets the axes for free),
- the Rosenbrock valley ``(1 − x)² + 100 (y − x²)²`` (ten times the steps),
- the saddle ``x² − y²`` (started next to the ridge, ``y₀ = 10⁻³``), where
  Newton's method walks into the saddle and saddle-free Newton escapes it
  (seed 000),
- and the digits MLP (64-32-10, minibatch 128), where the Newton family is
  matrix-free (CG and Lanczos through Hessian-vector products).

Writes ``examples/results/optimizer_trajectories.png`` (contours and paths),
``optimizer_loss_curves.png`` (loss against step, all four problems) and
``optimizer_comparison.json`` (final losses).

Run:  python examples/optimizer_comparison.py [--steps 300] [--digits-steps 300]
(about a minute on a laptop CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _cli import publish  # the examples' shared helpers (examples/_cli.py)

import jdl.optim as jo
from jdl.data import digits
from jdl.models import get_model
from jdl.nn import cross_entropy
from jdl.training import create_train_state, make_fused_train_step

RESULTS = Path(__file__).resolve().parent / "results"

# ----------------------------------------------------------------------------------
# The three surfaces
# ----------------------------------------------------------------------------------

_ANGLE = math.radians(30.0)
_ROTATION = jnp.array([[math.cos(_ANGLE), -math.sin(_ANGLE)], [math.sin(_ANGLE), math.cos(_ANGLE)]])


def ill_conditioned_quadratic(p: jax.Array) -> jax.Array:
    """``½ (u² + 25 v²)`` with ``(u, v)`` the point rotated by 30°; minimum 0 at the origin."""
    u = _ROTATION @ p
    return 0.5 * (u[0] ** 2 + 25.0 * u[1] ** 2)


def rosenbrock(p: jax.Array) -> jax.Array:
    """``(1 − x)² + 100 (y − x²)²``; minimum 0 at ``(1, 1)`` at the end of a curved valley."""
    return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


def saddle(p: jax.Array) -> jax.Array:
    """``x² − y²``: a saddle at the origin, unbounded below along ``y``."""
    return p[0] ** 2 - p[1] ** 2


class Surface:
    """A 2-D test function with its start, plotting window and learning rates."""

    def __init__(self, name: str, fn: Callable, start, window, learning_rates: dict, *, log_loss: bool,
                 floor: float = -math.inf, step_scale: int = 1):
        self.name, self.fn, self.start, self.window = name, fn, jnp.asarray(start), window
        self.learning_rates, self.log_loss, self.floor = learning_rates, log_loss, floor
        self.step_scale = step_scale  # Rosenbrock's valley takes first-order methods many more steps


# Hand-picked, stable rates per surface (the second-order methods take full steps).
_QUADRATIC_RATES = {"jdl:sgd": 0.07, "jdl:momentum": 0.02, "jdl:nesterov": 0.02, "jdl:adagrad": 1.0,
                    "jdl:adadelta": 1.0, "jdl:rmsprop": 0.05, "jdl:rmsprop_momentum": 0.01,
                    "jdl:adam": 0.2, "jdl:adamax": 0.3, "jdl:nadam": 0.2}
_ROSENBROCK_RATES = {"jdl:sgd": 1e-3, "jdl:momentum": 2e-4, "jdl:nesterov": 2e-4, "jdl:adagrad": 0.5,
                     "jdl:adadelta": 1.0, "jdl:rmsprop": 0.01, "jdl:rmsprop_momentum": 1e-3,
                     "jdl:adam": 0.05, "jdl:adamax": 0.1, "jdl:nadam": 0.05}
_SADDLE_RATES = {"jdl:sgd": 0.05, "jdl:momentum": 0.01, "jdl:nesterov": 0.01, "jdl:adagrad": 0.1,
                 "jdl:adadelta": 1.0, "jdl:rmsprop": 0.01, "jdl:rmsprop_momentum": 0.002,
                 "jdl:adam": 0.05, "jdl:adamax": 0.05, "jdl:nadam": 0.05}

SURFACES = (
    Surface("ill-conditioned quadratic (κ = 25)", ill_conditioned_quadratic, [-4.0, 2.5],
            ((-4.5, 4.5), (-3.0, 3.0)), _QUADRATIC_RATES, log_loss=True),
    Surface("Rosenbrock", rosenbrock, [-1.5, 2.0], ((-2.0, 2.0), (-1.0, 3.0)), _ROSENBROCK_RATES,
            log_loss=True, step_scale=10),
    # Unbounded below: a run has escaped once f < −20 (|y| > 4.5), and stops there.
    Surface("saddle x² − y²", saddle, [1.5, 1e-3], ((-2.0, 2.0), (-2.0, 2.0)), _SADDLE_RATES,
            log_loss=False, floor=-20.0),
)

FIRST_ORDER = ("jdl:sgd", "jdl:momentum", "jdl:nesterov", "jdl:adagrad", "jdl:adadelta", "jdl:rmsprop",
               "jdl:rmsprop_momentum", "jdl:adam", "jdl:adamax", "jdl:nadam")
SECOND_ORDER_2D = {
    "jdl:newton": lambda: jo.newton(),
    "jdl:damped_newton": lambda: jo.damped_newton(),
    "jdl:saddle_free_newton": lambda: jo.saddle_free_newton(damping=1e-2, adaptive=False,
                                                            reject_increase=False),
}
SECOND_ORDER_NETWORK = {
    "jdl:damped_newton_cg": lambda: jo.damped_newton_cg(max_iters=20),
    "jdl:saddle_free_newton_lanczos": lambda: jo.saddle_free_newton_lanczos(num_steps=20),
}
DIGITS_RATES = {"jdl:sgd": 0.2, "jdl:momentum": 0.05, "jdl:nesterov": 0.05, "jdl:adagrad": 0.05,
                "jdl:adadelta": 1.0, "jdl:rmsprop": 2e-3, "jdl:rmsprop_momentum": 5e-4,
                "jdl:adam": 3e-3, "jdl:adamax": 5e-3, "jdl:nadam": 3e-3}
_DIVERGED = 1e6  # stop drawing a path once it leaves the window for good
_LOSS_FLOOR = 1e-16  # log-scale plots show exact zeros (Newton on a quadratic) here


def optimizer_for(name: str, learning_rates: dict, second_order: dict) -> optax.GradientTransformation:
    if name in second_order:
        return second_order[name]()
    return jo.get_optimizer(name, learning_rates[name])


def trajectory(fn: Callable, start: jax.Array, opt: optax.GradientTransformation, steps: int,
               floor: float = -math.inf):
    """Points ``θ₀ … θ_T`` and losses of ``steps`` updates of ``opt`` on ``fn`` (one ``lax.scan``);
    a run stays where it is once its loss is below ``floor``."""

    def body(carry, _):
        p, s = carry
        value, g = jax.value_and_grad(fn)(p)
        u, s = opt.update(g, s, p, value=value, value_fn=fn) if isinstance(
            opt, optax.GradientTransformationExtraArgs) else opt.update(g, s, p)
        p = jnp.where(value < floor, p, optax.apply_updates(p, u))
        return (p, s), (p, fn(p))

    @jax.jit
    def run(start):
        _, (points, losses) = jax.lax.scan(body, (start, opt.init(start)), None, length=steps)
        return jnp.concatenate([start[None], points]), jnp.concatenate([fn(start)[None], losses])

    points, losses = run(start)
    return np.asarray(points), np.asarray(losses)


# ----------------------------------------------------------------------------------
# The digits MLP
# ----------------------------------------------------------------------------------


def digits_curves(names, *, steps: int, batch_size: int = 128, hidden=(32,), seed: int = 0) -> dict:
    """Per-step minibatch loss of each optimizer on the digits MLP, through jdl's fused train step."""
    ds = digits()
    data = {k: jnp.asarray(v) for k, v in ds.train.items()}
    n = int(data["y"].shape[0])
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    order = np.concatenate([rng.permutation(n) for _ in range(steps // per_epoch + 1)])
    indices = jnp.asarray(order[: steps * batch_size].reshape(steps, batch_size), jnp.int32)
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=hidden)
    sample = {k: v[:batch_size] for k, v in data.items()}
    curves = {}
    for name in names:
        opt = optimizer_for(name, DIGITS_RATES, SECOND_ORDER_NETWORK)
        state = create_train_state(model, opt, key=seed, batch=sample)
        fused = make_fused_train_step(model, cross_entropy, opt)
        _, metrics = fused(state, data, indices)
        curves[name] = np.asarray(metrics["loss"])
    return curves


# ----------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------


_PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
            "tab:gray", "tab:olive", "tab:cyan", "black", "magenta", "darkgoldenrod", "navy", "lime"]


def _colours(names):
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}


def _style(name):
    return "--" if "newton" in name else "-"


def _short(name):
    return name.removeprefix(jo.JDL_PREFIX)


def plot_trajectories(surfaces, results: dict, path: Path, colours: dict) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(surfaces), figsize=(6 * len(surfaces), 5.4))
    for ax, surface in zip(np.atleast_1d(axes), surfaces):
        (x0, x1), (y0, y1) = surface.window
        xs, ys = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
        grid = jnp.stack([jnp.asarray(xs), jnp.asarray(ys)])
        zs = np.asarray(jax.vmap(jax.vmap(surface.fn, in_axes=1), in_axes=1)(grid))
        if surface.log_loss:
            ax.contour(xs, ys, np.log10(zs + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
        else:
            ax.contour(xs, ys, zs, levels=25, cmap="Greys", linewidths=0.6)
        for name, (points, _) in results[surface.name].items():
            inside = np.all(np.abs(points) < _DIVERGED, axis=1)
            p = points[inside]
            ax.plot(p[:, 0], p[:, 1], _style(name), color=colours[name], lw=1.3, label=_short(name))
            ax.plot(p[-1, 0], p[-1, 1], "o", color=colours[name], ms=3)
        ax.plot(*np.asarray(surface.start), "k*", ms=10)
        ax.set(xlim=(x0, x1), ylim=(y0, y1), title=surface.name, xlabel="x", ylabel="y")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower left", ncol=2)
    fig.suptitle("Optimizer trajectories from the same start (★); dashed: Newton family")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss_curves(surfaces, results: dict, digits_losses: dict, path: Path, colours: dict) -> None:
    import matplotlib.pyplot as plt

    panels = len(surfaces) + (1 if digits_losses else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.2))
    axes = np.atleast_1d(axes)
    for ax, surface in zip(axes, surfaces):
        for name, (_, losses) in results[surface.name].items():
            shown = np.where(np.abs(losses) < _DIVERGED, losses, np.nan)
            if surface.log_loss:
                shown = np.maximum(shown, _LOSS_FLOOR)
            ax.plot(shown, _style(name), color=colours[name], lw=1.2, label=_short(name))
        if surface.log_loss:
            ax.set_yscale("log")
        else:
            ax.set_yscale("symlog", linthresh=1e-2)
        ax.set(title=surface.name, xlabel="step", ylabel="loss")
    if digits_losses:
        ax = axes[-1]
        for name, losses in digits_losses.items():
            ax.plot(losses, _style(name), color=colours[name], lw=1.0, label=_short(name))
        ax.set(title="digits MLP (minibatch loss)", xlabel="step", ylabel="cross-entropy",
               yscale="log")
        ax.legend(fontsize=7, ncol=2)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------
# The whole comparison
# ----------------------------------------------------------------------------------


def run_comparison(out_dir: str | os.PathLike = RESULTS, *, steps: int = 300, digits_steps: int = 300,
                   first_order=FIRST_ORDER, second_order=tuple(SECOND_ORDER_2D),
                   network_second_order=tuple(SECOND_ORDER_NETWORK), hidden=(32,), surfaces=None) -> dict:
    """Run every optimizer on the three surfaces and the digits MLP; write the figures.

    Args:
      out_dir: where the PNGs and the JSON summary go.
      steps: updates per optimizer on each 2-D surface.
      digits_steps: updates per optimizer on the digits MLP (0 skips it).
      first_order, second_order, network_second_order: which optimizers
        (registry names); the defaults are the whole family.
      hidden: the digits MLP's hidden widths.
      surfaces: names of the surfaces to run (default: all of :data:`SURFACES`).

    Returns:
      ``{"files": [paths], "final_loss": {problem: {optimizer: loss}},
      "escape_step": {surface: {optimizer: step or None}}}`` — for the saddle,
      the step at which each run got below the floor (escaped), None if never.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = [sf for sf in SURFACES if surfaces is None or sf.name in surfaces]
    if surfaces is not None and len(chosen) != len(set(surfaces)):
        raise ValueError(f"unknown surfaces in {surfaces}; choose from {[sf.name for sf in SURFACES]}")
    names = list(first_order) + list(second_order) + list(network_second_order)
    colours = _colours(names)
    results: dict = {}
    for surface in chosen:
        results[surface.name] = {
            name: trajectory(surface.fn, surface.start,
                             optimizer_for(name, surface.learning_rates, SECOND_ORDER_2D),
                             steps * surface.step_scale, surface.floor)
            for name in list(first_order) + list(second_order)
        }
    digits_losses = {}
    if digits_steps:
        digits_losses = digits_curves(list(first_order) + list(network_second_order), steps=digits_steps,
                                      hidden=hidden)
    final = {surface: {name: float(losses[-1]) for name, (_, losses) in runs.items()}
             for surface, runs in results.items()}
    escape = {}
    for surface in chosen:
        if math.isfinite(surface.floor):  # the step at which each run left the saddle (None: never)
            escape[surface.name] = {
                name: (int(np.argmax(losses < surface.floor)) if np.any(losses < surface.floor) else None)
                for name, (_, losses) in results[surface.name].items()}
    if digits_losses:
        final["digits MLP"] = {name: float(np.mean(losses[-10:])) for name, losses in digits_losses.items()}
    summary = json.dumps({"steps": steps, "digits_steps": digits_steps, "final_loss": final, "escape_step": escape},
                         indent=2, allow_nan=True)
    files = publish(out_dir, {  # all or none, the summary last
        "optimizer_trajectories.png": lambda path: plot_trajectories(chosen, results, path, colours),
        "optimizer_loss_curves.png": lambda path: plot_loss_curves(chosen, results, digits_losses, path, colours),
        "optimizer_comparison.json": lambda path: path.write_text(summary),
    })
    return {"files": files, "final_loss": final, "escape_step": escape}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="updates on each 2-D surface (default: 300)")
    parser.add_argument("--digits-steps", type=int, default=300,
                        help="updates on the digits MLP, 0 to skip (default: 300)")
    parser.add_argument("--out", default=str(RESULTS), help=f"output directory (default: {RESULTS})")
    args = parser.parse_args(argv)
    out = run_comparison(args.out, steps=args.steps, digits_steps=args.digits_steps)
    for problem, losses in out["final_loss"].items():
        escape = out["escape_step"].get(problem)
        print(f"\n{problem}" + ("  (step at which the run escaped)" if escape else "  (final loss)"))
        if escape:
            ranked = sorted(escape.items(), key=lambda kv: math.inf if kv[1] is None else kv[1])
            for name, step in ranked:
                print(f"  {_short(name):28s} {'never' if step is None else step}")
            continue
        for name, loss in sorted(losses.items(), key=lambda kv: (math.isnan(kv[1]), kv[1])):
            print(f"  {_short(name):28s} {loss: .4g}")
    print("\nwrote", ", ".join(str(p) for p in out["files"]))
    return out


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()

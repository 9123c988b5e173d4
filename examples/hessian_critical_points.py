"""Critical points of a small network: the index rises with the loss (seeds 000 and 004 §3.2).

Seed 000: "critical points with larger loss are more likely saddles (eigenvalues of
both signs), those with smaller loss more likely minima (all eigenvalues positive)".
This example locates many critical points of a 2-8-2 tanh network (with a little
L2 regularisation) on the two-moons data — saddles included, which gradient
descent would avoid — by minimising ‖∇L‖² (Levenberg–Marquardt,
``find_critical_point``) from 64 random starts *in one vmapped, compiled call*,
classifies them all from their dense Hessian spectra in a second one
(``critical_point_summary``), and plots the index (fraction of negative
eigenvalues) against the loss. It then escapes the highest-loss saddle along its
most negative eigenvector, and for contrast refines a point that Adam found
into a minimum.

Everything runs in float64 (inside ``jax.enable_x64``): a critical point with
‖∇L‖ ≤ 1e-9 is out of float32's reach.

    python examples/hessian_critical_points.py      # ~30 s on 2 CPU cores
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
from jdl.hessian import critical_point_report, critical_point_summary, escape_saddle, find_critical_point

RESULTS = Path(__file__).resolve().parent / "results"
HIDDEN = 8
SHAPES = {"w1": (2, HIDDEN), "b1": (HIDDEN,), "w2": (HIDDEN, 2), "b2": (2,)}
L2 = 1e-3
DIVERGED = 50.0  # a "critical point" with a weight above this ran off to infinity


def loss(p: dict, batch: dict) -> jax.Array:
    """Cross-entropy of a 2-8-2 tanh network plus ``(L2/2)‖θ‖²``.

    A little L2 (seed 001/003) keeps every critical point at finite weights:
    without it, separable data has no minimum (the loss → 0 as ‖θ‖ → ∞).
    """
    h = jnp.tanh(batch["x"] @ p["w1"] + p["b1"][None, :])
    logits = h @ p["w2"] + p["b2"][None, :]
    nll = jnp.mean(jax.nn.logsumexp(logits, axis=1)
                   - jnp.take_along_axis(logits, batch["y"][:, None], axis=1)[:, 0])
    return nll + 0.5 * L2 * sum(jnp.sum(a * a) for a in jax.tree.leaves(p))


def random_start(key: jax.Array) -> dict:
    """Gaussian weights with a random overall scale in [0.1, 2]: starts near and far from the origin."""
    keys = jax.random.split(key, len(SHAPES))
    scale = jax.random.uniform(keys[0], (), minval=0.1, maxval=2.0)
    return {k: scale * jax.random.normal(kk, s, jnp.float64) for (k, s), kk in zip(SHAPES.items(), keys)}


def _adam_then_refine(batch: dict, start: dict, steps: int, max_steps: int):
    opt = optax.adam(0.05)

    @jax.jit
    def step(carry, _):
        p, state = carry
        updates, state = opt.update(jax.grad(loss)(p, batch), state, p)
        return (optax.apply_updates(p, updates), state), None

    (p, _), _ = jax.lax.scan(step, (start, opt.init(start)), None, length=steps)
    return find_critical_point(loss, p, batch, max_steps=max_steps, tol=1e-9)


def run(*, num_starts: int = 64, num_examples: int = 200, max_steps: int = 300, adam_steps: int = 3000,
        seed: int = 0) -> dict:
    """Locate, classify and compare critical points; return the rows and the summary figures."""
    with jax.enable_x64(True):
        ds = load_dataset("two_moons")
        batch = {"x": jnp.asarray(ds.train["x"][:num_examples], jnp.float64),
                 "y": jnp.asarray(ds.train["y"][:num_examples])}
        starts = jax.vmap(random_start)(jax.random.split(jax.random.key(seed), num_starts))
        find = jax.jit(jax.vmap(lambda p: find_critical_point(loss, p, batch, max_steps=max_steps, tol=1e-9)))
        found = find(starts)
        converged = np.asarray(found.converged)

        # Every point's report at once: critical_point_summary is pure, so it vmaps.
        summarise = jax.jit(jax.vmap(lambda p: critical_point_summary(loss, p, batch, method="dense",
                                                                      eigenvalue_rtol=1e-7)))
        summary = summarise(found.params)
        names = summary.class_names()
        largest = np.max(np.stack([np.abs(np.asarray(a)).reshape(num_starts, -1).max(1)
                                   for a in jax.tree.leaves(found.params)]), axis=0)
        # ‖∇L‖ → 0 only because the weights ran off to infinity: the "critical point" is at infinity.
        finite = largest <= DIVERGED
        rows = sorted(
            ({"loss": float(summary.loss[i]), "index": float(summary.index[i]), "class": str(names[i]),
              "gradient_norm": float(summary.gradient_norm[i]),
              "params": jax.tree.map(lambda a, i=i: a[i], found.params)}
             for i in np.flatnonzero(converged & finite)),
            key=lambda r: r["loss"])

        rho = None
        if len(rows) > 2:
            from scipy.stats import spearmanr

            # Many points share a loss and an index: tied values get their average rank.
            rho = float(spearmanr([r["loss"] for r in rows], [r["index"] for r in rows]).statistic)

        escape = None
        saddles = [r for r in rows if r["class"] == "saddle"]
        if saddles:
            esc = escape_saddle(loss, saddles[-1]["params"], batch)
            escape = {"loss_before": saddles[-1]["loss"], "eigenvalue": float(esc.eigenvalue),
                      "step_size": float(esc.step_size), "loss_after": float(esc.loss_after)}

        # For contrast, a minimum: train with Adam (which avoids saddles), then refine.
        trained = _adam_then_refine(batch, jax.tree.map(lambda a: a[0], starts), adam_steps, max_steps)
        r = critical_point_report(loss, trained.params, batch, eigenvalue_rtol=1e-7)
        return {
            "num_starts": num_starts,
            "num_converged": int(converged.sum()),
            "num_diverged": int(np.sum(converged & ~finite)),
            "rows": rows,
            "spearman": rho,
            "escape": escape,
            "trained": {"loss": float(r.loss), "gradient_norm": float(r.gradient_norm), "index": float(r.index),
                        "class": r.classification, "converged": bool(trained.converged)},
        }


def table(results: dict) -> str:
    lines = [f"{results['num_converged']} of {results['num_starts']} starts reached ‖∇L‖ ≤ 1e-9"]
    if results["num_diverged"]:
        lines.append(f"({results['num_diverged']} runs left out: weights diverged, "
                     "the 'critical point' is at infinity)")
    t = results["trained"]
    lines.append(f"Adam + refinement: loss {t['loss']:.4f}, ‖g‖ {t['gradient_norm']:.1e}, "
                 f"index {t['index']:.3f}, {t['class']}")
    lines.append(f"{'loss':>9}  {'index':>6}  class")
    lines += [f"{r['loss']:9.4f}  {r['index']:6.3f}  {r['class']}" for r in results["rows"]]
    if results["spearman"] is not None:
        lines.append(f"Spearman correlation of loss and index: {results['spearman']:.2f} (seed 000 predicts > 0)")
    e = results["escape"]
    if e:
        lines.append(f"escape from the saddle at loss {e['loss_before']:.4f}: λmin {e['eigenvalue']:.3e}, "
                     f"step {e['step_size']:.3g} → loss {e['loss_after']:.4f}")
    return "\n".join(lines)


def plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt

    rows, t = results["rows"], results["trained"]
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    colors = {"minimum": "C2", "saddle": "C1", "maximum": "C3", "degenerate": "C7"}
    for cls, color in colors.items():
        sel = [r for r in rows if r["class"] == cls]
        if sel:
            ax.scatter([r["loss"] for r in sel], [r["index"] for r in sel], c=color, label=cls, s=22)
    ax.scatter([t["loss"]], [t["index"]], marker="*", s=160, c="k", label=f"Adam, then refined ({t['class']})")
    ax.set_xlabel("loss at the critical point")
    ax.set_ylabel("index (fraction of negative eigenvalues)")
    ax.set_title("critical points of a 2-8-2 tanh net (two moons)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(**options) -> dict:
    results = run(**options)
    print(table(results))
    (path,) = publish(RESULTS, {"hessian_index_vs_loss.png": lambda path: plot(results, path)})
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    from _cli import options

    main(**options(run, __doc__))

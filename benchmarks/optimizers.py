"""Optimizer benchmark: jdl's optimizers against Optax's, and the cost of the Newton family.

(a) Every jdl first-order optimizer against its Optax counterpart
    (``jdl.optim.OPTAX_EQUIVALENTS``), in the same process:
    - *train step*: the whole jdl train step (digits MLP 64-256-256-10, batch
      128), ``steps_per_call`` steps fused in one ``lax.scan``;
    - *update*: the optimizer's ``update`` + ``apply_updates`` alone on the same
      parameters (a scan of 300 updates with a fixed gradient), which isolates the
      optimizer's own cost — the stricter comparison, since in a train step the
      forward and backward passes dominate.
    Goal: ratio jdl / Optax ≤ 1.05 for every pair.
(b) The Newton family's step time relative to an Adam step, as the parameter
    count of the digits MLP (64-h-10) grows: dense Newton, damped Newton and
    saddle-free Newton (``O(n²)`` memory, ``O(n³)`` per step; run up to
    ``--max-dense`` parameters) and the matrix-free damped Newton (CG) and
    saddle-free Newton (Lanczos), ``O(k n)``.

Timings come from repeats in which the contenders alternate (order flipped
every repeat), so that drift in the machine's load hits both sides of each
ratio alike. Ratios are of the minima over repeats, the estimator least
disturbed by other processes (which only ever add time); the ratios of the
medians are recorded too. Writes
``benchmarks/results/optimizers.json`` and ``optimizers_newton_cost.png`` and
prints the tables.

    python benchmarks/optimizers.py [--quick] [--part a|b|all]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

# jax runs its CPU LAPACK calls (Cholesky, eigh, solve) through scipy's OpenBLAS,
# whose worker threads spin against each other on a small shared machine: a
# 610 × 610 eigh measured 0.09 s single-threaded and 3.8 s with the default pool
# on 2 busy cores. One thread unless the caller says otherwise (set before the
# library loads, at the first LAPACK call).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jdl.optim as jo  # noqa: E402
from jdl.data import digits  # noqa: E402
from jdl.models import get_model  # noqa: E402
from jdl.nn import cross_entropy  # noqa: E402
from jdl.training import create_train_state, make_fused_train_step, make_train_step  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results", "optimizers.json")


def _timed(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def _interleaved_times(contenders: dict, repeats: int) -> dict:
    """Seconds per call of each zero-argument function over ``repeats`` rounds, calls alternating."""
    for fn in contenders.values():  # compile and warm up
        jax.block_until_ready(fn())
        jax.block_until_ready(fn())
    names = list(contenders)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(_timed(contenders[name]))
    return times


def _pair_stats(times: dict, steps: int) -> dict:
    """Per-step µs (median and minimum) and the jdl / Optax ratio of each.

    The minimum is the estimator least disturbed by other processes (which
    only ever add time); the median is reported alongside it.
    """
    median = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    return {
        "median_us": {k: 1e6 * v / steps for k, v in median.items()},
        "min_us": {k: 1e6 * v / steps for k, v in best.items()},
        "ratio_median": median["jdl"] / median["optax"],
        "ratio_min": best["jdl"] / best["optax"],
    }


# ----------------------------------------------------------------------------------
# (a) jdl vs Optax
# ----------------------------------------------------------------------------------


def _digits_setup(hidden, batch_size, steps, seed=0):
    ds = digits()
    data = {k: jnp.asarray(v) for k, v in ds.train.items()}
    n = int(data["y"].shape[0])
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(n) for _ in range(steps * batch_size // n + 1)])
    indices = jnp.asarray(idx[: steps * batch_size].reshape(steps, batch_size), jnp.int32)
    model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=hidden)
    sample = {k: v[:batch_size] for k, v in data.items()}
    return model, data, indices, sample


def _train_step_runner(model, data, indices, sample, opt):
    state = create_train_state(model, opt, key=0, batch=sample)
    fused = make_fused_train_step(model, cross_entropy, opt, loop="scan")
    return lambda: fused(state, data, indices)[0].params


def _update_runner(params, opt, steps):
    grads = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)

    @jax.jit
    def run(params):
        def body(carry, _):
            p, s = carry
            u, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, opt.init(params)), None, length=steps)[0][0]

    return lambda: run(params)


def compare_with_optax(*, repeats: int, steps: int, update_steps: int, hidden=(256, 256),
                       batch_size=128) -> list[dict]:
    model, data, indices, sample = _digits_setup(hidden, batch_size, steps)
    params = model.init(jax.random.key_data(jax.random.key(0)), sample["x"]).params
    rows = []
    for name, pair in jo.OPTAX_EQUIVALENTS.items():
        lr = 1.0 if name == "jdl:adadelta" else 1e-3
        step = _interleaved_times({
            "jdl": _train_step_runner(model, data, indices, sample, pair.jdl(lr)),
            "optax": _train_step_runner(model, data, indices, sample, pair.optax(lr)),
        }, repeats)
        update = _interleaved_times({
            "jdl": _update_runner(params, pair.jdl(lr), update_steps),
            "optax": _update_runner(params, pair.optax(lr), update_steps),
        }, repeats)
        rows.append({"optimizer": name, "train_step": _pair_stats(step, steps),
                     "update": _pair_stats(update, update_steps)})
        t, u = rows[-1]["train_step"], rows[-1]["update"]
        print(f"  {name:24s} train step {t['min_us']['jdl']:7.1f} / {t['min_us']['optax']:7.1f} µs: "
              f"{t['ratio_min']:.3f} (median {t['ratio_median']:.3f})   update {u['min_us']['jdl']:6.1f} / "
              f"{u['min_us']['optax']:6.1f} µs: {u['ratio_min']:.3f} (median {u['ratio_median']:.3f})",
              flush=True)
    return rows


# ----------------------------------------------------------------------------------
# (b) Newton family vs Adam
# ----------------------------------------------------------------------------------

NEWTON_FAMILY = {
    "jdl:newton": (jo.newton, True),
    "jdl:damped_newton": (jo.damped_newton, True),
    "jdl:saddle_free_newton": (jo.saddle_free_newton, True),
    "jdl:damped_newton_cg": (lambda: jo.damped_newton_cg(max_iters=50), False),
    "jdl:saddle_free_newton_lanczos": (lambda: jo.saddle_free_newton_lanczos(num_steps=20), False),
}


def newton_cost_curve(*, widths, repeats: int, max_dense: int, batch_size=128) -> list[dict]:
    ds = digits()
    data = {k: jnp.asarray(v[:batch_size]) for k, v in ds.train.items()}
    rows = []
    for width in widths:
        model = get_model("mlp", ds.input_shape, ds.num_classes, hidden=(width,))
        contenders = {}
        n = None
        for name, (factory, dense) in {"adam": (lambda: optax.adam(1e-3), False), **NEWTON_FAMILY}.items():
            opt = factory()
            state = create_train_state(model, opt, key=0, batch=data)
            n = sum(int(p.size) for p in jax.tree.leaves(state.params))
            if dense and n > max_dense:
                continue
            step = make_train_step(model, cross_entropy, opt)
            contenders[name] = (lambda step=step, state=state: step(state, data)[0].params)
        samples = _interleaved_times(contenders, repeats)
        best = {k: min(v) for k, v in samples.items()}
        median = {k: statistics.median(v) for k, v in samples.items()}
        row = {"hidden": width, "parameters": n, "adam_ms": 1e3 * best["adam"],
               "ms": {k: 1e3 * v for k, v in best.items() if k != "adam"},
               "ratio_to_adam": {k: v / best["adam"] for k, v in best.items() if k != "adam"},
               "ratio_to_adam_median": {k: v / median["adam"] for k, v in median.items() if k != "adam"}}
        rows.append(row)
        ratios = "  ".join(f"{k.removeprefix('jdl:')} {v:7.1f}×" for k, v in row["ratio_to_adam"].items())
        print(f"  n = {n:6d}  adam {row['adam_ms']:6.2f} ms   {ratios}", flush=True)
    return rows


def plot_cost_curve(curve: list[dict], path: str) -> None:
    """Step time / Adam step time against the parameter count, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in NEWTON_FAMILY:
        points = [(row["parameters"], row["ratio_to_adam"][name]) for row in curve if name in row["ratio_to_adam"]]
        if points:
            n, ratio = zip(*points)
            ax.plot(n, ratio, "o--" if NEWTON_FAMILY[name][1] else "o-", label=name.removeprefix("jdl:"))
    ax.set(xscale="log", yscale="log", xlabel="parameters n (digits MLP 64-h-10)",
           ylabel="step time / Adam step time", title="Newton family: cost per step (dashed: dense)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--max-dense", type=int, default=2500, help="largest n for the dense methods")
    parser.add_argument("--part", choices=("a", "b", "all"), default="all",
                        help="(a) jdl vs Optax, (b) Newton family vs Adam, or both")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 21)
    widths = (4, 16) if args.quick else (4, 8, 16, 32, 64, 128)

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    result = {
        "jax": jax.__version__, "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
        "platform": platform.platform(), "cpus": os.cpu_count(), "load_average_start": os.getloadavg()[0],
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "repeats": repeats,
    }
    if os.path.exists(args.out):  # keep the other part's figures when re-running one part
        with open(args.out) as f:
            previous = json.load(f)
        result = {**{k: previous[k] for k in ("jdl_vs_optax", "worst_ratio", "newton_family_vs_adam")
                     if k in previous}, **result}
    if args.part in ("a", "all"):
        print("(a) jdl / Optax per step, digits MLP 64-256-256-10, batch 128; ratio = jdl / Optax "
              "(of the minimum over repeats; median in brackets)")
        pairs = compare_with_optax(repeats=repeats, steps=20 if args.quick else 100,
                                   update_steps=50 if args.quick else 300)
        worst = {part: {stat: max(r[part][stat] for r in pairs) for stat in ("ratio_min", "ratio_median")}
                 for part in ("train_step", "update")}
        print(f"worst jdl/Optax ratio (min; median): train step {worst['train_step']['ratio_min']:.3f}; "
              f"{worst['train_step']['ratio_median']:.3f}, update alone {worst['update']['ratio_min']:.3f}; "
              f"{worst['update']['ratio_median']:.3f} (goal ≤ 1.05)")
        result.update(jdl_vs_optax=pairs, worst_ratio=worst)
    if args.part in ("b", "all"):
        print("(b) Newton family step time / Adam step time (minimum over repeats), digits MLP 64-h-10, "
              "batch 128")
        curve = newton_cost_curve(widths=widths, repeats=max(5, repeats // 2), max_dense=args.max_dense)
        result.update(newton_family_vs_adam=curve)
        plot_cost_curve(curve, os.path.splitext(args.out)[0] + "_newton_cost.png")
    result["load_average_end"] = os.getloadavg()[0]

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print("wrote", args.out)
    return result


if __name__ == "__main__":
    main()

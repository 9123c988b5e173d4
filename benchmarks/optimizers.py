"""Optimizer benchmark: jdl's optimizers against Optax's, and the cost of the Newton family.

(a) Every jdl first-order optimizer against its Optax counterpart
    (``jdl.optim.OPTAX_EQUIVALENTS``), in the same process:
    - *train step*: the whole jdl train step (digits MLP 64-256-256-10, batch
      128), 100 steps fused in one ``lax.scan``;
    - *update*: the optimizer's ``update`` + ``apply_updates`` alone on the same
      parameters (a scan of 300 updates), which isolates the optimizer's own
      cost — the stricter comparison, since in a train step the forward and
      backward passes dominate. The gradients are an argument of the compiled
      function, a different one each step, so XLA can neither fold nor hoist
      the optimizer's gradient terms.
    Goal: ratio jdl / Optax ≤ 1.05 for every pair.
(b) The Newton family's cost per train step relative to Adam's, as the
    parameter count of the digits MLP (64-h-10) grows: dense Newton, damped
    Newton and saddle-free Newton (``O(n²)`` memory, ``O(n³)`` per step; run up
    to ``--max-dense`` parameters) and the matrix-free damped Newton (CG) and
    saddle-free Newton (Lanczos), ``O(k n)``. Every contender runs its steps
    fused in one ``lax.scan`` call, as ``fit`` runs them (200 steps; 5 for the
    dense methods, whose steps take milliseconds), from the same initial state
    along the same minibatches; the ratios are of the time per step. One
    dispatched ``make_train_step`` call per contender is timed too ("per call,
    dispatch included"): for a small network that is mostly Python dispatch,
    and its ratios understate what a step costs.

Timings come from repeats in which the contenders alternate (order flipped
every repeat), so that drift in the machine's load hits both sides of each
ratio alike. Ratios are of the minima over repeats, the estimator least
disturbed by other processes (which only ever add time); the ratios of the
medians are recorded too. Each part's section of the results holds its own run
details (machine, settings, load), so re-running one part keeps the other's
figures with the run they came from. Writes
``benchmarks/results/optimizers.json`` and ``optimizers_newton_cost.png`` (with
``--quick``, a smoke run, a scratch file in the system's temporary directory
unless ``--out`` names one) and prints the tables.

    python benchmarks/optimizers.py [--quick] [--part a|b|all] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
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
from jdl._io import write_bytes_atomic, write_json_atomic  # noqa: E402
from jdl.data import digits  # noqa: E402
from jdl.models import get_model  # noqa: E402
from jdl.nn import cross_entropy  # noqa: E402
from jdl.training import create_train_state, make_fused_train_step, make_train_step  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results", "optimizers.json")
QUICK_RESULTS = os.path.join(tempfile.gettempdir(), "jdl_benchmarks", "optimizers.json")
PARTS = ("jdl_vs_optax", "newton_family_vs_adam")


def _timed(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def _interleaved_times(contenders: dict, repeats: int, outputs: dict | None = None) -> dict:
    """Seconds per call of each zero-argument function over ``repeats`` rounds, calls alternating.

    ``outputs``, if given, receives each function's result from its warm-up call.
    """
    for name, fn in contenders.items():  # compile and warm up
        jax.block_until_ready(fn())
        result = jax.block_until_ready(fn())
        if outputs is not None:
            outputs[name] = result
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
    """One call of ``len(indices)`` train steps fused in a ``lax.scan``; returns ``(state, metrics)``."""
    state = create_train_state(model, opt, key=0, batch=sample)
    fused = make_fused_train_step(model, cross_entropy, opt, loop="scan")
    return lambda: fused(state, data, indices)


def _update_runner(params, opt, steps, *, num_gradients=4):
    """``steps`` of ``update`` + ``apply_updates`` in one ``lax.scan``.

    The gradients are an argument of the compiled function: captured as a
    constant, XLA folds the optimizer's gradient terms (``g²`` and the like)
    at compile time, and the same gradient every step lets it hoist them out
    of the loop. So step ``t`` reads gradient ``t mod num_gradients`` of a
    small stack of random ones, which stays in cache.
    """
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    grads = treedef.unflatten([1e-3 * jax.random.normal(k, (num_gradients, *p.shape), p.dtype)
                               for k, p in zip(keys, leaves)])

    @jax.jit
    def run(params, grads):
        def body(carry, t):
            p, s = carry
            g = jax.tree.map(lambda stack: stack[t % num_gradients], grads)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, opt.init(params)), jnp.arange(steps))[0][0]

    return lambda: run(params, grads)


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


def _against_adam(times: dict, divisor: dict) -> dict:
    """Milliseconds (minimum over repeats, each time divided by ``divisor``) and ratios to Adam's."""
    best = {k: min(v) / divisor[k] for k, v in times.items()}
    median = {k: statistics.median(v) / divisor[k] for k, v in times.items()}
    return {"ms": {k: 1e3 * v for k, v in best.items()},
            "ratio_to_adam": {k: v / best["adam"] for k, v in best.items() if k != "adam"},
            "ratio_to_adam_median": {k: v / median["adam"] for k, v in median.items() if k != "adam"}}


def newton_cost_curve(*, widths, repeats: int, max_dense: int, steps: int, dense_steps: int,
                      batch_size=128) -> list[dict]:
    """Cost per train step of each Newton-family method and of Adam, as the digits MLP widens.

    Each contender runs ``steps`` train steps (``dense_steps`` for the dense
    methods) fused into one ``lax.scan`` call, from the same initial state along
    the same minibatches, so Python dispatch is paid once per call as in ``fit``.
    The work of a step follows the run (adaptive damping, rejected steps, CG
    stopping early), as it does in training. On the project's 2-core CPU, at
    310 parameters, an Adam step took about 20 µs inside the scan but about
    110 µs as a dispatched call, which is why the per-call ratios (also
    recorded, ``make_train_step`` on the first minibatch from the initial
    state) understate what a Newton-family step costs.
    """
    rows = []
    for width in widths:
        model, data, indices, sample = _digits_setup((width,), batch_size, steps)
        n = sum(int(p.size) for p in jax.tree.leaves(
            model.init(jax.random.key_data(jax.random.key(0)), sample["x"]).params))
        fused, per_call, steps_per_call = {}, {}, {}
        for name, (factory, dense) in {"adam": (lambda: optax.adam(1e-3), False), **NEWTON_FAMILY}.items():
            if dense and n > max_dense:
                continue
            steps_per_call[name] = dense_steps if dense else steps
            fused[name] = _train_step_runner(model, data, indices[: steps_per_call[name]], sample, factory())
            opt = factory()
            step = make_train_step(model, cross_entropy, opt)
            state = create_train_state(model, opt, key=0, batch=sample)
            per_call[name] = lambda step=step, state=state: step(state, sample)
        outputs = {}
        per_step = _against_adam(_interleaved_times(fused, repeats, outputs), steps_per_call)
        dispatched = _against_adam(_interleaved_times(per_call, repeats), dict.fromkeys(per_call, 1))
        rows.append({
            "hidden": width, "parameters": n, "steps_per_call": steps_per_call,
            "per_step_fused": per_step,
            "per_call_dispatch_included": dispatched,
            # a diverged run (NaN loss) would time the wrong work; the loss at the call's first and last step shows it
            "loss_first_last": {k: [float(m["loss"][0]), float(m["loss"][-1])] for k, (_, m) in outputs.items()},
        })
        fused_ratios = "  ".join(f"{k.removeprefix('jdl:')} {v:7.1f}×" for k, v in per_step["ratio_to_adam"].items())
        call_ratios = "  ".join(f"{k.removeprefix('jdl:')} {v:7.1f}×"
                                for k, v in dispatched["ratio_to_adam"].items())
        print(f"  n = {n:6d}  per step, fused: adam {1e3 * per_step['ms']['adam']:7.1f} µs   {fused_ratios}\n"
              f"  {'':10s}  per call, dispatch included: adam {1e3 * dispatched['ms']['adam']:7.1f} µs   "
              f"{call_ratios}", flush=True)
    return rows


def plot_cost_curve(curve: list[dict], path: str) -> None:
    """Time per fused step / Adam's against the parameter count, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in NEWTON_FAMILY:
        points = [(row["parameters"], row["per_step_fused"]["ratio_to_adam"][name])
                  for row in curve if name in row["per_step_fused"]["ratio_to_adam"]]
        if points:
            n, ratio = zip(*points)
            ax.plot(n, ratio, "o--" if NEWTON_FAMILY[name][1] else "o-", label=name.removeprefix("jdl:"))
    ax.set(xscale="log", yscale="log", xlabel="parameters n (digits MLP 64-h-10)",
           ylabel="time per step / Adam's (steps fused in lax.scan)",
           title="Newton family: cost per step (dashed: dense)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=110, format="png")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, image.getvalue())
    plt.close(fig)


def _run_details(**settings) -> dict:
    """The machine, settings and load of one part's run, stored in that part's section."""
    return {
        "jax": jax.__version__, "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average_start": os.getloadavg()[0], **settings,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, steps and sizes (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--max-dense", type=int, default=2500, help="largest n for the dense methods")
    parser.add_argument("--part", choices=("a", "b", "all"), default="all",
                        help="(a) jdl vs Optax, (b) Newton family vs Adam, or both")
    parser.add_argument("--out", default=None,
                        help=f"results file (default {RESULTS}; with --quick, {QUICK_RESULTS})")
    args = parser.parse_args(argv)
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    repeats = args.repeats or (5 if args.quick else 21)

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    result = {}
    if os.path.exists(out):  # keep the other part's section, run details included, when re-running one part
        with open(out) as f:
            previous = json.load(f)
        # a section without its own run details is from the older layout; it is not carried over
        result = {k: v for k, v in previous.items() if k in PARTS and isinstance(v, dict) and "run" in v}
    if args.part in ("a", "all"):
        steps, update_steps = (20, 50) if args.quick else (100, 300)
        run = _run_details(repeats=repeats, steps_per_call=steps, update_steps_per_call=update_steps)
        print("(a) jdl / Optax per step, digits MLP 64-256-256-10, batch 128; ratio = jdl / Optax "
              "(of the minimum over repeats; median in brackets)")
        pairs = compare_with_optax(repeats=repeats, steps=steps, update_steps=update_steps)
        worst = {part: {stat: max(r[part][stat] for r in pairs) for stat in ("ratio_min", "ratio_median")}
                 for part in ("train_step", "update")}
        print(f"worst jdl/Optax ratio (min; median): train step {worst['train_step']['ratio_min']:.3f}; "
              f"{worst['train_step']['ratio_median']:.3f}, update alone {worst['update']['ratio_min']:.3f}; "
              f"{worst['update']['ratio_median']:.3f} (goal ≤ 1.05)")
        run["load_average_end"] = os.getloadavg()[0]
        result["jdl_vs_optax"] = {"run": run, "pairs": pairs, "worst_ratio": worst}
    if args.part in ("b", "all"):
        widths = (4, 16) if args.quick else (4, 8, 16, 32, 64, 128)
        steps, dense_steps = (20, 2) if args.quick else (200, 5)
        run = _run_details(repeats=max(5, repeats // 2), widths=widths, steps_per_call=steps,
                           dense_steps_per_call=dense_steps, max_dense=args.max_dense)
        print(f"(b) Newton family time per step / Adam's (minimum over repeats), digits MLP 64-h-10, batch 128; "
              f"per step: {steps} steps ({dense_steps} for the dense methods) fused in one lax.scan call")
        curve = newton_cost_curve(widths=widths, repeats=run["repeats"], max_dense=args.max_dense,
                                  steps=steps, dense_steps=dense_steps)
        run["load_average_end"] = os.getloadavg()[0]
        result["newton_family_vs_adam"] = {"run": run, "by_width": curve}
        plot_cost_curve(curve, os.path.splitext(out)[0] + "_newton_cost.png")

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_json_atomic(out, result)  # an interrupted run leaves the previous file whole (read back by --part)
    print("wrote", out)
    return result


if __name__ == "__main__":
    main()

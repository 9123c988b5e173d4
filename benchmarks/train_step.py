"""Train-step benchmark: jdl against plain Flax + Optax + jax.jit, in one process.

(a) jdl's ``make_train_step`` vs the same MLP (64-256-256-10, batch 128, Adam)
    written by hand in the Flax performance guide's style (split once, plain
    ``jax.jit`` over ``(graphdef, state)``), each as a Python loop of 100
    jitted steps, both reporting the loss and the minibatch accuracy (jdl's
    default metrics; the Flax MNIST tutorial's step does the same). Goal:
    within 3 %. The ratio against a hand-written step that reports the loss
    alone is recorded too (the accuracy costs about 10 µs a step on CPU).
(b) jdl's fused K-step form (``lax.scan``) vs a per-step Python loop, on a
    dispatch-bound XOR network (2-16-2, batch 4, K = 500; goal ≥ 5×) and on
    the digits MLP (K = 50; goal: never slower).
(c) the same on a small CNN on 8×8 digits (K = 20), where XLA's CPU backend
    runs convolutions inside loops far slower than outside: jdl's
    ``loop="auto"`` must detect it and never be slower than the per-step loop.
    The raw ``lax.scan`` time is reported to show the effect.

Timings come from repeats in which the contenders alternate (order flipped
every repeat), so that drift in the machine's load hits all of them alike.
Ratios are of the minima over repeats, the estimator least disturbed by other
processes (which only ever add time); the ratios of the medians are recorded
too. (c) runs a third of the repeats (at least 3; its raw ``lax.scan`` takes
about 0.75 s a call); each section records the repeats it ran. Times in (a)
are seconds per step, in (b) and (c) seconds per call of ``steps_per_call``
steps. Writes ``benchmarks/results/train_step.json`` (with
``--quick``, a smoke run, a scratch file in the system's temporary directory
unless ``--out`` names one).

    python benchmarks/train_step.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jdl._io import write_json_atomic
from jdl.data import digits, xor
from jdl.models import MLP, SmallCNN
from jdl.nn import cross_entropy
from jdl.training import create_train_state, from_nnx, make_fused_train_step, make_train_step

RESULTS = os.path.join(os.path.dirname(__file__), "results", "train_step.json")
QUICK_RESULTS = os.path.join(tempfile.gettempdir(), "jdl_benchmarks", "train_step.json")


def _block(tree):
    jax.block_until_ready(tree)
    return tree


def interleaved(fns: dict, *, repeats: int) -> dict:
    """Seconds per call of each function, ``{"min": ..., "median": ...}`` over
    ``repeats`` rounds in which the functions alternate, the order flipped every
    round, so that machine noise hits all of them alike and none always runs first."""
    for fn in fns.values():  # warm up (compile)
        fn()
    names = list(fns)
    samples = {k: [] for k in names}
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            fns[k]()
            samples[k].append(time.perf_counter() - t)
    return {k: {"min": min(v), "median": statistics.median(v)} for k, v in samples.items()}


def _scaled(t: dict, factor: float) -> dict:
    return {stat: v * factor for stat, v in t.items()}


def _ratio(numerator: dict, denominator: dict) -> dict:
    """Ratio of the minima and ratio of the medians."""
    return {stat: numerator[stat] / denominator[stat] for stat in ("min", "median")}


# --- (a) jdl step vs hand-written Flax + Optax -------------------------------------------------


def hand_written_step(module: nnx.Module, optimizer, *, accuracy: bool = True):
    """The plain way: split once, jit a function of (params, opt_state, batch).

    With ``accuracy`` it reports the minibatch accuracy beside the loss, as
    jdl's step does by default (and as the Flax MNIST tutorial's step does):
    the same work on both sides. Without, it is the bare loss-only step.
    """
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p, rest, copy=True)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics = {"loss": loss}
        if accuracy:
            metrics["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == y)
        return optax.apply_updates(params, updates), opt_state, metrics

    return step, params


def bench_step_overhead(steps: int, repeats: int) -> dict:
    ds = digits()
    x = jnp.asarray(ds.train["x"][:128])
    y = jnp.asarray(ds.train["y"][:128])
    opt = optax.adam(1e-3)

    hand = {name: hand_written_step(MLP(64, (256, 256), 10, rngs=nnx.Rngs(0)), opt, accuracy=accuracy)
            for name, accuracy in (("hand", True), ("hand_loss_only", False))}
    model = from_nnx(MLP(64, (256, 256), 10, rngs=nnx.Rngs(0)))
    state = create_train_state(model, opt, key=0, batch={"x": x, "y": y})
    step_jdl = make_train_step(model, cross_entropy, opt)
    batch = {"x": x, "y": y}
    box = {name: (params, opt.init(params)) for name, (_, params) in hand.items()}
    box["jdl"] = state

    def hand_loop(name):
        step = hand[name][0]

        def run():
            p, s = box[name]
            for _ in range(steps):
                p, s, _ = step(p, s, x, y)
            box[name] = _block((p, s))

        return run

    def run_jdl():
        st = box["jdl"]
        for _ in range(steps):
            st, _ = step_jdl(st, batch)
        box["jdl"] = _block(st)

    t = interleaved({"hand": hand_loop("hand"), "jdl": run_jdl, "hand_loss_only": hand_loop("hand_loss_only")},
                    repeats=repeats)
    return {
        "what": "MLP 64-256-256-10, batch 128, Adam; per-step Python loop of jitted steps; both report "
                "loss and accuracy (hand_loss_only: the hand-written step without the accuracy)",
        "hand_written_s_per_step": _scaled(t["hand"], 1 / steps),
        "hand_written_loss_only_s_per_step": _scaled(t["hand_loss_only"], 1 / steps),
        "jdl_s_per_step": _scaled(t["jdl"], 1 / steps),
        "ratio_jdl_over_hand": _ratio(t["jdl"], t["hand"]),
        "ratio_jdl_over_hand_loss_only": _ratio(t["jdl"], t["hand_loss_only"]),
        "repeats": repeats,
        "goal": "<= 1.03",
    }


# --- (b), (c) fused vs per-step loop -----------------------------------------------------------


def bench_fused(name: str, model, data: dict, batch_size: int, steps: int, repeats: int, opt) -> dict:
    data = {k: jnp.asarray(v) for k, v in data.items()}
    n = data["y"].shape[0]
    rng = np.random.default_rng(0)
    indices = jnp.asarray(rng.integers(0, n, size=(steps, batch_size)), jnp.int32)
    state = create_train_state(model, opt, key=0, batch={k: v[:batch_size] for k, v in data.items()})
    single = make_train_step(model, cross_entropy, opt)
    fused_auto = make_fused_train_step(model, cross_entropy, opt, loop="auto")
    fused_scan = make_fused_train_step(model, cross_entropy, opt, loop="scan")
    batches = [{k: v[idx] for k, v in data.items()} for idx in indices]  # pre-gathered for the loop

    def run_loop():
        st = state
        for b in batches:
            st, _ = single(st, b)
        _block(st)

    def run_auto():
        _block(fused_auto(state, data, indices))

    def run_scan():
        _block(fused_scan(state, data, indices))

    t = interleaved({"loop": run_loop, "fused_auto": run_auto, "scan": run_scan}, repeats=repeats)
    return {
        "what": name,
        "steps_per_call": steps,
        "repeats": repeats,
        "loop_kind_chosen": fused_auto.loop_kind(state, data, indices),
        "python_loop_s_per_call": t["loop"],
        "fused_auto_s_per_call": t["fused_auto"],
        "raw_scan_s_per_call": t["scan"],
        "speedup_fused_auto_over_loop": _ratio(t["loop"], t["fused_auto"]),
        "speedup_raw_scan_over_loop": _ratio(t["loop"], t["scan"]),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--out", default=None, help=f"results file (default {RESULTS}; with --quick, {QUICK_RESULTS})")
    args = parser.parse_args(argv)
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    repeats = 3 if args.quick else 15

    results = {
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeats": repeats,
    }
    results["a_step_vs_hand_written"] = bench_step_overhead(steps=100, repeats=repeats)

    x = xor()
    results["b_xor"] = bench_fused(
        "XOR 2-16-2, batch 4, SGD",
        from_nnx(MLP(2, (16,), 2, rngs=nnx.Rngs(0))),
        x.train,
        4,
        steps=500,
        repeats=repeats,
        opt=optax.sgd(0.1),
    )
    results["b_xor"]["goal"] = "fused >= 5x the per-step loop"
    d = digits()
    results["b_digits_mlp"] = bench_fused(
        "digits MLP 64-256-256-10, batch 128, Adam",
        from_nnx(MLP(64, (256, 256), 10, rngs=nnx.Rngs(0))),
        d.train,
        128,
        steps=50,
        repeats=repeats,
        opt=optax.adam(1e-3),
    )
    results["b_digits_mlp"]["goal"] = "fused never slower than the loop (>= 1.0x)"
    di = digits(flatten=False)
    results["c_digits_cnn"] = bench_fused(
        "digits small CNN (conv16-conv32-pool-64-10), batch 128, Adam",
        from_nnx(SmallCNN(1, 10, rngs=nnx.Rngs(0))),
        di.train,
        128,
        steps=20,
        repeats=max(3, repeats // 3),
        opt=optax.adam(1e-3),
    )
    results["c_digits_cnn"]["goal"] = "fused (auto) never slower than the loop (>= ~1.0x)"

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_json_atomic(out, results)  # an interrupted run leaves the previous results whole

    a = results["a_step_vs_hand_written"]["ratio_jdl_over_hand"]
    print(f"device: {results['device']} ({results['backend']}), jax {results['jax']}")
    print(f"{'benchmark (ratio of minima; of medians)':<44} {'figure':>15}  goal")
    print(f"{'(a) jdl step / hand-written Flax+Optax':<44} {a['min']:>7.3f}; {a['median']:.3f}x  <= 1.03x")
    bare = results["a_step_vs_hand_written"]["ratio_jdl_over_hand_loss_only"]
    print(f"{'    against a loss-only hand-written step':<44} {bare['min']:>7.3f}; {bare['median']:.3f}x")
    for key, label in (
        ("b_xor", "(b) XOR: loop / fused"),
        ("b_digits_mlp", "(b) digits MLP: loop / fused"),
        ("c_digits_cnn", "(c) digits CNN: loop / fused(auto)"),
    ):
        r = results[key]
        fused, scan = r["speedup_fused_auto_over_loop"], r["speedup_raw_scan_over_loop"]
        print(
            f"{label:<44} {fused['min']:>7.2f}; {fused['median']:.2f}x  {r['goal']} "
            f"[{r['loop_kind_chosen']}; raw scan {scan['min']:.2f}; {scan['median']:.2f}x; {r['repeats']} repeats]"
        )
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()

"""Train-step benchmark: jdl against plain Flax + Optax + jax.jit, in one process.

(a) jdl's ``make_train_step`` vs the same MLP (64-256-256-10, batch 128, Adam)
    written by hand in the Flax performance guide's style (split once, plain
    ``jax.jit`` over ``(graphdef, state)``). Goal: within 3 %.
(b) jdl's fused K-step form (``lax.scan``) vs a per-step Python loop, on a
    dispatch-bound XOR network (2-16-2, batch 4; goal ≥ 5×) and on the digits
    MLP (goal: never slower).
(c) the same on a small CNN on 8×8 digits, where XLA's CPU backend runs
    convolutions inside loops far slower than outside: jdl's ``loop="auto"``
    must detect it and never be slower than the per-step loop. The raw
    ``lax.scan`` time is reported to show the effect.

Timings are medians over interleaved repeats; the figures that matter are the
ratios, measured in the same run. Writes ``benchmarks/results/train_step.json``.

    python benchmarks/train_step.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jdl.data import digits, xor
from jdl.models import MLP, SmallCNN
from jdl.nn import cross_entropy
from jdl.training import create_train_state, from_nnx, make_fused_train_step, make_train_step

RESULTS = os.path.join(os.path.dirname(__file__), "results", "train_step.json")


def _block(tree):
    jax.block_until_ready(tree)
    return tree


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved(fns: dict, *, repeats: int) -> dict:
    """Median seconds per call of each function, run in alternation so that
    machine noise hits all of them alike."""
    for fn in fns.values():  # warm up (compile)
        fn()
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


# --- (a) jdl step vs hand-written Flax + Optax -------------------------------------------------


def hand_written_step(module: nnx.Module, optimizer):
    """The plain way: split once, jit a function of (params, opt_state, batch)."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p, rest, copy=True)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, params


def bench_step_overhead(steps: int, repeats: int) -> dict:
    ds = digits()
    x = jnp.asarray(ds.train["x"][:128])
    y = jnp.asarray(ds.train["y"][:128])
    opt = optax.adam(1e-3)

    step_hand, params = hand_written_step(MLP(64, (256, 256), 10, rngs=nnx.Rngs(0)), opt)
    opt_state = opt.init(params)
    model = from_nnx(MLP(64, (256, 256), 10, rngs=nnx.Rngs(0)))
    state = create_train_state(model, opt, key=0, batch={"x": x, "y": y})
    step_jdl = make_train_step(model, cross_entropy, opt)
    batch = {"x": x, "y": y}
    box = {"hand": (params, opt_state), "jdl": state}

    def run_hand():
        p, s = box["hand"]
        for _ in range(steps):
            p, s, _ = step_hand(p, s, x, y)
        box["hand"] = _block((p, s))

    def run_jdl():
        st = box["jdl"]
        for _ in range(steps):
            st, _ = step_jdl(st, batch)
        box["jdl"] = _block(st)

    t = interleaved({"hand": run_hand, "jdl": run_jdl}, repeats=repeats)
    return {
        "what": "MLP 64-256-256-10, batch 128, Adam; per-step Python loop of jitted steps",
        "hand_written_s_per_step": t["hand"] / steps,
        "jdl_s_per_step": t["jdl"] / steps,
        "ratio_jdl_over_hand": t["jdl"] / t["hand"],
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
        "loop_kind_chosen": fused_auto.loop_kind(state, data, indices),
        "per_step_loop_s": t["loop"],
        "fused_auto_s": t["fused_auto"],
        "raw_scan_s": t["scan"],
        "speedup_fused_auto_over_loop": t["loop"] / t["fused_auto"],
        "speedup_raw_scan_over_loop": t["loop"] / t["scan"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 15

    results = {
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
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

    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=2)

    a = results["a_step_vs_hand_written"]
    print(f"device: {results['device']} ({results['backend']}), jax {results['jax']}")
    print(f"{'benchmark':<44} {'figure':>10}  goal")
    print(f"{'(a) jdl step / hand-written Flax+Optax':<44} {a['ratio_jdl_over_hand']:>9.3f}x  <= 1.03x")
    for key, label in (
        ("b_xor", "(b) XOR: loop / fused"),
        ("b_digits_mlp", "(b) digits MLP: loop / fused"),
        ("c_digits_cnn", "(c) digits CNN: loop / fused(auto)"),
    ):
        r = results[key]
        print(
            f"{label:<44} {r['speedup_fused_auto_over_loop']:>9.2f}x  {r['goal']} "
            f"[{r['loop_kind_chosen']}; raw scan {r['speedup_raw_scan_over_loop']:.2f}x]"
        )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

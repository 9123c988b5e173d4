"""``jdl hessian RUN_DIR``: the curvature of a trained checkpoint.

    jdl train --hidden 32 --out runs/digits-mlp
    jdl hessian runs/digits-mlp            # loss, ‖g‖, extreme eigenvalues, κ, index, trace, density

Registered on the main parser by :func:`add_parser`; the work is done by
:func:`jdl.hessian.analysis.hessian_analysis`.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys

__all__ = ["add_parser", "cmd_hessian", "format_report"]

SPLITS = ("train", "val", "test")
#: SLQ index bounds wider than this are flagged as unresolved in the report.
UNRESOLVED_INDEX = 0.05


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _at_least_four(text: str) -> int:
    value = _positive_int(text)
    if value < 4:
        raise argparse.ArgumentTypeError(
            f"Hutch++ needs at least 4 products for a trace with a standard error (3 leave one random "
            f"probe, whose spread is undefined), got {text!r}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``jdl hessian`` on the main parser's subparsers."""
    from jdl.cli import DefaultsHelpFormatter

    p = subparsers.add_parser(
        "hessian",
        help="analyse the Hessian of a trained run's checkpoint",
        description=(
            "Analyse the loss Hessian at a checkpoint written by `jdl train`: loss, gradient norm, "
            "top-k and bottom-k eigenvalues, condition number, index (fraction of negative "
            "eigenvalues), curvature classification, trace (Hutch++ ± standard error), and a "
            "spectral-density plot (stochastic Lanczos quadrature) saved in the run directory."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `jdl train --out`")
    p.add_argument("--top-k", type=_positive_int, default=5, help="eigenvalues to report at each end")
    p.add_argument("--num-probes", type=_positive_int, default=10, help="SLQ probe vectors for the density")
    p.add_argument("--num-steps", type=_positive_int, default=80, help="Lanczos steps (ends and per SLQ probe)")
    p.add_argument("--trace-matvecs", type=_at_least_four, default=99,
                   help="Hessian-vector products for Hutch++ (at least 4)")
    p.add_argument("--split", choices=SPLITS, default="train", help="which data the loss is averaged over")
    p.add_argument("--max-examples", type=_positive_int, default=None,
                   help="use only the first N examples of the split (None: all of them)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="accumulate Hessian products over batches of this size (None: one batch)")
    p.add_argument("--method", choices=("auto", "dense", "lanczos"), default="auto",
                   help="dense spectrum (small models) or Lanczos + SLQ; auto: dense up to --dense-max")
    p.add_argument("--dense-max", type=_positive_int, default=4000,
                   help="largest parameter count for the dense spectrum under --method auto")
    p.add_argument("--mode", choices=("eval", "train"), default="eval",
                   help="model mode of the loss: eval (BatchNorm running stats, no dropout) or train")
    p.add_argument("--epoch", type=int, default=None, help="checkpoint epoch (default: the latest)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random probes and, with --mode train, of the one dropout mask the loss "
                        "is held at (a Hessian needs a fixed function)")
    p.add_argument("--float64", action="store_true",
                   help="analyse in float64 (parameters and data cast; slower, tighter eigenvalues)")
    p.add_argument("--matmul-precision", choices=("highest", "high", "default"), default="highest",
                   help="precision of float32 matrix products (jax.default_matmul_precision); GPUs run JAX's "
                        "'default' as TF32, which moves eigenvalues by about 1e-4 relative (no effect on CPU)")
    p.add_argument("--out", default=None,
                   help="spectral-density plot path (default RUN_DIR/hessian_density.png; a directory gets "
                        "hessian_density.png inside it, a name without an extension gets .png); the JSON "
                        "report goes beside it with the same name and .json (default RUN_DIR/hessian.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the plot and report of an earlier analysis at the same paths (refused otherwise, "
                        "before any work)")
    p.set_defaults(func=cmd_hessian)
    return p


#: Files of a `jdl train` run directory that `jdl hessian --out` must not replace.
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "learning_curve.png")


def _check_plot_path(out_png: str, run_dir: str) -> None:
    """Refuse, before any work, a plot path matplotlib cannot write or one that
    would replace a file of the run (the plot's .json report goes beside it)."""
    import io

    import matplotlib.figure

    extension = os.path.splitext(out_png)[1].lstrip(".").lower()
    formats = matplotlib.figure.Figure().canvas.get_supported_filetypes()
    if extension not in formats:
        raise ValueError(f"--out {out_png}: matplotlib cannot write .{extension} files; use one of "
                         f"{', '.join('.' + f for f in sorted(formats))} (e.g. .png)")
    try:  # a listed format may need an outside program (.pgf needs xelatex): try it on a tiny figure
        probe = matplotlib.figure.Figure(figsize=(0.5, 0.5))
        probe.text(0.5, 0.5, "λ")  # text makes .pgf measure it with TeX, as the real plot's labels will
        probe.savefig(io.BytesIO(), format=extension)
    except Exception as e:  # noqa: BLE001 - any failure means this format cannot be written here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"--out {out_png}: matplotlib cannot write .{extension} files on this machine "
                         f"({first}); use .png") from None
    checkpoints = os.path.abspath(os.path.join(run_dir, "checkpoints"))
    if os.path.commonpath([os.path.abspath(out_png), checkpoints]) == checkpoints:
        raise ValueError(f"--out {out_png} is inside the run's checkpoint directory, whose epochs are deleted "
                         "as newer ones are saved; choose a path outside it")
    stem = os.path.splitext(os.path.basename(out_png))[0]
    clashes = {os.path.basename(out_png), stem + ".json"} & set(RUN_FILES)
    if clashes:  # in this run's directory or any other run's
        raise ValueError(f"--out {out_png}: {sorted(clashes)[0]} is the name of a `jdl train` run's own file "
                         "(this run's or another's, which it would replace); choose another name")


def _fmt(x: float) -> str:
    if x is None:
        return "n/a"
    if math.isinf(x):
        return "∞"
    return f"{x:.6g}"


def _values(xs) -> str:
    return "  ".join(f"{float(x):.5g}" for x in xs)


def format_report(analysis, *, mode: str = "eval") -> str:
    """The printed table of a :class:`~jdl.hessian.analysis.HessianAnalysis`."""
    a = analysis
    c = a.condition
    if c.definition == "definite":
        cond = f"{_fmt(float(c.value))}  (λmax/λmin, seed 004 §3.1)"
        if math.isinf(float(c.value)):
            cond = "∞ for λmax/λmin (seed 004 §3.1): the Hessian is not positive definite"
            if a.method == "lanczos":
                cond += ("; the |λ|-thresholded variant needs the full spectrum "
                         "(--method dense, for models up to a few thousand parameters)")
    elif c.definition == "magnitude":
        # The same threshold as the condition number's own (rtol·max|λ|), not
        # the classification's τ: a λmin between the two is negative, not zero.
        why = ("indefinite" if float(a.bottom_eigenvalues[0]) < -c.rtol * float(c.largest)
               else f"singular, |λmin| ≤ {c.rtol:.1e}·max|λ|")
        cond = (f"{_fmt(float(c.value))}  (max|λ| / min|λ| over |λ| > {c.rtol:.1e}·max|λ|; "
                f"{int(c.num_excluded)} near-zero eigenvalues excluded; λmax/λmin undefined: {why})")
    else:
        cond = f"{_fmt(float(c.value))}  ({c.definition})"
    if a.method == "dense":
        index = f"{a.index:.4f}  ({round(a.index * a.num_parameters)} of {a.num_parameters:,} eigenvalues < −τ)"
    else:
        index = (f"{a.index:.4f} ± {a.index_standard_error:.4f}  (SLQ mass below −τ; quadrature bounds "
                 f"[{a.index_lower:.4f}, {a.index_upper:.4f}])")
        if a.index_upper - a.index_lower > UNRESOLVED_INDEX:
            index += (f"\nunresolved: at {a.density.num_steps} steps the quadrature cannot tell on which side of −τ "
                      "much of the spectrum near it lies (a network's near-zero eigenvalues);\nmore --num-steps "
                      "narrows it; --method dense (up to a few thousand parameters) counts exactly")
    crit = "critical point" if a.is_critical else f"not a critical point (‖g‖ > {a.gradient_tolerance:.1e})"
    trace = (f"{float(a.trace.estimate):.6g} ± {float(a.trace.standard_error):.2g}  "
             f"(Hutch++, {int(a.trace.num_matvecs)} products)")
    if a.trace_exact is not None:
        trace += f"; exact {a.trace_exact:.6g}"
    rows = [
        ("parameters", f"{a.num_parameters:,}"),
        ("examples", f"{a.num_examples:,}  (model mode: {mode})"),
        ("method", "dense Hessian + eigh" if a.method == "dense" else "Lanczos + stochastic Lanczos quadrature"),
        ("loss", f"{a.loss:.6g}"),
        ("‖g‖", f"{a.gradient_norm:.4g}"),
        (f"top {len(a.top_eigenvalues)} λ", _values(a.top_eigenvalues)),
        (f"bottom {len(a.bottom_eigenvalues)} λ", _values(a.bottom_eigenvalues)),
        *([("Lanczos residual", f"max ‖Hy − λy‖ = {float(max(a.eigenvalue_residuals)):.2g} over these "
                                f"{2 * len(a.top_eigenvalues)} eigenpairs: each value lies that close to an "
                                "eigenvalue,\nbut eigenvalues closer together than that may be merged or "
                                "one skipped (--method dense resolves them)"
                                + ("" if a.converged else
                                   "\nnot converged: these are Ritz values, and the true ends lie at or beyond "
                                   "them;\nmore --num-steps converges them"))]
          if a.eigenvalue_residuals is not None else []),
        ("condition number", cond),
        ("index", index),
        ("curvature", f"{a.classification}  (τ = {a.eigenvalue_tolerance:.2g}); {crit}"),
        ("trace", trace),
        ("density", f"σ = {float(a.density.sigma):.3g}, {a.density.num_probes} probes × {a.density.num_steps} steps"),
        ("products", f"{a.num_matvecs:,} Hessian-vector products, {sum(a.seconds.values()):.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    # A value's further lines are indented under its first.
    return "\n".join(f"  {k:<{width}}  {v}".replace("\n", "\n" + " " * (width + 4)) for k, v in rows)


def cmd_hessian(args) -> int:
    import jax
    import jax.numpy as jnp

    from jdl._io import write_bytes_atomic, write_json_atomic
    from jdl.hessian.analysis import hessian_analysis
    from jdl.hessian.operators import model_objective
    from jdl.hessian.plots import DPI, plot_spectral_density
    from jdl.run import load_run
    from jdl.training.fit import epochs_checkpointed
    from jdl.validation import check_writable_dir

    run_dir = os.fspath(args.run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a directory; pass the --out directory of a `jdl train` run")
    out_png = args.out or os.path.join(run_dir, "hessian_density.png")
    if os.path.isdir(out_png) or out_png.endswith(("/", os.sep)):  # a directory: the plot goes inside it
        if not os.path.isdir(out_png):
            raise FileNotFoundError(f"--out {out_png}: the directory does not exist; create it or choose an "
                                    "existing one")
        out_png = os.path.join(out_png, "hessian_density.png")
    elif not os.path.splitext(out_png)[1]:  # matplotlib would add .png itself; say where it goes
        out_png += ".png"
    out_dir = os.path.dirname(os.path.abspath(out_png))
    json_path = os.path.join(run_dir, "hessian.json") if args.out is None else os.path.splitext(out_png)[0] + ".json"
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"--out {out_png}: {out_dir} is a file, not a directory; choose another path")
    if not os.path.isdir(out_dir):  # checked before the analysis, not after it
        raise FileNotFoundError(f"--out {out_png}: the directory {out_dir} does not exist; create it or "
                                "choose a path in an existing directory")
    _check_plot_path(out_png, run_dir)
    taken = [p for p in (out_png, json_path) if os.path.exists(p)]
    if taken and not args.overwrite:
        raise FileExistsError(f"{' and '.join(taken)} already exist (an earlier analysis?); pass --overwrite to "
                              "replace them, or --out another path")
    if args.out is None:
        check_writable_dir(run_dir, what="the run directory",
                           hint="hessian.json and the density plot go there; pass --out elsewhere (e.g. "
                                "--out /tmp/hessian.png), fix the permissions or analyse a copy of the run")
    else:
        check_writable_dir(out_dir, what="the --out directory",
                           hint="the density plot and its .json go there; choose another --out or fix the permissions")
    run = load_run(run_dir, epoch=args.epoch)
    epoch = args.epoch if args.epoch is not None else epochs_checkpointed(run_dir) - 1
    bad = [jax.tree_util.keystr(path) for path, a in jax.tree_util.tree_leaves_with_path(run.state.params)
           if jnp.issubdtype(a.dtype, jnp.floating) and not bool(jnp.all(jnp.isfinite(a)))]
    if bad:
        raise ValueError(f"the checkpoint at step {int(run.state.step)} has non-finite parameters ({bad[0]}"
                         f"{' and more' if len(bad) > 1 else ''}): the run diverged there; pick an earlier "
                         "checkpoint with --epoch")
    split = getattr(run.dataset, args.split)
    data = {k: jnp.asarray(v) for k, v in split.items()}
    if args.max_examples is not None:
        data = {k: v[: args.max_examples] for k, v in data.items()}
    num_examples = len(next(iter(data.values())))
    if args.mode == "train" and args.batch_size is not None and args.batch_size < num_examples:
        raise ValueError(f"--mode train with --batch-size {args.batch_size} (< {num_examples} examples): in train "
                         "mode a batch's loss depends on the batch (BatchNorm's batch statistics, the dropout "
                         "mask drawn for it), so each --batch-size would analyse a different function; drop "
                         "--batch-size, or use --mode eval to accumulate over batches")
    print(f"jdl hessian: {run_dir} ({run.config.model} on {run.config.dataset}, step {int(run.state.step)}), "
          f"{args.split} split", flush=True)

    train = args.mode == "train"
    # Train mode draws its random numbers (dropout masks, stochastic pooling) from a
    # key: one fixed key, from --seed, so the loss is one deterministic function (the
    # network under one draw). A model without such layers draws nothing.
    dropout_key = jax.random.key_data(jax.random.fold_in(jax.random.key(args.seed), 1)) if train else None
    mode = args.mode
    if train:
        mode += f"; random draws (dropout, stochastic pooling), if any, fixed by --seed {args.seed}"
        if args.float64:  # the same key gives other uniform bits in float64
            mode += " (float64 draws differ from float32 ones at the same seed)"

    def analyse(params, model_state, data):
        objective = model_objective(run.model, run.loss_fn, model_state, train=train, key=dropout_key)
        return hessian_analysis(
            objective.loss, params, data, top_k=args.top_k, num_steps=args.num_steps,
            num_probes=args.num_probes, trace_matvecs=args.trace_matvecs, method=args.method,
            dense_max_params=args.dense_max, batch_size=args.batch_size, key=args.seed,
            progress=lambda msg: print(f"  … {msg}", file=sys.stderr, flush=True),
        )

    params, model_state = run.state.params, run.state.model_state
    try:
        with jax.default_matmul_precision(args.matmul_precision):
            if args.float64:
                with jax.enable_x64(True):
                    cast = lambda t: jax.tree.map(  # noqa: E731
                        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, t)
                    analysis = analyse(cast(params), cast(model_state), cast(data))
            else:
                analysis = analyse(params, model_state, data)
    except MemoryError as e:  # a matrix or basis would not fit: say so as a usage error
        dense = "dense Hessian" in str(e) and args.method != "lanczos"
        raise ValueError(f"{e}{' (try --method lanczos)' if dense else ''}") from None
    print(format_report(analysis, mode=mode))
    if len(analysis.top_eigenvalues) < args.top_k:
        print(f"  {'note':<16}  --top-k {args.top_k} exceeds half of the {analysis.num_parameters:,} "
              f"parameters; {len(analysis.top_eigenvalues)} shown at each end")
    settings = {"split": args.split, "mode": args.mode, "random_draws_seed": args.seed if train else None,
                "step": int(run.state.step), "epoch": epoch,
                "float64": bool(args.float64), "matmul_precision": args.matmul_precision,
                "backend": jax.default_backend(), "seed": args.seed, "max_examples": args.max_examples,
                "top_k": args.top_k, "num_steps": args.num_steps, "num_probes": args.num_probes,
                "trace_matvecs": args.trace_matvecs, "method_requested": args.method,
                "dense_max": args.dense_max, "batch_size": args.batch_size}
    # The plot is drawn in memory and written first, atomically: a failure
    # leaves neither file half-written, nor a new report beside an old plot.
    fig = plot_spectral_density(
        analysis.density, None, eigenvalues=analysis.eigenvalues,
        title=(f"Hessian spectrum: {run.config.model} on {run.config.dataset} "
               f"({args.split}, step {int(run.state.step)})"),
    )
    image = io.BytesIO()
    try:
        fig.savefig(image, format=os.path.splitext(out_png)[1].lstrip(".").lower(), dpi=DPI)
    finally:
        import matplotlib.pyplot as plt  # after plots chose the backend

        plt.close(fig)
    write_bytes_atomic(out_png, image.getvalue())
    write_json_atomic(json_path, analysis.to_json() | settings)
    print(f"  {'saved':<16}  {out_png}, {json_path}{' (replaced)' if taken else ''}")
    return 0


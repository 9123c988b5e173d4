"""The ``jdl`` command line: ``jdl train`` (and ``jdl hessian`` on its output).

jdl train                          # MLP on the 8×8 digits, ≥ 97 % test accuracy
jdl train --model cnn --epochs 20 --out runs/cnn
jdl train --out runs/cnn --resume --epochs 30
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from jdl.run import (
    CONFIG_FILE,
    MODEL_FIELDS,
    SUMMARY_FILE,
    RunConfig,
    build_run,
    check_model_takes,
    initial_state,
    models_taking,
    num_params,
    read_config,
    read_history,
    write_json_atomic,
)
from jdl.training.callbacks import Callback
from jdl.training.fit import METRICS_FILE, epochs_checkpointed, has_checkpoint

CURVE_FILE = "learning_curve.png"


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in its help, except where there is none to
    show (``None``: the help text names the default itself)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)

def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated widths like 256,256, got {text!r}") from None
    if not widths or any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"--hidden widths must be positive, got {text!r}")
    return widths


def add_train_parser(sub) -> None:
    from jdl.data import DATASETS
    from jdl.models import MODELS

    d = RunConfig()
    p = sub.add_parser(
        "train",
        help="train a model on a built-in dataset",
        description="Train a model on a built-in dataset; save checkpoint, metrics and plots.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default=None, help=f"one of {sorted(DATASETS)} (default {d.dataset})")
    p.add_argument(
        "--model",
        default=None,
        help="; ".join(f"{k}: {v.description}" for k, v in sorted(MODELS.items()) if v.task == "classification")
        + f" (default {d.model})",
    )
    p.add_argument(
        "--hidden",
        type=_hidden,
        default=None,
        help="hidden widths, e.g. 256,256 (default: the model's own); one width for a CNN's dense head; "
        f"models that take it: {', '.join(models_taking('hidden'))}",
    )
    p.add_argument(
        "--dropout",
        type=float,
        default=None,
        help=f"dropout rate (default {d.dropout}: none); models that take it: {', '.join(models_taking('dropout'))}",
    )
    p.add_argument(
        "--optimizer",
        default=None,
        help="an Optax optimizer (adam, sgd, ...) or one of jdl's as jdl:NAME (jdl:momentum, jdl:damped_newton, "
        "...; list: jdl.optim.available_optimizers()); Newton-family methods take full steps at --lr 1 "
        "with --schedule constant "
        f"(default {d.optimizer})",
    )
    p.add_argument(
        "--lr",
        "--learning-rate",
        dest="learning_rate",
        type=float,
        default=None,
        help=f"peak learning rate (default {d.learning_rate})",
    )
    p.add_argument("--schedule", default=None, help=f"constant or cosine (default {d.schedule})")
    p.add_argument("--batch-size", type=int, default=None, help=f"minibatch size (default {d.batch_size})")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs (default {d.epochs})")
    p.add_argument("--seed", type=int, default=None, help=f"random seed (default {d.seed})")
    p.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_const",
        const=False,
        default=None,
        help="keep raw inputs instead of standardising features",
    )
    p.add_argument("--out", default=None, help="run directory (default runs/<dataset>-<model>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with its saved settings (only --epochs, "
                   "the new total of epochs, may change)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is shown only when stderr is a terminal, never in a piped log)")
    p.set_defaults(func=cmd_train)


def _given(args) -> dict:
    names = {f.name for f in dataclasses.fields(RunConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _resolve_config(args) -> tuple[RunConfig, str]:
    config, out = _resolve_given_config(args)
    # A model option given on the command line must be one the model takes, even where its
    # value changes nothing (--dropout 0): it is a request the model cannot honour.
    check_model_takes(config.model, [k for k in MODEL_FIELDS if k in _given(args)])
    return config, out


def _resolve_given_config(args) -> tuple[RunConfig, str]:
    given = _given(args)
    defaults = RunConfig()
    out = args.out or os.path.join(
        "runs", f"{given.get('dataset', defaults.dataset)}-{given.get('model', defaults.model)}"
    )
    config_path = os.path.join(out, CONFIG_FILE)
    if args.resume:
        if not os.path.isfile(config_path):
            if has_checkpoint(out):  # "drop --resume" would only meet "already holds a run"
                raise FileNotFoundError(f"--resume: {out} holds checkpoints but no {CONFIG_FILE}, which records how "
                                        "the run was configured, so it cannot be rebuilt and resumed; start a new "
                                        "run with another --out")
            raise FileNotFoundError(f"--resume: {out} holds no run ({CONFIG_FILE} missing); drop --resume to start one")
        saved = read_config(out)
        clash = {k: (getattr(saved, k), v) for k, v in given.items() if k != "epochs" and getattr(saved, k) != v}
        if clash:
            detail = ", ".join(_clash(k, a, b) for k, (a, b) in clash.items())
            raise ValueError(
                f"--resume continues the run as it was configured ({detail}); "
                "only --epochs may change. Start a new run with another --out instead"
            )
        done = epochs_checkpointed(out)
        epochs = given.get("epochs", saved.epochs)
        if epochs < done:
            given_how = "--epochs" if "epochs" in given else f"{CONFIG_FILE}'s epochs"
            raise ValueError(f"--resume: the run has trained {done} epochs already, so --epochs (the total, not "
                             f"the number to add) must be at least {done}, got {epochs} ({given_how})")
        if epochs == 0:  # nothing run yet: the run would train nothing and save no checkpoint
            raise ValueError("--epochs 0 would resume a run that has trained nothing into one that trains "
                             "nothing and saves no checkpoint; give at least 1 (e.g. --epochs 1)")
        return dataclasses.replace(saved, epochs=epochs).validate(), out
    # A jdl config.json (and an empty metrics.jsonl) without a checkpoint is left by an attempt that
    # failed before its first checkpoint; the new run replaces them. A checkpoint, or any other file
    # the run would overwrite, is kept.
    if has_checkpoint(out):
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    _check_nothing_to_overwrite(out)
    if given.get("epochs") == 0:
        raise ValueError("--epochs 0 would start a run that trains nothing and saves no checkpoint; "
                         "give at least 1 (e.g. --epochs 1)")
    return RunConfig(**given).validate(), out


def _clash(field: str, saved, given) -> str:
    """How a setting given with --resume differs from the run's, in the flag's own words."""
    if field == "standardize":  # the only way to give it is --no-standardize
        return "--no-standardize given, but the run standardised its inputs"
    flag = "--lr" if field == "learning_rate" else f"--{field.replace('_', '-')}"
    return f"{flag} was {saved!r}, now {given!r}"


def _check_nothing_to_overwrite(out: str) -> None:
    """Refuse a new run in ``out`` (which holds no checkpoint) where it would overwrite files
    that are not the leftovers of a `jdl train` attempt that failed before its first checkpoint.

    Such an attempt leaves a jdl ``config.json`` and an empty ``metrics.jsonl``; anything
    else under a run file's name (another program's ``config.json``, a finished run's
    ``summary.json`` or curve whose checkpoints were deleted, recorded epochs) is kept.
    """
    if not os.path.isdir(out):
        return
    kept = []
    config_path = os.path.join(out, CONFIG_FILE)
    if os.path.lexists(config_path):
        try:
            with open(config_path) as f:
                saved = json.load(f)
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
            RunConfig.from_json(saved)
        except (OSError, ValueError, TypeError):
            kept.append(f"{CONFIG_FILE} (not a jdl run configuration)")
    if os.path.lexists(os.path.join(out, METRICS_FILE)):
        try:
            recorded = bool(read_history(out))
        except (OSError, ValueError):
            recorded = True
        if recorded:
            kept.append(f"{METRICS_FILE} (recorded epochs)")
    kept += [name for name in (SUMMARY_FILE, CURVE_FILE) if os.path.lexists(os.path.join(out, name))]
    if kept:
        raise FileExistsError(
            f"{out} holds no checkpoint, but a new run there would overwrite {', '.join(kept)}; "
            "choose another --out, or move those files away"
        )


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


class _WriteConfigOnStart(Callback):
    """Write the run's configuration when ``fit`` starts, after it restored the checkpoint."""

    def __init__(self, path: str, config: dict):
        self.path, self.config = path, config

    def on_fit_start(self, ctx, state):
        write_json_atomic(self.path, self.config)
        return None


def cmd_train(args) -> int:
    import jax

    from jdl.plotting import plot_learning_curves
    from jdl.training import fit, make_evaluate, make_train_step
    from jdl.validation import check_writable_dir

    # Every check on the configuration (options, dataset against model and batch size, the model's
    # initialisation on a batch) runs before the run directory is created, so a failure leaves nothing behind.
    config, out = _resolve_config(args)
    parts = build_run(config)
    t0 = time.perf_counter()
    state = initial_state(config, parts)
    # One train step traced (not compiled, not run): what only tracing finds, such as a dense Newton
    # optimizer's Hessian that does not fit in memory, is refused here too, before the directory is made.
    sample = {k: v[: config.batch_size] for k, v in parts.dataset.train.items()}
    jax.eval_shape(make_train_step(parts.model, parts.loss_fn, parts.optimizer, jit=False), state, sample)
    check_writable_dir(out, what="output directory (--out)")
    if args.resume:
        saved = read_config(out)
        if saved.epochs != config.epochs and config.schedule != "constant":
            change = ("stretches", "rises again") if config.epochs > saved.epochs else ("compresses", "falls faster")
            print(f"jdl train: --epochs {saved.epochs} -> {config.epochs} {change[0]} the {config.schedule} "
                  f"schedule to end at epoch {config.epochs} from here on (the rate {change[1]}); "
                  "the epochs already run keep theirs", file=sys.stderr)
    config_path = os.path.join(out, CONFIG_FILE)
    callbacks = []
    if not args.resume:
        write_json_atomic(config_path, config.to_json())
    else:
        # A changed --epochs must reach config.json, or a later plain --resume (after an
        # interruption) and load_run would go back to the old count; written once the
        # checkpoint has been restored, so a run that cannot resume is left as it was.
        callbacks.append(_WriteConfigOnStart(config_path, config.to_json()))
    print(f"jdl train: {parts.dataset.summary()}")
    hidden = f" {','.join(map(str, config.hidden))}" if config.hidden else ""
    print(
        f"           model {config.model}{hidden} ({num_params(state.params):,} parameters), "
        f"{config.optimizer} lr={config.learning_rate} ({config.schedule}), batch {config.batch_size}, "
        f"{config.epochs} epochs, seed {config.seed} -> {out}"
    )
    result = fit(
        parts.model,
        parts.loss_fn,
        parts.optimizer,
        parts.dataset,
        epochs=config.epochs,
        batch_size=config.batch_size,
        state=state,
        out_dir=out,
        resume=args.resume,
        callbacks=callbacks,
        progress=False if args.no_progress else None,  # None: fit shows it only on a terminal
        config=config.to_json(),
    )
    elapsed = time.perf_counter() - t0
    evaluate = make_evaluate(parts.model, parts.loss_fn)
    splits = {name: evaluate(result.state, getattr(parts.dataset, name)) for name in ("train", "val", "test")}
    summary = {
        "config": config.to_json(),
        "epochs_run": len(result.history),
        "seconds": elapsed,  # this invocation (a resumed run's earlier sessions are not in it)
        "epoch_seconds_total": sum(float(r.get("time", 0.0)) for r in result.history),  # every epoch, all sessions
        "num_params": num_params(result.state.params),
        **{k: v for k, v in splits.items()},
    }
    write_json_atomic(os.path.join(out, SUMMARY_FILE), summary)
    if result.history:
        plot_learning_curves(
            result.history, os.path.join(out, CURVE_FILE), title=f"{config.model} on {config.dataset}"
        )
    rows = [
        ("parameters", f"{summary['num_params']:,}"),
        ("epochs", str(len(result.history))),
        ("steps", str(int(result.state.step))),
        ("time", f"{elapsed:.1f} s"),
    ]
    for name, m in splits.items():
        acc = f"   accuracy {100 * m['accuracy']:.2f} %" if "accuracy" in m else ""
        rows.append((name, f"loss {m['loss']:.4f}{acc}"))
    rows.append(("saved", f"{out}/ (checkpoints/, metrics.jsonl, learning_curve.png, summary.json)"))
    print(_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jdl", description="Functional training and loss-surface tools in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    try:
        from jdl.hessian import cli as hessian_cli
    except ImportError:
        hessian_cli = None
    if hessian_cli is not None and hasattr(hessian_cli, "add_parser"):
        hessian_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, TypeError, MemoryError) as e:  # OSError: files missing, taken or not writable
        print(f"jdl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = ("the last checkpoint is kept (use --resume)" if args.command == "train"
                else "nothing was written")
        print(f"\njdl {args.command}: interrupted; {kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

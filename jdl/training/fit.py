"""``fit``: the training loop, a thin stateful shell around the pure steps.

Each epoch reshuffles the training set with ``permutation(fold_in(data_key, epoch))``
and runs its minibatches through the fused train step (``steps_per_call`` steps
per compiled call, device-resident data), then evaluates on the validation set,
calls the callbacks, appends one record to the history, writes it to
``metrics.jsonl`` and checkpoints. Everything that decides the result lives in
the train state (its key and step), so a run resumed from a checkpoint ends
bit-identical to one that was never interrupted.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jdl._io import finite_json, write_text_atomic
from jdl.data.datasets import Dataset
from jdl.data.loader import epoch_indices
from jdl.training import sharding as shd
from jdl.training.callbacks import Callback, FitContext
from jdl.training.checkpoint import Checkpointer
from jdl.training.model import Model
from jdl.training.state import TrainState, check_labels, check_seed, create_train_state, step_keys
from jdl.training.step import LoopKind, make_evaluate, make_fused_train_step, make_train_step
from jdl.validation import (
    check_batch,
    check_batch_entries,
    check_count,
    check_no_silent_downcast,
    check_positive_int,
    check_writable_dir,
)

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


def epochs_checkpointed(run_dir: str) -> int:
    """Epochs a run in ``run_dir`` has checkpointed: its newest checkpoint's
    epoch + 1 (0 for none; unfinished ``*.orbax-checkpoint-tmp`` saves do not count)."""
    ckpt_dir = os.path.join(run_dir, CHECKPOINT_DIR)
    epochs = [int(name) for name in os.listdir(ckpt_dir) if name.isdigit()] if os.path.isdir(ckpt_dir) else []
    return max(epochs) + 1 if epochs else 0


def has_checkpoint(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a run: at least one checkpoint step under ``checkpoints/``."""
    return epochs_checkpointed(run_dir) > 0


class FitResult(NamedTuple):
    """What :func:`fit` returns: the final state and one log dict per epoch."""

    state: TrainState
    history: list[dict]


def _to_device(data: dict, sharding=None) -> dict:
    return {k: jax.device_put(jnp.asarray(v), sharding) for k, v in data.items()}


def _write_history(out_dir: str, history: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` atomically, one strict-JSON record per epoch
    (a diverged epoch's NaN as ``"nan"``; :func:`jdl.run.read_history` reads it back)."""
    text = "".join(json.dumps(finite_json(record), allow_nan=False) + "\n" for record in history)
    write_text_atomic(os.path.join(out_dir, METRICS_FILE), text)


def _mean_metrics(chunks: list[dict], examples: list[int]) -> dict:
    """The epoch's training metrics from each call's per-step metrics.

    Loss and metrics are means over the examples of a minibatch, so the
    epoch's figure weighs each step by its minibatch size (``examples``, one
    per call): the final partial minibatch counts for what it holds, and an
    epoch under a fixed model gives exactly the full-set mean. ``grad_norm``,
    one norm per step, is the mean over steps.
    """
    out = {}
    for k in chunks[0]:
        values = [np.atleast_1d(np.asarray(c[k], np.float64)) for c in chunks]
        weights = np.concatenate([np.full(v.shape[0], size if k != "grad_norm" else 1, np.float64)
                                  for v, size in zip(values, examples)])
        out[k] = float(np.average(np.concatenate(values), weights=weights))
    return out


def fit(
    model: Model,
    loss_fn,
    optimizer: optax.GradientTransformation,
    data: Dataset | dict,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    val_data: dict | None = None,
    state: TrainState | None = None,
    callbacks: Sequence[Callback] = (),
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
    drop_last: bool = False,
    steps_per_call: int | None = None,
    progress: bool | None = None,
    metrics_fn=None,
    grad_norm: bool = False,
    loop: LoopKind = "auto",
    mesh: jax.sharding.Mesh | None = None,
    config: dict | None = None,
) -> FitResult:
    """Train ``model`` for ``epochs`` epochs of minibatch SGD with ``optimizer``.

    Args:
      model: a :class:`~jdl.training.model.Model`.
      loss_fn: ``loss_fn(outputs, targets)`` (e.g. :func:`jdl.nn.cross_entropy`).
      optimizer: any ``optax.GradientTransformation``.
      data: a :class:`~jdl.data.Dataset` (its ``train`` and ``val`` splits are
        used) or a ``{"x", "y"}`` dict of training data.
      epochs: total epochs; with ``resume`` the run continues up to this many.
      batch_size: examples per step (``N`` for batch GD, 1 for pure SGD).
      seed: seeds initialisation, shuffling and dropout (ignored when
        ``state`` is given or the run resumes).
      val_data: validation data (overrides ``data.val``).
      state: start from this state instead of initialising.
      callbacks: :class:`~jdl.training.callbacks.Callback` objects.
      out_dir: run directory for ``metrics.jsonl`` and ``checkpoints/``.
        A directory that already holds a run is never overwritten: pass
        ``resume=True`` to continue it.
      resume: continue from the latest checkpoint in ``out_dir``, written by
        a model of the same name (``Model.name``) and parameter tree, on as
        many training examples with the same ``batch_size`` and ``drop_last``.
      checkpoint_every: checkpoint every this many epochs (and at the end).
      drop_last: skip each epoch's final partial minibatch.
      steps_per_call: steps fused into one compiled call (default: a whole
        epoch); the progress bar and ``on_steps_end`` update between calls.
        A call also ends where a callback asks for one
        (:meth:`~jdl.training.callbacks.Callback.steps_until_call`).
      progress: show a progress bar (default: only on a terminal).
      metrics_fn: extra train/eval metrics (default: accuracy for labels).
      grad_norm: record the mean minibatch gradient norm ``train_grad_norm``.
      loop: how fused steps run (see :func:`make_fused_train_step`).
      mesh: a data-parallel mesh (:func:`jdl.training.sharding.data_parallel_mesh`):
        state and data replicated, each minibatch split over ``"data"``.
      config: JSON-serialisable run settings saved with checkpoints.

    Returns:
      :class:`FitResult` ``(state, history)``; each history record has
      ``epoch``, ``step``, ``train_loss``, ``val_*``, ``train_grad_norm`` (if asked for) and
      ``time`` (plus ``*_accuracy`` for classification and what callbacks add).
    """
    epochs = check_count(epochs, "epochs", 0, hint="the total number of epochs, e.g. epochs=10")
    callbacks = _check_callbacks(callbacks)
    batch_size = check_positive_int(batch_size, "batch_size", hint="e.g. --batch-size 128")
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    # Every setting is checked here, before the model is built, a directory
    # made or a checkpoint (and callback state) restored.
    if steps_per_call is not None:
        steps_per_call = check_positive_int(steps_per_call, "steps_per_call")
    if loop not in get_args(LoopKind):
        raise ValueError(f"unknown loop {loop!r}; use one of {get_args(LoopKind)}")
    if metrics_fn is not None and not callable(metrics_fn):
        raise TypeError(f"metrics_fn must be a function (outputs, targets) -> dict of scalars, got "
                        f"{type(metrics_fn).__name__}")
    for name, flag in (("drop_last", drop_last), ("grad_norm", grad_norm), ("resume", resume)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if state is None:
        check_seed(seed, "seed")
    if config is not None:
        try:
            json.dumps(config)
        except TypeError as e:
            raise TypeError(f"config is saved with every checkpoint and must be JSON ({e}); convert NumPy or "
                            "JAX scalars with float() or int()") from None
    if isinstance(data, Dataset):
        train, val = data.train, data.val if val_data is None else val_data
    else:
        train, val = data, val_data
    check_batch_entries(train)
    check_no_silent_downcast(train, where="training data")
    if val is not None:
        check_batch_entries(val)
        check_no_silent_downcast(val, where="validation data")
        if not np.shape(val["y"])[0]:
            raise ValueError("validation data is empty; pass at least one example, or val_data=None for none")
    n = int(np.shape(train["y"])[0])
    if not n:
        raise ValueError("the training data is empty; pass at least one example")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} training examples; use at most {n}")
    if mesh is not None:
        shd.check_divisible(batch_size, mesh)

    # The output directory: checked before any work, never overwritten.
    ckpt_dir = None
    if out_dir is not None:
        out_dir = check_writable_dir(out_dir)
        ckpt_dir = os.path.join(out_dir, CHECKPOINT_DIR)
        if has_checkpoint(out_dir) and not resume:
            raise FileExistsError(
                f"{out_dir} already holds a run (checkpoints in {ckpt_dir}); pass resume=True "
                "(--resume) to continue it, or choose another output directory"
            )
    elif resume:
        raise ValueError("resume=True needs out_dir, the directory of the run to continue")

    sample = {k: np.asarray(v)[:batch_size] for k, v in train.items()}
    if state is None:
        state = create_train_state(model, optimizer, key=seed, batch=sample)
    else:
        check_batch(state.batch_spec, sample, where="training data")
    if val is not None:
        check_batch(state.batch_spec, val, where="validation data")
    check_labels(model, state, train, where="the training data")  # all of them, not the sample's
    if val is not None:
        check_labels(model, state, val, where="the validation data")

    if n % batch_size == 1 and not drop_last and jax.tree.leaves(state.model_state):
        warnings.warn(
            f"{n} examples in minibatches of {batch_size} leave a final minibatch of one example each "
            "epoch; the model keeps batch statistics (BatchNorm), whose variance over one example is 0. "
            "Pass drop_last=True or pick a batch size that does not leave one example over",
            stacklevel=2,
        )

    # Opened once the inputs have passed their checks, and closed however the
    # run ends (an Orbax manager left open keeps its threads and file handles).
    checkpointer = Checkpointer(ckpt_dir) if ckpt_dir is not None else None
    bar = None
    try:
        history: list[dict] = []
        start_epoch = 0
        stopped = False
        resumed = False
        if resume and checkpointer is not None and checkpointer.latest_epoch() is not None:
            resumed = True
            state, meta = checkpointer.restore(state)
            if meta.get("model") not in (None, model.name):  # same tree, another model (an activation, a class)
                raise ValueError(f"the checkpoint in {out_dir} is of the model {meta['model']!r}, but this fit's "
                                 f"model is {model.name!r}; resume with the model that wrote it, or pass another "
                                 "out_dir (or resume=False) to start afresh")
            saved_data = meta.get("data")  # absent in checkpoints from before it was recorded
            now = _data_record(n, batch_size, drop_last)
            if saved_data is not None and saved_data != now:
                changed = ", ".join(f"{k} {saved_data.get(k)!r} then, {v!r} now" for k, v in now.items()
                                    if saved_data.get(k) != v)
                raise ValueError(f"the run in {out_dir} was trained with other data settings ({changed}): its "
                                 "steps and shuffling would not continue; resume with the settings it was "
                                 "started with, or pass another out_dir to start afresh")
            history = list(meta.get("history", []))
            start_epoch = int(meta["epoch"]) + 1
            stopped = bool(meta.get("stopped", False))  # a run that stopped early stays stopped
            saved = meta.get("extra_states", [])
            for i, cb in _matched_callbacks(callbacks, meta, saved):
                cb.set_state(meta["callbacks"][i])
                prefix = f"callback{i}_"
                cb.set_train_states({name[len(prefix):]: checkpointer.restore_extra(state, name)
                                     for name in saved if name.startswith(prefix)})

        data_sharding = shd.replicated(mesh) if mesh is not None else None
        if mesh is not None:
            state = shd.replicate(state, mesh)
        train_dev = _to_device(train, data_sharding)
        val_dev = _to_device(val, data_sharding) if val is not None else None

        fused = make_fused_train_step(
            model,
            loss_fn,
            optimizer,
            metrics_fn=metrics_fn,
            grad_norm=grad_norm,
            loop=loop,
            batch_sharding=shd.batch_sharding(mesh) if mesh is not None else None,
        )
        single = make_train_step(model, loss_fn, optimizer, metrics_fn=metrics_fn, grad_norm=grad_norm)
        evaluate = make_evaluate(model, loss_fn, metrics_fn=metrics_fn)

        steps_per_epoch = n // batch_size
        chunk = steps_per_epoch if steps_per_call is None else steps_per_call
        ctx = FitContext(
            model=model,
            loss_fn=loss_fn,
            optimizer=optimizer,
            train_data=train_dev,
            val_data=val_dev,
            batch_size=batch_size,
            epochs=epochs,
            epoch=start_epoch,
            step=int(state.step),
            history=history,
            callbacks=tuple(callbacks),
            out_dir=out_dir,
            resumed=resumed,
        )
        if out_dir is not None:
            _write_history(out_dir, history)
        for cb in callbacks:
            state = cb.on_fit_start(ctx, state) or state

        _, data_key = step_keys(state.key)
        remaining_steps = (epochs - start_epoch) * (steps_per_epoch + (0 if drop_last or n % batch_size == 0 else 1))
        show = _is_terminal() if progress is None else bool(progress)
        bar = tqdm(total=max(remaining_steps, 0), disable=not show, unit="step", dynamic_ncols=True, leave=False)
        finished = False  # on_fit_end has run (it runs before the final checkpoint)
        for epoch in range(start_epoch, epochs if not stopped else start_epoch):
            ctx.epoch = epoch
            t0 = time.perf_counter()
            full, rest = epoch_indices(data_key, epoch, n, batch_size)
            chunks, examples = [], []
            s = 0
            while s < steps_per_epoch:
                size = _call_size(callbacks, ctx.step, min(chunk, steps_per_epoch - s))
                state, metrics = fused(state, train_dev, full[s : s + size])
                s += size
                chunks.append(metrics)
                examples.append(batch_size)
                ctx.step = int(state.step)
                for cb in callbacks:
                    state = cb.on_steps_end(ctx, state, metrics) or state
                bar.update(size)
                bar.set_postfix(_postfix(epoch, metrics), refresh=False)
            if rest is not None and not drop_last:
                state, metrics = single(state, {k: v[rest] for k, v in train_dev.items()})
                chunks.append(metrics)
                examples.append(len(rest))
                ctx.step = int(state.step)
                stacked = jax.tree.map(lambda a: jnp.asarray(a)[None], metrics)
                for cb in callbacks:
                    state = cb.on_steps_end(ctx, state, stacked) or state
                bar.update(1)
            ctx.step = int(state.step)
            logs: dict[str, Any] = {"epoch": epoch, "step": ctx.step}
            logs.update({f"train_{k}": v for k, v in _mean_metrics(chunks, examples).items()})
            if val_dev is not None:
                logs.update({f"val_{k}": v for k, v in evaluate(state, val_dev).items()})
            for cb in callbacks:
                state = cb.on_epoch_end(ctx, state, logs) or state
            logs["time"] = time.perf_counter() - t0
            history.append(logs)
            bar.set_postfix(_postfix(epoch, logs), refresh=True)
            last = epoch == epochs - 1 or ctx.stop_training
            final = state
            if last:  # before the final checkpoint, which then holds what fit returns
                for cb in callbacks:
                    final = cb.on_fit_end(ctx, final) or final
                finished = True
            if checkpointer is not None:
                if (epoch + 1) % checkpoint_every == 0 or last:
                    extra = {f"callback{i}_{name}": st for i, cb in enumerate(callbacks)
                             for name, st in cb.get_train_states().items()}
                    if final is not state:
                        extra["final"] = final
                    checkpointer.save(
                        epoch,
                        state,
                        {
                            "history": history,
                            "config": config or {},
                            "callbacks": [cb.get_state() for cb in callbacks],
                            "callback_types": [_callback_type(cb) for cb in callbacks],
                            "model": model.name,
                            "data": _data_record(n, batch_size, drop_last),
                            "stopped": bool(ctx.stop_training),
                        },
                        extra,
                    )
                # After the epoch's checkpoint: an interrupted save leaves no record of an epoch it lost.
                _write_history(out_dir, history)
            state = final
            if ctx.stop_training:
                break
        if not finished:  # no epoch was left to run (a finished run resumed)
            for cb in callbacks:
                state = cb.on_fit_end(ctx, state) or state
    finally:
        if bar is not None:
            bar.close()
        if checkpointer is not None:
            checkpointer.close()
    return FitResult(state, history)


def _check_callbacks(callbacks) -> tuple[Callback, ...]:
    """The callbacks as a tuple (a generator would be spent after one pass),
    each a :class:`Callback`."""
    if isinstance(callbacks, Callback):
        return (callbacks,)
    try:
        callbacks = tuple(callbacks)
    except TypeError:
        raise TypeError(f"callbacks must be a sequence of jdl.training.Callback objects, "
                        f"got {type(callbacks).__name__}") from None
    bad = [cb for cb in callbacks if not isinstance(cb, Callback)]
    if bad:
        raise TypeError(f"callbacks must be jdl.training.Callback objects, got {bad[0]!r} "
                        f"({type(bad[0]).__name__}); subclass Callback and override the hooks you need")
    return callbacks


def _data_record(n: int, batch_size: int, drop_last: bool) -> dict:
    """What a resumed run must share with the run it continues for its steps
    and shuffling to continue: the training set's size and the minibatching."""
    return {"num_examples": int(n), "batch_size": int(batch_size), "drop_last": bool(drop_last)}


def _callback_type(cb: Callback) -> str:
    return f"{type(cb).__module__}.{type(cb).__qualname__}"


def _matched_callbacks(callbacks: tuple[Callback, ...], meta: dict, extra_states: list[str]):
    """``(i, callback)`` for each saved callback state ``i`` to restore.

    A saved state goes to the callback of the same type and the same
    occurrence among callbacks of that type (the second ``EarlyStopping``'s
    to the second ``EarlyStopping``), wherever it now stands in the list: so
    callbacks of other types may be added, left out or reordered. A saved
    state that is not empty (counters, a best state) must find its callback.
    Checkpoints from before types were recorded are matched by position.
    """
    states = meta.get("callbacks", [])
    types = meta.get("callback_types")
    if types is None:
        return list(enumerate(callbacks[: len(states)]))
    now: dict[str, list[Callback]] = {}
    for cb in callbacks:
        now.setdefault(_callback_type(cb), []).append(cb)
    seen: dict[str, int] = {}
    matched = []
    for i, (kind, cb_state) in enumerate(zip(types, states)):
        nth = seen.get(kind, 0)
        seen[kind] = nth + 1
        candidates = now.get(kind, [])
        if nth < len(candidates):
            matched.append((i, candidates[nth]))
        elif cb_state or any(name.startswith(f"callback{i}_") for name in extra_states):
            raise ValueError(
                f"the run was checkpointed with callbacks {types}; callback {i} ({kind}, number {nth + 1} of its "
                f"type) kept state that the resumed run needs, but the callbacks passed now have "
                f"{len(candidates)} of that type. Pass it again to resume (callbacks of other types, and "
                "callbacks without state, may be added, left out or reordered)")
    return matched


def _call_size(callbacks, step: int, most: int) -> int:
    """Steps in the next fused call: ``most``, or fewer where a callback asks to be called."""
    wishes = [w for w in (cb.steps_until_call(step) for cb in callbacks) if w is not None]
    bad = [w for w in wishes if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1]
    if bad:
        raise ValueError(f"a callback's steps_until_call({step}) returned {bad[0]!r}; it must be a positive "
                         "integer (or None for no wish)")
    return int(min([most, *wishes]))


def _is_terminal() -> bool:
    import sys

    return sys.stderr.isatty()


def _postfix(epoch: int, metrics: dict) -> dict:
    out = {"epoch": epoch}
    for name in ("loss", "accuracy", "train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        if name in metrics:
            out[name] = f"{float(np.asarray(metrics[name]).reshape(-1)[-1]):.4f}"
    return out

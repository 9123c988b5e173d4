"""Checkpoints with Orbax: the train state plus JSON metadata, written atomically.

Orbax writes each checkpoint into a temporary directory and renames it into
place only once it is complete, so a crash mid-write leaves the previous
checkpoint as it was; unfinished temporaries are ignored when looking for the
latest one. Before restoring, the saved leaf paths, shapes and dtypes are
compared with the state we restore into, so a checkpoint from another model or
optimizer fails with a message that names the first difference.
"""

from __future__ import annotations

import json
import operator
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jdl.training.state import TrainState


def tree_spec(tree: Any) -> list[list]:
    """``[[path, shape, dtype], ...]`` for each leaf, as JSON-friendly lists."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [[jax.tree_util.keystr(path), list(np.shape(leaf)), _dtype_name(leaf)] for path, leaf in flat]


def _dtype_name(leaf) -> str:
    """An array's dtype, or for a Python scalar leaf (a count kept in some
    optimizer states) the dtype JAX gives it."""
    if hasattr(leaf, "dtype"):
        return str(leaf.dtype)
    return str(jax.dtypes.canonicalize_dtype(np.result_type(leaf)))


def _first_difference(saved: list, current: list) -> str | None:
    saved_map = {p: (s, d) for p, s, d in saved}
    current_map = {p: (s, d) for p, s, d in current}
    for p, (s, d) in current_map.items():
        if p not in saved_map:
            return f"the checkpoint has no entry {p}"
        if saved_map[p] != (s, d):
            ss, sd = saved_map[p]
            return f"{p} is {sd}{tuple(ss)} in the checkpoint but {d}{tuple(s)} now"
    extra = sorted(set(saved_map) - set(current_map))
    if extra:
        return f"the checkpoint has entries the current state lacks, e.g. {extra[0]}"
    return None


def _brief(error: Exception, limit: int = 200) -> str:
    """The first line of an error, at most ``limit`` characters: Orbax and
    TensorStore errors can carry kilobytes of store specification."""
    lines = str(error).strip().splitlines() or [""]
    first = lines[0] if len(lines[0]) <= limit else lines[0][: limit - 1] + "…"
    return f"{type(error).__name__}: {first}"


class Checkpointer:
    """Save and restore :class:`TrainState` plus metadata in one directory.

    Args:
      directory: where checkpoints live (``<directory>/<epoch>/``). It is
        created by the first :meth:`save`, so opening a checkpointer only to
        read leaves no empty directory behind.
      max_to_keep: how many of the newest checkpoints to keep (an integer
        ≥ 1); ``None`` keeps them all.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 2):
        self.directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise NotADirectoryError(f"the checkpoint directory {self.directory} exists and is not a directory; "
                                     "pass another path (a file there is left as it is)")
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int)
                                        or max_to_keep < 1):
            raise ValueError(f"max_to_keep must be an integer ≥ 1 (how many of the newest checkpoints to "
                             f"keep) or None to keep all, got {max_to_keep!r}")
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=False, enable_async_checkpointing=False
            ),
        )

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def all_epochs(self) -> list[int]:
        """The saved epochs, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, epoch: int, state: TrainState, meta: dict,
             extra_states: dict[str, TrainState] | None = None) -> None:
        """Write the checkpoint for ``epoch`` (after that epoch has finished).

        ``extra_states``: further states of the same structure as ``state``,
        by name (a callback's best state, the state ``fit`` returned), each
        restored with :meth:`restore_extra`; their names go into the metadata
        as ``extra_states``.

        Everything is checked before anything is written: ``epoch`` must be
        an integer newer than every saved one (a checkpoint already saved is
        never replaced, nor removed to make room for an older epoch),
        ``meta`` must be JSON, no array may be empty (Orbax cannot save one),
        and each extra state must have ``state``'s structure.
        """
        if isinstance(epoch, bool):
            raise TypeError(f"epoch must be an integer ≥ 0, got {epoch!r}")
        try:
            epoch = operator.index(epoch)
        except TypeError:
            raise TypeError(f"epoch must be an integer ≥ 0, got {epoch!r}") from None
        latest = self.latest_epoch()
        if epoch < 0 or (latest is not None and epoch <= latest):
            raise ValueError(
                f"cannot save epoch {epoch} in {self.directory}: "
                + ("epochs are integers ≥ 0" if epoch < 0 else
                   f"the newest checkpoint there is epoch {latest}, and a saved checkpoint is never replaced")
                + "; save to another directory, or delete the newer checkpoints first")
        extra_states = dict(extra_states or {})
        bad = [name for name in extra_states if not name.isidentifier() or name in ("state", "meta")]
        if bad:
            raise ValueError(f"extra state names must be identifiers other than 'state' and 'meta', got {bad}")
        spec = tree_spec(state)
        for name, extra in extra_states.items():
            difference = _first_difference(spec, tree_spec(extra))
            if difference:
                raise ValueError(f"extra state {name!r} does not have the structure of the state saved with it "
                                 f"(taking the state as saved: {difference}); save states of one model and "
                                 "optimizer together")
        for name, tree in [("state", state), *extra_states.items()]:
            flat, _ = jax.tree_util.tree_flatten_with_path(tree)
            empty = [jax.tree_util.keystr(path) for path, leaf in flat if np.size(leaf) == 0]
            if empty:
                raise ValueError(f"{name}{empty[0]} is an empty array, which Orbax cannot save; leave "
                                 "zero-size arrays out of the state")
        meta = dict(meta, tree_spec=spec, epoch=epoch, extra_states=sorted(extra_states))
        try:
            json.dumps(meta, allow_nan=True)
        except TypeError as e:
            raise TypeError(f"the checkpoint's metadata must be JSON ({e}); convert NumPy or JAX scalars "
                            "with float() or int()") from None
        os.makedirs(self.directory, exist_ok=True)
        items = {f"extra_{name}": ocp.args.StandardSave(s) for name, s in extra_states.items()}
        self._manager.save(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta), **items),
            force=True,
        )
        self._manager.wait_until_finished()

    def read_meta(self, epoch: int | None = None) -> dict:
        epoch = self.latest_epoch() if epoch is None else epoch
        if epoch is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if epoch not in self.all_epochs():
            raise FileNotFoundError(
                f"there is no checkpoint for epoch {epoch} in {self.directory}; "
                f"the epochs saved are {self.all_epochs() or 'none'}"
            )
        try:
            return dict(self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)
        except Exception as e:  # orbax raises many kinds on damaged files
            raise ValueError(
                f"the checkpoint {os.path.join(self.directory, str(epoch))} is unreadable "
                f"({_brief(e)}); it is corrupt or incomplete. {self._way_out(epoch)}"
            ) from None

    def restore(self, template: TrainState, epoch: int | None = None) -> tuple[TrainState, dict]:
        """Restore into the structure of ``template`` (a freshly created state).

        Raises:
          ValueError: the checkpoint is unreadable, or was written for a
            different model or optimizer (names the first differing entry).
        """
        epoch = self.latest_epoch() if epoch is None else epoch
        meta = self.read_meta(epoch)
        difference = _first_difference(meta.get("tree_spec", []), tree_spec(template))
        if difference:
            raise ValueError(
                f"the checkpoint in {self.directory} does not match this model/optimizer: "
                f"{difference}. Resume with the settings the run was started with "
                f"(saved config: {meta.get('config', 'unknown')}), or use another output directory"
            )
        return self._restore_item(template, epoch, "state"), meta

    def restore_extra(self, template: TrainState, name: str, epoch: int | None = None) -> TrainState:
        """Restore the extra state ``name`` saved with ``epoch`` (see :meth:`save`)
        into the structure of ``template``, which :meth:`restore` has checked."""
        epoch = self.latest_epoch() if epoch is None else epoch
        meta = self.read_meta(epoch)
        saved = meta.get("extra_states", [])
        if name not in saved:
            raise KeyError(f"the checkpoint for epoch {epoch} has no extra state {name!r} (it has {saved})")
        difference = _first_difference(meta.get("tree_spec", []), tree_spec(template))
        if difference:  # extra states are saved with the state's structure
            raise ValueError(f"the extra state {name!r} in {self.directory} does not match this "
                             f"model/optimizer: {difference}; restore it into a state like the one saved")
        return self._restore_item(template, epoch, f"extra_{name}")

    def _restore_item(self, template: TrainState, epoch: int, item: str) -> TrainState:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            restored = self._manager.restore(
                epoch, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)})
            )[item]
        except Exception as e:
            raise ValueError(
                f"the checkpoint {os.path.join(self.directory, str(epoch))} could not be read "
                f"({_brief(e)}); it is corrupt. {self._way_out(epoch)}"
            ) from None
        return restored

    def _way_out(self, epoch: int) -> str:
        others = [s for s in self.all_epochs() if s != epoch]
        if not others:
            return "No other checkpoint is kept: start a new run in another directory"
        return (f"Other checkpoints: epochs {others}. To resume training, delete the damaged one; "
                f"to analyse one (jdl hessian), pass --epoch {others[-1]}")

    def close(self) -> None:
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

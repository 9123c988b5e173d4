"""Data parallelism with ``jax.sharding``: one mesh axis ``"data"``.

The batch is split along its first axis over the devices; parameters,
optimizer state and model state are replicated. The train step itself does not
change: ``jax.jit`` sees sharded inputs and XLA inserts the all-reduce of the
gradient mean. A mesh with more axes (a ``"model"`` axis for tensor
parallelism) uses the same entry points. Multi-host runs are not covered
by :func:`shard_batch`, which places one process's batch as the global
array; with ``jax.distributed``, build each global batch from the hosts'
parts with ``jax.make_array_from_process_local_data(batch_sharding(mesh),
local_part)`` (untested here: this project runs on one host).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_parallel_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Shard the leading (example) axis over ``"data"``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def check_data_axis(mesh) -> None:
    """``mesh`` must be a :class:`~jax.sharding.Mesh` with a ``"data"`` axis."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}; "
                        "build one with jdl.training.data_parallel_mesh()")
    if DATA_AXIS not in mesh.shape:
        raise ValueError(f"the mesh has axes {tuple(mesh.axis_names)} but no {DATA_AXIS!r} axis to split "
                         f"batches over; name the batch axis {DATA_AXIS!r}, e.g. "
                         "jdl.training.data_parallel_mesh()")


def check_divisible(batch_size: int, mesh: Mesh) -> None:
    check_data_axis(mesh)
    n = mesh.shape[DATA_AXIS]
    if batch_size % n:
        raise ValueError(
            f"batch_size={batch_size} does not split evenly over the {n} devices of the "
            f"'{DATA_AXIS}' mesh axis; use a multiple of {n}"
        )


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Place a batch with its leading axis split over the mesh's data axis."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        if np.ndim(leaf) == 0:
            raise ValueError(f"batch entry {jax.tree_util.keystr(path) or '(the root)'} is a scalar; every entry "
                             "needs a leading example axis to split over the devices (replicate fixed values "
                             "with replicate(), or pass them through the loss)")
        check_divisible(int(np.shape(leaf)[0]), mesh)
    return jax.device_put(batch, batch_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree (params, train state, a small dataset) on every device."""
    return jax.device_put(tree, replicated(mesh))

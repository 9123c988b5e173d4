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

from jdl.validation import check_tree_no_silent_downcast

DATA_AXIS = "data"


def data_parallel_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: all devices).

    ``devices`` may be any sequence or array of distinct :class:`jax.Device`
    objects (an array such as ``mesh_utils.create_device_mesh((2, 2))`` is
    flattened); an empty one, a repeated device or anything that is not a
    device is refused here rather than deep inside a later placement.
    """
    if devices is None:
        devices = jax.devices()
    elif isinstance(devices, jax.Device):
        devices = [devices]
    elif isinstance(devices, np.ndarray):
        devices = list(devices.ravel())
    else:
        try:
            devices = list(devices)
        except TypeError:
            raise TypeError(f"devices must be a sequence of jax.Device objects (e.g. jax.devices()[:2]), got "
                            f"{type(devices).__name__}") from None
    if not devices:
        raise ValueError("devices is empty; a mesh needs at least one device, e.g. jax.devices()[:1]")
    bad = [d for d in devices if not isinstance(d, jax.Device)]
    if bad:
        raise TypeError(f"devices must be jax.Device objects (e.g. jax.devices()[:2]), got {bad[0]!r} "
                        f"({type(bad[0]).__name__})")
    if len(set(devices)) < len(devices):
        repeated = next(d for d in devices if devices.count(d) > 1)
        raise ValueError(f"device {repeated} appears more than once in devices; each device can hold one "
                         "part of the batch, so list each once")
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
    """Place a batch with its leading axis split over the mesh's data axis.

    float64 NumPy data is refused while JAX runs in 32-bit mode, as the train
    and eval steps refuse it: placing it would round it to float32 silently,
    before a step could see it.
    """
    check_data_axis(mesh)
    check_tree_no_silent_downcast(batch, where="batch entry ")
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        if np.ndim(leaf) == 0:
            raise ValueError(f"batch entry {jax.tree_util.keystr(path) or '(the root)'} is a scalar; every entry "
                             "needs a leading example axis to split over the devices (replicate fixed values "
                             "with replicate(), or pass them through the loss)")
        check_divisible(int(np.shape(leaf)[0]), mesh)
    return jax.device_put(batch, batch_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree (params, train state, a small dataset) on every device.

    Like :func:`shard_batch`, it refuses float64 NumPy leaves while JAX runs
    in 32-bit mode rather than round them to float32 silently.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}; "
                        "build one with jdl.training.data_parallel_mesh()")
    check_tree_no_silent_downcast(tree, where="leaf ")
    return jax.device_put(tree, replicated(mesh))

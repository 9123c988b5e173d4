"""Data parallelism: the mesh and the placement helpers (conftest gives 4 CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl.training import data_parallel_mesh, replicate, shard_batch


def test_data_parallel_mesh_refuses_devices_it_cannot_split_over():
    # An empty list made a mesh of size 0 (then "integer modulo by zero"), a repeated device
    # a mesh that failed in device_put with a safe_zip error, integers an AttributeError.
    devices = jax.devices()
    assert len(devices) >= 4, "conftest sets jax_num_cpu_devices=4"
    with pytest.raises(ValueError, match="devices is empty"):
        data_parallel_mesh([])
    with pytest.raises(ValueError, match="appears more than once"):
        data_parallel_mesh([devices[0], devices[0]])
    with pytest.raises(TypeError, match="must be jax.Device objects"):
        data_parallel_mesh([0, 1])
    with pytest.raises(TypeError, match="sequence of jax.Device"):
        data_parallel_mesh(2)
    # A 2-D array of devices (mesh_utils.create_device_mesh) and a single device are fine.
    assert data_parallel_mesh(np.asarray(devices[:4]).reshape(2, 2)).shape == {"data": 4}
    assert data_parallel_mesh(devices[1]).shape == {"data": 1}


def test_placement_refuses_float64_that_it_would_round():
    # The steps refuse float64 NumPy data with x64 off, but shard_batch and replicate rounded
    # it to float32 first, so a sharded step never saw it.
    mesh = data_parallel_mesh()
    wide = {"x": np.ones((8, 2)), "y": np.zeros(8, np.int32)}
    with pytest.raises(ValueError, match=r"batch entry \['x'\] is float64"):
        shard_batch(wide, mesh)
    with pytest.raises(ValueError, match=r"leaf \['x'\] is float64"):
        replicate(wide, mesh)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        replicate({"x": np.ones(2, np.float32)}, jax.devices())
    with jax.enable_x64(True):
        assert shard_batch(wide, mesh)["x"].dtype == jnp.float64
        assert replicate(wide, mesh)["x"].dtype == jnp.float64

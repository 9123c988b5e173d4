"""Test configuration: CPU only, several virtual CPU devices for the sharding
tests, and strict rank promotion so silent broadcasting bugs fail loudly."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's CPU linear algebra (eigh, Cholesky, solve) runs on OpenBLAS; its threads fight
# each other on small 2-core machines (a 610×610 eigh: 3.8 s threaded, 0.09 s single).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_numpy_rank_promotion", "raise")

"""Test configuration: CPU only, several virtual CPU devices for the sharding
tests, and strict rank promotion so silent broadcasting bugs fail loudly."""

import importlib.util
import os
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's CPU linear algebra (eigh, Cholesky, solve) runs on OpenBLAS; its threads fight
# each other on small 2-core machines (a 610×610 eigh: 3.8 s threaded, 0.09 s single).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_numpy_rank_promotion", "raise")

# One XLA compilation cache for the whole run, shared by the xdist workers: many
# tests compile the same program (a model's fused epoch, a solver's loop) in
# separate processes or closures, and each compiles it afresh otherwise. Tracing
# still happens, so tests that count traces or jit cache entries are unaffected.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), f"jdl-tests-xla-{_RUN}"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def _float64_is_off_at_the_start():
    """Every test starts in JAX's default float32: one that needs float64 turns it
    on for itself (``with jax.enable_x64(True)``, or a fixture that yields inside
    one), so a test's dtype never depends on which tests ran before it."""
    assert not jax.config.jax_enable_x64, "an earlier test or fixture left jax_enable_x64 on"


@pytest.fixture
def load_example(monkeypatch):
    """``load_example(name, *functions)``: the script ``examples/{name}.py``
    imported as a module (its ``main`` not run), with matplotlib on the Agg
    backend and ``examples/`` on the import path (for the scripts' shared
    ``_cli``, as when a script runs); ``main`` and the named ``functions``
    must be callable."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def load(name, *functions):
        spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for function in ("main", *functions):
            assert callable(getattr(module, function, None)), f"{name}.{function}"
        return module

    return load

"""Checks at the library's boundary: bad input fails here, with a message that
names the problem and the fix, before anything is traced or compiled."""

from __future__ import annotations

import numbers
import os
import tempfile
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np


def check_batch_entries(batch) -> None:
    """A batch is a mapping with at least ``"x"`` and ``"y"`` of equal length."""
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"a batch must be a dict like {{'x': inputs, 'y': targets}}, got {type(batch).__name__}; "
            "wrap arrays as dict(x=x, y=y)"
        )
    missing = [k for k in ("x", "y") if k not in batch]
    if missing:
        raise ValueError(f"batch is missing {missing}; it has keys {sorted(batch)}. Pass {{'x': inputs, 'y': targets}}")
    loose = [k for k, v in batch.items() if not isinstance(v, (np.ndarray, jax.Array))]
    if loose:
        k = loose[0]
        raise TypeError(
            f"batch entry {k!r} is a {type(batch[k]).__name__}, not an array; convert it once, with its "
            f"dtype, e.g. {k}=np.asarray({k}, dtype=np.float32) (np.int32 for labels)"
        )
    lengths = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in batch.items()}
    if None in lengths.values():
        scalars = [k for k, n in lengths.items() if n is None]
        raise ValueError(f"batch entries {scalars} are scalars; every entry needs a leading batch axis")
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"batch entries have different lengths {lengths}; every entry needs the same "
            "number of examples along axis 0"
        )


_WIDE = (np.dtype(np.float64), np.dtype(np.complex128))


def _rounded_to(a) -> str | None:
    """The dtype JAX in 32-bit mode would silently round ``a`` to (``"float32"``
    or ``"complex64"``), or ``None`` when it keeps ``a``'s dtype."""
    dtype = getattr(a, "dtype", None)
    if jax.config.jax_enable_x64 or dtype is None or np.dtype(dtype) not in _WIDE:
        return None
    return "float32" if np.dtype(dtype).kind == "f" else "complex64"


def check_no_silent_downcast(batch, *, where: str = "batch") -> None:
    """Refuse float64 (complex128) entries while JAX runs in 32-bit mode.

    With ``jax_enable_x64`` off, JAX turns a float64 NumPy array into float32
    without a word — before a jitted function sees it, so a check at trace
    time cannot tell. This one runs before the call (a dtype test per entry,
    about a microsecond), so float64 data is refused at every entry point
    (``create_train_state``, ``fit``, the train and eval steps) rather than
    accepted by some and rounded.
    """
    for name, a in batch.items():
        narrow = _rounded_to(a)
        if narrow:
            raise ValueError(
                f"{where} entry {name!r} is {np.dtype(a.dtype)} but JAX runs in 32-bit mode "
                f"(jax_enable_x64 is off) and would silently round it to {narrow}; cast it, e.g. "
                f"{name}.astype(np.{narrow}), or enable 64-bit with "
                "jax.config.update('jax_enable_x64', True) before creating the model"
            )


def check_tree_no_silent_downcast(tree, *, where: str) -> None:
    """:func:`check_no_silent_downcast` for the leaves of any pytree (a model's
    initial parameters, an optimizer state), each named by its path."""
    for path, a in jax.tree_util.tree_flatten_with_path(tree)[0]:
        narrow = _rounded_to(a)
        if narrow:
            raise ValueError(
                f"{where}{jax.tree_util.keystr(path)} is {np.dtype(a.dtype)} but JAX runs in 32-bit mode "
                f"(jax_enable_x64 is off) and would silently round it to {narrow}; build it as {narrow} "
                "(e.g. np.asarray(w, np.float32)), or enable 64-bit with "
                "jax.config.update('jax_enable_x64', True) first"
            )


def check_step_batch(batch) -> None:
    """What a compiled train or eval step checks before the call, where a trace
    cannot: the batch is a dict of arrays with at least one example, and
    nothing in it would be silently rounded down (:func:`check_no_silent_downcast`)."""
    check_batch_entries(batch)
    if not np.shape(batch["y"])[0]:
        raise ValueError("the batch holds no examples; a step needs at least one (drop empty batches)")
    check_no_silent_downcast(batch)


def _raw_dtype(a) -> np.dtype:
    """The dtype as given (a NumPy float64 array stays float64, before JAX canonicalises it)."""
    return np.dtype(a.dtype) if hasattr(a, "dtype") else np.dtype(jnp.result_type(a))


def _compatible_dtype(given: str, expected: str) -> bool:
    """Same dtype, or an integer width JAX canonicalises (int64 labels → int32).

    A floating-point input wider than the model's (float64 data for a float32
    model) is *not* compatible: JAX would silently round it down.
    """
    g, e = np.dtype(given), np.dtype(expected)
    if g == e:
        return True
    return g.kind in "iu" and e.kind in "iu" and jnp.dtype(jnp.result_type(g)) == e


def check_batch(batch_spec, batch, *, where: str = "batch", leading_axes: int = 1) -> None:
    """Compare a batch with the spec the model was initialised for.

    Args:
      batch_spec: ``TrainState.batch_spec``.
      batch: the batch (or dataset) about to be used.
      where: how to name it in a message ("batch", "validation data", ...).
      leading_axes: axes before the per-example shape (1 for a batch).
    """
    check_batch_entries(batch)
    check_no_silent_downcast(batch, where=where)
    for name, spec in batch_spec:
        if name not in batch:
            raise ValueError(f"{where} has no entry {name!r}; the model was initialised with one")
        a = batch[name]
        shape = tuple(np.shape(a)[leading_axes:])
        dtype = str(_raw_dtype(a))
        if _compatible_dtype(dtype, spec.dtype):
            dtype = spec.dtype
        if shape != tuple(spec.shape):
            raise ValueError(
                f"{where} entry {name!r} has per-example shape {shape} but the model was "
                f"initialised for {tuple(spec.shape)}; reshape the data or re-initialise the model "
                "for this shape"
            )
        if dtype != spec.dtype:
            raise ValueError(
                f"{where} entry {name!r} has dtype {dtype} but the model was initialised with "
                f"{spec.dtype}; cast it, e.g. {name}.astype(jnp.{spec.dtype})"
            )


def check_count(value, name: str, minimum: int = 1, *, hint: str = "") -> int:
    """``value`` as a Python ``int`` if it is an integer (Python's or NumPy's,
    not a bool) of at least ``minimum``; else ``ValueError`` naming ``name``
    (with ``hint``, the way out). ``2.9`` is refused, not truncated."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {need}, got {value!r}{'; ' + hint if hint else ''}")
    return int(value)


def check_positive_int(value, name: str, *, hint: str = "") -> int:
    return check_count(value, name, 1, hint=hint)


def check_positive_float(value, name: str, *, hint: str = "") -> float:
    if isinstance(value, bool):  # True is 1.0 to float(), never meant as a number here
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}{'; ' + hint if hint else ''}")
    return v


def check_writable_dir(path: str | os.PathLike, *, what: str = "output directory",
                       hint: str = "choose a writable path or fix its permissions") -> str:
    """Create ``path`` if needed and make sure we can write there, before any work.

    Writing is tested by creating (and removing) a file: ``os.access`` answers
    yes to root on a read-only mount. ``hint`` is the way out the message names.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a file, not a directory; choose another path")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create {what} {path!r} ({e.strerror}); choose a writable path") from None
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".jdl-write-check-"):
            pass
    except OSError as e:
        raise ValueError(f"{what} {path!r} is not writable ({e.strerror}): {hint}") from None
    return path


def as_key(key) -> jax.Array:
    """A typed PRNG key from an integer seed (Python's or NumPy's, or a traced
    integer scalar, so seeds can be vmapped), a raw ``uint32`` key
    (``jax.random.PRNGKey``) or a typed key (``jax.random.key``). Anything
    else — a float, a bool, a string — raises ``TypeError``."""
    fix = ("pass an integer seed (key=0) or a PRNG key (key=jax.random.key(0)); "
           "split a key for several uses (jax.random.split)")
    if isinstance(key, (bool, np.bool_)):
        raise TypeError(f"key must be an integer seed or a PRNG key, got the bool {key!r}; {fix}")
    if isinstance(key, numbers.Integral):
        return jax.random.key(int(key))
    if not isinstance(key, (jax.Array, np.ndarray)):
        raise TypeError(f"key must be an integer seed or a PRNG key, got {key!r} ({type(key).__name__}); {fix}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.ndim == 0 and jnp.issubdtype(key.dtype, jnp.integer):
        return jax.random.key(key)
    if key.ndim >= 1 and key.dtype == jnp.uint32:
        return jax.random.wrap_key_data(key)
    aval = f"{np.dtype(key.dtype).name}[{','.join(map(str, key.shape))}]"
    raise TypeError(f"key must be an integer seed or a PRNG key, got an array of {aval}; {fix}")

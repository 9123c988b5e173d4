"""Files a run writes: atomically, and as strict JSON."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import numpy as np

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def finite_json(value: Any) -> Any:
    """``value`` ready for strict JSON: NumPy scalars and 0-d arrays as Python
    numbers, and non-finite floats as the strings ``"nan"``, ``"inf"``,
    ``"-inf"`` (``float()`` reads them back; bare ``NaN``/``Infinity`` are not JSON)."""
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def read_non_finite(record: dict) -> dict:
    """The inverse of :func:`finite_json` for one record's values (a ``json.loads`` ``object_hook``)."""
    return {k: _NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in record.items()}


def _mode_for(path: str) -> int:
    """The permission bits a new file at ``path`` would get from ``open``."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """:func:`write_bytes_atomic` of ``text`` encoded as UTF-8."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once or not at all: into a fresh temporary
    file beside it (a unique name, so concurrent writers do not collide), flushed
    to disk, then renamed over ``path``. A failure removes the temporary file.
    The file gets the permissions a plain ``open`` would give it (those of the
    file it replaces, else ``0o666`` less the umask), not ``mkstemp``'s private
    ``0o600``, so whoever can read the run's checkpoints can read its records."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented strict JSON (see :func:`finite_json`), written atomically.
    Serialised before anything is written, so a value JSON cannot hold leaves no file behind."""
    write_text_atomic(path, json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n")

"""What the example scripts share: command-line options read off their ``run``
functions, and writing their results over the previous ones all or none.

Each keyword of ``run`` with a number, string, bool or tuple default becomes a
flag (``perceptron_epochs=100`` → ``--perceptron-epochs 100``), so ``--help``
lists what a script can change and exits without running it.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path


def options(run: Callable, doc: str | None, argv: list[str] | None = None) -> dict:
    """``argv`` (default: the command line) parsed into keyword arguments for ``run``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, parameter in inspect.signature(run).parameters.items():
        default, flag = parameter.default, "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, (int, float, str)):
            parser.add_argument(flag, type=type(default), default=default, help=f"(default: {default})")
        elif isinstance(default, tuple) and default and len({type(v) for v in default}) == 1:
            kind = type(default[0])
            if kind in (int, float, str):
                # quoted as a shell would need them: 'MLP 64-256-256-10' is one value, not two
                parser.add_argument(flag, type=kind, nargs="+", default=default,
                                    help=f"(default: {' '.join(shlex.quote(str(v)) for v in default)})")
    chosen = vars(parser.parse_args(argv))
    return {name: tuple(value) if isinstance(value, list) else value for name, value in chosen.items()}


def run_settings(run: Callable, options: dict) -> dict:
    """The keyword arguments ``run(**options)`` will see, defaults filled in (for
    the record of a run); an unknown option fails here, before any training."""
    bound = inspect.signature(run).bind(**options)
    bound.apply_defaults()
    return bound.arguments


def publish(directory, writers: dict[str, Callable[[Path], object]] | Callable[[Path], list[Path]]) -> list[Path]:
    """Write results into ``directory`` over the previous ones, all or none.

    ``writers`` maps each file name to a function that writes that file at the
    path it is given (in order: the record last), or is one function that
    writes its files into the folder it is given and returns their paths.
    Everything is written into a staging folder inside ``directory`` first and
    moved over the previous files (``os.replace``) only once all of it has been
    written: a plot that fails part-way leaves the old record and plots as
    they were, never a new record beside an old plot.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".partial-") as staging:
        staging = Path(staging)
        if callable(writers):
            names = [Path(p).name for p in writers(staging)]
        else:
            for name, write in writers.items():
                write(staging / name)
            names = list(writers)
        for name in names:
            os.replace(staging / name, directory / name)
    return [directory / name for name in names]

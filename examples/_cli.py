"""Command-line options for the example scripts, read off their ``run`` functions.

Each keyword of ``run`` with a number, string, bool or tuple default becomes a
flag (``perceptron_epochs=100`` → ``--perceptron-epochs 100``), so ``--help``
lists what a script can change and exits without running it.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable


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
                parser.add_argument(flag, type=kind, nargs="+", default=default,
                                    help=f"(default: {' '.join(map(str, default))})")
    chosen = vars(parser.parse_args(argv))
    return {name: tuple(value) if isinstance(value, list) else value for name, value in chosen.items()}

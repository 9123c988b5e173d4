"""The examples in jdl's docstrings (``>>>``) run and print what they show."""

import doctest
import importlib
import pkgutil

import pytest

import jdl

# jdl.__main__ runs the command line when imported
MODULES = sorted(info.name for info in pkgutil.walk_packages(jdl.__path__, "jdl.") if info.name != "jdl.__main__")


def _examples(name):
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(module, name, module=module) if t.examples]


@pytest.mark.parametrize("name", [name for name in MODULES if _examples(name)])
def test_docstring_examples(name):
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    for test in _examples(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed (above)"


def test_every_module_with_examples_is_found():
    assert len([name for name in MODULES if _examples(name)]) >= 8

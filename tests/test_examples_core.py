"""The training-core example runs on a tiny budget."""


def test_train_digits_example_fit_step_by_hand_and_vmapped_ensemble(load_example):
    out = load_example("train_digits").main(epochs=3, members=2)
    assert out["fit_test_accuracy"] > 0.85
    assert out["by_hand_test_accuracy"] > 0.85   # the pure step in a Python loop
    assert len(out["member_accuracy"]) == 2 and min(out["member_accuracy"]) > 0.6
    assert out["ensemble_accuracy"] > 0.6


def test_every_example_takes_help_and_its_options_without_running(load_example, capsys):
    """11 of the 13 scripts had no argument parser: ``--help`` ran the whole job
    (minutes for sequence_memory) and overwrote examples/results."""
    import inspect
    import re
    import sys

    import pytest
    from conftest import EXAMPLES

    sys.path.insert(0, str(EXAMPLES))
    try:
        from _cli import options
    finally:
        sys.path.remove(str(EXAMPLES))
    scripts = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_"))
    for name in scripts:
        source = (EXAMPLES / f"{name}.py").read_text()
        assert "argparse" in source or re.search(r"options\((run|main), __doc__\)", source), \
            f"{name}.py parses no options"
    train_digits = load_example("train_digits")  # its options come from main's keywords
    with pytest.raises(SystemExit) as stop:
        options(train_digits.main, train_digits.__doc__, ["--help"])
    assert stop.value.code == 0 and "--members MEMBERS  (default: 8)" in capsys.readouterr().out
    for name in sorted(set(scripts) - {"train_digits", "optimizer_comparison"}):
        module = load_example(name, "run")
        with pytest.raises(SystemExit) as stop:
            options(module.run, module.__doc__, ["--help"])
        out = capsys.readouterr().out
        assert stop.value.code == 0 and "usage:" in out
        if name == "digits_models":  # labels with spaces are shown quoted, as they must be typed
            assert "'MLP 64-256-256-10' 'CNN (2 conv + dense)'" in " ".join(out.split())
        inspect.signature(module.run).bind(**options(module.run, module.__doc__, []))
    chosen = options(load_example("perceptron_xor", "run").run, None, ["--mlp-epochs", "7", "--seed", "2"])
    assert chosen == {"perceptron_epochs": 100, "mlp_epochs": 7, "seed": 2}

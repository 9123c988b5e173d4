"""The command line and bad input at the boundary: one clear message, nothing lost."""

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jdl.cli import main
from jdl.data import digits
from jdl.models import MLP, get_model
from jdl.nn import cross_entropy
from jdl.optim import get_optimizer
from jdl.training import create_train_state, fit, from_nnx, make_eval_step, make_evaluate, make_train_step


def _files(path):
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_jdl_train_defaults_reach_97_percent_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "test" in printed and "accuracy" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["accuracy"] >= 0.97
    for name in ("config.json", "metrics.jsonl", "learning_curve.png", "summary.json"):
        assert (out / name).is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == summary["config"]["epochs"]


def test_jdl_train_resume_extends_a_run_and_refuses_to_overwrite(tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["train", "--out", out, "--no-progress", "--hidden", "16", "--batch-size", "256"]
    assert main(base + ["--epochs", "2"]) == 0
    before = _files(tmp_path)
    assert main(base + ["--epochs", "2"]) == 2  # exists: refuse, touch nothing
    assert "--resume" in capsys.readouterr().err
    assert _files(tmp_path) == before
    assert main(base + ["--resume", "--lr", "0.5"]) == 2  # a changed setting is refused
    assert "only --epochs may change" in capsys.readouterr().err
    assert _files(tmp_path) == before
    assert main(["train", "--out", out, "--no-progress", "--resume", "--epochs", "3"]) == 0
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3
    # The new count reaches config.json (it stayed at 2: a later plain --resume trained
    # nothing more and load_run rebuilt the schedule for the old total), with a note on
    # the schedule.
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 3
    assert "stretches the cosine schedule" in capsys.readouterr().err
    # Fewer epochs than already run trained nothing and rewrote config.json to the lower count.
    before = _files(tmp_path)
    assert main(["train", "--out", out, "--no-progress", "--resume", "--epochs", "1"]) == 2
    assert "has trained 3 epochs already, so --epochs (the total" in capsys.readouterr().err
    assert _files(tmp_path) == before
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["epoch_seconds_total"] == pytest.approx(sum(r["time"] for r in history))


def test_run_files_get_the_permissions_open_would_give(tmp_path):
    # mkstemp's 0600 made config.json, metrics.jsonl and summary.json private while the
    # checkpoints beside them were readable.
    import os

    from jdl._io import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "new.json", {"a": 1})
        assert (os.stat(tmp_path / "new.json").st_mode & 0o777) == 0o644
        os.chmod(tmp_path / "new.json", 0o640)
        write_json_atomic(tmp_path / "new.json", {"a": 2})  # a replaced file keeps its mode
        assert (os.stat(tmp_path / "new.json").st_mode & 0o777) == 0o640
    finally:
        os.umask(old)


def test_learning_curves_show_whole_epochs_zero_losses_and_a_diverged_run(tmp_path, monkeypatch):
    import matplotlib.figure

    from jdl.plotting import plot_learning_curves

    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k))[1])
    history = [{"epoch": 0, "train_loss": 0.5, "val_loss": 0.6, "train_accuracy": 0.5, "val_accuracy": 0.4},
               {"epoch": 1, "train_loss": 0.0, "val_loss": 0.1, "train_accuracy": 1.0, "val_accuracy": 0.9}]
    plot_learning_curves(history, str(tmp_path / "curve"))
    loss_axis, accuracy_axis = figures[-1].axes
    train = loss_axis.get_lines()[0].get_ydata()
    assert train[1] == pytest.approx(0.01)  # a zero loss a decade below the smallest, not off the log axis
    for axis in (loss_axis, accuracy_axis):  # whole epochs: the ticks had been 0.945 … 1.050
        assert all(float(t).is_integer() for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1])
    plot_learning_curves([{"epoch": 0, "train_loss": float("nan"), "train_accuracy": 0.5}], str(tmp_path / "nan"))
    loss_axis = figures[-1].axes[0]
    assert loss_axis.get_yscale() == "linear" and "diverged" in loss_axis.texts[0].get_text()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--optimizer", "adamm"], "unknown optimizer 'adamm'"),
        (["--seed", "4294967296"], "seed must be in [0, 2**32)"),
        (["--dataset", "cifar10"], "unknown dataset 'cifar10'"),
        (["--model", "vgg"], "unknown model 'vgg'"),
        (["--batch-size", "0"], "batch size must be a positive integer"),
        (["--lr", "-0.1"], "learning rate must be a positive"),
        (["--lr", "0"], "learning rate must be a positive"),
        (["--model", "cnn", "--dataset", "mnist1d"], "needs images"),
    ],
)
def test_cli_bad_options_give_one_clear_error(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_cli_a_failed_run_can_be_retried_with_fixed_options(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--out", str(out), "--no-progress", "--dataset", "xor", "--model", "logistic", "--epochs", "1"]
    assert main(base) == 2  # the default batch size, 64, is larger than xor's 4 training examples
    err = capsys.readouterr().err
    assert "larger than the 4 training examples" in err and "--batch-size 4" in err and "Traceback" not in err
    assert not out.exists()
    assert main(base + ["--batch-size", "4"]) == 0
    assert json.loads((out / "config.json").read_text())["batch_size"] == 4
    # A config.json that an attempt left without a checkpoint does not block a new run either.
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "config.json").write_text(json.dumps({"dataset": "xor", "batch_size": 64}))
    assert main(base[:2] + [str(stale)] + base[3:] + ["--batch-size", "4"]) == 0
    assert json.loads((stale / "config.json").read_text())["batch_size"] == 4


def test_cli_progress_bar_only_on_a_terminal_unless_turned_off(tmp_path, monkeypatch):
    # A piped log filled up with bar redraws: the default is fit's (a bar only on a terminal).
    import jdl.training

    seen = []
    real_fit = jdl.training.fit
    monkeypatch.setattr(jdl.training, "fit", lambda *a, **k: seen.append(k["progress"]) or real_fit(*a, **k))
    base = ["train", "--dataset", "xor", "--model", "logistic", "--epochs", "1", "--batch-size", "4"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert seen == [None, False]


def test_cli_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--out", str(blocker / "run"), "--no-progress"]) == 2
    assert "choose a writable path" in capsys.readouterr().err


def test_cli_resume_of_a_corrupt_run_is_reported(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--out", str(out), "--no-progress", "--hidden", "8", "--epochs", "1"]
    assert main(base) == 0
    for p in (out / "checkpoints" / "0").rglob("*"):
        if p.is_file():
            p.write_bytes(b"\x00")
    before = _files(tmp_path)
    assert main(base[:-2] + ["--resume", "--epochs", "2"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert _files(tmp_path) == before


# --- the same checks through the Python API --------------------------------------------------


@pytest.fixture(scope="module")
def ds():
    return digits()


def test_feature_count_mismatch_is_caught_before_tracing(ds):
    model = from_nnx(MLP(65, (8,), 10, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"cannot be applied to inputs of shape \(\d+, 64\)"):
        fit(model, cross_entropy, optax.sgd(0.1), ds, epochs=1, batch_size=32)


def test_too_few_outputs_for_the_labels(ds):
    model = get_model("mlp", ds.input_shape, 5, hidden=(8,))
    with pytest.raises(ValueError, match="5 outputs"):
        create_train_state(model, optax.sgd(0.1), key=0, batch=ds.train)


def test_batch_shape_and_dtype_mismatch_in_the_step(ds):
    model = get_model("mlp", ds.input_shape, 10, hidden=(8,))
    opt = optax.sgd(0.1)
    state = create_train_state(model, opt, key=0, batch=ds.train)
    step = make_train_step(model, cross_entropy, opt)
    x, y = jnp.asarray(ds.train["x"][:8]), jnp.asarray(ds.train["y"][:8])
    with pytest.raises(ValueError, match=r"per-example shape \(63,\).*initialised for \(64,\)"):
        step(state, {"x": x[:, :63], "y": y})
    with pytest.raises(ValueError, match="dtype int32 but the model was initialised with float32"):
        step(state, {"x": x.astype(jnp.int32), "y": y})
    with pytest.raises(ValueError, match="missing"):
        step(state, {"inputs": x, "y": y})
    with pytest.raises(ValueError, match="different lengths"):
        step(state, {"x": x, "y": y[:4]})


def test_fit_argument_checks(ds, tmp_path):
    model = get_model("mlp", ds.input_shape, 10, hidden=(8,))
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        fit(model, cross_entropy, opt, ds, epochs=1, batch_size=-4)
    with pytest.raises(ValueError, match="larger than the"):
        fit(model, cross_entropy, opt, ds, epochs=1, batch_size=10**6)
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        fit(model, cross_entropy, opt, ds, epochs=1, batch_size=32, resume=True)
    # float64 NumPy data with x64 off: refused wherever it enters (JAX would round it
    # silently; the training set used to be accepted and the validation set refused).
    wide = {"x": np.asarray(ds.train["x"], np.float64), "y": ds.train["y"]}
    with pytest.raises(ValueError, match="validation data entry 'x' is float64 .*astype"):
        fit(model, cross_entropy, opt, ds, val_data={k: v[:4] for k, v in wide.items()}, epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="training data entry 'x' is float64 .*astype"):
        fit(model, cross_entropy, opt, wide, epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="'x' is float64 but JAX runs in 32-bit mode"):
        create_train_state(model, opt, key=0, batch=wide)
    state = create_train_state(model, opt, key=0, batch=ds.train)
    batch = {k: v[:8] for k, v in wide.items()}
    for step in (make_train_step(model, cross_entropy, opt), make_eval_step(model, cross_entropy),
                 make_evaluate(model, cross_entropy)):
        with pytest.raises(ValueError, match="'x' is float64 but JAX runs in 32-bit mode"):
            step(state, batch)


def test_optimizer_lookup(ds):
    assert get_optimizer("adam", 1e-3) is not None
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'.*adam"):
        get_optimizer("adamm", 1e-3)
    with pytest.raises(ValueError, match="learning_rate must be a positive"):
        get_optimizer("sgd", 0.0)


# --- from a review of jdl train and run directories ----------------------------------------------


def test_cli_new_run_never_overwrites_files_it_did_not_leave(tmp_path, capsys):
    # Only a checkpoint protected a directory: another program's config.json, or a finished
    # run's summary.json and metrics whose checkpoints were deleted, were overwritten silently.
    base = ["train", "--no-progress", "--hidden", "8", "--epochs", "1"]
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"name": "my project"}')
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "config.json").write_text(json.dumps({"dataset": "digits", "epochs": 1}))
    (finished / "metrics.jsonl").write_text('{"epoch": 0, "train_loss": 0.5}\n')
    (finished / "summary.json").write_text('{"test": {"accuracy": 0.98}}')
    for out, named in ((foreign, "config.json (not a jdl run configuration)"),
                       (finished, "metrics.jsonl (recorded epochs), summary.json")):
        before = _files(tmp_path)
        assert main([*base, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"would overwrite {named}" in err and "Traceback" not in err
        assert _files(tmp_path) == before


def test_cli_resume_messages_lead_somewhere(tmp_path, capsys):
    # Checkpoints without config.json: "--resume" said "drop --resume", and without it the
    # run was refused as "already holds a run; pass --resume". A config.json whose epochs
    # are fewer than the checkpoints hold (edited by hand) crashed with KeyError, and
    # --no-standardize was reported as "--standardize", a flag that does not exist.
    out = tmp_path / "run"
    (out / "checkpoints" / "2").mkdir(parents=True)
    assert main(["train", "--out", str(out), "--no-progress", "--resume"]) == 2
    assert "holds checkpoints but no config.json" in capsys.readouterr().err
    (out / "config.json").write_text(json.dumps({"hidden": [8], "epochs": 1}))
    assert main(["train", "--out", str(out), "--no-progress", "--resume"]) == 2
    assert "must be at least 3, got 1 (config.json's epochs)" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--no-progress", "--resume", "--no-standardize"]) == 2
    assert "--no-standardize given, but the run standardised its inputs" in capsys.readouterr().err
    # A failed attempt resumed with --epochs 0 trained nothing but wrote summary.json and a curve.
    (out / "checkpoints" / "2").rmdir()
    assert main(["train", "--out", str(out), "--no-progress", "--resume", "--epochs", "0"]) == 2
    assert "--epochs 0 would resume a run that has trained nothing" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json"]


def test_cli_an_error_found_when_tracing_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    # The dense Newton optimizers refuse a Hessian too large for memory when the step is
    # traced; that happened inside fit, after config.json and metrics.jsonl were written.
    from jdl.hessian import operators

    monkeypatch.setattr(operators, "available_memory", lambda: 2**20)
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--no-progress", "--hidden", "16", "--optimizer", "jdl:newton",
            "--lr", "1", "--schedule", "constant", "--epochs", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "dense Hessian that newton inverts" in err and "Traceback" not in err
    assert not out.exists()


def test_load_run_refuses_an_epoch_that_is_not_an_integer(tmp_path):
    # epoch=2.0 looked for a checkpoint "2.0" and called the run's checkpoint corrupt.
    from jdl.run import load_run

    for epoch in (2.0, "2", -1, True):
        with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
            load_run(tmp_path, epoch=epoch)

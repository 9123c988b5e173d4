"""``jdl hessian RUN_DIR`` on a checkpoint written by ``jdl train``."""

import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl.cli import main
from jdl.hessian import dense_hessian, model_objective
from jdl.hessian.cli import UNRESOLVED_INDEX
from jdl.run import load_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "digits-mlp")
    assert main(["train", "--hidden", "8", "--epochs", "1", "--out", out, "--no-progress"]) == 0
    return out


def test_hessian_command_prints_report_and_writes_plot(run_dir, capsys):
    code = main(["hessian", run_dir, "--top-k", "3", "--num-probes", "4", "--num-steps", "30",
                 "--trace-matvecs", "30", "--max-examples", "400"])
    assert code == 0
    out = capsys.readouterr().out
    for label in ("loss", "‖g‖", "top 3 λ", "bottom 3 λ", "condition number", "index", "curvature",
                  "trace", "density"):
        assert label in out, label
    with open(f"{run_dir}/hessian.json") as f:
        report = json.load(f)
    assert report["method"] == "dense" and report["num_examples"] == 400
    # The printed extremes are the dense spectrum's, computed here independently.
    run = load_run(run_dir)
    data = {k: jnp.asarray(v)[:400] for k, v in run.dataset.train.items()}
    loss = model_objective(run.model, run.loss_fn, run.state.model_state, train=False).loss
    eig = np.linalg.eigvalsh(np.asarray(jax.jit(lambda p, d: dense_hessian(loss, p, d))(run.state.params, data)))
    np.testing.assert_allclose(report["top_eigenvalues"], eig[::-1][:3], rtol=1e-4)
    np.testing.assert_allclose(report["bottom_eigenvalues"], eig[:3], rtol=1e-4, atol=1e-6)
    assert report["trace_exact"] == pytest.approx(float(eig.sum()), rel=1e-4)
    assert abs(report["trace"]["estimate"] - eig.sum()) < 5 * report["trace"]["standard_error"] + 1e-3
    assert report["index"] == pytest.approx(np.mean(eig < -report["eigenvalue_tolerance"]))
    with open(f"{run_dir}/hessian_density.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_hessian_command_matrix_free(run_dir, capsys):
    code = main(["hessian", run_dir, "--method", "lanczos", "--top-k", "2", "--num-probes", "3",
                 "--num-steps", "40", "--trace-matvecs", "12", "--max-examples", "300", "--batch-size", "128",
                 "--out", f"{run_dir}/density_lanczos.png"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Lanczos + stochastic Lanczos quadrature" in out and "±" in out
    # The report follows --out (the default run's hessian.json is left alone),
    # and is strict JSON: an infinite condition number is the string "inf".
    with open(f"{run_dir}/density_lanczos.json") as f:
        report = json.load(f, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert report["method"] == "lanczos" and len(report["top_eigenvalues"]) == 2
    assert report["float64"] is False and report["seed"] == 0 and report["max_examples"] == 300
    assert report["matmul_precision"] == "highest" and report["backend"] == jax.default_backend()
    value = report["condition_number"]["value"]
    assert isinstance(value, float) or value in ("inf", "nan")
    lower, upper = report["index_bounds"]
    assert "quadrature bounds" in out and lower <= report["index"] <= upper
    assert ("unresolved" in out) == (upper - lower > UNRESOLVED_INDEX)


def test_hessian_command_errors(run_dir, tmp_path, capsys, monkeypatch):
    assert main(["hessian", str(tmp_path)]) == 2
    assert "not a jdl run directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["hessian", str(tmp_path), "--top-k", "0"])
    # Train mode accumulated over batches would change the function with --batch-size.
    assert main(["hessian", run_dir, "--overwrite", "--mode", "train", "--batch-size", "100"]) == 2
    assert "each --batch-size would analyse a different function" in capsys.readouterr().err
    # --out may not take the name of any run's own files, in another run's directory either.
    other = tmp_path / "other-run"
    other.mkdir()
    assert main(["hessian", run_dir, "--out", str(other / "config.png")]) == 2
    assert "config.json is the name of a `jdl train` run's own file" in capsys.readouterr().err
    assert not (other / "config.json").exists()
    # Too few Lanczos steps for both ends: the message names the value given.
    assert main(["hessian", run_dir, "--overwrite", "--method", "lanczos", "--top-k", "30", "--num-steps", "40"]) == 2
    err = capsys.readouterr().err
    assert "top_k=30 needs num_steps >= 60" in err and "got num_steps=40" in err
    assert main(["hessian", run_dir, "--overwrite", "--method", "lanczos", "--top-k", "1000", "--num-steps", "40"]) == 2
    assert "top_k=1000 (of 610 parameters, 305 at each end) needs num_steps >= 610" in capsys.readouterr().err
    # A dense Hessian that would not fit is refused up front, with the way out.
    monkeypatch.setattr("jdl.hessian.operators.available_memory", lambda device=None: 10_000)
    assert main(["hessian", run_dir, "--overwrite", "--method", "dense"]) == 2
    err = capsys.readouterr().err
    assert "dense Hessian of 610 parameters needs" in err and "--method lanczos" in err
    # A checkpoint epoch that does not exist: the epochs saved, not "corrupt".
    assert main(["hessian", run_dir, "--overwrite", "--epoch", "5"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint for epoch 5" in err and "saved are [0]" in err and "corrupt" not in err
    # An --out in a missing directory is refused before the analysis runs.
    assert main(["hessian", run_dir, "--out", str(tmp_path / "missing" / "d.png")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "jdl hessian:" not in capsys.readouterr().out
    # A format matplotlib cannot write, or a name that would replace the run's
    # own files, is refused before any work; so is a Hutch++ budget below 3.
    for out, message in ((f"{run_dir}/report.json", "matplotlib cannot write .json"),
                         (f"{run_dir}/learning_curve.png", "learning_curve.png is the name of a `jdl train` run"),
                         (f"{run_dir}/config.png", "config.json is the name of a `jdl train` run's own file")):
        assert main(["hessian", run_dir, "--out", out]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "jdl hessian:" not in captured.out, out
    with pytest.raises(SystemExit):
        main(["hessian", run_dir, "--trace-matvecs", "3"])
    assert "at least 4" in capsys.readouterr().err


def test_hessian_command_refuses_a_diverged_checkpoint(tmp_path, capsys):
    run = str(tmp_path / "diverged")
    assert main(["train", "--optimizer", "sgd", "--lr", "1e8", "--hidden", "8", "--epochs", "1",
                 "--out", run, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["hessian", run]) == 2
    captured = capsys.readouterr()
    assert "non-finite parameters" in captured.err and "--epoch" in captured.err
    assert not os.path.exists(os.path.join(run, "hessian.json"))


def test_train_refuses_zero_epochs_for_a_new_run(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["train", "--epochs", "0", "--out", out, "--no-progress"]) == 2
    assert "--epochs 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing written: the directory stays free for a real run


def test_hessian_command_says_when_the_lanczos_ends_have_not_converged(run_dir, tmp_path, capsys):
    # Two steps cannot converge the ends of a 610-parameter Hessian: the report must
    # not turn Ritz values into a confident classification. --out without an
    # extension, or a directory, is saved where the report says.
    code = main(["hessian", run_dir, "--method", "lanczos", "--top-k", "1", "--num-steps", "2",
                 "--num-probes", "2", "--trace-matvecs", "6", "--max-examples", "200",
                 "--out", str(tmp_path / "density")])
    assert code == 0
    out = capsys.readouterr().out
    with open(tmp_path / "density.json") as f:  # beside the plot
        report = json.load(f)
    assert report["eigenvalues_converged"] is False
    assert "not converged" in out
    assert report["classification"] in ("unresolved", "saddle")  # Ritz values can only prove a saddle
    assert f"{tmp_path / 'density.png'}," in out and (tmp_path / "density.png").is_file()
    assert main(["hessian", run_dir, "--top-k", "1", "--num-probes", "2", "--num-steps", "10",
                 "--trace-matvecs", "6", "--max-examples", "200", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'hessian_density.png'}," in out and (tmp_path / "hessian_density.png").is_file()
    assert (tmp_path / "hessian_density.json").is_file()
    assert "not converged" not in out  # the dense spectrum


def test_train_mode_holds_dropout_at_one_mask_from_the_seed(tmp_path, capsys):
    """With dropout, train mode is the network under one mask: the same --seed
    gives the same loss, another seed another mask; the report says so."""
    out = str(tmp_path / "drop")
    assert main(["train", "--hidden", "8", "--epochs", "1", "--dropout", "0.5", "--out", out, "--no-progress"]) == 0
    common = ["hessian", out, "--mode", "train", "--top-k", "1", "--num-probes", "2", "--num-steps", "10",
              "--trace-matvecs", "6", "--max-examples", "100", "--overwrite"]
    losses = []
    for i, seed in enumerate(("0", "0", "1")):
        assert main(common + ["--seed", seed]) == 0
        printed = capsys.readouterr().out
        assert f"random draws (dropout, stochastic pooling), if any, fixed by --seed {seed}" in printed
        assert ("replaced" in printed) == (i > 0)  # a second analysis says it replaced the first's files
        with open(os.path.join(out, "hessian.json")) as f:
            report = json.load(f)
        assert report["mode"] == "train" and report["random_draws_seed"] == int(seed)
        losses.append(report["loss"])
    assert losses[0] == losses[1] != losses[2]
    assert main(common[:3] + ["eval"] + common[4:]) == 0
    assert "random draws" not in capsys.readouterr().out


def test_a_read_only_run_directory_is_analysed_with_out_elsewhere(run_dir, tmp_path, capsys, monkeypatch):
    """The run directory had to be writable even when --out put every file
    elsewhere; and the check trusted os.access, which answers yes to root."""
    refused, original = str(run_dir), tempfile.NamedTemporaryFile

    def named_temporary_file(*, dir, prefix):  # a directory that refuses writes, as a read-only mount does
        if os.path.abspath(dir) == os.path.abspath(refused):
            raise PermissionError(13, "Permission denied")
        return original(dir=dir, prefix=prefix)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", named_temporary_file)
    small = ["--top-k", "1", "--num-probes", "2", "--num-steps", "10", "--trace-matvecs", "6",
             "--max-examples", "100", "--overwrite"]
    assert main(["hessian", refused, *small]) == 2
    assert "is not writable (Permission denied): hessian.json" in capsys.readouterr().err
    assert main(["hessian", refused, *small, "--out", str(tmp_path / "elsewhere.png")]) == 0
    assert (tmp_path / "elsewhere.json").is_file()


@pytest.mark.parametrize("precision", [None, "default"])
def test_hessian_command_sets_the_matmul_precision(run_dir, tmp_path, capsys, monkeypatch, precision):
    """GPUs run float32 products as TF32 under JAX's default precision (λ_max of
    a digits MLP moved by 7e-5 relative on an H100); the analysis runs at
    'highest' unless told otherwise, and the report says which."""
    import jdl.hessian.analysis as analysis

    seen, original = [], analysis.hessian_analysis

    def spy(*args, **kwargs):
        seen.append(jax.config.jax_default_matmul_precision)
        return original(*args, **kwargs)

    monkeypatch.setattr(analysis, "hessian_analysis", spy)
    out = str(tmp_path / "density.png")
    flags = [] if precision is None else ["--matmul-precision", precision]
    assert main(["hessian", run_dir, "--top-k", "1", "--num-probes", "2", "--num-steps", "10",
                 "--trace-matvecs", "6", "--max-examples", "50", "--out", out, *flags]) == 0
    capsys.readouterr()
    expected = precision or "highest"
    assert seen == [expected]
    with open(str(tmp_path / "density.json")) as f:
        assert json.load(f)["matmul_precision"] == expected
    assert jax.config.jax_default_matmul_precision is None  # restored after the command


def test_report_calls_a_small_negative_eigenvalue_indefinite_not_singular():
    """λmin = −1e-4 lies below the classification's τ (√ε·max|λ|) but far above
    the condition number's threshold (n ε·max|λ|): it is kept, and negative."""
    from jdl.hessian import hessian_analysis
    from jdl.hessian.cli import format_report

    lam = jnp.concatenate([jnp.array([-1e-4]), jnp.linspace(0.5, 1.0, 99)])
    a = hessian_analysis(lambda p, d: 0.5 * jnp.sum(lam * p ** 2) * jnp.mean(d), jnp.zeros(100), jnp.ones(4),
                         method="dense", num_steps=20, num_probes=2, trace_matvecs=6)
    assert a.condition.definition == "magnitude" and int(a.condition.num_excluded) == 0
    report = format_report(a)
    assert "undefined: indefinite" in report and "singular" not in report


@pytest.mark.parametrize("field,value", [("dropout", None), ("dropout", "0.1"), ("epochs", True), ("hidden", "88")])
def test_a_config_with_a_field_of_the_wrong_type_is_named(run_dir, tmp_path, capsys, field, value):
    """load_run surfaced such a config.json as a raw TypeError ('<=' not supported
    between float and NoneType); epochs: true was taken as 1."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(dict(config, **{field: value})))
    assert main(["hessian", str(copy), "--top-k", "1", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is not a valid run configuration" in err and field in err


SMALL = ["--num-probes", "2", "--num-steps", "10", "--trace-matvecs", "6", "--max-examples", "100"]


def test_out_paths_are_checked_before_any_work(run_dir, tmp_path, capsys, monkeypatch):
    import shutil

    import jdl.run

    def no_work(*args, **kwargs):
        raise AssertionError("the run was loaded before --out was checked")

    monkeypatch.setattr(jdl.run, "load_run", no_work)
    cases = [
        (str(tmp_path / "missing") + os.sep, "the directory does not exist"),  # read as a file '.png' before
        (os.path.join(run_dir, "checkpoints", "0", "h.png"), "inside the run's checkpoint directory"),
    ]
    (tmp_path / "afile").write_text("x")
    cases.append((str(tmp_path / "afile" / "x.png"), "is a file, not a directory"))
    if shutil.which("xelatex") is None:  # .pgf is listed by matplotlib but needs xelatex: it failed after the work
        cases.append((str(tmp_path / "x.pgf"), "cannot write .pgf files on this machine"))
    for out, message in cases:
        assert main(["hessian", run_dir, "--top-k", "1", *SMALL, "--out", out]) == 2, out
        assert message in capsys.readouterr().err, out


def test_report_notes_a_clamped_top_k_and_records_its_settings(run_dir, tmp_path, capsys):
    assert main(["hessian", run_dir, "--top-k", "400", *SMALL, "--out", str(tmp_path / "h.png")]) == 0
    out = capsys.readouterr().out
    assert "--top-k 400 exceeds half of the 610 parameters; 305 shown at each end" in out
    report = json.loads((tmp_path / "h.json").read_text())
    assert report["epoch"] == 0 and report["top_k"] == 400 and report["num_steps"] == 10  # epoch was null
    before = (tmp_path / "h.json").read_text()
    assert main(["hessian", run_dir, "--top-k", "1", *SMALL, "--out", str(tmp_path / "h.png")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "h.json").read_text() == before  # an earlier report is never replaced silently


def test_an_interrupted_analysis_does_not_mention_resume(run_dir, capsys, monkeypatch):
    import jdl.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jdl.run, "load_run", interrupted)
    assert main(["hessian", run_dir, "--top-k", "1", "--overwrite", *SMALL]) == 130
    err = capsys.readouterr().err
    assert "interrupted; nothing was written" in err and "--resume" not in err

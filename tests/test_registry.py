"""The model registry passes every option on to the model or refuses it, and guards its names.

Each builder forwards the options its model's constructor takes; anything else (a typo,
or a feature the model lacks, such as dropout on a model without dropout layers) is one
clear ``ValueError``, from the Python API and from ``jdl train`` alike.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jdl.cli import main
from jdl.models import MODELS, bind, build_module, get_model, model_entry, register_model
from jdl.run import RunConfig, build_run, classifier_names


def _keydata(i):
    return jax.random.key_data(jax.random.key(i))


def _leaves(module):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(module, nnx.Param))]


def _has(module, kind):
    return any(isinstance(node, kind) for _, node in nnx.iter_graph(module))


@pytest.fixture
def registry():
    """The registry, restored after the test (which may add or replace entries)."""
    saved = dict(MODELS)
    yield MODELS
    MODELS.clear()
    MODELS.update(saved)


# --- options reach the model ------------------------------------------------------------------


def test_lstm_forget_bias_is_forwarded():
    width = 3
    default = np.concatenate([p.ravel() for p in _leaves(build_module("lstm", (5,), 2, hidden=(width,)))])
    assert np.sum(default == 1.0) == width  # the forget gate starts at 1 (seed 003)
    zero = build_module("lstm", (5,), 2, hidden=(width,), forget_bias=0.0)
    biases = [np.asarray(v) for path, v in nnx.to_flat_state(nnx.state(zero, nnx.Param)) if path[-1] == "bias"]
    assert biases and all(np.all(b == 0.0) for b in biases)
    custom = build_module("bilstm", (5,), 2, hidden=(width,), forget_bias=2.5)
    values = np.concatenate([p.ravel() for p in _leaves(custom)])
    assert np.sum(values == 2.5) == 2 * width  # both directions


def test_resnet_batch_norm_options_are_forwarded():
    assert _has(build_module("resnet", (8, 8, 1), 3, stages=(4,)), nnx.BatchNorm)
    plain = build_module("resnet", (8, 8, 1), 3, stages=(4,), batch_norm=False)
    assert not _has(plain, nnx.BatchNorm)
    slow = build_module("resnet1d", (12,), 3, stages=(4,), batch_norm_momentum=0.5)
    assert slow.stem_norm.momentum == 0.5


def test_cnn_hidden_sets_the_dense_width():
    assert build_module("cnn", (8, 8, 1), 3, channels=(4,)).dense.out_features == 64
    assert build_module("cnn", (8, 8, 1), 3, channels=(4,), hidden=(512,)).dense.out_features == 512
    assert build_module("cnn_separable", (8, 8, 1), 3, channels=(4,), hidden=(24,)).dense.out_features == 24
    assert build_module("cnn1d", (12,), 3, channels=(4,), dense_width=20).dense.out_features == 20
    with pytest.raises(ValueError, match="one hidden layer, so hidden takes one width"):
        build_module("cnn", (8, 8, 1), 3, hidden=(16, 16))
    with pytest.raises(ValueError, match="give one"):
        build_module("cnn_stochastic", (8, 8, 1), 3, hidden=(16,), dense_width=16)


def test_transformer_default_patches_never_leave_one_or_two_tokens():
    # The smallest patch giving at most 16 tokens made a prime length (17) one token and
    # 34 = 2 · 17 two: attention over one token has nothing to attend to.
    for length, tokens in ((8, 8), (16, 16), (17, 17), (34, 17), (40, 10), (64, 16), (106, 53)):
        model = nnx.eval_shape(lambda length=length: build_module("transformer", (length, 1), 3, width=8,
                                                                  num_heads=2, num_layers=1))
        assert model.num_tokens == tokens, length


def test_transformer_mlp_ratio_is_forwarded():
    model = build_module("transformer", (6, 2), 3, width=8, num_heads=2, num_layers=1, mlp_ratio=3)
    assert model.blocks[0].mlp_in.out_features == 24


def test_autoencoder_activations_are_forwarded():
    x = 3.0 * jax.random.normal(jax.random.key(0), (4, 16))

    def outputs(name, **options):
        module = build_module(name, (16,), 0, **options)
        variables = get_model(name, (16,), 0, **options).init(_keydata(0), x)
        return bind(module, variables)(x)

    tied = outputs("tied_autoencoder", latent=4, output_activation="sigmoid")
    assert float(tied.min()) > 0.0 and float(tied.max()) < 1.0  # identity (the default) would not be
    denoising = outputs("denoising_autoencoder", hidden=(8,), latent=4, activation="tanh", output_activation="identity")
    assert float(denoising.min()) < 0.0  # sigmoid (the default) would not be


@pytest.mark.parametrize(
    "name,shape,options",
    [
        ("mlp", (6,), {"hidden": (16,)}),
        ("transformer", (6, 2), {"width": 8, "num_heads": 2, "num_layers": 1}),
    ],
)
def test_dropout_makes_training_outputs_depend_on_the_key(name, shape, options):
    model = get_model(name, shape, 3, dropout_rate=0.5, **options)
    x = jax.random.normal(jax.random.key(0), (4, *shape))
    variables = model.init(_keydata(0), x)
    a = model.apply(variables, x, train=True, key=_keydata(1))[0]
    b = model.apply(variables, x, train=True, key=_keydata(2))[0]
    assert not np.allclose(a, b)
    e1 = model.apply(variables, x, train=False)[0]
    e2 = model.apply(variables, x, train=False)[0]
    np.testing.assert_array_equal(e1, e2)


# --- anything else is refused -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,shape,options,message",
    [
        (
            "lstm",
            (5,),
            {"dropout_rate": 0.5},
            "model 'lstm' does not take option(s) ['dropout_rate']; it takes ['forget_bias', 'hidden', 'readout']",
        ),
        ("mlp", (6,), {"activaton": "tanh"}, "model 'mlp' does not take option(s) ['activaton']"),
        ("cnn", (8, 8, 1), {"dropout_rate": 0.5}, "model 'cnn' does not take option(s) ['dropout_rate']"),
        ("cnn_global", (8, 8, 1), {"hidden": (16,)}, "model 'cnn_global' does not take option(s) ['hidden']"),
        (
            "resnet",
            (8, 8, 1),
            {"dropout_rate": 0.1, "hidden": (8,)},
            "model 'resnet' does not take option(s) ['dropout_rate', 'hidden']",
        ),
        ("gru", (5,), {"forget_bias": 0.0}, "model 'gru' does not take option(s) ['forget_bias']"),
        ("perceptron", (2,), {"hidden": (4,)}, "model 'perceptron' does not take option(s) ['hidden']; it takes no"),
        (
            "linear_autoencoder",
            (6,),
            {"activation": "tanh"},
            "model 'linear_autoencoder' does not take option(s) ['activation']",
        ),
        ("vae", (6,), {"dropout_rate": 0.2}, "model 'vae' does not take option(s) ['dropout_rate']"),
    ],
)
def test_an_option_the_model_does_not_take_is_refused(name, shape, options, message):
    for make in (get_model, build_module):
        with pytest.raises(ValueError, match=re.escape(message)):
            make(name, shape, 3, **options)


def test_a_misspelt_option_gets_a_suggestion():
    with pytest.raises(ValueError, match=r"did you mean 'activation'\?"):
        get_model("mlp", (6,), 3, activaton="tanh")


def test_the_error_lists_exactly_the_options_the_model_takes():
    from jdl.models.registry import model_options

    for name in MODELS:
        accepted = model_options(name)
        assert accepted is not None, name
        with pytest.raises(ValueError, match=re.escape(f"it takes {list(accepted)}" if accepted else "no options")):
            build_module(name, (8, 8, 1), 3, no_such_option=1)


def test_a_registered_builder_s_keyword_parameters_are_its_options(registry):
    def build(input_shape, num_classes, *, rngs, width=4):
        return nnx.Linear(int(np.prod(input_shape)), num_classes, rngs=rngs)

    register_model("test_linear", build, "vector", "a test model")
    assert get_model("test_linear", (3,), 2, width=8) is not None
    with pytest.raises(
        ValueError, match=re.escape("model 'test_linear' does not take option(s) ['depth']; it takes ['width']")
    ):
        get_model("test_linear", (3,), 2, depth=2)
    # A builder taking **options checks its own.
    register_model(
        "test_open",
        lambda input_shape, num_classes, *, rngs, **options: build(input_shape, num_classes, rngs=rngs),
        "vector",
        "a test model",
    )
    assert get_model("test_open", (3,), 2, anything=1) is not None


# --- register_model ------------------------------------------------------------------------------


def test_register_model_refuses_a_name_already_taken_unless_overwrite(registry):
    original = registry["mlp"]
    with pytest.raises(ValueError, match="'mlp' is already registered.*overwrite=True"):
        register_model("mlp", lambda *a, **k: None, "vector", "oops")
    assert registry["mlp"] is original
    register_model("test_model", original.build, "vector", "first")
    with pytest.raises(ValueError, match="already registered"):
        register_model("test_model", original.build, "vector", "second")
    assert registry["test_model"].description == "first"
    register_model("test_model", original.build, "vector", "second", overwrite=True)
    assert registry["test_model"].description == "second"


@pytest.mark.parametrize("task", ["regression", "Classification", None])
def test_register_model_refuses_an_unknown_task(registry, task):
    with pytest.raises(ValueError, match="task must be 'classification' or 'reconstruction'"):
        register_model("test_model", MODELS["mlp"].build, "vector", "d", task=task)
    assert "test_model" not in registry


@pytest.mark.parametrize("name", ["", " mlp2", None])
def test_register_model_refuses_a_bad_name(registry, name):
    with pytest.raises(ValueError, match="non-empty string"):
        register_model(name, MODELS["mlp"].build, "vector", "d")


def test_model_entry_refuses_a_non_string():
    with pytest.raises(ValueError, match="must be a string"):
        model_entry(["mlp"])


# --- the run configuration and the CLI -------------------------------------------------------


@pytest.mark.parametrize("name", classifier_names())
def test_the_default_run_configuration_builds_every_classifier(name):
    # The defaults (no --hidden, --dropout 0) pass no option, so every model takes them.
    parts = build_run(RunConfig(model=name))
    assert parts.model.name == name


def test_run_configuration_forwards_hidden_and_refuses_what_the_model_lacks():
    parts = build_run(RunConfig(model="cnn", hidden=(32,)))
    variables = parts.model.init(_keydata(0), jnp.asarray(parts.dataset.train["x"][:2]))
    assert variables.params["dense"]["kernel"].shape[-1] == 32
    with pytest.raises(ValueError, match=r"model 'lstm' does not take --dropout.*mlp, transformer"):
        RunConfig(model="lstm", dropout=0.5).validate()
    with pytest.raises(ValueError, match=r"model 'resnet' does not take --hidden"):
        RunConfig(model="resnet", hidden=(8,)).validate()
    RunConfig(model="lstm", dropout=0.0).validate()  # no dropout: what every model has
    RunConfig(model="mlp", dropout=0.5, hidden=(8,)).validate()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "lstm", "--dropout", "0.5"], "model 'lstm' does not take --dropout"),
        (["--model", "cnn", "--dropout", "0.5"], "model 'cnn' does not take --dropout"),
        (["--model", "gru", "--dropout", "0"], "model 'gru' does not take --dropout"),
        (["--model", "resnet", "--hidden", "8"], "model 'resnet' does not take --hidden"),
        (["--model", "logistic", "--hidden", "8"], "model 'logistic' does not take --hidden"),
        (["--model", "cnn", "--hidden", "8,8"], "hidden takes one width"),
    ],
)
def test_cli_refuses_an_option_the_model_does_not_take_before_creating_the_run(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    # --epochs 1 and a large batch keep it short should the option ever be accepted again
    assert main(["train", "--out", str(out), "--no-progress", "--epochs", "1", "--batch-size", "512", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


# --- the arguments themselves ---------------------------------------------------------------------


def test_input_shape_and_num_classes_are_checked_at_the_boundary():
    # get_model("mlp", 64, 10) was "'int' object is not iterable"; a zero class count or
    # input size a ZeroDivisionError from inside an initialiser.
    with pytest.raises(TypeError, match=re.escape("input_shape must be the shape of one example") + r".*\(64,\)"):
        get_model("mlp", 64, 10)
    with pytest.raises(ValueError, match=re.escape("input_shape must be a non-empty tuple of positive integers")):
        build_module("cnn", (8, 8, 0), 3)
    for classes in (0, 2.5, True):
        with pytest.raises(ValueError, match=re.escape("num_classes for model 'mlp' must be a positive integer")):
            get_model("mlp", (6,), classes)
    get_model("vae", (6,), 0, latent=2)  # a reconstruction model has no classes


@pytest.mark.parametrize(
    "name,shape,options,message",
    [
        ("cnn", (8, 8, 1), {"channels": (0,)}, "channels must be positive integer widths"),
        ("cnn_global", (8, 8, 1), {"kernel_size": 0}, "kernel_size must be a positive integer"),
        ("transformer", (12,), {"num_heads": 0}, "num_heads must be a positive integer"),
        ("transformer", (12,), {"patch_size": 0}, "patch_size must be a positive integer"),  # was: the default
        ("transformer", (12,), {"dropout_rate": 1.5}, "dropout_rate must be in [0, 1)"),  # was: accepted
        ("mlp", (6,), {"batch_norm": True, "batch_norm_momentum": 1.5}, "batch_norm_momentum must be in [0, 1]"),
        ("resnet", (8, 8, 1), {"batch_norm_momentum": -0.1}, "batch_norm_momentum must be in [0, 1]"),
        ("vae", (6,), {"latent": 0}, "latent_features must be a positive integer"),
        ("tied_autoencoder", (6,), {"latent": 0}, "latent_features (the code size) must be a positive integer"),
        ("denoising_autoencoder", (6,), {"corruption": "gausian"}, "unknown corruption 'gausian'"),  # was: at apply
        ("denoising_autoencoder", (6,), {"noise_level": -1.0}, "noise_level for 'gaussian' corruption"),
    ],
)
def test_a_bad_option_value_is_one_clear_error_when_the_model_is_built(name, shape, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_module(name, shape, 3, **options)


def test_a_single_width_may_be_given_as_an_integer():
    # hidden=8 was "'int' object is not iterable" (the CNN builder alone took it).
    assert nnx.eval_shape(lambda: build_module("mlp", (6,), 3, hidden=8)).layers[0].out_features == 8
    assert nnx.eval_shape(lambda: build_module("gru", (5,), 3, hidden=4)).head.in_features == 4
    assert len(nnx.eval_shape(lambda: build_module("resnet", (8, 8, 1), 3, stages=4)).blocks) == 1
    with pytest.raises(TypeError, match="hidden must be a sequence of positive widths"):
        build_module("vae", (6,), 0, hidden="64")

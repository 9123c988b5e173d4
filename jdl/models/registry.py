"""Models by name, for the CLI and for sweeps: ``get_model("mlp", input_shape, num_classes)``.

Every entry is a builder ``build(input_shape, num_classes, *, rngs, **options)``
returning an NNX module, the input layout it expects (``"vector"`` (N, d),
``"image"`` (N, H, W, C), ``"sequence"`` (N, T) or (N, T, C)), a one-line
description and its task (``"classification"``: logits, train with
cross-entropy; ``"reconstruction"``: outputs shaped like the input, train on
``{"x": x, "y": x}``).

Options are the model's own constructor arguments (``hidden=(...)``,
``dropout_rate=``, ``batch_norm=``, ``forget_bias=``, …): each builder forwards
every one its model takes, and :func:`get_model` / :func:`build_module` refuse any
other with a ``ValueError`` naming it and the options the model does take
(:func:`model_options`). A misspelt option, or one the model has no use for
(``dropout_rate`` for a model without dropout layers, ``hidden`` for one without
hidden widths), is an error, never silently ignored.

Sequence models also take images, read row by row as time steps
(``(8, 8, 1)`` digits → 8 steps of 8 features); the convolutional and residual
builders are 2-D for image shapes ``(H, W, C)`` and 1-D for ``(T,)`` / ``(T, C)``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Collection, Sequence
from typing import Literal, NamedTuple

import numpy as np
from flax import nnx

from jdl.models.autoencoder import DenoisingAutoencoder, LinearAutoencoder, TiedAutoencoder
from jdl.models.cnn import CNN, SmallCNN
from jdl.models.linear import LogisticRegression, Perceptron
from jdl.models.mlp import MLP
from jdl.models.resnet import ResNet
from jdl.models.rnn import RecurrentClassifier
from jdl.models.sequence import sequence_shape
from jdl.models.transformer import TransformerEncoder
from jdl.models.vae import VAE
from jdl.training.model import Model, Variables, from_nnx_factory

InputKind = Literal["vector", "image", "sequence"]
Task = Literal["classification", "reconstruction"]


class ModelEntry(NamedTuple):
    """A registered model.

    Attributes:
      build: ``build(input_shape, num_classes, *, rngs, **options) -> nnx.Module``;
        its keyword parameters (or the names in ``build.options``) are the options
        it takes.
      input_kind: the input layout it expects: ``"vector"`` (N, d), ``"image"``
        (N, H, W, C) or ``"sequence"`` (N, T) / (N, T, C).
      description: one line for ``--help``.
      task: ``"classification"`` (logits; cross-entropy) or ``"reconstruction"``
        (outputs shaped like the inputs; targets are the inputs).
    """

    build: Callable[..., nnx.Module]
    input_kind: InputKind
    description: str
    task: Task = "classification"


# --- options -----------------------------------------------------------------------


def _keyword_options(cls: type, *, exclude: Sequence[str] = ()) -> frozenset[str]:
    """The keyword-only arguments of ``cls``'s constructor (its options), less ``rngs`` and ``exclude``."""
    params = inspect.signature(cls.__init__).parameters.values()
    return frozenset(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in ("rngs", *exclude))


def _unknown_options_message(what: str, given: Sequence[str], accepted: Sequence[str]) -> str:
    unknown = sorted(given)
    takes = f"it takes {sorted(accepted)}" if accepted else "it takes no options"
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(accepted), n=1)
        if close:
            hints.append(f"{name!r}: did you mean {close[0]!r}?")
    return f"{what} does not take option(s) {unknown}; {takes}" + (f" ({'; '.join(hints)})" if hints else "")


def _takes(accepted: Collection[str]) -> Callable[[Callable[..., nnx.Module]], Callable[..., nnx.Module]]:
    """Declare the options of a builder that takes ``**options`` (read by :func:`model_options`),
    and refuse any other when the builder is called directly."""
    accepted = frozenset(accepted)

    def mark(build: Callable[..., nnx.Module]) -> Callable[..., nnx.Module]:
        @functools.wraps(build)
        def checked(input_shape, num_classes, *, rngs, **options):
            unknown = set(options) - accepted
            if unknown:
                raise ValueError(_unknown_options_message("this model", unknown, accepted))
            return build(input_shape, num_classes, rngs=rngs, **options)

        checked.options = accepted
        return checked

    return mark


def _builder_options(build: Callable[..., nnx.Module]) -> tuple[str, ...] | None:
    """The options ``build`` takes: those it declares (``build.options``), else its keyword
    parameters after ``input_shape`` and ``num_classes`` (less ``rngs``); ``None`` for a builder
    that takes ``**options`` without declaring them (it checks its own)."""
    declared = getattr(build, "options", None)
    if declared is not None:
        return tuple(sorted(declared))
    try:
        params = list(inspect.signature(build).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a builtin): trust the builder
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    skip = {p.name for p in positional[:2]} | {"rngs"}
    return tuple(
        sorted(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip)
    )


# --- builders ----------------------------------------------------------------------


def _spatial(input_shape: Sequence[int], name: str) -> tuple[int, tuple[int, ...]]:
    """``(channels, spatial size)`` for a convolutional model: images ``(H, W, C)`` are
    2-D, sequences ``(T,)`` or ``(T, C)`` are 1-D (a channel axis is added to ``(T,)``)."""
    shape = tuple(input_shape)
    if len(shape) == 3:
        return shape[2], shape[:2]
    if len(shape) in (1, 2):
        t, c = sequence_shape(shape)
        return c, (t,)
    raise ValueError(f"{name} takes images (H, W, C) or sequences (T,) / (T, C), got input shape {shape}")


def _dense_width(hidden: int | Sequence[int] | None, dense_width: int | None) -> int | None:
    """The width of a CNN's one dense hidden layer from ``hidden=(w,)`` (the CLI's
    ``--hidden w``) or ``dense_width=w``; ``None`` where neither is given."""
    if hidden is None:
        return dense_width
    if dense_width is not None:
        raise ValueError(
            f"hidden={hidden!r} and dense_width={dense_width!r} both set the width of the CNN's dense layer; give one"
        )
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    if len(widths) != 1:
        raise ValueError(
            f"the CNN's dense head has one hidden layer, so hidden takes one width (e.g. (128,)), got {tuple(widths)}"
        )
    return widths[0]


def _perceptron(input_shape, num_classes, *, rngs):
    return Perceptron(math.prod(input_shape), num_classes, rngs=rngs)


def _logistic(input_shape, num_classes, *, rngs):
    return LogisticRegression(math.prod(input_shape), num_classes, rngs=rngs)


@_takes({"hidden"} | _keyword_options(MLP))
def _mlp(input_shape, num_classes, *, rngs, hidden=(256, 256), **options):
    return MLP(math.prod(input_shape), hidden, num_classes, rngs=rngs, **options)


def _small_cnn(input_shape, num_classes, *, rngs, channels=(16, 32), hidden=None, dense_width=None):
    in_channels, size = _spatial(input_shape, "cnn")
    if len(size) == 2 and size[0] != size[1]:
        raise ValueError(f"cnn expects square images, got input shape {tuple(input_shape)}")
    width = _dense_width(hidden, dense_width)
    return SmallCNN(
        in_channels,
        num_classes,
        channels=channels,
        **({} if width is None else {"hidden": width}),
        image_size=size[0],
        spatial_dims=len(size),
        rngs=rngs,
    )


def _cnn(**fixed) -> Callable[..., nnx.Module]:
    """A :class:`CNN` builder with ``fixed`` defaults (which options may override, all but
    ``head``). A dense head's width is ``hidden=(w,)`` or ``dense_width=w``; a global-pooling
    head has no dense layer, so it takes neither."""
    dense_head = fixed.get("head", "dense") == "dense"
    accepted = _keyword_options(CNN, exclude=("input_size", "head", "dense_width"))
    if dense_head:
        accepted |= {"hidden", "dense_width"}

    @_takes(accepted)
    def build(input_shape, num_classes, *, rngs, **options):
        channels, size = _spatial(input_shape, "this CNN")
        if dense_head:
            width = _dense_width(options.pop("hidden", None), options.pop("dense_width", None))
            if width is not None:
                options["dense_width"] = width
        return CNN(channels, num_classes, input_size=size, rngs=rngs, **{**fixed, **options})

    return build


@_takes(_keyword_options(ResNet, exclude=("spatial_dims",)))
def _resnet(input_shape, num_classes, *, rngs, **options):
    channels, size = _spatial(input_shape, "resnet")
    return ResNet(channels, num_classes, spatial_dims=len(size), rngs=rngs, **options)


# RecurrentClassifier options that only one kind of cell uses.
_CELL_OPTIONS = {"rnn": ("radius",), "lstm": ("forget_bias",), "gru": ()}


def _recurrent(cell: str, bidirectional: bool = False) -> Callable[..., nnx.Module]:
    cell_specific = [name for names in _CELL_OPTIONS.values() for name in names]
    accepted = _keyword_options(RecurrentClassifier, exclude=("cell", "bidirectional", *cell_specific))
    accepted |= set(_CELL_OPTIONS[cell])

    @_takes(accepted)
    def build(input_shape, num_classes, *, rngs, **options):
        _, features = sequence_shape(input_shape)
        return RecurrentClassifier(features, num_classes, cell=cell, bidirectional=bidirectional, rngs=rngs, **options)

    return build


def _default_patch(length: int, max_tokens: int = 16, min_tokens: int = 4) -> int:
    """The smallest patch that divides ``length`` into at most ``max_tokens``
    tokens, if that leaves at least ``min_tokens`` (or the whole length is
    shorter); else the largest patch that leaves more than ``max_tokens``.

    A length with no divisor in between — a prime such as 17, or 2 · 53 — gets
    more tokens (17; 53) rather than one or two, over which attention would
    have nothing to attend to.
    """
    divisors = [p for p in range(1, length + 1) if length % p == 0]
    for p in divisors:
        if length // p <= max_tokens:
            if length // p >= min(min_tokens, length):
                return p
            break
    return max(p for p in divisors if length // p > max_tokens)


@_takes(_keyword_options(TransformerEncoder, exclude=("max_length",)))
def _transformer(input_shape, num_classes, *, rngs, patch_size=None, **options):
    length, features = sequence_shape(input_shape)
    return TransformerEncoder(
        features,
        num_classes,
        max_length=length,
        patch_size=_default_patch(length) if patch_size is None else patch_size,
        rngs=rngs,
        **options,
    )


# ``deterministic`` (an autoencoder's starting mode) is no option: ``get_model`` and ``bind``
# set the mode (``train()`` / ``eval()``) on every call.


def _linear_autoencoder(input_shape, num_classes, *, rngs, latent=2):
    del num_classes
    return LinearAutoencoder(math.prod(input_shape), latent, rngs=rngs)


@_takes({"latent"} | _keyword_options(TiedAutoencoder))
def _tied_autoencoder(input_shape, num_classes, *, rngs, latent=16, **options):
    del num_classes
    return TiedAutoencoder(math.prod(input_shape), latent, rngs=rngs, **options)


@_takes({"hidden", "latent"} | _keyword_options(DenoisingAutoencoder, exclude=("deterministic",)))
def _denoising_autoencoder(input_shape, num_classes, *, rngs, hidden=(64,), latent=16, **options):
    del num_classes
    return DenoisingAutoencoder(math.prod(input_shape), hidden, latent, rngs=rngs, **options)


def _vae(input_shape, num_classes, *, rngs, hidden=(128,), latent=8):
    del num_classes
    return VAE(math.prod(input_shape), latent, hidden, rngs=rngs)


MODELS: dict[str, ModelEntry] = {
    "perceptron": ModelEntry(_perceptron, "vector", "linear scores, sign(wx+b) for 2 classes"),
    "logistic": ModelEntry(_logistic, "vector", "logistic regression (linear logits)"),
    "mlp": ModelEntry(_mlp, "vector", "multilayer perceptron (--hidden sets the widths)"),
    "cnn": ModelEntry(_small_cnn, "image", "two 3x3 convolutions, max-pool, dense head"),
    "cnn_global": ModelEntry(
        _cnn(channels=(16, 32), pooling="avg", head="global"),
        "image",
        "convolutions, average pooling, 1x1 conv + global average pooling head (no dense layer)",
    ),
    "cnn_separable": ModelEntry(
        _cnn(channels=(16, 32), conv="separable", pooling="max"),
        "image",
        "depthwise-separable convolutions, max pooling, dense head",
    ),
    "cnn_dilated": ModelEntry(
        _cnn(channels=(16, 32), dilation=2, pooling="none", padding="SAME", head="global"),
        "image",
        "dilated 3x3 convolutions (dilation 2), global pooling head",
    ),
    "cnn_asymmetric": ModelEntry(
        _cnn(channels=(16, 32), conv="asymmetric", pooling="max"),
        "image",
        "asymmetric 1x3 then 3x1 convolutions, max pooling, dense head",
    ),
    "cnn_stochastic": ModelEntry(
        _cnn(channels=(16, 32), pooling="stochastic"), "image", "3x3 convolutions with stochastic pooling, dense head"
    ),
    "cnn1d": ModelEntry(
        _cnn(channels=(32, 64, 64), pooling="max"), "sequence", "1-D convolutions (3 blocks, max pooling), dense head"
    ),
    "resnet": ModelEntry(_resnet, "image", "small ResNet: residual blocks with BatchNorm, global pooling"),
    "resnet1d": ModelEntry(_resnet, "sequence", "small 1-D ResNet for sequences"),
    "rnn": ModelEntry(_recurrent("rnn"), "sequence", "plain tanh RNN (--hidden sets the layer sizes)"),
    "lstm": ModelEntry(_recurrent("lstm"), "sequence", "LSTM, forget-gate bias 1 (--hidden sets the sizes)"),
    "gru": ModelEntry(_recurrent("gru"), "sequence", "GRU (--hidden sets the layer sizes)"),
    "bilstm": ModelEntry(_recurrent("lstm", True), "sequence", "bidirectional LSTM"),
    "bigru": ModelEntry(_recurrent("gru", True), "sequence", "bidirectional GRU"),
    "transformer": ModelEntry(_transformer, "sequence", "Transformer encoder: patches, 2 pre-norm blocks, 4 heads"),
    "linear_autoencoder": ModelEntry(
        _linear_autoencoder, "vector", "linear autoencoder (learns the PCA subspace)", "reconstruction"
    ),
    "tied_autoencoder": ModelEntry(
        _tied_autoencoder, "vector", "autoencoder with tied weights (decoder = W^T)", "reconstruction"
    ),
    "denoising_autoencoder": ModelEntry(
        _denoising_autoencoder,
        "vector",
        "denoising MLP autoencoder (Gaussian input noise in training)",
        "reconstruction",
    ),
    "vae": ModelEntry(
        _vae, "vector", "variational autoencoder, Bernoulli decoder (loss: jdl.models.vae_loss)", "reconstruction"
    ),
}


TASKS = ("classification", "reconstruction")
INPUT_KINDS = ("vector", "image", "sequence")


def register_model(
    name: str,
    build: Callable[..., nnx.Module],
    input_kind: InputKind,
    description: str,
    task: Task = "classification",
    *,
    overwrite: bool = False,
) -> None:
    """Add a model to the registry (and so to ``jdl train --model``).

    ``build(input_shape, num_classes, *, rngs, **options)``: its keyword parameters are
    the options :func:`get_model` accepts for it (a builder taking ``**options`` checks
    its own). A name already registered (a built-in included) is refused unless
    ``overwrite=True``.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"a model name must be a non-empty string without surrounding spaces, got {name!r}")
    if not callable(build):
        raise TypeError(f"build must be a callable build(input_shape, num_classes, *, rngs, **options), got {build!r}")
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be 'vector', 'image' or 'sequence', got {input_kind!r}")
    if task not in TASKS:
        raise ValueError(f"task must be 'classification' or 'reconstruction', got {task!r}")
    if name in MODELS and not overwrite:
        raise ValueError(
            f"model {name!r} is already registered ({MODELS[name].description}); "
            "pass overwrite=True to replace it, or choose another name"
        )
    MODELS[name] = ModelEntry(build, input_kind, description, task)


def model_entry(name: str) -> ModelEntry:
    if not isinstance(name, str):
        raise ValueError(f"a model name must be a string, got {name!r}; choose one of {sorted(MODELS)}")
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def model_options(name: str) -> tuple[str, ...] | None:
    """The options (keyword arguments) that the registered model ``name`` takes, sorted;
    ``None`` for a registered builder that takes any ``**options`` and checks them itself."""
    return _builder_options(model_entry(name).build)


def check_options(name: str, options: Collection[str]) -> None:
    """Raise a ``ValueError`` naming every option in ``options`` that model ``name`` does not
    take, and the ones it does."""
    accepted = model_options(name)
    if accepted is None:
        return
    unknown = set(options) - set(accepted)
    if unknown:
        raise ValueError(_unknown_options_message(f"model {name!r}", unknown, accepted))


def _checked_shape_and_classes(name: str, entry: ModelEntry, input_shape, num_classes) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints, after checking it and ``num_classes``: a
    misplaced argument (``get_model("mlp", 64, 10)``) or a zero would otherwise surface as a
    ``TypeError`` or ``ZeroDivisionError`` from inside the builder or an initialiser."""
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence | np.ndarray):
        raise TypeError(
            f"input_shape must be the shape of one example without the batch axis, a tuple such as (64,) "
            f"or (8, 8, 1), got {input_shape!r}" + (f"; pass ({input_shape},)" if isinstance(input_shape, int) else "")
        )
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral) or d < 1 for d in shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive integers, got {shape!r}")
    minimum = 1 if entry.task == "classification" else 0
    if (
        isinstance(num_classes, (bool, np.bool_))
        or not isinstance(num_classes, numbers.Integral)
        or (num_classes < minimum)
    ):
        what = (
            "a positive integer (the number of classes)"
            if minimum
            else "an integer >= 0 (unused: the outputs are shaped like the inputs)"
        )
        raise ValueError(f"num_classes for model {name!r} must be {what}, got {num_classes!r}")
    return tuple(int(d) for d in shape)


def build_module(name: str, input_shape: tuple[int, ...], num_classes: int, *, seed: int = 0, **options) -> nnx.Module:
    """The registered model ``name`` as an NNX module (initialised from ``seed``).

    Raises ``ValueError`` for an option the model does not take (see :func:`model_options`).
    """
    entry = model_entry(name)
    input_shape = _checked_shape_and_classes(name, entry, input_shape, num_classes)
    check_options(name, options)
    return entry.build(input_shape, num_classes, rngs=nnx.Rngs(seed), **options)


def get_model(name: str, input_shape: tuple[int, ...], num_classes: int, **options) -> Model:
    """The registered model ``name`` as a pure :class:`~jdl.training.model.Model`.

    ``init(key, sample)`` initialises from ``key`` (so seeds and ``vmap`` over keys work).
    ``options`` are the model's own (``hidden=``, ``dropout_rate=``, …); one it does not
    take raises ``ValueError`` (see :func:`model_options`).
    """
    entry = model_entry(name)
    input_shape = _checked_shape_and_classes(name, entry, input_shape, num_classes)
    check_options(name, options)
    return from_nnx_factory(lambda rngs: entry.build(input_shape, num_classes, rngs=rngs, **options), name=name)


def bind(module: nnx.Module, variables: Variables, *, train: bool = False) -> nnx.Module:
    """A copy of ``module`` holding ``variables`` (e.g. a trained state's
    ``Variables(state.params, state.model_state)``), in eval mode unless ``train``.

    Use it to call a trained model's other methods (an autoencoder's
    ``encode``/``decode``, a VAE's ``sample``) outside the pure ``apply``.
    """
    graphdef, _, rest = nnx.split(module, nnx.Param, ...)
    copy = nnx.merge(graphdef, variables.params, rest, copy=True)
    nnx.update(copy, variables.model_state)
    if train:
        copy.train()
    else:
        copy.eval()
    return copy

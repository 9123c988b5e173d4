"""Models by name, for the CLI and for sweeps: ``get_model("mlp", input_shape, num_classes)``.

Every entry is a builder ``build(input_shape, num_classes, *, rngs, **options)``
returning an NNX module, the input layout it expects (``"vector"`` (N, d),
``"image"`` (N, H, W, C), ``"sequence"`` (N, T) or (N, T, C)), a one-line
description and its task (``"classification"``: logits, train with
cross-entropy; ``"reconstruction"``: outputs shaped like the input, train on
``{"x": x, "y": x}``). Builders take ``hidden=(...)`` and ``dropout_rate=`` from
the CLI; models without hidden widths or dropout ignore them.

Sequence models also take images, read row by row as time steps
(``(8, 8, 1)`` digits → 8 steps of 8 features); the convolutional and residual
builders are 2-D for image shapes ``(H, W, C)`` and 1-D for ``(T,)`` / ``(T, C)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

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
      build: ``build(input_shape, num_classes, *, rngs, **options) -> nnx.Module``.
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


def _perceptron(input_shape, num_classes, *, rngs, **_):
    return Perceptron(math.prod(input_shape), num_classes, rngs=rngs)


def _logistic(input_shape, num_classes, *, rngs, **_):
    return LogisticRegression(math.prod(input_shape), num_classes, rngs=rngs)


_MLP_OPTIONS = (
    "activation",
    "dropout",
    "input_keep_prob",
    "hidden_keep_prob",
    "dropout_rate",
    "batch_norm",
    "batch_norm_momentum",
    "residual",
    "kernel_init",
)


def _mlp(input_shape, num_classes, *, rngs, hidden=(256, 256), **options):
    options = {k: v for k, v in options.items() if k in _MLP_OPTIONS}
    return MLP(math.prod(input_shape), tuple(hidden), num_classes, rngs=rngs, **options)


def _small_cnn(input_shape, num_classes, *, rngs, channels=(16, 32), dense_width=64, **_):
    in_channels, size = _spatial(input_shape, "cnn")
    if len(size) == 2 and size[0] != size[1]:
        raise ValueError(f"cnn expects square images, got input shape {tuple(input_shape)}")
    return SmallCNN(
        in_channels,
        num_classes,
        channels=tuple(channels),
        hidden=dense_width,
        image_size=size[0],
        spatial_dims=len(size),
        rngs=rngs,
    )


def _cnn(**fixed) -> Callable[..., nnx.Module]:
    def build(input_shape, num_classes, *, rngs, hidden=None, dropout_rate=0.0, **options):
        del hidden, dropout_rate
        channels, size = _spatial(input_shape, "this CNN")
        return CNN(channels, num_classes, input_size=size, rngs=rngs, **{**fixed, **options})

    return build


def _resnet(input_shape, num_classes, *, rngs, stages=(16, 32), blocks_per_stage=1, **_):
    channels, size = _spatial(input_shape, "resnet")
    return ResNet(
        channels,
        num_classes,
        stages=tuple(stages),
        blocks_per_stage=blocks_per_stage,
        spatial_dims=len(size),
        rngs=rngs,
    )


def _recurrent(cell: str, bidirectional: bool = False) -> Callable[..., nnx.Module]:
    def build(input_shape, num_classes, *, rngs, hidden=(64,), readout="last", radius=None, **_):
        _, features = sequence_shape(input_shape)
        return RecurrentClassifier(
            features,
            num_classes,
            cell=cell,
            hidden=tuple(hidden),
            bidirectional=bidirectional,
            readout=readout,
            radius=radius,
            rngs=rngs,
        )

    return build


def _default_patch(length: int, max_tokens: int = 16) -> int:
    """The smallest patch that divides ``length`` into at most ``max_tokens`` tokens."""
    for p in range(1, length + 1):
        if length % p == 0 and length // p <= max_tokens:
            return p
    return length


def _transformer(
    input_shape, num_classes, *, rngs, width=64, num_heads=4, num_layers=2, patch_size=None, dropout_rate=0.0, **_
):
    length, features = sequence_shape(input_shape)
    return TransformerEncoder(
        features,
        num_classes,
        max_length=length,
        width=width,
        num_heads=num_heads,
        num_layers=num_layers,
        patch_size=patch_size or _default_patch(length),
        dropout_rate=dropout_rate,
        rngs=rngs,
    )


def _linear_autoencoder(input_shape, num_classes, *, rngs, latent=2, **_):
    del num_classes
    return LinearAutoencoder(math.prod(input_shape), latent, rngs=rngs)


def _tied_autoencoder(input_shape, num_classes, *, rngs, latent=16, **_):
    del num_classes
    return TiedAutoencoder(math.prod(input_shape), latent, rngs=rngs)


def _denoising_autoencoder(input_shape, num_classes, *, rngs, hidden=(64,), latent=16, **options):
    del num_classes
    options = {k: v for k, v in options.items() if k in ("corruption", "noise_level")}
    return DenoisingAutoencoder(math.prod(input_shape), tuple(hidden), latent, rngs=rngs, **options)


def _vae(input_shape, num_classes, *, rngs, hidden=(128,), latent=8, **_):
    del num_classes
    return VAE(math.prod(input_shape), latent, tuple(hidden), rngs=rngs)


MODELS: dict[str, ModelEntry] = {
    "perceptron": ModelEntry(_perceptron, "vector", "perceptron: linear scores, sign(wx+b) for 2 classes"),
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


def register_model(
    name: str, build: Callable[..., nnx.Module], input_kind: InputKind, description: str, task: Task = "classification"
) -> None:
    """Add a model to the registry (and so to ``jdl train --model``)."""
    if input_kind not in ("vector", "image", "sequence"):
        raise ValueError(f"input_kind must be 'vector', 'image' or 'sequence', got {input_kind!r}")
    MODELS[name] = ModelEntry(build, input_kind, description, task)


def model_entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def build_module(name: str, input_shape: tuple[int, ...], num_classes: int, *, seed: int = 0, **options) -> nnx.Module:
    """The registered model ``name`` as an NNX module (initialised from ``seed``)."""
    entry = model_entry(name)
    return entry.build(tuple(input_shape), num_classes, rngs=nnx.Rngs(seed), **options)


def get_model(name: str, input_shape: tuple[int, ...], num_classes: int, **options) -> Model:
    """The registered model ``name`` as a pure :class:`~jdl.training.model.Model`.

    ``init(key, sample)`` initialises from ``key`` (so seeds and ``vmap`` over keys work).
    """
    entry = model_entry(name)
    return from_nnx_factory(lambda rngs: entry.build(tuple(input_shape), num_classes, rngs=rngs, **options), name=name)


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

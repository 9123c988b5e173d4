"""Models by name, for the CLI and for sweeps: ``get_model("mlp", input_shape, num_classes)``."""

from __future__ import annotations

import math
from typing import Callable, Literal, NamedTuple

from flax import nnx

from jdl.models.cnn import SmallCNN
from jdl.models.mlp import MLP
from jdl.training.model import Model, from_nnx_factory

InputKind = Literal["vector", "image", "sequence"]


class ModelEntry(NamedTuple):
    """A registered model.

    Attributes:
      build: ``build(input_shape, num_classes, *, rngs, **options) -> nnx.Module``.
      input_kind: the input layout it expects: ``"vector"`` (N, d), ``"image"``
        (N, H, W, C) or ``"sequence"`` (N, T) / (N, T, C).
      description: one line for ``--help``.
    """

    build: Callable[..., nnx.Module]
    input_kind: InputKind
    description: str


def _mlp(input_shape, num_classes, *, rngs, hidden=(256, 256), dropout_rate=0.0, batch_norm=False, **_):
    return MLP(math.prod(input_shape), tuple(hidden), num_classes, dropout_rate=dropout_rate,
               batch_norm=batch_norm, rngs=rngs)


def _small_cnn(input_shape, num_classes, *, rngs, **_):
    h, w, c = input_shape
    if h != w:
        raise ValueError(f"cnn expects square images, got input shape {input_shape}")
    return SmallCNN(c, num_classes, image_size=h, rngs=rngs)


MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry(_mlp, "vector", "multilayer perceptron (--hidden sets the widths)"),
    "cnn": ModelEntry(_small_cnn, "image", "two 3x3 convolutions, max-pool, dense head"),
}


def register_model(name: str, build: Callable[..., nnx.Module], input_kind: InputKind, description: str) -> None:
    """Add a model to the registry (and so to ``jdl train --model``)."""
    MODELS[name] = ModelEntry(build, input_kind, description)


def model_entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def get_model(name: str, input_shape: tuple[int, ...], num_classes: int, **options) -> Model:
    """The registered model ``name`` as a pure :class:`~jdl.training.model.Model`.

    ``init(key, sample)`` initialises from ``key`` (so seeds and ``vmap`` over keys work).
    """
    entry = model_entry(name)
    return from_nnx_factory(
        lambda rngs: entry.build(tuple(input_shape), num_classes, rngs=rngs, **options), name=name
    )

"""jdl: functional neural-network training in JAX, and tools to see inside the loss surface.

The public surface, by area:

- :mod:`jdl.training` — model protocol, :class:`TrainState`, pure train/eval
  steps (single, fused with ``lax.scan``), :func:`fit`, callbacks, checkpoints,
  data-parallel sharding.
- :mod:`jdl.data` — datasets shipped or generated in code, minibatching.
- :mod:`jdl.models` — Flax NNX models and the registry that names them.
- :mod:`jdl.nn` — building blocks: losses, activations, initialisers.
- :mod:`jdl.optim` — optimizers as Optax transforms, lookup by name.
- :mod:`jdl.hessian` — Hessian-vector products, spectra, curvature diagnostics.
"""

from jdl import data as data
from jdl import hessian as hessian
from jdl import models as models
from jdl import nn as nn
from jdl import optim as optim
from jdl import training as training
from jdl.training import Model as Model
from jdl.training import TrainState as TrainState
from jdl.training import create_train_state as create_train_state
from jdl.training import fit as fit
from jdl.training import from_function as from_function
from jdl.training import from_linen as from_linen
from jdl.training import from_nnx as from_nnx
from jdl.training import make_eval_step as make_eval_step
from jdl.training import make_fused_train_step as make_fused_train_step
from jdl.training import make_train_step as make_train_step

__version__ = "0.1.0"

__all__ = [
    "Model",
    "TrainState",
    "create_train_state",
    "data",
    "fit",
    "hessian",
    "from_function",
    "from_linen",
    "from_nnx",
    "make_eval_step",
    "make_fused_train_step",
    "make_train_step",
    "models",
    "nn",
    "optim",
    "training",
]

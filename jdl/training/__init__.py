"""The functional training core: model protocol, train state, pure steps, fit."""

from jdl.training.callbacks import Callback as Callback
from jdl.training.callbacks import EarlyStopping as EarlyStopping
from jdl.training.callbacks import FitContext as FitContext
from jdl.training.checkpoint import Checkpointer as Checkpointer
from jdl.training.fit import FitResult as FitResult
from jdl.training.fit import fit as fit
from jdl.training.model import Model as Model
from jdl.training.model import Variables as Variables
from jdl.training.model import from_function as from_function
from jdl.training.model import from_linen as from_linen
from jdl.training.model import from_nnx as from_nnx
from jdl.training.model import from_nnx_factory as from_nnx_factory
from jdl.training.sharding import data_parallel_mesh as data_parallel_mesh
from jdl.training.sharding import replicate as replicate
from jdl.training.sharding import shard_batch as shard_batch
from jdl.training.state import TrainState as TrainState
from jdl.training.state import create_train_state as create_train_state
from jdl.training.step import classification_metrics as classification_metrics
from jdl.training.step import make_eval_step as make_eval_step
from jdl.training.step import make_evaluate as make_evaluate
from jdl.training.step import make_fused_train_step as make_fused_train_step
from jdl.training.step import make_loss as make_loss
from jdl.training.step import make_train_step as make_train_step

__all__ = [
    "Callback",
    "Checkpointer",
    "EarlyStopping",
    "FitContext",
    "FitResult",
    "Model",
    "TrainState",
    "Variables",
    "classification_metrics",
    "create_train_state",
    "data_parallel_mesh",
    "fit",
    "from_function",
    "from_linen",
    "from_nnx",
    "from_nnx_factory",
    "make_eval_step",
    "make_evaluate",
    "make_fused_train_step",
    "make_loss",
    "make_train_step",
    "replicate",
    "shard_batch",
]

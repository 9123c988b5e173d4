"""Models in Flax NNX, and the registry that names them."""

from jdl.models.cnn import SmallCNN as SmallCNN
from jdl.models.mlp import MLP as MLP
from jdl.models.registry import MODELS as MODELS
from jdl.models.registry import ModelEntry as ModelEntry
from jdl.models.registry import get_model as get_model
from jdl.models.registry import model_entry as model_entry
from jdl.models.registry import register_model as register_model

__all__ = ["MLP", "MODELS", "ModelEntry", "SmallCNN", "get_model", "model_entry", "register_model"]

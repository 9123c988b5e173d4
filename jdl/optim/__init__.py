"""Optimizers as Optax ``GradientTransformation``s, and lookup by name."""

from jdl.optim.registry import OPTIMIZERS as OPTIMIZERS
from jdl.optim.registry import available_optimizers as available_optimizers
from jdl.optim.registry import get_optimizer as get_optimizer
from jdl.optim.registry import register_optimizer as register_optimizer

__all__ = ["OPTIMIZERS", "available_optimizers", "get_optimizer", "register_optimizer"]

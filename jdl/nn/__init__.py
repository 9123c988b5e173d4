"""Building blocks: losses (and, as they arrive, activations, initialisers, layers)."""

from jdl.nn.losses import cross_entropy as cross_entropy
from jdl.nn.losses import mean_squared_error as mean_squared_error

__all__ = ["cross_entropy", "mean_squared_error"]

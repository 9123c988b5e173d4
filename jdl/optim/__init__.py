"""Optimizers as Optax ``GradientTransformation``s, and lookup by name.

- First-order, written from the seed formulas (:mod:`jdl.optim.first_order`):
  :func:`sgd`, :func:`momentum`, :func:`nesterov`, :func:`adagrad`,
  :func:`adadelta`, :func:`rmsprop`, :func:`adam`, :func:`adamax`, :func:`nadam`,
  chained from the small transforms in :mod:`jdl.optim.transforms`.
- Second-order (:mod:`jdl.optim.second_order`): :func:`newton`,
  :func:`damped_newton`, :func:`saddle_free_newton` with the dense Hessian;
  :func:`damped_newton_cg` and :func:`saddle_free_newton_lanczos` through
  Hessian-vector products.
- Schedules (:mod:`jdl.optim.schedules`) and the plateau rule as a ``fit``
  callback (:class:`ReduceLROnPlateau`); reading injected hyperparameters for
  logging (:func:`injected_hyperparams`, :class:`LogHyperparams`).
- Clipping, weight decay, L1/L2 penalties with per-layer coefficients
  (:mod:`jdl.optim.regularization`).
- The registry behind ``jdl train --optimizer``: jdl's optimizers as
  ``jdl:NAME``, Optax's under their own names (:mod:`jdl.optim.registry`).
"""

from jdl.optim import transforms as transforms
from jdl.optim.first_order import adadelta as adadelta
from jdl.optim.first_order import adagrad as adagrad
from jdl.optim.first_order import adam as adam
from jdl.optim.first_order import adamax as adamax
from jdl.optim.first_order import momentum as momentum
from jdl.optim.first_order import nadam as nadam
from jdl.optim.first_order import nesterov as nesterov
from jdl.optim.first_order import rmsprop as rmsprop
from jdl.optim.first_order import sgd as sgd
from jdl.optim.plateau import LogHyperparams as LogHyperparams
from jdl.optim.plateau import ReduceLROnPlateau as ReduceLROnPlateau
from jdl.optim.plateau import injected_hyperparams as injected_hyperparams
from jdl.optim.plateau import set_injected_hyperparam as set_injected_hyperparam
from jdl.optim.registry import FIRST_ORDER as FIRST_ORDER
from jdl.optim.registry import JDL_PREFIX as JDL_PREFIX
from jdl.optim.registry import OPTAX_EQUIVALENTS as OPTAX_EQUIVALENTS
from jdl.optim.registry import OPTIMIZERS as OPTIMIZERS
from jdl.optim.registry import SECOND_ORDER as SECOND_ORDER
from jdl.optim.registry import OptaxEquivalent as OptaxEquivalent
from jdl.optim.registry import available_optimizers as available_optimizers
from jdl.optim.registry import get_optimizer as get_optimizer
from jdl.optim.registry import register_optimizer as register_optimizer
from jdl.optim.regularization import add_l1_penalty as add_l1_penalty
from jdl.optim.regularization import add_l2_penalty as add_l2_penalty
from jdl.optim.regularization import clip_by_global_norm as clip_by_global_norm
from jdl.optim.regularization import clip_by_value as clip_by_value
from jdl.optim.regularization import coefficient_tree as coefficient_tree
from jdl.optim.regularization import penalty as penalty
from jdl.optim.regularization import weight_decay as weight_decay
from jdl.optim.schedules import cosine_warm_restarts as cosine_warm_restarts
from jdl.optim.schedules import exponential_decay as exponential_decay
from jdl.optim.schedules import linear_decay as linear_decay
from jdl.optim.schedules import momentum_schedule as momentum_schedule
from jdl.optim.schedules import step_decay as step_decay
from jdl.optim.schedules import warmup as warmup
from jdl.optim.second_order import DampedNewtonCGState as DampedNewtonCGState
from jdl.optim.second_order import DampedNewtonState as DampedNewtonState
from jdl.optim.second_order import SaddleFreeNewtonState as SaddleFreeNewtonState
from jdl.optim.second_order import damped_newton as damped_newton
from jdl.optim.second_order import damped_newton_cg as damped_newton_cg
from jdl.optim.second_order import newton as newton
from jdl.optim.second_order import saddle_free_newton as saddle_free_newton
from jdl.optim.second_order import saddle_free_newton_lanczos as saddle_free_newton_lanczos

__all__ = [
    "FIRST_ORDER",
    "JDL_PREFIX",
    "OPTAX_EQUIVALENTS",
    "OPTIMIZERS",
    "SECOND_ORDER",
    "DampedNewtonCGState",
    "DampedNewtonState",
    "LogHyperparams",
    "OptaxEquivalent",
    "ReduceLROnPlateau",
    "SaddleFreeNewtonState",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "add_l1_penalty",
    "add_l2_penalty",
    "available_optimizers",
    "clip_by_global_norm",
    "clip_by_value",
    "coefficient_tree",
    "cosine_warm_restarts",
    "damped_newton",
    "damped_newton_cg",
    "exponential_decay",
    "get_optimizer",
    "injected_hyperparams",
    "linear_decay",
    "momentum",
    "momentum_schedule",
    "nadam",
    "nesterov",
    "newton",
    "penalty",
    "register_optimizer",
    "rmsprop",
    "saddle_free_newton",
    "saddle_free_newton_lanczos",
    "set_injected_hyperparam",
    "sgd",
    "step_decay",
    "transforms",
    "warmup",
    "weight_decay",
]

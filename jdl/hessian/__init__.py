"""Hessian and curvature tools on any ``loss(params)`` of a params pytree.

- operators: :func:`hvp`, :func:`hessian_operator`, :func:`linearize_hessian`,
  :func:`gauss_newton`, :func:`fisher`, :func:`empirical_fisher`, any of them
  over a dataset in minibatches (:func:`dataset_operator`,
  :func:`dataset_hessian_operator`), :func:`dense_hessian`,
  :func:`dense_spectrum`, :func:`model_objective`.
- eigenpairs: :func:`lanczos` (LA / SA / LM / both ends), :func:`power_iteration`.
- spectra: :func:`spectral_density` (stochastic Lanczos quadrature).
- trace: :func:`hutchinson`, :func:`hutch_plus_plus`, :func:`frobenius_norm`.
- conditioning: :func:`condition_number`.
- critical points: :func:`critical_point_report`, :func:`critical_point_summary`
  (the same numbers, pure: ``jax.vmap`` it over an ensemble), :func:`find_critical_point`.
- during training: :class:`SharpnessTracker` (a :func:`jdl.training.fit` callback),
  :func:`stability_threshold` (its ``2/η`` line, with momentum).
- landscape: :func:`block_eigenvalues`, :func:`loss_slice`, :func:`loss_surface`,
  :func:`escape_saddle`.
- helpers: :func:`random_like` (random pytrees: start vectors, probes).
- all at once: :func:`hessian_analysis` (what ``jdl hessian RUN_DIR`` runs).

Example — the top eigenvalue of a bare function's Hessian:

    >>> import jax.numpy as jnp
    >>> from jdl.hessian import hessian_operator, lanczos
    >>> loss = lambda p, a: 0.5 * p @ a @ p
    >>> eigsh = lanczos(num_steps=3, k=1, which="LA")
    >>> r = eigsh(hessian_operator(loss), jnp.ones(3), jnp.zeros(3), jnp.diag(jnp.array([1.0, 2.0, 3.0])))
    >>> round(float(r.eigenvalues[0]), 5)
    3.0
"""

from jdl.hessian._flat import random_like as random_like
from jdl.hessian.analysis import HessianAnalysis as HessianAnalysis
from jdl.hessian.analysis import hessian_analysis as hessian_analysis
from jdl.hessian.condition import ConditionNumber as ConditionNumber
from jdl.hessian.condition import condition_number as condition_number
from jdl.hessian.critical import CLASSES as CLASSES
from jdl.hessian.critical import CriticalPointReport as CriticalPointReport
from jdl.hessian.critical import CriticalPointResult as CriticalPointResult
from jdl.hessian.critical import CriticalPointSummary as CriticalPointSummary
from jdl.hessian.critical import classify_curvature as classify_curvature
from jdl.hessian.critical import critical_point_report as critical_point_report
from jdl.hessian.critical import critical_point_summary as critical_point_summary
from jdl.hessian.critical import find_critical_point as find_critical_point
from jdl.hessian.density import QuadratureNodes as QuadratureNodes
from jdl.hessian.density import SpectralDensity as SpectralDensity
from jdl.hessian.density import density_from_quadrature as density_from_quadrature
from jdl.hessian.density import spectral_density as spectral_density
from jdl.hessian.density import stochastic_lanczos_quadrature as stochastic_lanczos_quadrature
from jdl.hessian.lanczos import LanczosResult as LanczosResult
from jdl.hessian.lanczos import TridiagonalDecomposition as TridiagonalDecomposition
from jdl.hessian.lanczos import lanczos as lanczos
from jdl.hessian.lanczos import lanczos_tridiagonal as lanczos_tridiagonal
from jdl.hessian.landscape import EscapeResult as EscapeResult
from jdl.hessian.landscape import block_eigenvalues as block_eigenvalues
from jdl.hessian.landscape import block_loss as block_loss
from jdl.hessian.landscape import escape_saddle as escape_saddle
from jdl.hessian.landscape import loss_slice as loss_slice
from jdl.hessian.landscape import loss_surface as loss_surface
from jdl.hessian.landscape import parameter_blocks as parameter_blocks
from jdl.hessian.operators import Objective as Objective
from jdl.hessian.operators import dataset_hessian_operator as dataset_hessian_operator
from jdl.hessian.operators import dataset_hvp as dataset_hvp
from jdl.hessian.operators import dataset_operator as dataset_operator
from jdl.hessian.operators import dense_eigenvalues as dense_eigenvalues
from jdl.hessian.operators import dense_hessian as dense_hessian
from jdl.hessian.operators import dense_matrix as dense_matrix
from jdl.hessian.operators import dense_spectrum as dense_spectrum
from jdl.hessian.operators import empirical_fisher as empirical_fisher
from jdl.hessian.operators import fisher as fisher
from jdl.hessian.operators import gauss_newton as gauss_newton
from jdl.hessian.operators import hessian_operator as hessian_operator
from jdl.hessian.operators import hvp as hvp
from jdl.hessian.operators import linearize_hessian as linearize_hessian
from jdl.hessian.operators import model_objective as model_objective
from jdl.hessian.plots import plot_loss_slice as plot_loss_slice
from jdl.hessian.plots import plot_loss_surface as plot_loss_surface
from jdl.hessian.plots import plot_sharpness as plot_sharpness
from jdl.hessian.plots import plot_spectral_density as plot_spectral_density
from jdl.hessian.power_iteration import PowerIterationResult as PowerIterationResult
from jdl.hessian.power_iteration import power_iteration as power_iteration
from jdl.hessian.sharpness import SharpnessTracker as SharpnessTracker
from jdl.hessian.sharpness import stability_threshold as stability_threshold
from jdl.hessian.trace import TraceEstimate as TraceEstimate
from jdl.hessian.trace import frobenius_norm as frobenius_norm
from jdl.hessian.trace import hutch_plus_plus as hutch_plus_plus
from jdl.hessian.trace import hutchinson as hutchinson

__all__ = [
    "CLASSES",
    "ConditionNumber",
    "CriticalPointReport",
    "CriticalPointResult",
    "CriticalPointSummary",
    "EscapeResult",
    "HessianAnalysis",
    "LanczosResult",
    "Objective",
    "PowerIterationResult",
    "QuadratureNodes",
    "SharpnessTracker",
    "SpectralDensity",
    "TraceEstimate",
    "TridiagonalDecomposition",
    "block_eigenvalues",
    "block_loss",
    "classify_curvature",
    "condition_number",
    "critical_point_report",
    "critical_point_summary",
    "dataset_hessian_operator",
    "dataset_hvp",
    "dataset_operator",
    "dense_eigenvalues",
    "dense_hessian",
    "dense_matrix",
    "dense_spectrum",
    "density_from_quadrature",
    "empirical_fisher",
    "escape_saddle",
    "find_critical_point",
    "fisher",
    "frobenius_norm",
    "gauss_newton",
    "hessian_analysis",
    "hessian_operator",
    "hutch_plus_plus",
    "hutchinson",
    "hvp",
    "lanczos",
    "lanczos_tridiagonal",
    "linearize_hessian",
    "loss_slice",
    "loss_surface",
    "model_objective",
    "parameter_blocks",
    "plot_loss_slice",
    "plot_loss_surface",
    "plot_sharpness",
    "plot_spectral_density",
    "power_iteration",
    "random_like",
    "spectral_density",
    "stability_threshold",
    "stochastic_lanczos_quadrature",
]

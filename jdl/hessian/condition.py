"""Condition numbers of Hessians, including indefinite and singular ones.

Seed 004 §3.1 defines ill-conditioning through the condition number:

    "条件数 = 函数梯度最大变化速度 / 梯度最小变化速度（对于二阶可导函数，条件数的严格
    定义是：Hessian矩阵最大特征值的上界 / 最小特征值的下界）"

— the condition number is the fastest rate of change of the gradient over the
slowest; for a twice-differentiable function, the largest Hessian eigenvalue
over the smallest. That is ``κ = λ_max / λ_min`` and it is well defined only
for a positive-definite Hessian (near a strict minimum). For an indefinite
Hessian it is negative and for a singular one infinite — both common for
networks (zero eigenvalues from symmetries and dead units, negative ones at
saddles) — so this module also provides variants with stated definitions:

``"definite"`` — the seed's ``λ_max / λ_min``; ``inf`` unless all ``λ > 0``.

``"magnitude"`` — ``max|λ| / min{|λ| : |λ| > rtol · max|λ|}``: the 2-norm
    condition number of the Hessian restricted to the eigenvectors whose
    curvature is not negligible (with ``rtol = 0`` the usual
    ``‖H‖ ‖H⁻¹‖``, infinite when singular). Counts negative curvature as
    curvature.

``"positive"`` — ``λ_max / min{λ : λ > rtol · λ_max}``: the condition number of
    the positive-curvature part, the one that limits gradient descent's speed
    in the directions where it converges (step ``η < 2/λ_max``, progress
    ``∝ η λ`` per step along an eigenvector with eigenvalue ``λ > 0``).

``"auto"`` — ``"definite"`` when every eigenvalue is above
    ``rtol · max|λ|``, else ``"magnitude"``.

``rtol`` defaults to ``n · ε`` for ``n`` eigenvalues of the dtype's ``ε`` (half-precision
eigenvalues are worked with in float32, and take float32's ``ε``) — the
numerical-rank tolerance of ``numpy.linalg.matrix_rank`` and
``scipy.linalg.pinvh``: a backward-stable ``eigh`` finds each eigenvalue to
within a small multiple of ``ε · max|λ|``, so smaller ones cannot be told from
rounding. (Measured: the float32 dense Hessian of a 3 466-parameter MLP on the
digits, with float32 ``eigh``, has every eigenvalue within ``4.3e-7 · max|λ|``
— 3.6 ε — of the float64 one; ``n ε`` is ``4.1e-4`` there.) Pass ``rtol`` for
eigenvalues known less well (Lanczos in float32: about ``1e-6 · max|λ|``).

Every definition is computed with array operations, so the function works
under ``jax.jit`` and ``jax.vmap`` (an ensemble's spectra at once); there
``"auto"`` cannot name the definition it picked, and the result's
``definition`` stays ``"auto"`` while ``definite`` says which applied.

A NaN eigenvalue (a failed eigensolve, a loss that overflowed) leaves the
condition number undefined: ``value`` is then NaN under every definition,
eagerly and traced alike (not ``inf`` over the eigenvalues that are numbers).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jdl.hessian._flat import check_number

__all__ = ["ConditionNumber", "condition_number"]

Definition = Literal["auto", "definite", "magnitude", "positive"]


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["value", "largest", "smallest", "num_excluded", "definite"],
                   meta_fields=["definition", "rtol"])
@dataclasses.dataclass(frozen=True)
class ConditionNumber:
    """A condition number and what it was computed from.

    Attributes:
      value: the condition number (``inf`` when the definition's denominator is
        0, NaN when an eigenvalue is NaN).
      largest: the numerator eigenvalue (or magnitude).
      smallest: the denominator eigenvalue (or magnitude).
      definition: which definition was applied (``"auto"`` resolved; it stays
        ``"auto"`` under ``jax.jit``/``vmap``, where ``definite`` tells).
      num_excluded: eigenvalues left out by the threshold (or, for
        ``"positive"``, non-positive or below it).
      rtol: the relative threshold used.
      definite: whether ``"definite"`` applied (for ``"auto"``: every
        eigenvalue above ``rtol · max|λ|``).
    """

    value: jax.Array
    largest: jax.Array
    smallest: jax.Array
    definition: str
    num_excluded: jax.Array
    rtol: float
    definite: jax.Array


def condition_number(
    eigenvalues: jax.Array,
    *,
    definition: Definition = "auto",
    rtol: float | None = None,
) -> ConditionNumber:
    """The condition number of a symmetric matrix from its eigenvalues.

    Args:
      eigenvalues: all eigenvalues (e.g. ``jnp.linalg.eigvalsh`` of a dense
        Hessian). From a partial spectrum (Lanczos ends) only ``"definite"`` is
        meaningful, and only when the smallest computed eigenvalue is the
        smallest of the matrix.
      definition: see the module docstring.
      rtol: relative threshold (default ``n · ε`` of the dtype, ``n`` the
        number of eigenvalues).

    Returns:
      :class:`ConditionNumber`.

    Example:
      >>> import jax.numpy as jnp
      >>> float(condition_number(jnp.array([1.0, 10.0, 100.0])).value)
      100.0
      >>> c = condition_number(jnp.array([-2.0, 1e-12, 10.0], jnp.float32))  # 1e-12 < 3·ε·10
      >>> c.definition, float(c.value)
      ('magnitude', 5.0)
    """
    lam = jnp.asarray(eigenvalues)
    if jnp.issubdtype(lam.dtype, jnp.complexfloating):
        raise TypeError(f"eigenvalues must be real (those of a symmetric matrix, e.g. jnp.linalg.eigvalsh), "
                        f"got {lam.dtype}; dropping the imaginary parts would hide a non-symmetric matrix")
    if not jnp.issubdtype(lam.dtype, jnp.floating):  # integers, bools: JAX's default float
        lam = lam.astype(jnp.result_type(float))
    elif jnp.finfo(lam.dtype).bits < 32:
        # Half precision: in float32, as NumPy's eigensolvers return (and ``numpy.linalg.matrix_rank``
        # then takes float32's ε). In float16 a κ above 65 504 overflows to inf, and the default
        # n·ε would reach 1 at 128 (bfloat16) or 1 024 (float16) eigenvalues, excluding them all.
        lam = lam.astype(jnp.float32)
    if lam.ndim != 1 or lam.shape[0] == 0:
        raise ValueError(f"eigenvalues must be a non-empty vector, got shape {lam.shape}")
    if definition not in ("auto", "definite", "magnitude", "positive"):
        raise ValueError(
            f"unknown definition {definition!r}; use 'auto', 'definite', 'magnitude' or 'positive'"
        )
    if isinstance(rtol, jax.core.Tracer):
        raise TypeError("rtol must be a concrete number (it is a static field of the result), not a traced "
                        "value; pass it from outside jax.jit / jax.vmap, or vmap over the eigenvalues instead")
    check_number(rtol, "rtol", hint="a threshold relative to max|λ|; None is n·ε of the dtype")
    if isinstance(rtol, jax.Array):  # concrete (captured inside jax.jit, say): a static Python number
        rtol = float(np.asarray(rtol))
    if rtol is not None and float(rtol) >= 1:
        raise ValueError(f"rtol must be below 1, got {rtol!r}: the threshold rtol·max|λ| would exclude every "
                         "eigenvalue, max|λ| itself included; use a small fraction (None is n·ε of the dtype)")
    if rtol is None:
        rtol = float(lam.shape[0] * jnp.finfo(lam.dtype).eps)
    inf = jnp.asarray(jnp.inf, lam.dtype)
    scale = jnp.max(jnp.abs(lam))
    threshold = rtol * scale

    lo, hi = jnp.min(lam), jnp.max(lam)
    definite = (jnp.asarray(definition == "definite") if definition != "auto" else lo > threshold)
    # "definite": the seed's λ_max / λ_min.
    definite_value = jnp.where(lo > 0, hi / jnp.where(lo > 0, lo, 1), inf)
    # "magnitude": over |λ| above the threshold.
    mag = jnp.abs(lam)
    kept = mag > threshold if rtol > 0 else jnp.ones(mag.shape, bool)
    mag_smallest = jnp.min(jnp.where(kept, mag, inf))
    # (Denominators guarded so that the unused branch's gradient is not NaN.)
    magnitude_value = jnp.where(jnp.any(kept) & (mag_smallest > 0),
                                scale / jnp.where(mag_smallest > 0, mag_smallest, 1), inf)
    if definition == "positive":
        keep = (lam > rtol * jnp.maximum(hi, 0)) & (lam > 0)
        smallest = jnp.min(jnp.where(keep, lam, inf))
        value = jnp.where(jnp.any(keep), hi / jnp.where(jnp.any(keep), smallest, 1), inf)
        value = jnp.where(jnp.any(jnp.isnan(lam)), jnp.nan, value)
        return ConditionNumber(value, hi, smallest, "positive", jnp.sum(~keep), rtol, jnp.asarray(False))
    value = jnp.where(definite, definite_value, magnitude_value)
    value = jnp.where(jnp.any(jnp.isnan(lam)), jnp.nan, value)
    largest = jnp.where(definite, hi, scale)
    smallest = jnp.where(definite, lo, mag_smallest)
    excluded = jnp.where(definite, 0, jnp.sum(~kept)).astype(jnp.int32)
    if definition == "auto":
        try:
            definition = "definite" if bool(definite) else "magnitude"
        except jax.errors.ConcretizationTypeError:  # traced: jit or vmap
            pass
    return ConditionNumber(value, largest, smallest, definition, excluded, rtol, definite)

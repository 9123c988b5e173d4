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

``rtol`` defaults to ``√ε`` of the eigenvalues' dtype (≈ 3.5e-4 in float32,
1.5e-8 in float64): eigenvalues smaller than that relative to the largest are
indistinguishable from rounding in a dense ``eigh`` or a Lanczos run.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ConditionNumber", "condition_number"]

Definition = Literal["auto", "definite", "magnitude", "positive"]


class ConditionNumber(NamedTuple):
    """A condition number and what it was computed from.

    Attributes:
      value: the condition number (``inf`` when the definition's denominator is 0).
      largest: the numerator eigenvalue (or magnitude).
      smallest: the denominator eigenvalue (or magnitude).
      definition: which definition was applied (``"auto"`` resolved).
      num_excluded: eigenvalues left out by the threshold (or, for
        ``"positive"``, non-positive or below it).
      rtol: the relative threshold used.
    """

    value: jax.Array
    largest: jax.Array
    smallest: jax.Array
    definition: str
    num_excluded: jax.Array
    rtol: float


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
      rtol: relative threshold (default ``√ε`` of the dtype).

    Returns:
      :class:`ConditionNumber`.

    Example:
      >>> import jax.numpy as jnp
      >>> float(condition_number(jnp.array([1.0, 10.0, 100.0])).value)
      100.0
      >>> c = condition_number(jnp.array([-2.0, 1e-12, 10.0]))
      >>> c.definition, float(c.value)
      ('magnitude', 5.0)
    """
    lam = jnp.asarray(eigenvalues)
    if not jnp.issubdtype(lam.dtype, jnp.floating):
        lam = lam.astype(jnp.float32)
    if lam.ndim != 1 or lam.shape[0] == 0:
        raise ValueError(f"eigenvalues must be a non-empty vector, got shape {lam.shape}")
    if definition not in ("auto", "definite", "magnitude", "positive"):
        raise ValueError(
            f"unknown definition {definition!r}; use 'auto', 'definite', 'magnitude' or 'positive'"
        )
    if rtol is None:
        rtol = float(np.sqrt(np.finfo(lam.dtype).eps))
    inf = jnp.asarray(jnp.inf, lam.dtype)
    scale = jnp.max(jnp.abs(lam))
    threshold = rtol * scale
    if definition == "auto":
        definition = "definite" if bool(jnp.min(lam) > threshold) else "magnitude"

    if definition == "definite":
        largest, smallest = jnp.max(lam), jnp.min(lam)
        value = jnp.where(smallest > 0, largest / jnp.where(smallest > 0, smallest, 1), inf)
        excluded = jnp.zeros((), jnp.int32)
    elif definition == "magnitude":
        mag = jnp.abs(lam)
        keep = mag > threshold if rtol > 0 else jnp.ones(mag.shape, bool)
        largest = scale
        smallest = jnp.min(jnp.where(keep, mag, inf))
        value = jnp.where(jnp.any(keep), largest / smallest, inf)
        excluded = jnp.sum(~keep)
    else:  # positive
        largest = jnp.max(lam)
        keep = lam > rtol * jnp.maximum(largest, 0)
        keep = keep & (lam > 0)
        smallest = jnp.min(jnp.where(keep, lam, inf))
        value = jnp.where(jnp.any(keep), largest / smallest, inf)
        excluded = jnp.sum(~keep)
    return ConditionNumber(value, largest, smallest, definition, excluded, rtol)

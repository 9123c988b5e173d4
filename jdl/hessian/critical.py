"""Critical points: what the curvature says at a point, and how to find one.

At a critical point (``∇L = 0``) the second-order test reads the Hessian's
eigenvalues (seed 004 §3.2: a saddle is "a maximum in one direction and a
minimum in another", its Hessian indefinite):

- **minimum** — every eigenvalue ``> τ``;
- **maximum** — every eigenvalue ``< −τ``;
- **saddle** — some ``< −τ`` and some ``> τ``;
- **degenerate** — none of these: some eigenvalue is within ``±τ`` of zero
  and there are no eigenvalues of both signs (flat directions; the
  second-order test is inconclusive — e.g. the monkey saddle ``x³ − 3xy²``,
  whose Hessian vanishes at the origin);
- **unresolved** — an extreme eigenvalue is not finite (a NaN or overflowing
  Hessian: nothing can be told, and the index is NaN), or Lanczos did not
  converge the extreme eigenvalues and they do not show a saddle. Its Ritz
  values lie inside the spectrum (the true ``λ_min`` is at most the reported
  one, ``λ_max`` at least), so eigenvalues of both signs beyond ``±τ`` prove a
  saddle even unconverged, but nothing else can be told: a "minimum" whose
  ``λ_min`` has not converged may hide a negative eigenvalue (a 300-parameter
  quadratic with ``λ_min = −0.05`` read ``λ_min = 0.038`` after 20 steps).
  More ``num_steps``, or the dense method.

``τ = max(eigenvalue_atol, eigenvalue_rtol · max|λ|)``, with ``eigenvalue_rtol``
defaulting to ``√ε`` of the dtype (≈ 3.5e-4 in float32, 1.5e-8 in float64)
and ``eigenvalue_atol`` to 0. Being relative, the default calls a point
*degenerate* only where the Hessian is flat next to its own largest
eigenvalue: a point merely *near* a degenerate critical point — one
:func:`find_critical_point` reached to within its tolerance — has a small
but definite Hessian and gets its quadratic model's label (near the
inflection of ``(x − 1)³``, at ``x = 1 − 5e-4``: λ = −0.003, "maximum"; near
the monkey saddle: λ = ±1e-7, "saddle"). When curvature below a known scale
means flat for the problem at hand, pass ``eigenvalue_atol`` (e.g. ``1e-2``
there gives "degenerate").
That is a deliberate margin, far above a dense ``eigh``'s resolution (a few
``ε · max|λ|``; 4.3e-7 measured for a float32 MLP Hessian), wide enough for
eigenvalues from float32 Lanczos runs (about ``1e-6 · max|λ|``) and for SLQ's
smoothed index: an eigenvalue within it counts as zero, so a minimum with
``κ > 1/√ε`` is reported *degenerate* (its flattest direction is
indistinguishable from flat at that margin; pass ``eigenvalue_rtol`` to
resolve it). :func:`~jdl.hessian.condition_number` by default keeps all
eigenvalues above the numerical-rank tolerance ``n ε`` instead. The *index* is the fraction of
eigenvalues below ``−τ``: exact from the dense spectrum; from SLQ (the
matrix-free method) an estimate with bounds, as SLQ's nodes cannot resolve
``−τ`` inside the dense cluster of near-zero eigenvalues of a network Hessian
(measured: a 3 466-parameter MLP after one epoch of Adam, on 512 digits,
with exact index 0.195 and 59 % of its eigenvalues within ``±τ``, gave 0.33
with 10 probes of 80 steps, bounds [0.10, 0.88]); seed 000 notes that critical points with higher loss
tend to have a larger index (more likely saddles) and those with lower loss a
smaller one (more likely minima) — Dauphin et al. (2014) measured this
relation on small networks. A point is reported *critical* when
``‖∇L‖ ≤ gradient_tol`` (default ``√ε``); the classification describes the
local curvature either way.

To *locate* critical points of any kind — saddles included, which gradient
descent avoids — :func:`find_critical_point` minimises ``½‖∇L(θ)‖²`` by
Levenberg–Marquardt: the gradient is a residual whose Jacobian is ``H``, so
each step solves

    (H² + μ I) δ = −H g,

which is Newton's step ``−H⁻¹ g`` as ``μ → 0`` and a short gradient step on
``½‖g‖²`` for large ``μ``; ``μ`` shrinks after a step that lowers ``‖g‖`` and
grows after one that does not.

References:
  Y. Dauphin, R. Pascanu, C. Gulcehre, K. Cho, S. Ganguli, Y. Bengio,
  "Identifying and attacking the saddle point problem in high-dimensional
  non-convex optimization", NeurIPS 2014.
  J. Pennington, Y. Bahri, "Geometry of neural network loss surfaces via random
  matrix theory", ICML 2017 (critical points by minimising ‖∇L‖²).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jdl._linalg import eigh
from jdl.hessian._flat import as_key, check_count, check_eigensolver_dtype, check_number, flatten, random_like
from jdl.hessian.density import stochastic_lanczos_quadrature
from jdl.hessian.lanczos import lanczos
from jdl.hessian.operators import check_dense_fits, dense_hessian, hessian_operator, hvp, jit_over_arrays

PyTree = Any

__all__ = [
    "CLASSES",
    "CriticalPointReport",
    "CriticalPointResult",
    "CriticalPointSummary",
    "classify_curvature",
    "critical_point_report",
    "critical_point_summary",
    "find_critical_point",
]

#: The classification's names; :attr:`CriticalPointSummary.classification` indexes them.
CLASSES = ("minimum", "maximum", "saddle", "degenerate", "unresolved")


class CriticalPointReport(NamedTuple):
    """The first- and second-order picture at one point.

    Attributes:
      loss: ``L(θ)``.
      gradient_norm: ``‖∇L(θ)‖``.
      gradient_curvature: ``‖H g‖ / ‖g‖`` (how strongly the Hessian acts on the
        gradient direction; ``nan`` when ``g = 0``).
      lambda_min, lambda_max: the extreme eigenvalues.
      index: fraction of eigenvalues ``< −τ`` (exact from the dense spectrum;
        SLQ's quadrature mass otherwise).
      index_standard_error: 0 for the dense spectrum, else SLQ's probe spread.
      index_lower, index_upper: bounds free of the quadrature's bias on the
        probe average that ``index`` estimates
        (:meth:`~jdl.hessian.QuadratureNodes.fraction_below_bounds`; the probe
        noise comes on top); both equal ``index`` for the dense spectrum. A
        wide interval means much of the spectrum (a network's near-zero
        eigenvalues) lies near ``−τ`` at the quadrature's resolution: more
        ``num_steps`` or the dense method.
      classification: ``"minimum"``, ``"maximum"``, ``"saddle"``, ``"degenerate"``
        or ``"unresolved"`` (the Lanczos ends did not converge; see the module docstring).
      converged: whether ``lambda_min`` and ``lambda_max`` are converged
        (always for the dense spectrum; Lanczos' residual test otherwise).
      is_critical: ``‖∇L‖ ≤ gradient_tol``.
      eigenvalue_tolerance: the ``τ`` used.
      gradient_tolerance: the ``gradient_tol`` used.
      method: ``"dense"`` (full ``eigh``) or ``"lanczos"`` (Lanczos ends + SLQ index).
      num_parameters: the dimension ``n``.
      eigenvalues: the full spectrum (``"dense"``) or ``None``.
    """

    loss: jax.Array
    gradient_norm: jax.Array
    gradient_curvature: jax.Array
    lambda_min: jax.Array
    lambda_max: jax.Array
    index: jax.Array
    index_standard_error: jax.Array
    index_lower: jax.Array
    index_upper: jax.Array
    classification: str
    converged: bool
    is_critical: bool
    eigenvalue_tolerance: jax.Array
    gradient_tolerance: float
    method: str
    num_parameters: int
    eigenvalues: jax.Array | None

    def summary(self) -> str:
        crit = "critical point" if self.is_critical else (
            f"not a critical point (‖g‖ > {self.gradient_tolerance:.1e})")
        bounds = "" if self.method == "dense" else (
            f" (SLQ; bounds [{float(self.index_lower):.4f}, {float(self.index_upper):.4f}])")
        ends = "" if self.converged else " (Lanczos not converged: the true ends lie at or beyond these)"
        return (
            f"loss {float(self.loss):.6g}, ‖g‖ {float(self.gradient_norm):.3e}, "
            f"λ ∈ [{float(self.lambda_min):.4g}, {float(self.lambda_max):.4g}]{ends}, "
            f"index {float(self.index):.4f}{bounds}: {self.classification} curvature, {crit}"
        )


def eigenvalue_tolerance(eigenvalue_scale, dtype, *, rtol: float | None = None,
                         atol: float = 0.0) -> jax.Array:
    """``τ = max(atol, rtol · scale)`` with ``rtol = √ε(dtype)`` by default."""
    if rtol is None:
        rtol = float(np.sqrt(jnp.finfo(dtype).eps))
    return jnp.maximum(jnp.asarray(atol, dtype), rtol * jnp.asarray(eigenvalue_scale, dtype))


def _class_code(lo, hi, tol, converged, xp):
    """The index into :data:`CLASSES`, elementwise, with ``xp`` NumPy or ``jax.numpy``.
    Unconverged ends prove a saddle (they lie inside the spectrum) and nothing
    else; a non-finite end (a NaN or overflowing Hessian) proves nothing."""
    finite = xp.isfinite(lo) & xp.isfinite(hi) & xp.isfinite(tol)
    saddle = (lo < -tol) & (hi > tol)
    return xp.select([~finite, saddle, ~converged, lo > tol, hi < -tol],
                     [CLASSES.index("unresolved"), CLASSES.index("saddle"), CLASSES.index("unresolved"),
                      CLASSES.index("minimum"), CLASSES.index("maximum")],
                     CLASSES.index("degenerate"))


def classify_curvature(lambda_min, lambda_max, tolerance, converged=True):
    """``"minimum"``, ``"maximum"``, ``"saddle"``, ``"degenerate"`` or
    ``"unresolved"`` (see the module docstring).

    ``tolerance``: ``τ >= 0`` (``ValueError`` otherwise; a NaN ``τ``, as from
    a NaN Hessian, gives ``"unresolved"``).
    ``converged``: whether ``lambda_min`` and ``lambda_max`` are converged
    eigenvalues; if not (Ritz values of an unfinished Lanczos run) only a
    saddle can be told, and anything else is ``"unresolved"``.

    Scalars give a string; arrays (an ensemble's extreme eigenvalues, e.g. from
    ``jax.vmap`` of :func:`~jdl.hessian.lanczos`) give a NumPy array of them,
    elementwise. Inside ``jax.jit``/``jax.vmap``, :func:`critical_point_summary`
    gives the same classification as an index into :data:`CLASSES`.
    """
    lo, hi, tol = (np.asarray(x, np.float64) for x in (lambda_min, lambda_max, tolerance))
    if np.any(tol < 0):  # a NaN τ (from a NaN Hessian) passes: it gives "unresolved"
        raise ValueError(f"tolerance must be >= 0 (the τ within which an eigenvalue counts as zero, e.g. a "
                         f"report's eigenvalue_tolerance), got {tol[tol < 0][:5].tolist()} among its values")
    names = np.asarray(CLASSES)[_class_code(lo, hi, tol, np.asarray(converged, bool), np)]
    return str(names) if names.ndim == 0 else names


class CriticalPointSummary(NamedTuple):
    """The numbers of :class:`CriticalPointReport`, as arrays only.

    What :func:`critical_point_summary` returns: it can leave ``jax.jit`` and
    gain a leading axis under ``jax.vmap`` (an ensemble of models). The fields
    are the report's, without ``method`` and ``num_parameters`` (static, known
    to the caller), and with three as arrays:

    Attributes:
      classification: ``int32`` index into :data:`CLASSES` (``0`` minimum,
        ``1`` maximum, ``2`` saddle, ``3`` degenerate, ``4`` unresolved);
        :meth:`class_names` turns it into names.
      converged: a boolean array.
      is_critical: a boolean array.
      gradient_tolerance: an array.
    """

    loss: jax.Array
    gradient_norm: jax.Array
    gradient_curvature: jax.Array
    lambda_min: jax.Array
    lambda_max: jax.Array
    index: jax.Array
    index_standard_error: jax.Array
    index_lower: jax.Array
    index_upper: jax.Array
    classification: jax.Array
    converged: jax.Array
    is_critical: jax.Array
    eigenvalue_tolerance: jax.Array
    gradient_tolerance: jax.Array
    eigenvalues: jax.Array | None

    def class_names(self):
        """The classification by name: a string, or a NumPy array of them for an ensemble."""
        names = np.asarray(CLASSES)[np.asarray(self.classification)]
        return str(names) if names.ndim == 0 else names


def _check_settings(n: int, method: str, *, dense_max_params, num_steps, num_probes, gradient_tol,
                    eigenvalue_rtol, eigenvalue_atol) -> str:
    """The method to use, after checking the settings of
    :func:`critical_point_summary` (concrete tolerances only: traced ones pass)."""
    if n == 0:
        raise ValueError("params has no entries (an empty pytree, or only size-0 arrays): there is no gradient "
                         "or Hessian to read; pass the trainable parameters")
    dense_max_params = check_count(dense_max_params, "dense_max_params", 0)
    num_steps = check_count(num_steps, "num_steps")
    check_count(num_probes, "num_probes")
    check_number(gradient_tol, "gradient_tol", hint="the ‖∇L‖ at or below which the point is critical, "
                 "or None for √ε of the dtype")
    check_number(eigenvalue_rtol, "eigenvalue_rtol", hint="τ relative to max|λ|, or None for √ε of the dtype")
    check_number(eigenvalue_atol, "eigenvalue_atol", hint="the absolute floor of τ, 0 for none")
    if method == "auto":
        method = "dense" if n <= dense_max_params else "lanczos"
    if method not in ("dense", "lanczos"):
        raise ValueError(f"unknown method {method!r}; use 'auto', 'dense' or 'lanczos'")
    if method == "lanczos" and n < 2:
        raise ValueError(f"method='lanczos' reads both ends of the spectrum and needs at least 2 parameters, "
                         f"got {n}; use method='dense'")
    if method == "lanczos" and num_steps < 2:
        raise ValueError(f"method='lanczos' reads both ends of the spectrum from one Krylov space and needs "
                         f"num_steps >= 2, got num_steps={num_steps}; raise num_steps (80 by default)")
    return method


def critical_point_summary(
    loss: Callable[..., jax.Array],
    params: PyTree,
    *args,
    key=0,
    method: str = "auto",
    dense_max_params: int = 4000,
    num_steps: int = 80,
    num_probes: int = 10,
    gradient_tol: float | None = None,
    eigenvalue_rtol: float | None = None,
    eigenvalue_atol: float = 0.0,
) -> CriticalPointSummary:
    """Loss, gradient and curvature at ``params``, classified — a pure function.

    The arguments are those of :func:`critical_point_report`, which is this
    function compiled plus names. Being pure, it composes with ``jax.jit`` and
    ``jax.vmap``: the picture for a stack of models (an ensemble of seeds) in
    one compiled call is ::

        summarise = lambda p, k: critical_point_summary(loss, p, batch, key=k)
        s = jax.jit(jax.vmap(summarise))(stacked_params, jnp.arange(members))
        s.class_names()   # one name per member

    ``method`` and the sizes (``dense_max_params``, ``num_steps``,
    ``num_probes``) must be Python values; ``key`` and the tolerances may be
    traced (vmap over them, e.g.). With ``"dense"`` under ``vmap`` the ``n × n`` Hessians of all
    members are held at once; the memory check (``MemoryError`` before
    anything is allocated) counts one.

    Returns:
      :class:`CriticalPointSummary`.
    """
    flat, _ = flatten(params)
    dtype = flat.dtype
    check_eigensolver_dtype(dtype, "critical_point_summary")
    n = flat.shape[0]
    method = _check_settings(n, method, dense_max_params=dense_max_params, num_steps=num_steps,
                             num_probes=num_probes, gradient_tol=gradient_tol, eigenvalue_rtol=eigenvalue_rtol,
                             eigenvalue_atol=eigenvalue_atol)
    if method == "dense":
        check_dense_fits(n, dtype, chunk_size=min(32, n))
    if gradient_tol is None:
        gradient_tol = float(np.sqrt(jnp.finfo(dtype).eps))
    k_lanczos, k_slq = jax.random.split(as_key(key))

    value, grad = jax.value_and_grad(loss)(params, *args)
    gflat, _ = flatten(grad)
    gnorm = jnp.linalg.norm(gflat)
    hg, _ = flatten(hvp(loss, params, grad, *args))
    ratio = jnp.where(gnorm > 0, jnp.linalg.norm(hg) / jnp.where(gnorm > 0, gnorm, 1), jnp.nan)
    if method == "dense":
        eig = jnp.linalg.eigvalsh(dense_hessian(loss, params, *args))
        lo, hi = eig[0], eig[-1]
        tau = eigenvalue_tolerance(jnp.max(jnp.abs(eig)), dtype, rtol=eigenvalue_rtol, atol=eigenvalue_atol)
        index = jnp.where(jnp.all(jnp.isfinite(eig)), jnp.mean((eig < -tau).astype(dtype)), jnp.nan)
        index_se = jnp.zeros((), dtype)
        index_lower = index_upper = index
        converged = jnp.asarray(True)
    else:
        steps = min(num_steps, n)
        ends = lanczos(steps, k=2, which="BE")(hessian_operator(loss), random_like(k_lanczos, params),
                                              params, *args)
        lo, hi = ends.eigenvalues[0], ends.eigenvalues[1]
        converged = jnp.all(ends.converged)
        tau = eigenvalue_tolerance(jnp.maximum(jnp.abs(lo), jnp.abs(hi)), dtype,
                                   rtol=eigenvalue_rtol, atol=eigenvalue_atol)
        quad = stochastic_lanczos_quadrature(steps, num_probes=num_probes)(
            hessian_operator(loss), params, params, *args, key=k_slq)
        index = jnp.where(jnp.isfinite(lo) & jnp.isfinite(hi), quad.fraction_below(-tau), jnp.nan)
        index_se = quad.fraction_below_standard_error(-tau)
        index_lower, index_upper = quad.fraction_below_bounds(-tau)
        eig = None
    gradient_tol = jnp.asarray(gradient_tol, dtype)
    return CriticalPointSummary(
        loss=value,
        gradient_norm=gnorm,
        gradient_curvature=ratio,
        lambda_min=lo,
        lambda_max=hi,
        index=index,
        index_standard_error=index_se,
        index_lower=index_lower,
        index_upper=index_upper,
        classification=_class_code(lo, hi, tau, converged, jnp).astype(jnp.int32),
        converged=converged,
        is_critical=gnorm <= gradient_tol,
        eigenvalue_tolerance=tau,
        gradient_tolerance=gradient_tol,
        eigenvalues=eig,
    )


def critical_point_report(
    loss: Callable[..., jax.Array],
    params: PyTree,
    *args,
    key=0,
    method: str = "auto",
    dense_max_params: int = 4000,
    num_steps: int = 80,
    num_probes: int = 10,
    gradient_tol: float | None = None,
    eigenvalue_rtol: float | None = None,
    eigenvalue_atol: float = 0.0,
) -> CriticalPointReport:
    """Loss, gradient and curvature at ``params``, with the point classified.

    Args:
      loss: ``loss(params, *args) -> scalar``.
      params: the point.
      *args: further fixed arguments of ``loss`` (a batch, ...).
      key: PRNG key or seed for Lanczos' start and SLQ's probes.
      method: ``"dense"`` (full spectrum; raises ``MemoryError`` before
        allocating if it would not fit), ``"lanczos"`` (extreme eigenvalues by
        Lanczos with both ends from one Krylov space, index by SLQ), or
        ``"auto"``: dense up to ``dense_max_params`` parameters.
      num_steps: Lanczos steps (``"lanczos"``: for the ends and per SLQ probe).
      num_probes: SLQ probes for the index.
      gradient_tol: ``‖∇L‖`` at or below which the point counts as critical
        (default ``√ε`` of the dtype).
      eigenvalue_rtol, eigenvalue_atol: the zero-eigenvalue tolerance ``τ``.
        The three tolerances must be finite and ``>= 0`` (``ValueError``,
        before any tracing, for concrete ones); ``method="lanczos"`` needs
        ``num_steps >= 2`` (one Krylov space for both ends).

    Returns:
      :class:`CriticalPointReport`.

    The report is for one point (it holds strings and Python values): it is
    :func:`critical_point_summary`, traced and compiled for this call. For many
    points, compile that pure function once yourself — ``jax.jit`` it, and
    ``jax.vmap`` it over a stack of models (an ensemble) to get them all in one
    compiled call.
    """
    flat, _ = flatten(params)
    dtype = flat.dtype
    check_eigensolver_dtype(dtype, "critical_point_report")
    n = flat.shape[0]
    method = _check_settings(n, method, dense_max_params=dense_max_params, num_steps=num_steps,
                             num_probes=num_probes, gradient_tol=gradient_tol, eigenvalue_rtol=eigenvalue_rtol,
                             eigenvalue_atol=eigenvalue_atol)
    if method == "dense":  # before tracing, too
        check_dense_fits(n, dtype, chunk_size=min(32, n))
    settings = dict(method=method, dense_max_params=dense_max_params, num_steps=num_steps,
                    num_probes=num_probes, gradient_tol=gradient_tol, eigenvalue_rtol=eigenvalue_rtol,
                    eigenvalue_atol=eigenvalue_atol)
    # Compiled for this call (a closure: nothing of ``loss`` outlives it).
    # Non-array arguments of the loss (a flag, a class count) are held fixed.
    s = jit_over_arrays(lambda params, args, key: critical_point_summary(loss, params, *args, key=key, **settings),
                        params, args, as_key(key))
    return CriticalPointReport(
        loss=s.loss,
        gradient_norm=s.gradient_norm,
        gradient_curvature=s.gradient_curvature,
        lambda_min=s.lambda_min,
        lambda_max=s.lambda_max,
        index=s.index,
        index_standard_error=s.index_standard_error,
        index_lower=s.index_lower,
        index_upper=s.index_upper,
        classification=s.class_names(),
        converged=bool(s.converged),
        is_critical=bool(s.is_critical),
        eigenvalue_tolerance=s.eigenvalue_tolerance,
        gradient_tolerance=float(s.gradient_tolerance),
        method=method,
        num_parameters=n,
        eigenvalues=s.eigenvalues,
    )


# ----------------------------------------------------------------------------------
# Finding critical points
# ----------------------------------------------------------------------------------


class CriticalPointResult(NamedTuple):
    """What :func:`find_critical_point` returns.

    Attributes:
      params: the point reached.
      loss: ``L`` there.
      gradient_norm: ``‖∇L‖`` there.
      num_steps: accepted plus rejected Levenberg–Marquardt steps.
      converged: ``gradient_norm ≤ tol`` (finite).
      damping: the final ``μ``.
    """

    params: PyTree
    loss: jax.Array
    gradient_norm: jax.Array
    num_steps: jax.Array
    converged: jax.Array
    damping: jax.Array


POWER_STEPS = 10


def _norm_squared_estimate(hv: Callable, g: jax.Array, hg: jax.Array) -> jax.Array:
    """``‖H‖²`` from below, for the matrix-free damping ``μ ‖H‖²``: the larger
    of ``‖Hg‖²/‖g‖²`` and ``‖H v‖²`` after :data:`POWER_STEPS` power steps from
    ``Hg`` (about 10 % more products per step than CG's ``2 · cg_max_steps``).

    ``‖Hg‖/‖g‖`` alone falls far below ``‖H‖`` where ``g`` lies along flat
    directions — the floor of Rosenbrock's valley, where it was 3.8 against
    ‖H‖² ≈ 1.2e6 — and the damping the docstring states would then be
    10⁵ times weaker (CG's steps were rejected for thousands of iterations).
    """
    tiny = jnp.finfo(g.dtype).tiny
    first = jnp.vdot(hg, hg) / jnp.maximum(jnp.vdot(g, g), tiny)

    def step(_, v):
        w = hv(v)
        return w / jnp.maximum(jnp.linalg.norm(w), tiny)

    v = jax.lax.fori_loop(0, POWER_STEPS, step, hg / jnp.maximum(jnp.linalg.norm(hg), tiny))
    w = hv(v)
    return jnp.maximum(jnp.maximum(first, jnp.vdot(w, w)), tiny)


def find_critical_point(
    loss: Callable[..., jax.Array],
    params: PyTree,
    *args,
    max_steps: int = 100,
    tol: float | None = None,
    damping: float = 1e-3,
    solver: str = "auto",
    dense_max_params: int = 2000,
    cg_max_steps: int = 100,
    memory: int = 10,
) -> CriticalPointResult:
    """Locate a critical point near ``params`` by minimising ``½‖∇L‖²`` (Levenberg–Marquardt).

    Converges to the nearby critical point of any type — minimum, saddle or
    maximum — quadratically when its Hessian is non-singular (Newton's method on
    ``∇L = 0``) and linearly when it is degenerate.

    Args:
      loss: ``loss(params, *args) -> scalar``.
      params: the starting point.
      *args: fixed further arguments of ``loss``.
      max_steps: the most Levenberg–Marquardt steps. The loop also ends once
        a rejected step no longer changes the point in floating point (the
        last bits of ``‖∇L‖`` are rounding; with a given ``tol``,
        ``converged`` stays ``False`` if ``‖∇L‖`` is above it).
      tol: stop when ``‖∇L‖ ≤ tol``. Default ``10 ε (1 + |L|)`` at the
        current point (``ε`` of the dtype; the loss at the current point, not
        the start: a start far away, with a large loss, would loosen it), and
        once no step moves the point any more, ``10 ε (1 + |L|) + ε ‖H‖ ‖x‖``
        (``‖H‖`` from the last step's solve): how far one ulp of ``x`` moves the
        gradient, below which its computed value is rounding (Rosenbrock's
        minimum in float64: 2e-15 and 3e-13; a run that ended at
        (1, 1 − 1e-16) with ‖∇L‖ = 5e-14 used to be "not converged"). A large
        constant added to the loss loosens it too, so pass ``tol`` for such
        losses. A non-finite ``‖∇L‖`` never counts as converged.
      damping: the initial ``μ`` relative to ``‖H‖²`` (it adapts); the
        matrix-free solver estimates ``‖H‖²`` by a few power steps.
      solver: how to solve ``(H² + μI) δ = −Hg``: ``"dense"`` (eigendecomposition
        of the dense Hessian), ``"cg"`` (matrix-free conjugate gradients, two
        Hessian-vector products per iteration), or ``"auto"`` (dense up to
        ``dense_max_params``).
      cg_max_steps: conjugate-gradient iterations per step.
      memory: a step is accepted when ``‖∇L‖²`` falls below the largest of the
        last ``memory`` accepted values (non-monotone acceptance, Grippo,
        Lampariello & Lucidi 1986), which lets Newton-like steps through curved
        valleys where ``‖∇L‖`` must rise briefly; ``1`` is the classic monotone rule.

    Returns:
      :class:`CriticalPointResult`. The loop is a ``lax.while_loop``: wrap the
      call in ``jax.jit`` (with ``loss`` closed over) to compile it once.
    """
    check_count(memory, "memory (1: accept only steps that lower ‖∇L‖)")
    max_steps = check_count(max_steps, "max_steps", 0)
    cg_max_steps = check_count(cg_max_steps, "cg_max_steps")
    check_count(dense_max_params, "dense_max_params", 0)
    check_number(tol, "tol", hint="a bound on ‖∇L‖, or None for about 10 ε (1 + |L|)")
    check_number(damping, "damping", positive=True,
                 hint="the initial Levenberg–Marquardt μ relative to ‖H‖², e.g. 1e-3")
    flat0, unflatten = flatten(params)
    n = flat0.shape[0]
    if n == 0:
        raise ValueError("params has no entries (an empty pytree, or only size-0 arrays): there is no gradient "
                         "to drive to zero; pass the trainable parameters")
    dtype = flat0.dtype
    if solver == "auto":
        solver = "dense" if n <= dense_max_params else "cg"
    if solver not in ("dense", "cg"):
        raise ValueError(f"unknown solver {solver!r}; use 'auto', 'dense' or 'cg'")
    if solver == "dense":
        check_eigensolver_dtype(dtype, "find_critical_point(solver='dense')")
    elif dtype == jnp.float16:
        raise TypeError("find_critical_point(solver='cg') cannot work in float16: its normal equations square "
                        "the Hessian (HᵀH δ = −Hᵀg), which overflows float16's range (65 504), and CG returns "
                        "δ = 0; cast the params to float32 (or bfloat16)")
    eps = jnp.finfo(dtype).eps

    def flat_loss(x):
        return loss(unflatten(x), *args)

    grad = jax.grad(flat_loss)

    def value_and_grad(x):
        return jax.value_and_grad(flat_loss)(x)

    def solve(x, g, mu):
        """The step ``δ`` and ``‖H‖`` at ``x`` (exact for the dense solver, a lower estimate for CG)."""
        if solver == "dense":
            h = dense_hessian(flat_loss, x)
            lam, u = eigh(h)
            scale2 = jnp.maximum(jnp.max(lam * lam), jnp.finfo(dtype).tiny)
            coef = lam / (lam * lam + mu * scale2)
            return -(u @ (coef * (u.T @ g))), jnp.sqrt(scale2)
        _, hv = jax.linearize(grad, x)
        hg = hv(g)
        scale2 = _norm_squared_estimate(hv, g, hg)

        def normal_op(v):
            return hv(hv(v)) + mu * scale2 * v

        delta, _ = jax.scipy.sparse.linalg.cg(normal_op, -hg, maxiter=cg_max_steps)
        return delta, jnp.sqrt(scale2)

    value0, g0 = value_and_grad(flat0)

    def done(s):
        gnorm = jnp.linalg.norm(s.g)
        if tol is not None:
            met = gnorm <= jnp.asarray(tol, dtype)
        else:
            # Once no step moves x, the gradient's last bits are rounding: up to what one
            # ulp of x moves it by, ε ‖H‖ ‖x‖ (only then: along a flat direction the
            # gradient can be far more accurate, and more steps still gain).
            floor = eps * s.hessian_norm * jnp.linalg.norm(s.x)
            met = gnorm <= 10 * eps * (1 + jnp.abs(s.value)) + jnp.where(s.stuck, floor, 0)
        return jnp.isfinite(gnorm) & jnp.isfinite(s.value) & met

    class _S(NamedTuple):
        x: jax.Array
        value: jax.Array
        g: jax.Array
        mu: jax.Array
        step: jax.Array
        recent: jax.Array  # ‖g‖² of the last accepted points (non-monotone acceptance)
        stuck: jax.Array   # the step no longer changes x in floating point: nothing more to gain
        hessian_norm: jax.Array  # ‖H‖ from the last step's solve (0 before the first)

    # A start whose loss or gradient is not finite can accept no step (no
    # merit beats NaN): stop at once instead of spending max_steps solves.
    finite_start = jnp.isfinite(value0) & jnp.all(jnp.isfinite(g0))

    def cond(s: _S):
        return (s.step < max_steps) & ~done(s) & ~s.stuck & finite_start

    def body(s: _S):
        delta, hessian_norm = solve(s.x, s.g, s.mu)
        trial = s.x + delta
        value, g = value_and_grad(trial)
        merit = jnp.vdot(g, g)
        better = (merit < jnp.max(s.recent)) & jnp.all(jnp.isfinite(g)) & jnp.isfinite(value)
        return _S(
            x=jnp.where(better, trial, s.x),
            value=jnp.where(better, value, s.value),
            g=jnp.where(better, g, s.g),
            mu=jnp.where(better, jnp.maximum(s.mu / 3, eps * eps), s.mu * 4),
            step=s.step + 1,
            recent=jnp.where(better, jnp.roll(s.recent, 1).at[0].set(merit), s.recent),
            stuck=~better & jnp.all(trial == s.x),
            hessian_norm=hessian_norm,
        )

    recent = jnp.full((memory,), -jnp.inf, dtype).at[0].set(jnp.vdot(g0, g0))
    s = jax.lax.while_loop(cond, body, _S(flat0, value0, g0, jnp.asarray(damping, dtype),
                                          jnp.zeros((), jnp.int32), recent, jnp.zeros((), bool),
                                          jnp.zeros((), dtype)))
    gnorm = jnp.linalg.norm(s.g)
    return CriticalPointResult(unflatten(s.x), s.value, gnorm, s.step, done(s), s.mu)


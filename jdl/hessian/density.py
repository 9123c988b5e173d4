"""Eigenvalue spectral density by stochastic Lanczos quadrature (SLQ).

The spectral density of a symmetric ``n × n`` operator with eigenvalues ``λᵢ``,
smoothed by a Gaussian kernel ``g_σ``, is

    φ_σ(t) = (1/n) Σᵢ g_σ(t − λᵢ) = (1/n) tr g_σ(t − A).

For a random unit vector ``v`` (Rademacher or Gaussian, normalised),
``E[vᵀ f(A) v] = tr f(A) / n``; and ``vᵀ f(A) v`` is approximated by Gauss
quadrature from ``m`` Lanczos steps started at ``v``: with ``T = S Θ Sᵀ`` the
tridiagonal matrix, nodes ``θⱼ`` and weights ``wⱼ = S₁ⱼ²`` (which sum to 1),

    vᵀ f(A) v ≈ Σⱼ wⱼ f(θⱼ),

exact for polynomials of degree ``2m − 1``. Averaging over ``num_probes``
vectors gives

    φ_σ(t) ≈ (1/P) Σ_p Σⱼ w_{pj} g_σ(t − θ_{pj}).

The density integrates to 1 (a probability density over eigenvalues). The
fraction of eigenvalues below a threshold — the Hessian's *index* — is the
quadrature mass ``(1/P) Σ_p Σ_{θ_{pj} < τ} w_{pj}`` (no kernel needed). Its
quadrature bias is largest where eigenvalues crowd near ``τ`` (the index of a
network Hessian, whose many near-zero eigenvalues straddle ``−τ``);
:meth:`QuadratureNodes.fraction_below_bounds` bounds it by the
Chebyshev–Markov–Stieltjes inequalities.

References:
  L. Lin, Y. Saad, C. Yang, "Approximating spectral densities of large
  matrices", SIAM Review 58(1), 2016.
  B. Ghorbani, S. Krishnan, Y. Xiao, "An investigation into neural net
  optimization via Hessian eigenvalue density", ICML 2019.
  N. I. Akhiezer, *The Classical Moment Problem and Some Related Questions in
  Analysis*, Oliver & Boyd 1965 (the Chebyshev–Markov–Stieltjes inequalities).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jdl.hessian._flat import as_key, check_count, check_eigensolver_dtype, flatten
from jdl.hessian.lanczos import _ritz, lanczos_tridiagonal

PyTree = Any

__all__ = [
    "SpectralDensity",
    "QuadratureNodes",
    "density_from_quadrature",
    "spectral_density",
    "stochastic_lanczos_quadrature",
]


class QuadratureNodes(NamedTuple):
    """Gauss quadrature nodes and weights, one row per probe.

    Attributes:
      nodes: ``(P, m)`` Ritz values ``θ_{pj}``.
      weights: ``(P, m)`` weights ``w_{pj}``; each row sums to 1.
      num_matvecs: operator products spent (``P · m``).
      exact: ``(P,)`` whether each probe's Krylov space became invariant (or
        spanned the whole space), so that its rule *is* its spectral measure
        (nodes are eigenvalues, weights their share of the probe), not an
        approximation of it; ``None``: unknown (treated as ``False``).
    """

    nodes: jax.Array
    weights: jax.Array
    num_matvecs: int
    exact: jax.Array | None = None

    def fraction_below(self, threshold: float = 0.0) -> jax.Array:
        """Estimated fraction of eigenvalues ``< threshold`` (e.g. the index at 0).

        Gauss quadrature of a step function: unbiased over probes only up to the
        quadrature's resolution — nodes are about one node spacing apart, so a
        dense cluster of eigenvalues within that distance of ``threshold`` (the
        near-zero bulk of a network Hessian, when ``threshold ≈ 0``) is split
        between the two sides. :meth:`fraction_below_standard_error` covers
        the probe noise, not this bias; :meth:`fraction_below_bounds` bounds
        the bias, and the dense spectrum gives the exact count.
        """
        return jnp.mean(self._fraction_below_per_probe(threshold))

    def _fraction_below_per_probe(self, threshold) -> jax.Array:
        """Each probe's rule mass below ``threshold``, clipped to ``[0, 1]`` (the
        weights sum to 1 only up to rounding: 1 + 3 ulp measured in float32)."""
        return jnp.clip(jnp.sum(jnp.where(self.nodes < threshold, self.weights, 0), axis=1), 0, 1)

    def fraction_below_bounds(self, threshold: float = 0.0) -> tuple[jax.Array, jax.Array]:
        """Bounds ``(lower, upper)`` on the probe average that :meth:`fraction_below`
        estimates, free of its quadrature bias.

        Each probe's Gauss rule bounds the distribution function of its own
        spectral measure ``μ_v = Σᵢ (vᵀuᵢ)² δ_{λᵢ}`` by the
        Chebyshev–Markov–Stieltjes inequalities (N. I. Akhiezer, *The
        Classical Moment Problem*, 1965): with nodes ``θ_1 < … < θ_m`` and
        weights ``w_j``, ``μ_v((−∞, θ_i]) ≤ Σ_{j≤i} w_j ≤ μ_v((−∞, θ_{i+1}))``
        for every measure with the rule's first ``2m`` moments, ``μ_v`` among them.
        For ``θ_k < t ≤ θ_{k+1}`` they give

            Σ_{j<k} w_j  ≤  μ_v((−∞, t))  ≤  Σ_{j≤k+1} w_j,

        the estimate ``Σ_{j≤k} w_j`` minus the weight of the node just below
        ``t`` and plus that of the node just above: all the quadrature cannot
        tell about the spectrum between those two nodes. A probe whose Krylov
        space became invariant (:attr:`exact`) has its measure as its rule, and
        its bounds close on its estimate. The bounds averaged over the probes
        bound the probe average, whose expectation is the fraction of
        eigenvalues below ``t``; the probe noise
        (:meth:`fraction_below_standard_error`) comes on top.

        A wide interval means much of the spectrum lies near ``t`` at the
        quadrature's resolution — for the index at ``t = −τ``, the near-zero
        bulk of a network Hessian — which more Lanczos steps (closer nodes) or
        the dense spectrum resolve. Nodes within ``δ = m ε max|θ|`` of ``t``
        (rounding in the nodes' positions) count on both sides. Nodes of weight
        at most ``ε`` are left out of the neighbours (those of restarted Krylov
        spaces weigh exactly 0; leaving out a real one only widens the bounds
        by less than ``m ε``). Each probe's bounds are clipped to ``[0, 1]`` and
        widened, if rounding put them on the wrong side, to hold its estimate;
        their means hold :meth:`fraction_below`.
        """
        nodes, weights = self.nodes, self.weights
        eps = jnp.finfo(weights.dtype).eps
        delta = nodes.shape[1] * eps * jnp.max(jnp.abs(nodes))
        real = weights > eps
        inf = jnp.asarray(jnp.inf, nodes.dtype)

        def mass_below(t, among):
            return jnp.sum(jnp.where(among & (nodes < t), weights, 0), axis=1)

        def neighbour_weight(mask, key):
            index = jnp.argmax(jnp.where(mask, key, -inf), axis=1, keepdims=True)
            return jnp.where(jnp.any(mask, axis=1), jnp.take_along_axis(weights, index, 1)[:, 0], 0)

        low_t, high_t = threshold - delta, threshold + delta
        w_below = neighbour_weight(real & (nodes < low_t), nodes)     # the nearest real node below
        w_above = neighbour_weight(real & (nodes >= high_t), -nodes)  # and above
        exact = jnp.zeros(nodes.shape[:1], bool) if self.exact is None else self.exact
        lower = mass_below(low_t, real) - jnp.where(exact, 0, w_below)
        upper = mass_below(high_t, jnp.ones_like(real)) + jnp.where(exact, 0, w_above)
        estimate = self._fraction_below_per_probe(threshold)
        # The means are clamped to the estimate's own mean as well: summed in
        # different orders, the mean of bounds that hold every probe's estimate
        # came out 2 ulp below the mean of the estimates (float32, an H100).
        mean = self.fraction_below(threshold)
        return (jnp.minimum(jnp.mean(jnp.minimum(jnp.clip(lower, 0, 1), estimate)), mean),
                jnp.maximum(jnp.mean(jnp.maximum(jnp.clip(upper, 0, 1), estimate)), mean))

    def fraction_below_standard_error(self, threshold: float = 0.0) -> jax.Array:
        """Standard error of :meth:`fraction_below` over the probes."""
        per_probe = self._fraction_below_per_probe(threshold)
        p = per_probe.shape[0]
        return jnp.std(per_probe, ddof=1) / jnp.sqrt(p) if p > 1 else jnp.full((), jnp.nan)

    def trace_per_dimension(self) -> jax.Array:
        """``tr(A)/n`` estimated as ``(1/P) Σ_p Σ_j w_{pj} θ_{pj}``."""
        return jnp.mean(jnp.sum(self.weights * self.nodes, axis=1))


class SpectralDensity(NamedTuple):
    """A smoothed eigenvalue density on a grid, with how it was made.

    Attributes:
      grid: ``(G,)`` eigenvalue axis.
      density: ``(G,)`` ``φ_σ`` on the grid; integrates to ≈ 1.
      sigma: the Gaussian kernel's standard deviation.
      num_probes: random probe vectors averaged.
      num_steps: Lanczos steps per probe (quadrature nodes per probe).
      quadrature: the :class:`QuadratureNodes` behind the curve.
    """

    grid: jax.Array
    density: jax.Array
    sigma: jax.Array
    num_probes: int
    num_steps: int
    quadrature: QuadratureNodes

    @property
    def num_matvecs(self) -> int:
        return self.quadrature.num_matvecs


ProbeDistribution = Literal["rademacher", "normal"]


def _probe(key, flat: jax.Array, distribution: str) -> jax.Array:
    if distribution == "rademacher":
        return jax.random.rademacher(key, flat.shape, flat.dtype)
    if distribution == "normal":
        return jax.random.normal(key, flat.shape, flat.dtype)
    raise ValueError(f"unknown probe distribution {distribution!r}; use 'rademacher' or 'normal'")


def stochastic_lanczos_quadrature(
    num_steps: int = 80,
    *,
    num_probes: int = 10,
    distribution: ProbeDistribution = "rademacher",
    probe_batch_size: int | None = None,
) -> Callable[..., QuadratureNodes]:
    """Configure SLQ: ``slq(matvec, like, *params, key) -> QuadratureNodes``.

    Args:
      num_steps: Lanczos steps per probe (full reorthogonalisation).
      num_probes: independent random probes.
      distribution: probe entries, ``"rademacher"`` (±1) or ``"normal"``.
      probe_batch_size: probes run together (vmapped); ``None`` runs all at
        once. Smaller values bound memory to ``batch · num_steps · n`` numbers.

    ``like`` is a pytree shaped like the operator's domain (e.g. ``params``),
    of float32 or float64 numbers: the quadrature rule comes from an
    eigensolve of ``T`` (half precision raises ``TypeError``).

    Call ``slq`` inside ``jax.jit`` (with the operator's arrays passed as
    ``params``): called eagerly, each call traces and compiles its loops again
    (1.5–3 s on CPU, against milliseconds once compiled for a small operator).
    """
    if distribution not in ("rademacher", "normal"):
        raise ValueError(f"unknown probe distribution {distribution!r}; use 'rademacher' or 'normal'")
    num_probes = check_count(num_probes, "num_probes")
    if probe_batch_size is not None:
        probe_batch_size = check_count(probe_batch_size, "probe_batch_size")
    decompose = lanczos_tridiagonal(check_count(num_steps, "num_steps"))

    def slq(matvec: Callable, like: PyTree, *params, key) -> QuadratureNodes:
        flat, unflatten = flatten(like)
        check_eigensolver_dtype(flat.dtype, "stochastic Lanczos quadrature")
        if flat.shape[0] == 0:
            raise ValueError("the operator's domain has no numbers (`like` holds no array elements): "
                             "a spectrum needs at least one parameter")
        keys = jax.random.split(as_key(key), num_probes)

        def one(k):
            v0 = unflatten(_probe(k, flat, distribution))
            d = decompose(matvec, v0, *params)
            m = d.diagonal.shape[0]
            off = jnp.concatenate([d.off_diagonal, jnp.zeros((1,), d.diagonal.dtype)])
            theta, s = _ritz(d.diagonal, off, m)
            # Lanczos sets β to exactly 0 when the Krylov space is invariant
            # (or spans everything): the rule is then the measure itself.
            exact = jnp.any(d.off_diagonal == 0) | (d.residual_norm == 0)
            return theta, s[0] ** 2, exact

        nodes, weights, exact = jax.lax.map(one, keys, batch_size=probe_batch_size or num_probes)
        return QuadratureNodes(nodes, weights, num_probes * nodes.shape[1], exact)

    return slq


def _check_sigma(sigma) -> None:
    """A concrete ``sigma`` must be positive and finite (a traced one cannot be checked)."""
    if sigma is None or isinstance(sigma, jax.core.Tracer):
        return
    value = np.asarray(sigma)  # NumPy: under jax.jit a jnp comparison would be traced
    if value.ndim != 0 or not value > 0 or not np.isfinite(value):
        raise ValueError(f"sigma, the Gaussian kernel's width, must be a positive finite number, got {sigma!r}; "
                         "pass e.g. 0.01 × the span of the spectrum, or sigma=None for that default")


def _check_grid(grid):
    """``grid`` as given, once it is one axis of at least one point (``ValueError`` otherwise)."""
    shape = np.shape(grid)
    if len(shape) != 1 or shape[0] == 0:
        raise ValueError(f"grid must be a 1-D array of eigenvalues (at least one point), got shape {shape}; "
                         "e.g. jnp.linspace(lo, hi, 1000)")
    return grid


def density_from_quadrature(quadrature: QuadratureNodes, grid: jax.Array, sigma) -> jax.Array:
    """``φ_σ(t) = (1/P) Σ_p Σ_j w_{pj} N(t; θ_{pj}, σ²)`` on ``grid``.

    ``sigma`` must be positive: a concrete ``sigma <= 0`` raises ``ValueError``
    (a traced one is not checked). A concrete grid whose points lie more than
    ``2σ`` apart warns: peaks fall between its points. There is no default
    width here (:func:`spectral_density` picks 1 % of the nodes' span).
    """
    if sigma is None:
        raise ValueError("density_from_quadrature needs the kernel width sigma (a positive number); "
                         "spectral_density(..., sigma=None) picks 1 % of the span of the quadrature nodes, "
                         "e.g. sigma = 0.01 * (quadrature.nodes.max() - quadrature.nodes.min())")
    _check_sigma(sigma)
    grid = jnp.asarray(_check_grid(grid), quadrature.nodes.dtype)
    sigma = jnp.asarray(sigma, grid.dtype)
    _warn_if_undersampled(grid, sigma)
    z = (grid[:, None, None] - quadrature.nodes[None, :, :]) / sigma
    kernel = jnp.exp(-0.5 * z * z) / (sigma * jnp.sqrt(2 * jnp.pi))
    return jnp.mean(jnp.sum(kernel * quadrature.weights[None, :, :], axis=2), axis=1)


def spectral_density(
    matvec: Callable,
    like: PyTree,
    *params,
    key,
    num_steps: int = 80,
    num_probes: int = 10,
    sigma: float | None = None,
    grid: jax.Array | None = None,
    grid_size: int = 1000,
    distribution: ProbeDistribution = "rademacher",
    probe_batch_size: int | None = None,
) -> SpectralDensity:
    """The Gaussian-smoothed eigenvalue density of ``matvec`` by SLQ.

    Args:
      matvec: ``matvec(v, *params)``, a symmetric operator on pytrees like ``like``.
      like: a pytree shaped like the operator's domain.
      *params: the operator's parameters.
      key: PRNG key (int seed or key) for the probes.
      num_steps, num_probes, distribution, probe_batch_size: see
        :func:`stochastic_lanczos_quadrature`.
      sigma: kernel width, positive (a concrete ``sigma <= 0`` raises
        ``ValueError`` before any product). ``None``: 1 % of the span of the
        quadrature nodes (the extreme nodes are the extreme eigenvalues to high
        accuracy), or of the narrowest span the grid can resolve in the
        nodes' precision if that is wider (see :func:`_resolvable_span`; a
        single distinct eigenvalue then shows as a visible peak). The value
        used is returned in the result. A concrete grid whose points lie
        more than ``2σ`` apart warns (peaks fall between points).
      grid: eigenvalues at which to evaluate; ``None``: ``grid_size`` points
        over the node span (at least the resolvable span, centred) widened
        by ``5σ`` on each side.

    Returns:
      :class:`SpectralDensity`.

    Like :func:`stochastic_lanczos_quadrature`, it compiles its Lanczos loops
    on every eager call (seconds); to draw several densities, call it inside
    ``jax.jit`` with ``num_steps``, ``num_probes``, ``grid_size`` and the
    operator static, e.g. ``jax.jit(lambda p: spectral_density(mv, p, p, key=0))``.
    """
    _check_sigma(sigma)
    grid_size = check_count(grid_size, "grid_size", 2, hint="a density on one point has no shape; the default is 1000")
    if grid is not None:
        _check_grid(grid)
    quad = stochastic_lanczos_quadrature(
        num_steps, num_probes=num_probes, distribution=distribution,
        probe_batch_size=probe_batch_size,
    )(matvec, like, *params, key=key)
    dtype = quad.nodes.dtype
    lo, hi = jnp.min(quad.nodes), jnp.max(quad.nodes)
    points = grid_size if grid is None else max(int(np.size(grid)), 2)
    span = jnp.maximum(hi - lo, _resolvable_span(lo, hi, points))
    if sigma is None:
        sigma = 0.01 * span
    sigma = jnp.asarray(sigma, dtype)
    if grid is None:
        middle = lo + (hi - lo) / 2
        grid = jnp.linspace(middle - span / 2 - 5 * sigma, middle + span / 2 + 5 * sigma, grid_size)
    grid = jnp.asarray(grid, dtype)
    density = density_from_quadrature(quad, grid, sigma)
    return SpectralDensity(grid, density, sigma, num_probes, quad.nodes.shape[1], quad)


def _resolvable_span(lo: jax.Array, hi: jax.Array, points: int) -> jax.Array:
    """The narrowest span a grid of ``points`` values can resolve near ``[lo, hi]``:
    ``8 · points · ε · max(|lo|, |hi|)``, with 1 for that maximum when every
    node is 0 (the zero operator: any width shows it), and never so small
    that 1 % of it is subnormal (which XLA flushes to zero).

    Numbers near ``λ`` are ``ε|λ|`` apart at best, so a grid of ``points``
    values over this span is at least 8 floating-point steps apart, and the
    default kernel (1 % of the span) at least 80 steps wide. A spectrum
    narrower than this — one distinct eigenvalue, e.g. ``c · I`` — is shown as
    a peak of this width: a kernel of 1 % of its true span would fall between
    representable numbers (the grid would collapse onto a few values and the
    curve would not integrate to 1).
    """
    info = jnp.finfo(lo.dtype)
    magnitude = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    magnitude = jnp.where(magnitude > 0, magnitude, 1)
    return jnp.maximum(8 * points * info.eps * magnitude, 100 * info.tiny)


def _warn_if_undersampled(grid: jax.Array, sigma: jax.Array) -> None:
    """Warn when grid points lie more than 2σ apart (concrete values only).

    A Gaussian sampled that sparsely loses its peaks between points: the curve
    misses eigenvalues and no longer integrates to 1 (at a spacing of 2σ the
    sampled sum is off by about 1 %, at 3σ by about 10 %).
    """
    if isinstance(grid, jax.core.Tracer) or isinstance(sigma, jax.core.Tracer) or grid.size < 2:
        return
    spacing = float(np.max(np.abs(np.diff(np.asarray(grid, np.float64)))))
    width = float(sigma)
    if spacing > 2 * width:
        warnings.warn(
            f"the grid's points are up to {spacing:.3g} apart, more than twice the kernel width "
            f"sigma={width:.3g}: peaks between points are lost and the density will not integrate to 1; "
            "pass a larger sigma, a finer grid (grid_size=) or a narrower grid=",
            stacklevel=3)

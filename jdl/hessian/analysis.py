"""One call that answers "what does the curvature look like here?" — the engine of ``jdl hessian``.

:func:`hessian_analysis` gathers, for ``loss(params, batch)`` over a dataset:
the loss and gradient norm; the top-k and bottom-k eigenvalues; the
condition number; the index and the curvature classification; the trace by
Hutch++ with its standard error; and the SLQ spectral density. Small models
(up to ``dense_max_params`` parameters) get the exact dense spectrum as well,
from which the extreme eigenvalues, the index, the exact trace and every
condition-number variant follow; larger ones use Lanczos (both ends from one
Krylov space) and SLQ.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jdl.hessian._flat import as_key, check_count, check_number, flatten, random_like
from jdl.hessian.condition import ConditionNumber, condition_number
from jdl.hessian.critical import classify_curvature, eigenvalue_tolerance
from jdl.hessian.density import SpectralDensity, spectral_density
from jdl.hessian.lanczos import lanczos
from jdl.hessian.operators import (
    _format_bytes,
    _num_examples,
    available_memory,
    check_dense_fits,
    dataset_hessian_operator,
    dense_eigenvalues,
    dense_hessian,
    dense_matrix,
    linearize_hessian,
)
from jdl.hessian.trace import TraceEstimate, hutch_plus_plus

PyTree = Any

__all__ = ["HessianAnalysis", "hessian_analysis"]


class HessianAnalysis(NamedTuple):
    """Everything :func:`hessian_analysis` measured (see its docstring).

    ``top_eigenvalues`` are descending, ``bottom_eigenvalues`` ascending;
    ``eigenvalue_residuals`` (Lanczos only, else ``None``) holds ``‖Hy − λy‖``
    of the top eigenvalues then of the bottom ones, each in their order;
    ``eigenvalues`` is the whole spectrum for the dense method, else ``None``;
    ``condition`` is of that whole spectrum (definition ``"auto"``) for the
    dense method and of the two ends (``"definite"``: ``inf`` unless positive
    definite) for Lanczos — compare ``condition.definition`` before values;
    ``trace_exact`` likewise. ``seconds`` maps each stage to its wall time.
    ``index_lower``/``index_upper`` equal the index for the dense method; for
    SLQ they bound, free of quadrature bias, the probe average the index
    estimates (:meth:`~jdl.hessian.QuadratureNodes.fraction_below_bounds`;
    the probe noise comes on top). ``converged`` says whether the extreme
    eigenvalues converged (always, for the dense method); if not, the
    classification is ``"unresolved"`` unless the Ritz values already show a
    saddle, and ``λmax/λmin`` is of Ritz values that lie inside the spectrum.
    """

    num_parameters: int
    num_examples: int
    method: str
    loss: float
    gradient_norm: float
    top_eigenvalues: jax.Array
    bottom_eigenvalues: jax.Array
    eigenvalue_residuals: jax.Array | None
    condition: ConditionNumber
    index: float
    index_standard_error: float
    index_lower: float
    index_upper: float
    classification: str
    converged: bool
    is_critical: bool
    eigenvalue_tolerance: float
    gradient_tolerance: float
    trace: TraceEstimate
    trace_exact: float | None
    density: SpectralDensity
    eigenvalues: jax.Array | None
    num_matvecs: int
    seconds: dict

    def to_json(self) -> dict:
        """A JSON-serialisable summary (no spectrum arrays except the extremes)."""
        c = self.condition
        return {
            "num_parameters": self.num_parameters,
            "num_examples": self.num_examples,
            "method": self.method,
            "loss": self.loss,
            "gradient_norm": self.gradient_norm,
            "top_eigenvalues": [float(x) for x in self.top_eigenvalues],
            "bottom_eigenvalues": [float(x) for x in self.bottom_eigenvalues],
            "condition_number": {
                "value": float(c.value), "definition": c.definition, "largest": float(c.largest),
                "smallest": float(c.smallest), "num_excluded": int(c.num_excluded), "rtol": c.rtol,
            },
            "index": self.index,
            "index_standard_error": self.index_standard_error,
            "index_bounds": [self.index_lower, self.index_upper],
            "classification": self.classification,
            "eigenvalues_converged": self.converged,
            "is_critical": self.is_critical,
            "eigenvalue_tolerance": self.eigenvalue_tolerance,
            "gradient_tolerance": self.gradient_tolerance,
            "trace": {"estimate": float(self.trace.estimate),
                      "standard_error": float(self.trace.standard_error),
                      "num_matvecs": int(self.trace.num_matvecs), "method": "hutch++"},
            "trace_exact": self.trace_exact,
            "density": {"sigma": float(self.density.sigma), "num_probes": int(self.density.num_probes),
                        "num_steps": int(self.density.num_steps)},
            "num_matvecs": int(self.num_matvecs),
            "seconds": self.seconds,
        }


def _apply(v, hessian):
    return hessian(v)


def _value_and_grad(loss: Callable, params: PyTree, data, batch_size: int | None):
    """Mean loss and gradient over ``data``, ``batch_size`` examples at a time."""
    n = _num_examples(data)
    if batch_size is None or batch_size >= n:
        return jax.jit(jax.value_and_grad(loss))(params, data)
    size = batch_size
    full = (n // size) * size

    @jax.jit
    def accumulate(params, data):
        stacked = jax.tree.map(lambda a: jnp.reshape(a[:full], (full // size, size) + a.shape[1:]), data)

        def body(acc, batch):
            v, g = jax.value_and_grad(loss)(params, batch)
            return (acc[0] + v, jax.tree.map(jnp.add, acc[1], g)), None

        zeros = (jnp.zeros((), flatten(params)[0].dtype), jax.tree.map(jnp.zeros_like, params))
        (v, g), _ = jax.lax.scan(body, zeros, stacked)
        v, g = v * (size / n), jax.tree.map(lambda a: a * (size / n), g)
        if n - full:
            rest = jax.tree.map(lambda a: a[full:], data)
            vr, gr = jax.value_and_grad(loss)(params, rest)
            v = v + vr * ((n - full) / n)
            g = jax.tree.map(lambda a, b: a + b * ((n - full) / n), g, gr)
        return v, g

    return accumulate(params, data)


def _dense_fits(n: int, dtype) -> bool:
    try:
        check_dense_fits(n, dtype, chunk_size=min(32, n))
    except MemoryError:
        return False
    return True


def _probe_batch_size(num_probes: int, steps: int, n: int, dtype) -> int | None:
    """SLQ probes to run at once: all (``None``) while their ``(steps + 1) × n``
    Krylov bases fit in half the free memory (the products' own working memory
    needs the rest), else as many as do; ``MemoryError`` if one does not."""
    per_probe = (steps + 1) * n * jnp.dtype(dtype).itemsize
    free = available_memory()
    if free is None or num_probes * per_probe <= free // 2:
        return None
    fits = int((free // 2) // per_probe)
    if fits < 1:
        raise MemoryError(
            f"one Lanczos basis of {steps + 1} × {n:,} numbers needs {_format_bytes(per_probe)}, but only "
            f"{_format_bytes(free)} is available; lower num_steps (jdl hessian --num-steps), analyse a smaller "
            "model, or a single layer's block (block_eigenvalues)")
    return fits


def hessian_analysis(
    loss: Callable[[PyTree, Any], jax.Array],
    params: PyTree,
    data: Any,
    *,
    top_k: int = 5,
    num_steps: int = 80,
    num_probes: int = 10,
    trace_matvecs: int = 99,
    method: str = "auto",
    dense_max_params: int = 4000,
    batch_size: int | None = None,
    key=0,
    gradient_tol: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> HessianAnalysis:
    """Analyse the Hessian of a dataset-mean ``loss(params, data)`` at ``params``.

    Args:
      loss: ``loss(params, batch) -> scalar``, a mean over the batch's examples
        (e.g. :func:`~jdl.hessian.model_objective`'s ``loss``).
      params: the point (e.g. a checkpoint's parameters).
      data: the examples (``{"x": ..., "y": ...}``).
      top_k: eigenvalues to report at each end; at most ``n // 2`` are
        reported (the two ends do not overlap).
      num_steps: Lanczos steps (for the ends, and per SLQ probe).
      num_probes: SLQ probes for the density (and the index, matrix-free).
        They run together while their Krylov bases (``num_probes ×
        (num_steps + 1) × n`` numbers) fit in half the free memory, and in
        batches that do otherwise; if one basis alone does not fit,
        ``MemoryError`` before any work names ``num_steps``.
      trace_matvecs: Hessian-vector products for Hutch++.
      method: ``"dense"``, ``"lanczos"`` or ``"auto"`` (dense up to
        ``dense_max_params`` parameters if it fits in memory by
        :func:`~jdl.hessian.operators.check_dense_fits`' estimate, Lanczos otherwise).
      batch_size: accumulate products over the data this many examples at a
        time (``None``: the whole data as one batch).
      key: seed or PRNG key for the random probes.
      gradient_tol: ``‖g‖`` at or below which the point counts as critical.
      progress: called with a short message as each stage starts.

    Raises:
      ValueError: the loss or its gradient is not finite at ``params`` (a run
        that diverged), after the first stage.
      MemoryError: before any work, when the dense Hessian (``method="dense"``)
        or one Lanczos basis would not fit in memory.

    Returns:
      :class:`HessianAnalysis`.

    A host-level tool, like :func:`~jdl.hessian.critical_point_report`: each
    call traces and compiles its stages afresh (closures over ``loss``, so
    nothing of it outlives the call) — seconds for a small model, against the
    minutes the analysis of a large one takes. To analyse many points of one
    model quickly, jit the pure pieces it is built of (:func:`~jdl.hessian.lanczos`,
    :func:`~jdl.hessian.spectral_density`, :func:`~jdl.hessian.hutch_plus_plus`,
    :func:`~jdl.hessian.critical_point_summary`) once yourself.
    """
    say = progress or (lambda _msg: None)
    flat, _ = flatten(params)
    n = flat.shape[0]
    dtype = flat.dtype
    num_examples = _num_examples(data)
    if method == "auto":
        method = "dense" if n <= dense_max_params and _dense_fits(n, dtype) else "lanczos"
    if method not in ("dense", "lanczos"):
        raise ValueError(f"unknown method {method!r}; use 'auto', 'dense' or 'lanczos'")
    # Every count is checked here, before the first stage's work: a bad
    # trace_matvecs found only in the last stage would waste the rest.
    num_steps = check_count(num_steps, "num_steps")
    num_probes = check_count(num_probes, "num_probes")
    trace_matvecs = check_count(trace_matvecs, "trace_matvecs", 3)
    requested_top_k = top_k = check_count(top_k, "top_k")
    top_k = min(top_k, max(n // 2, 1))  # the two ends do not overlap
    steps = min(num_steps, n)
    if method == "lanczos" and n < 2:
        raise ValueError(f"method='lanczos' finds both ends of the spectrum, but a Hessian of {n} parameter "
                         "has one eigenvalue; use method='dense'")
    if method == "lanczos" and 2 * top_k > steps:
        clamp = "" if top_k == requested_top_k else f" (of {n} parameters, {top_k} at each end)"
        raise ValueError(f"top_k={requested_top_k}{clamp} needs num_steps >= {2 * top_k} "
                         f"(Lanczos finds both ends in one run), got num_steps={num_steps}; "
                         f"raise num_steps or lower top_k")
    check_number(gradient_tol, "gradient_tol", hint="a bound on ‖∇L‖ below which the point counts as critical")
    if gradient_tol is None:
        gradient_tol = float(np.sqrt(jnp.finfo(dtype).eps))
    if method == "dense":  # before any work, not after the gradient
        check_dense_fits(n, dtype, chunk_size=min(32, n))
    probe_batch_size = _probe_batch_size(num_probes, steps, n, dtype)
    batched = batch_size is not None and batch_size < num_examples
    if batched:
        dataset_operator = dataset_hessian_operator(loss, batch_size=batch_size)

    def with_operator(fn):
        """Run ``fn(matvec, operator_params, params)`` with the Hessian at ``(params, data)``:
        over minibatches, or — for one batch — through the gradient linearised once
        and reused by every product."""

        def run(p, d):
            if batched:
                return fn(dataset_operator, (p, d), p)
            _, hessian = linearize_hessian(loss, p, d)
            return fn(_apply, (hessian,), p)

        return jax.jit(run)
    k_ends, k_density, k_trace = jax.random.split(as_key(key), 3)
    seconds: dict[str, float] = {}
    num_matvecs = 0

    t0 = time.perf_counter()
    say("loss and gradient")
    value, grad = _value_and_grad(loss, params, data, batch_size)
    gnorm = float(jnp.linalg.norm(flatten(grad)[0]))
    seconds["gradient"] = time.perf_counter() - t0
    if not (np.isfinite(float(value)) and np.isfinite(gnorm)):
        raise ValueError(f"the loss is {float(value)} and ‖g‖ = {gnorm} at these parameters: not finite, so "
                         "there is no curvature to analyse (a run that diverged, or parameters too large for "
                         f"{jnp.dtype(dtype).name}); analyse an earlier checkpoint")

    residuals = None
    eig = None
    trace_exact = None
    t0 = time.perf_counter()
    if method == "dense":
        say(f"dense Hessian ({n:,} × {n:,}) and its spectrum")
        if batch_size is not None and batch_size < num_examples:
            h = dense_matrix(dataset_operator, params, params, data, symmetrize=True)
        else:
            h = dense_hessian(loss, params, data)
        eig = dense_eigenvalues(h)
        del h
        top = eig[::-1][:top_k]
        bottom = eig[:top_k]
        lo, hi = eig[0], eig[-1]
        tau = eigenvalue_tolerance(jnp.max(jnp.abs(eig)), dtype)
        index = float(jnp.mean((eig < -tau).astype(dtype)))
        index_se = 0.0
        index_lower = index_upper = index
        converged = True
        trace_exact = float(jnp.sum(eig))
        cond = condition_number(eig)
        num_matvecs += n
        seconds["dense spectrum"] = time.perf_counter() - t0
    else:
        say(f"top/bottom {top_k} eigenvalues by Lanczos ({steps} steps)")
        eigsh = lanczos(steps, k=2 * top_k, which="BE")
        v0 = random_like(k_ends, params)
        res = with_operator(lambda mv, ps, p: eigsh(mv, v0, *ps))(params, data)
        ev = res.eigenvalues
        bottom, top = ev[:top_k], ev[top_k:][::-1]
        # in the order of top then bottom (Lanczos gives the bottom end first, ascending)
        residuals = jnp.concatenate([res.residuals[top_k:][::-1], res.residuals[:top_k]])
        converged = bool(jnp.all(res.converged))
        lo, hi = ev[0], ev[-1]
        tau = eigenvalue_tolerance(jnp.maximum(jnp.abs(lo), jnp.abs(hi)), dtype)
        cond = condition_number(jnp.stack([lo, hi]), definition="definite")
        num_matvecs += int(res.num_matvecs)
        seconds["lanczos"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say(f"spectral density by SLQ ({num_probes} probes × {steps} steps)")
    density = with_operator(lambda mv, ps, p: spectral_density(
        mv, p, *ps, key=k_density, num_steps=steps, num_probes=num_probes,
        probe_batch_size=probe_batch_size))(params, data)
    num_matvecs += int(density.num_matvecs)
    if method == "lanczos":
        index = float(density.quadrature.fraction_below(-tau))
        index_se = float(density.quadrature.fraction_below_standard_error(-tau))
        index_lower, index_upper = (float(b) for b in density.quadrature.fraction_below_bounds(-tau))
    seconds["density"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say(f"trace by Hutch++ ({trace_matvecs} products)")
    trace = with_operator(lambda mv, ps, p: hutch_plus_plus(trace_matvecs)(mv, p, *ps, key=k_trace))(
        params, data)
    num_matvecs += int(trace.num_matvecs)
    seconds["trace"] = time.perf_counter() - t0

    return HessianAnalysis(
        num_parameters=n,
        num_examples=num_examples,
        method=method,
        loss=float(value),
        gradient_norm=gnorm,
        top_eigenvalues=top,
        bottom_eigenvalues=bottom,
        eigenvalue_residuals=residuals,
        condition=cond,
        index=index,
        index_standard_error=index_se,
        index_lower=index_lower,
        index_upper=index_upper,
        classification=classify_curvature(lo, hi, tau, converged),
        converged=converged,
        is_critical=gnorm <= gradient_tol,
        eigenvalue_tolerance=float(tau),
        gradient_tolerance=gradient_tol,
        trace=trace,
        trace_exact=trace_exact,
        density=density,
        eigenvalues=eig,
        num_matvecs=num_matvecs,
        seconds=seconds,
    )

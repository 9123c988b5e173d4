"""The loss landscape around a point: layer blocks, slices along eigenvectors, saddle escape.

- **Per-layer curvature** (block-diagonal Hessian): the Hessian of the loss as
  a function of one block of parameters with the rest held fixed is the
  diagonal block ``H_BB`` of the full Hessian. :func:`block_eigenvalues`
  computes its spectrum — which layers are sharp, which flat.
- **Slices**: ``L(θ + α d)`` along a direction (1-D) and
  ``L(θ + α d₁ + β d₂)`` over a plane (2-D), evaluated in one vmapped call.
  Along a unit eigenvector ``u`` with eigenvalue ``λ`` the slice starts as
  ``L + α gᵀu + ½ λ α²``, so the top eigenvector shows the sharpest parabola
  and the bottom one, at a saddle, a downward one.
- **Saddle escape**: at a saddle the gradient vanishes but the direction of
  most negative curvature still lowers the loss (seed 004 §3.2;
  Dauphin et al. 2014). :func:`escape_saddle` finds it by Lanczos and steps
  along it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jdl.hessian._flat import (
    check_count,
    check_eigensolver_dtype,
    check_floating,
    check_like,
    check_number,
    flatten,
    leaf_dtype,
    random_like,
    tree_vdot,
)
from jdl.hessian.lanczos import lanczos
from jdl.hessian.operators import check_dense_fits, dense_hessian, hessian_operator, jit_over_arrays

PyTree = Any

__all__ = [
    "EscapeResult",
    "block_eigenvalues",
    "block_loss",
    "escape_saddle",
    "loss_slice",
    "loss_surface",
    "parameter_blocks",
]


# ----------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------


def _path_name(path) -> str:
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey):
            if key.name == "value":  # nnx.Variable's payload
                continue
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return ".".join(parts)


def _named_leaves(params: PyTree) -> list[tuple[str, jax.Array]]:
    return [(_path_name(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]


def parameter_blocks(params: PyTree) -> dict[str, int]:
    """The layers of a params pytree: ``{block name: parameter count}``.

    A block is a leaf's path without its last component, so a layer's kernel
    and bias form one block (``"layers.0"``, ``"head"`` for a jdl MLP).
    """
    blocks: dict[str, int] = {}
    for name, leaf in _named_leaves(params):
        block = _block_of(name)
        blocks[block] = blocks.get(block, 0) + int(jnp.size(leaf))
    return blocks


def _block_of(name: str) -> str:
    """The block a leaf belongs to: its path without the last component."""
    return name.rsplit(".", 1)[0] if "." in name else name


def _in_block(name: str, block: str, exact: bool) -> bool:
    if exact:
        return _block_of(name) == block
    return name == block or name.startswith(block + ".")


def block_loss(loss: Callable[..., jax.Array], params: PyTree, block: str) -> tuple[Callable, list]:
    """Restrict ``loss`` to one block: ``(block_loss(sub, *args), sub)``.

    ``block`` is a name from :func:`parameter_blocks` — exactly that block's
    leaves, not those of a block nested inside it (``"block"`` holds
    ``block.gamma``, not ``block.dense.kernel``) — or else a prefix of such
    names, which takes every block under it together (``"layers"``: all
    hidden layers). ``sub`` is the list of the chosen leaves; ``block_loss``
    rebuilds the full params with the other leaves held at their values in
    ``params``.
    """
    named = _named_leaves(params)
    exact = block in {_block_of(name) for name, _ in named}
    chosen = [i for i, (name, _) in enumerate(named) if _in_block(name, block, exact)]
    if not chosen:
        raise ValueError(
            f"no parameters named {block!r}; the blocks are {sorted(parameter_blocks(params))}"
        )
    leaves, treedef = jax.tree.flatten(params)

    def restricted(sub: list, *args):
        full = list(leaves)
        for i, leaf in zip(chosen, sub):
            full[i] = leaf
        return loss(jax.tree.unflatten(treedef, full), *args)

    return restricted, [leaves[i] for i in chosen]


def block_eigenvalues(
    loss: Callable[..., jax.Array],
    params: PyTree,
    *args,
    block: str,
    method: str = "auto",
    k: int = 5,
    num_steps: int = 80,
    key=0,
    dense_max_params: int = 4000,
) -> jax.Array:
    """Eigenvalues of one layer's diagonal Hessian block ``H_BB``.

    Args:
      loss, params, *args: the objective and the point.
      block: a name from :func:`parameter_blocks` (e.g. ``"layers.0"``), or
        a prefix of several (see :func:`block_loss`).
      method: ``"dense"`` (all eigenvalues, ascending), ``"lanczos"`` (the ``k``
        largest and ``k`` smallest, ascending, from one Krylov space of at
        most ``num_steps`` products), or ``"auto"`` (dense up to
        ``dense_max_params`` block parameters). Lanczos values whose
        residuals have not reached ``√ε · max|θ|`` within ``num_steps`` are
        Ritz values, not eigenvalues (the true ends lie at or beyond them):
        called outside any transformation, that warns with the largest
        residual; under ``jax.jit``/``jax.vmap`` it cannot — call
        :func:`~jdl.hessian.lanczos` on :func:`block_loss` there, whose
        result carries ``converged``. A block with many (near-)zero
        eigenvalues converges its bottom end slowly.

    Both methods end in an eigensolve, so the block's parameters must be
    float32 or float64 (half precision raises ``TypeError``). Like
    :func:`~jdl.hessian.dense_spectrum`, each call compiles afresh (nothing of
    ``loss`` outlives it); :func:`block_loss` gives the restricted loss to jit
    once for many points.
    """
    k = check_count(k, "k")
    num_steps = check_count(num_steps, "num_steps")
    dense_max_params = check_count(dense_max_params, "dense_max_params", 0)
    restricted, sub = block_loss(loss, params, block)
    check_eigensolver_dtype(flatten(sub)[0].dtype, "block_eigenvalues")
    n = sum(int(jnp.size(leaf)) for leaf in sub)
    if method == "auto":
        method = "dense" if n <= dense_max_params else "lanczos"
    if method == "dense":
        check_dense_fits(n, flatten(sub)[0].dtype, chunk_size=min(32, n))
        return jit_over_arrays(lambda sub, *args: jnp.linalg.eigvalsh(dense_hessian(restricted, sub, *args)),
                                sub, *args, memory=(n, None, "dense Hessian of the block"))
    if method != "lanczos":
        raise ValueError(f"unknown method {method!r}; use 'auto', 'dense' or 'lanczos'")
    kk = min(2 * k, n)
    steps = min(num_steps, n)
    if kk > steps:
        raise ValueError(f"k={k} at each end needs num_steps >= {kk} (Lanczos finds both ends in one run), "
                         f"got num_steps={num_steps}; raise num_steps or lower k, or use method='dense'")
    eigsh = lanczos(steps, k=kk, which="BE")
    # Non-array arguments of the loss (a flag, a class count) are held fixed, as on the dense path.
    result = jit_over_arrays(lambda v0, sub, *args: eigsh(hessian_operator(restricted), v0, sub, *args),
                             random_like(key, sub), sub, *args)
    converged = result.converged
    if not isinstance(converged, jax.core.Tracer) and not bool(jnp.all(converged)):
        warnings.warn(
            f"block_eigenvalues({block!r}): {int(jnp.sum(~converged))} of {kk} Lanczos values did not "
            f"converge in {int(result.num_matvecs)} products (largest residual "
            f"{float(jnp.max(result.residuals)):.2g}); they are Ritz values, with the true ends at or "
            "beyond them: raise num_steps, or use method='dense' for a block of a few thousand parameters",
            stacklevel=2)
    return result.eigenvalues


# ----------------------------------------------------------------------------------
# Slices
# ----------------------------------------------------------------------------------


def _direction(d: PyTree, params: PyTree, normalize: bool, what: str) -> PyTree:
    """``d`` checked against ``params`` (structure and shapes), cast to their
    dtypes, and scaled to unit norm when ``normalize``.

    A zero ``d`` has no direction: concrete, it raises ``ValueError``; traced
    (under ``jax.jit``), it stays zero, so the slice is the constant ``L(θ)``.
    """
    # Integer params would take the direction, and each α, cast to integers:
    # a silently constant (or coarsely stepped) slice.
    check_floating(params, "params")
    check_like(d, params, what, check_dtypes=False)
    if not normalize:
        return jax.tree.map(lambda u, p: jnp.asarray(u, leaf_dtype(p)), d, params)
    # The norm and the division in at least float32 (and in the direction's
    # own dtype if wider), before the cast to the params' dtype: in float16,
    # ‖d‖² of a unit-scale direction of 65 536 entries overflows to inf.
    wide = jax.tree.map(lambda u, p: jnp.asarray(u, jnp.promote_types(
        jnp.promote_types(leaf_dtype(u), leaf_dtype(p)), jnp.float32)), d, params)
    norm = jnp.sqrt(sum((jnp.sum(jnp.square(u)) for u in jax.tree.leaves(wide)), jnp.zeros((), jnp.float32)))
    if not isinstance(norm, jax.core.Tracer) and not bool(jnp.isfinite(norm) & (norm > 0)):
        raise ValueError(f"{what} has norm {float(norm)}, so normalize=True cannot scale it to unit length; "
                         "pass a non-zero, finite direction (e.g. an eigenvector from lanczos, or "
                         "jdl.hessian.random_like(key, params))")
    safe = jnp.where(norm > 0, norm, 1)
    return jax.tree.map(lambda u, p: (u / safe.astype(u.dtype)).astype(leaf_dtype(p)), wide, params)


def _offsets(values, name: str) -> jax.Array:
    """The step lengths of a slice: a 1-D array (``ValueError`` otherwise)."""
    values = jnp.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of step lengths, got shape {values.shape}; "
                         f"e.g. {name}=jnp.linspace(-1, 1, 41) (for one point, {name}=jnp.array([0.5]))")
    return values


def loss_slice(
    loss: Callable[..., jax.Array],
    params: PyTree,
    direction: PyTree,
    *args,
    alphas: jax.Array,
    normalize: bool = True,
) -> jax.Array:
    """``L(θ + α d)`` for each ``α`` in ``alphas`` (one vmapped evaluation).

    Args:
      direction: a pytree like ``params`` — the same structure and leaf
        shapes, else ``ValueError`` (e.g. an eigenvector from
        :func:`~jdl.hessian.lanczos`); cast to the params' dtypes, so the loss
        is evaluated in their precision, and scaled to unit norm when
        ``normalize``. A zero direction with ``normalize`` raises
        ``ValueError``, or under ``jax.jit`` (where its norm is not known)
        stays zero: the slice is then ``L(θ)`` at every ``α``, not NaN.
    """
    d = _direction(direction, params, normalize, "direction")
    alphas = _offsets(alphas, "alphas")

    def at(a):
        return loss(jax.tree.map(lambda p, u: p + jnp.asarray(a, u.dtype) * u, params, d), *args)

    return jax.vmap(at)(alphas)


def loss_surface(
    loss: Callable[..., jax.Array],
    params: PyTree,
    direction1: PyTree,
    direction2: PyTree,
    *args,
    alphas: jax.Array,
    betas: jax.Array,
    normalize: bool = True,
) -> jax.Array:
    """``L(θ + α d₁ + β d₂)`` on the grid ``alphas × betas``, shape ``(len(alphas), len(betas))``.

    The directions are checked and normalised as in :func:`loss_slice`.
    """
    d1 = _direction(direction1, params, normalize, "direction1")
    d2 = _direction(direction2, params, normalize, "direction2")

    def at(a, b):
        return loss(jax.tree.map(lambda p, u, w: p + jnp.asarray(a, u.dtype) * u + jnp.asarray(b, w.dtype) * w,
                                 params, d1, d2), *args)

    alphas, betas = _offsets(alphas, "alphas"), _offsets(betas, "betas")
    return jax.vmap(lambda a: jax.vmap(lambda b: at(a, b))(betas))(alphas)


# ----------------------------------------------------------------------------------
# Escaping saddles
# ----------------------------------------------------------------------------------


class EscapeResult(NamedTuple):
    """A step along the most negative curvature.

    Attributes:
      params: the new point, ``params + step_size · direction`` (``params``
        unchanged if no step lowered the loss).
      direction: the unit eigenvector ``d`` of ``eigenvalue``, its sign chosen
        so that ``gᵀd ≤ 0``.
      eigenvalue: its curvature ``λ_min`` (< 0 at a saddle) — a Ritz value
        unless ``converged``, with the true ``λ_min`` at or below it.
      step_size: the step ``α`` taken along ``direction``, 0 if none; negative
        for a step along ``−direction`` (both signs are tried).
      loss_before, loss_after: the loss at the old and new point.
      predicted_decrease: ``−(α gᵀd + ½ λ α²)`` from the quadratic model.
      escaped: whether the loss went down.
      num_matvecs: Hessian-vector products spent by Lanczos.
      converged: whether Lanczos converged ``eigenvalue``: its residual is
        within Lanczos' tolerance (``√ε · max|θ|``). If not, ``λ_min`` may be
        lower than reported — a positive ``eigenvalue`` with ``escaped``
        false does not show that ``params`` is no saddle: raise
        ``num_steps``.
      residual: ``‖H d − λ d‖``, Lanczos' residual of the pair.
    """

    params: PyTree
    direction: PyTree
    eigenvalue: jax.Array
    step_size: jax.Array
    loss_before: jax.Array
    loss_after: jax.Array
    predicted_decrease: jax.Array
    escaped: jax.Array
    num_matvecs: jax.Array
    converged: jax.Array
    residual: jax.Array


def _step_sizes(step_sizes) -> jax.Array | None:
    """``step_sizes`` as a 1-D array, checked before tracing: non-empty and,
    when concrete, of positive finite lengths (``ValueError`` otherwise)."""
    if step_sizes is None:
        return None
    how = ("pass a 1-D sequence of positive step lengths, e.g. step_sizes=[1.0, 0.5, 0.25] (both signs are "
           "tried), or None for max_step · 2^-j, j = 0 … num_trials − 1")
    if isinstance(step_sizes, jax.core.Tracer):
        values = step_sizes
    else:
        try:
            values = jnp.asarray(step_sizes)
        except (TypeError, ValueError) as e:
            raise ValueError(f"step_sizes must be numbers, got {step_sizes!r}; {how}") from e
    if values.ndim != 1:
        raise ValueError(f"step_sizes must be 1-D, got shape {values.shape}; {how}")
    if values.size == 0:
        raise ValueError(f"step_sizes is empty; {how}")
    if not jnp.issubdtype(values.dtype, jnp.integer) and not jnp.issubdtype(values.dtype, jnp.floating):
        raise ValueError(f"step_sizes must be real numbers, got {values.dtype}; {how}")
    if not isinstance(values, jax.core.Tracer):
        # in NumPy: a concrete array captured inside jax.jit would give traced comparisons
        concrete = np.asarray(values)
        bad = ~(np.isfinite(concrete) & (concrete > 0))
        if bad.any():
            raise ValueError(f"step_sizes must be positive and finite, got {[float(x) for x in concrete[bad][:5]]} "
                             f"among them; {how}")
    return values


def escape_saddle(
    loss: Callable[..., jax.Array],
    params: PyTree,
    *args,
    key=0,
    num_steps: int = 50,
    max_step: float = 1.0,
    num_trials: int = 20,
    step_sizes: Sequence[float] | None = None,
) -> EscapeResult:
    """Step from ``params`` along the eigenvector of the most negative Hessian eigenvalue.

    The direction ``d`` comes from Lanczos (``which="SA"``), with its sign
    chosen so that ``gᵀd ≤ 0``; along it the quadratic model
    ``L + α gᵀd + ½ λ α²`` decreases for every ``α > 0`` when ``λ < 0``. The
    step is the best of ``±α`` for ``α`` in ``step_sizes`` (default:
    ``max_step · 2^{-j}``, ``j = 0 … num_trials−1``), all evaluated in one
    vmapped call (ties go to ``+α``); a step is taken only if it lowers the
    loss. Both signs, because where ``g ≈ 0`` the sign of ``d`` is arbitrary
    and the terms beyond the quadratic model decide: at the monkey saddle
    ``x³ − 3xy²`` (``g = 0``, ``H = 0``) one side of every line through the
    origin goes up and the other down.

    ``converged`` says whether ``eigenvalue`` is an eigenvalue or still a Ritz
    value: an unconverged one may miss the negative curvature (a
    300-parameter quadratic with ``λ_min = −0.05`` read ``+0.16`` after 10
    steps). Called outside any transformation, a step that did not escape
    with an unconverged ``eigenvalue`` warns; under ``jax.jit``/``jax.vmap``
    it cannot, so read ``converged`` there.

    Like :func:`~jdl.hessian.dense_spectrum`, each call compiles afresh
    (seconds; nothing of ``loss`` outlives the call); to escape from many
    points of one model, wrap the call in ``jax.jit`` with ``loss`` closed
    over, which compiles once.

    Returns:
      :class:`EscapeResult`.
    """
    num_steps = check_count(num_steps, "num_steps")
    num_trials = check_count(num_trials, "num_trials")
    check_number(max_step, "max_step", positive=True, hint="the longest step along the eigenvector tried")
    step_sizes = _step_sizes(step_sizes)
    if flatten(params)[0].shape[0] == 0:
        raise ValueError("params has no entries (an empty pytree, or only size-0 arrays): there is no direction "
                         "to step along; pass the trainable parameters")
    # A closure jitted for this call: a jit keyed on ``loss`` itself (a static
    # argument) would fail on an unhashable callable and keep every loss, and
    # what it captures, alive in the cache.
    # Non-array arguments of the loss (a flag, a class count) are held fixed.
    result = jit_over_arrays(lambda params, args, step_sizes, v0: _escape_saddle(
        loss, params, args, num_steps, max_step, num_trials, step_sizes, v0),
        params, args, step_sizes, random_like(key, params))
    unresolved = ~(result.converged | result.escaped)
    if not isinstance(unresolved, jax.core.Tracer) and bool(unresolved):
        warnings.warn(
            f"escape_saddle: no step lowered the loss, but Lanczos did not converge λ_min in "
            f"{int(result.num_matvecs)} products (residual {float(result.residual):.2g}, Ritz value "
            f"{float(result.eigenvalue):.4g}): the true λ_min is at or below it and may be negative, so this "
            "does not show that the point is no saddle; raise num_steps", stacklevel=2)
    return result


def _escape_saddle(loss, params, args, num_steps, max_step, num_trials, step_sizes, v0) -> EscapeResult:
    flat, unflatten = flatten(params)
    n = flat.shape[0]
    res = lanczos(min(num_steps, n), k=1, which="SA")(hessian_operator(loss), v0, params, *args)
    d = jax.tree.map(lambda a: a[0], res.eigenvectors)
    lam = res.eigenvalues[0]
    value, grad = jax.value_and_grad(loss)(params, *args)
    slope = tree_vdot(grad, d)
    sign = jnp.where(slope > 0, -1.0, 1.0).astype(flat.dtype)
    d = jax.tree.map(lambda a: (sign * a).astype(a.dtype), d)
    slope = sign * slope
    if step_sizes is None:
        lengths = max_step * 0.5 ** jnp.arange(num_trials, dtype=flat.dtype)
    else:
        lengths = jnp.asarray(step_sizes, flat.dtype)
    # +α first, so that a tie (a symmetric slice) keeps the descent side.
    alphas = jnp.concatenate([lengths, -lengths])
    losses = loss_slice(loss, params, d, *args, alphas=alphas, normalize=False)
    losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)
    best = jnp.argmin(losses)
    escaped = losses[best] < value
    alpha = jnp.where(escaped, alphas[best], 0)
    dflat, _ = ravel_pytree(d)
    new = unflatten(flat + alpha * dflat.astype(flat.dtype))
    return EscapeResult(
        params=new,
        direction=d,
        eigenvalue=lam,
        step_size=alpha,
        loss_before=value,
        loss_after=jnp.where(escaped, losses[best], value),
        predicted_decrease=-(alpha * slope + 0.5 * lam * alpha * alpha),
        escaped=escaped,
        num_matvecs=res.num_matvecs,
        converged=res.converged[0],
        residual=res.residuals[0],
    )

"""Curvature operators: matrix-free products with the Hessian, Gauss–Newton and Fisher.

Everything here works on any scalar ``loss(params, *args)`` of a params pytree —
a jdl model's objective (:func:`model_objective`), a Flax model, or a bare
function — and returns pytrees shaped like ``params``.

Operators follow the "configure, then call" idiom: ``hessian_operator(loss)``
returns ``matvec(v, params, *args)``, a pure function with every array passed
explicitly, so ``jax.jit``, ``jax.vmap`` (over probe vectors, or over a stack of
models) and sharding apply without closures over device arrays.

The Hessian-vector product is forward-over-reverse (Pearlmutter 1994;
Griewank & Walther 2008, §5):

    H v = ∂/∂ε ∇L(θ + ε v) |_{ε=0} = jvp(∇L, (θ,), (v,))

which costs about one gradient evaluation more than the gradient itself.
When many products are taken at the same ``θ`` (Lanczos, Hutchinson), the
gradient can be linearised once (:func:`linearize_hessian`) and the stored
linear map re-applied: each product then skips the primal computation.

References:
  B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural
  Computation 6(1), 1994.
  N. N. Schraudolph, "Fast curvature matrix-vector products for second-order
  gradient descent", Neural Computation 14(7), 2002 (Gauss–Newton products).
  J. Martens, "New insights and perspectives on the natural gradient method",
  JMLR 21, 2020 (Fisher vs. Gauss–Newton vs. empirical Fisher).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jdl.hessian._flat import (
    as_key,
    check_count,
    check_eigensolver_dtype,
    check_floating,
    check_like,
    check_product_size,
    check_product_structure,
    flatten,
)
from jdl.training.model import Model, Variables

PyTree = Any
Matvec = Callable[..., PyTree]

__all__ = [
    "Objective",
    "dataset_hessian_operator",
    "dataset_operator",
    "dataset_hvp",
    "dense_eigenvalues",
    "dense_hessian",
    "dense_matrix",
    "dense_spectrum",
    "empirical_fisher",
    "fisher",
    "gauss_newton",
    "hessian_operator",
    "hvp",
    "linearize_hessian",
    "model_objective",
]


# ----------------------------------------------------------------------------------
# Hessian-vector products
# ----------------------------------------------------------------------------------


def hvp(loss: Callable[..., jax.Array], params: PyTree, v: PyTree, *args) -> PyTree:
    """The Hessian-vector product ``∇²L(θ) v`` by forward-over-reverse differentiation.

    Args:
      loss: ``loss(params, *args) -> scalar``.
      params: the point ``θ`` (any pytree of floating arrays).
      v: the direction, a pytree shaped like ``params``: the same structure
        and, leaf by leaf, the same shape and dtype (else ``ValueError`` /
        ``TypeError`` naming the leaf, before any tracing).
      *args: further arguments of ``loss`` (a batch, model state, ...), held fixed.

    Returns:
      ``H v`` shaped like ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> f = lambda p: 5 * p["x"] ** 2 - p["y"] ** 2
      >>> hv = hvp(f, {"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 1.0})
      >>> float(hv["x"]), float(hv["y"])
      (10.0, -2.0)
    """
    check_floating(params, "params")
    check_like(v, params)
    grad = jax.grad(lambda p: loss(p, *args))
    return jax.jvp(grad, (params,), (v,))[1]


def hessian_operator(loss: Callable[..., jax.Array]) -> Matvec:
    """Configure the Hessian of ``loss``: returns ``matvec(v, params, *args) = ∇²L(params) v``.

    The returned function is pure (parameters explicit), so it can be handed to
    :func:`~jdl.hessian.lanczos` and friends as ``eigsh(matvec, v0, params, batch)``.
    """

    def matvec(v: PyTree, params: PyTree, *args) -> PyTree:
        return hvp(loss, params, v, *args)

    return matvec


def _apply_pullback(pullback: Callable, v: PyTree) -> PyTree:
    (hv,) = pullback(v)
    return hv


def _apply_checked(product: Callable, params: PyTree, v: PyTree) -> PyTree:
    check_like(v, params)
    return product(v)


def linearize_hessian(loss: Callable[..., jax.Array], params: PyTree, *args,
                      mode: Literal["forward", "reverse"] = "forward") -> tuple[PyTree, Callable]:
    """Linearise the gradient once: ``(∇L(θ), v ↦ ∇²L(θ) v)``.

    The gradient is evaluated once and what its derivative needs is stored,
    so each later product runs only the linear part — no primal pass.

    * ``mode="forward"``: ``jax.linearize(jax.grad(loss), params)``, the
      forward-over-reverse product. Cheapest one vector at a time.
    * ``mode="reverse"``: ``jax.vjp(jax.grad(loss), params)``, reverse-over-
      reverse: the pullback gives ``vᵀ H = (H v)ᵀ`` since ``H`` is symmetric.
      Cheapest for a batch of vectors (``jax.vmap``, block Lanczos, dense
      Hessians), where its products become larger matrix products.

    Measured on CPU (2 cores) for an MLP of 3 466 parameters on 1 797 digits,
    per product relative to one gradient: forward 1.2× (1 vector), 1.1×
    (4 vmapped), 1.1× (8); reverse 1.5×, 0.93×, 0.80×. Run
    ``benchmarks/hessian.py`` for the figures on your machine.

    The linear map is a pytree (a ``jax.tree_util.Partial``), so it can be
    passed explicitly to an eigensolver (``eigsh(lambda v, h: h(v), v0, hess)``)
    or called directly. Linearise inside the jitted function that takes the
    products::

        @jax.jit
        def top(params, batch, v0):
            _, h = linearize_hessian(loss, params, batch)
            return lanczos(30)(lambda v, h: h(v), v0, h)

    A map built outside and passed *into* a jitted function compiles it again
    for every new linearisation, even at the same point: its static part is
    the closure ``jax.linearize`` creates, new each time.
    It checks each ``v`` against ``params`` as :func:`hvp` does.

    Returns:
      ``(gradient, hessian_matvec)``.
    """
    check_floating(params, "params")
    grad = jax.grad(lambda p: loss(p, *args))
    if mode == "forward":
        g, product = jax.linearize(grad, params)
    elif mode == "reverse":
        g, pullback = jax.vjp(grad, params)
        product = jax.tree_util.Partial(_apply_pullback, pullback)
    else:
        raise ValueError(f"mode must be 'forward' or 'reverse', got {mode!r}")
    return g, jax.tree_util.Partial(_apply_checked, product, params)


# ----------------------------------------------------------------------------------
# Accumulation over a dataset
# ----------------------------------------------------------------------------------


def _num_examples(data: PyTree) -> int:
    leaves = jax.tree_util.tree_leaves_with_path(data)
    if not leaves:
        raise ValueError("the data holds no arrays: pass a pytree of arrays with the examples along axis 0")
    scalars = [jax.tree_util.keystr(path) or "(the root)" for path, leaf in leaves if jnp.ndim(leaf) == 0]
    if scalars:
        raise ValueError(f"every entry of the data needs the examples along axis 0, but {', '.join(scalars)} "
                         "is a scalar: pass fixed values through the loss (a closure), not the data")
    sizes = {int(jnp.shape(leaf)[0]) for _, leaf in leaves}
    if len(sizes) != 1:
        raise ValueError(
            f"every entry of the data needs the same number of examples along axis 0, got {sorted(sizes)}"
        )
    n = sizes.pop()
    if n == 0:
        raise ValueError("the data holds 0 examples: a product averaged over the data needs at least one")
    return n


def dataset_operator(batch_matvec: Matvec, *, batch_size: int) -> Matvec:
    """A curvature matrix of a dataset-mean objective, accumulated over minibatches.

    For an operator ``batch_matvec(v, params, batch)`` whose matrix is a
    *mean* over the examples of ``batch`` — the Hessian of a mean loss
    (:func:`hessian_operator`), the Gauss–Newton matrix (:func:`gauss_newton`)
    and the Fisher matrices (:func:`fisher`, :func:`empirical_fisher`) of
    :func:`model_objective`'s functions — the full-data matrix is the
    size-weighted mean of the batch matrices,

        M v = Σ_b (n_b / N) M_b(θ) v,

    so the product over a dataset of any size is taken ``batch_size`` examples
    at a time (one ``lax.scan`` over the full batches, then the remainder),
    with peak memory of one batch. It equals the full-batch product up to
    rounding (tests check 1e-10 in float64). With BatchNorm in train mode the
    loss is *not* a mean of independent per-example terms (batch statistics
    couple them), so the accumulated product is the mean of batch matrices,
    not the full-batch one; use eval mode for a dataset matrix.

    Returns:
      ``matvec(v, params, data)`` with ``data`` a pytree (e.g. ``{"x", "y"}``)
      of arrays with a common leading axis.
    """
    batch_size = check_count(batch_size, "batch_size")

    def matvec(v: PyTree, params: PyTree, data: PyTree) -> PyTree:
        check_floating(params, "params")
        check_like(v, params)
        n = _num_examples(data)
        size = min(batch_size, n)
        full = (n // size) * size
        zeros = jax.tree.map(jnp.zeros_like, v)

        def batch_product(batch):
            return batch_matvec(v, params, batch)

        total = zeros
        if full:
            stacked = jax.tree.map(
                lambda a: jnp.reshape(a[:full], (full // size, size) + a.shape[1:]), data
            )

            def body(acc, batch):
                return jax.tree.map(jnp.add, acc, batch_product(batch)), None

            total, _ = jax.lax.scan(body, zeros, stacked)
            total = jax.tree.map(lambda a: a * (size / n), total)
        if n - full:
            rest = jax.tree.map(lambda a: a[full:], data)
            total = jax.tree.map(lambda a, b: a + b * ((n - full) / n), total, batch_product(rest))
        return total

    return matvec


def dataset_hessian_operator(loss: Callable[..., jax.Array], *, batch_size: int) -> Matvec:
    """The Hessian of a dataset-mean ``loss(params, batch)``, accumulated over
    minibatches: :func:`dataset_operator` of :func:`hessian_operator`.

        H v = Σ_b (n_b / N) ∇²L_b(θ) v

    Returns:
      ``matvec(v, params, data)``.
    """
    return dataset_operator(hessian_operator(loss), batch_size=batch_size)


def dataset_hvp(loss: Callable[..., jax.Array], params: PyTree, v: PyTree, data: PyTree, *,
                batch_size: int) -> PyTree:
    """``∇²L(θ) v`` of a dataset-mean loss accumulated over minibatches
    (see :func:`dataset_hessian_operator`)."""
    return dataset_hessian_operator(loss, batch_size=batch_size)(v, params, data)


# ----------------------------------------------------------------------------------
# Gauss–Newton and Fisher
# ----------------------------------------------------------------------------------


def gauss_newton(predict: Callable[..., jax.Array], output_loss: Callable[..., jax.Array]) -> Matvec:
    """The generalised Gauss–Newton matrix ``G = Jᵀ H_ℓ J`` as a matvec.

    With outputs ``z = f(θ)`` (``predict``) and ``L(θ) = ℓ(f(θ))``
    (``output_loss`` of the outputs), the Hessian splits as

        ∇²L = Jᵀ (∇²_z ℓ) J + Σ_k (∂ℓ/∂z_k) ∇²z_k,

    and ``G`` keeps the first term: positive semi-definite whenever ℓ is
    convex in ``z`` (cross-entropy on logits, squared error). The product is
    ``G v = Jᵀ (H_ℓ (J v))``: one linearisation of ``f``, its transpose, and a
    Hessian-vector product of ℓ in output space (Schraudolph 2002).

    Args:
      predict: ``predict(params, *args) -> outputs`` (e.g. logits).
      output_loss: ``output_loss(outputs, *args) -> scalar`` with the same ``args``.

    Returns:
      ``matvec(v, params, *args)``.
    """

    def matvec(v: PyTree, params: PyTree, *args) -> PyTree:
        check_floating(params, "params")
        check_like(v, params)
        outputs, jvp_fn = jax.linearize(lambda p: predict(p, *args), params)
        jv = jvp_fn(v)
        h_jv = jax.jvp(jax.grad(lambda z: output_loss(z, *args)), (outputs,), (jv,))[1]
        (out,) = jax.linear_transpose(jvp_fn, params)(h_jv)
        return out

    return matvec


FisherLikelihood = Literal["categorical", "gaussian"]


def _output_fisher(likelihood: str, outputs: jax.Array, u: jax.Array) -> jax.Array:
    """``F_z u`` per example for the model's predictive distribution, divided by N."""
    n = outputs.shape[0]
    if likelihood == "categorical":
        p = jax.nn.softmax(outputs, axis=-1)
        pu = jnp.sum(p * u, axis=-1, keepdims=True)
        return (p * u - p * pu) / n
    if likelihood == "gaussian":
        return u / n
    raise ValueError(f"unknown likelihood {likelihood!r}; use 'categorical' or 'gaussian'")


def _check_fisher_outputs(likelihood: str, outputs) -> None:
    """The Fisher is a mean over the rows of ``(N, C)`` outputs: raise on any other shape."""
    shape = jnp.shape(outputs)
    if likelihood == "categorical" and len(shape) == 2 and shape[1] == 1:
        # softmax of a single logit is 1 whatever the logit: F_z = p − p² = 0,
        # so a sigmoid model's (N, 1) logits gave the zero matrix silently.
        raise ValueError(
            f"fisher(likelihood='categorical') needs at least two logits per example, got outputs of shape "
            f"{shape}: a softmax over one logit is constant, so its Fisher is 0. For a binary (sigmoid) model "
            "with one logit z per example, return jnp.concatenate([-z / 2, z / 2], axis=-1) from predict "
            "(softmax of that is (1 − sigmoid(z), sigmoid(z)))")
    if len(shape) == 2 or (likelihood == "gaussian" and len(shape) == 1):
        return
    if len(shape) > 2:
        fix = ("for outputs (N, T, C) with a loss averaged over all N·T positions, return "
               "outputs.reshape(-1, outputs.shape[-1]) from predict")
    elif likelihood == "categorical":
        fix = ("return one row of logits per example from predict (for one logit z per example, "
               "jnp.stack([-z / 2, z / 2], axis=-1))")
    else:
        fix = "return one row of means per example from predict (one mean per example: shape (N,))"
    allowed = "(N, C)" if likelihood == "categorical" else "(N, C) or (N,)"
    raise ValueError(f"fisher(likelihood={likelihood!r}) needs predict to return outputs of shape {allowed}, "
                     f"one row per example (the Fisher is the mean over the N rows), got shape {shape}; {fix}")


def fisher(predict: Callable[..., jax.Array], *, likelihood: FisherLikelihood = "categorical") -> Matvec:
    """The (true) Fisher information of the model's predictive distribution as a matvec.

        F = (1/N) Σ_i E_{y ~ p(y | x_i, θ)} [∇ log p(y | x_i) ∇ log p(y | x_i)ᵀ]
          = (1/N) Σ_i J_iᵀ F_z,i J_i,

    with the expectation taken exactly (not by sampling ``y``): for a
    categorical distribution over logits ``z``, ``F_z = diag(p) − p pᵀ`` with
    ``p = softmax(z)``; for a unit-variance Gaussian with mean ``z``, ``F_z = I``.
    For these likelihoods ``F`` equals the Gauss–Newton matrix of the matching
    loss (cross-entropy, ½ squared error) — Martens (2020), §9.2 — which the
    tests check.

    Args:
      predict: ``predict(params, *args) -> outputs`` of shape ``(N, C)`` — ``(N,)``
        also for ``"gaussian"``. Any other shape raises ``ValueError`` at trace
        time: the Fisher is a mean over the ``N`` rows (the loss must be one
        too), so outputs ``(N, T, C)`` with a mean over ``N·T`` positions are
        reshaped to ``(N·T, C)`` in ``predict``.
      likelihood: ``"categorical"`` (outputs are logits) or ``"gaussian"``.

    Returns:
      ``matvec(v, params, *args)``.
    """
    if likelihood not in ("categorical", "gaussian"):
        raise ValueError(f"unknown likelihood {likelihood!r}; use 'categorical' or 'gaussian'")

    def matvec(v: PyTree, params: PyTree, *args) -> PyTree:
        check_floating(params, "params")
        check_like(v, params)
        outputs, jvp_fn = jax.linearize(lambda p: predict(p, *args), params)
        _check_fisher_outputs(likelihood, outputs)
        fjv = _output_fisher(likelihood, jax.lax.stop_gradient(outputs), jvp_fn(v))
        (out,) = jax.linear_transpose(jvp_fn, params)(fjv)
        return out

    return matvec


def empirical_fisher(per_example_loss: Callable[..., jax.Array]) -> Matvec:
    """The empirical Fisher ``(1/N) Σ_i g_i g_iᵀ`` as a matvec, ``g_i = ∇ℓ_i(θ)``.

    Uses the observed labels rather than the model's distribution, so it is
    *not* the Fisher information and not a curvature matrix in general
    (Kunstner et al., "Limitations of the empirical Fisher approximation",
    NeurIPS 2019); provided because many methods use it. The product needs no
    per-example gradients in memory: ``u = J_ℓ v`` (one JVP of the vector of
    per-example losses) then ``J_ℓᵀ u / N`` (its transpose).

    Args:
      per_example_loss: ``per_example_loss(params, *args) -> (N,)`` losses.

    Returns:
      ``matvec(v, params, *args)``.
    """

    def matvec(v: PyTree, params: PyTree, *args) -> PyTree:
        check_floating(params, "params")
        check_like(v, params)
        losses, jvp_fn = jax.linearize(lambda p: per_example_loss(p, *args), params)
        if jnp.ndim(losses) != 1:
            raise ValueError(
                f"empirical_fisher needs per_example_loss to return one loss per example, shape (N,), "
                f"got shape {jnp.shape(losses)}; pass model_objective(...).per_example_loss, not the mean "
                "loss (for outputs (N, T, ...) return the per-example means)")
        u = jvp_fn(v)
        (out,) = jax.linear_transpose(jvp_fn, params)(u / losses.shape[0])
        return out

    return matvec


# ----------------------------------------------------------------------------------
# jdl models as objectives
# ----------------------------------------------------------------------------------


class Objective(NamedTuple):
    """The functions of ``(params, batch)`` that curvature operators need.

    Attributes:
      loss: mean loss over the batch, ``loss(params, batch) -> scalar`` (for
        :func:`hessian_operator`, :func:`dataset_hessian_operator`).
      per_example_loss: ``(params, batch) -> (N,)`` (for :func:`empirical_fisher`).
      predict: ``(params, batch) -> outputs`` (for :func:`gauss_newton`, :func:`fisher`).
      output_loss: ``(outputs, batch) -> scalar`` mean loss of the outputs.
      train: whether the model runs in train mode (BatchNorm batch statistics,
        dropout with the fixed ``key``) or eval mode (running statistics).
    """

    loss: Callable[[PyTree, dict], jax.Array]
    per_example_loss: Callable[[PyTree, dict], jax.Array]
    predict: Callable[[PyTree, dict], jax.Array]
    output_loss: Callable[[jax.Array, dict], jax.Array]
    train: bool


def model_objective(model: Model, loss_fn: Callable, model_state: PyTree, *, train: bool,
                    key: jax.Array | None = None) -> Objective:
    """The objective of a jdl :class:`~jdl.training.model.Model` as functions of ``(params, batch)``.

    ``loss`` is :func:`jdl.training.make_loss` — the function the train step
    differentiates — with ``model_state`` and ``key`` held fixed.

    Args:
      model: the model.
      loss_fn: ``loss_fn(outputs, targets)`` per example or mean (e.g. ``cross_entropy``).
      model_state: the model's non-trainable state (BatchNorm statistics).
      train: required, never implied. ``False``: eval mode — BatchNorm uses its
        running statistics, dropout is off, and the loss is a mean of
        independent per-example terms (the usual choice for a Hessian).
        ``True``: train mode — BatchNorm normalises with the batch's own
        statistics (so the Hessian couples examples), dropout masks come from
        ``key``.
      key: integer seed or PRNG key for dropout in train mode: every call uses the same
        masks, so the loss is one deterministic function — the network under
        those masks (a Hessian needs a fixed function; a fresh mask per call
        would change the operator between products). ``None``: the key 0.
        Different keys give different Hessians; average operators over
        several keys for the Hessian of the expected loss.

    Returns:
      an :class:`Objective`.
    """
    if not isinstance(train, bool):
        raise TypeError(f"train must be True or False (BatchNorm/dropout mode), got {train!r}")
    # None is the key 0 for every adapter (from_linen's apply builds no dropout
    # stream without a key, so a Linen model with dropout failed in train mode).
    key = jax.random.key_data(as_key(0 if key is None else key))
    from jdl.training.step import make_loss

    train_loss = make_loss(model, loss_fn, train=train)

    def loss(params, batch):
        return train_loss(params, model_state, batch, key)[0]

    def predict(params, batch):
        outputs, _ = model.apply(Variables(params, model_state), batch["x"], train=train, key=key)
        return outputs

    def per_example_loss(params, batch):
        losses = loss_fn(predict(params, batch), batch["y"])
        if jnp.ndim(losses) != 1:
            raise ValueError(
                f"per_example_loss needs loss_fn to return one loss per example, got shape "
                f"{jnp.shape(losses)}; use a per-example loss such as jdl.nn.cross_entropy"
            )
        return losses

    def output_loss(outputs, batch):
        value = loss_fn(outputs, batch["y"])
        return jnp.mean(value) if jnp.ndim(value) else value

    return Objective(loss, per_example_loss, predict, output_loss, train)


# ----------------------------------------------------------------------------------
# Dense matrices for small models
# ----------------------------------------------------------------------------------


def available_memory(device: jax.Device | None = None) -> int | None:
    """Free bytes on ``device`` (accelerator memory stats, else the host's MemAvailable)."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # backends without memory stats
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


_MATRIX_FREE_ANALYSIS = (
    "use the matrix-free tools instead (lanczos for extreme eigenvalues, "
    "spectral_density for the whole spectrum, hutchinson/hutch_plus_plus for the trace), "
    "or analyse a smaller model or a single layer's block (block_eigenvalues)"
)


def _memory_error(what: str, num_params: int, need: int, detail: str, limit: int,
                  max_bytes: int | None, instead: str = _MATRIX_FREE_ANALYSIS) -> MemoryError:
    return MemoryError(
        f"the {what} of {num_params:,} parameters needs {_format_bytes(need)} ({detail}) "
        f"but only {_format_bytes(limit)} "
        f"{'is allowed (max_bytes)' if max_bytes is not None else 'is available'}; {instead}"
    )


def check_dense_fits(num_params: int, dtype, *, chunk_size: int, max_bytes: int | None = None,
                     what: str = "dense Hessian", instead: str = _MATRIX_FREE_ANALYSIS) -> int:
    """Raise ``MemoryError`` before allocating an ``n × n`` matrix that would not fit.

    The estimate is two ``n × n`` buffers — the compiled :func:`dense_hessian`
    holds the stacked rows and the result at once (measured: 69 MiB of
    temporaries beside the 69 MiB result at ``n = 3 000`` in float64; a host
    ``eigh`` likewise works on a copy) — plus one chunk of basis vectors and
    products: ``2 n² + 2·chunk·n`` numbers. Returns the estimated bytes.
    ``what`` names the matrix in the message and ``instead`` the way out
    (default: the matrix-free analysis tools).

    It is a lower bound, checked before the loss is even traced: the
    products' own working memory (activations of the whole batch, one per
    vector of the chunk) is not in it — 6 % more at 3 466 parameters and
    1 797 examples with chunks of 32, 2.5× more with chunks of 128.
    :func:`dense_hessian` and :func:`dense_matrix`, called outside
    ``jax.jit``, also check XLA's own figure for the compiled program
    (:func:`check_compiled_fits`) before running it.
    """
    itemsize = jnp.dtype(dtype).itemsize
    need = (2 * num_params * num_params + 2 * chunk_size * num_params) * itemsize
    limit = max_bytes if max_bytes is not None else available_memory()
    if limit is not None and need > limit:
        raise _memory_error(what, num_params, need, f"two {num_params:,}² buffers of {itemsize}-byte numbers",
                            limit, max_bytes, instead)
    return need


def check_compiled_fits(compiled: jax.stages.Compiled, num_params: int, *, max_bytes: int | None = None,
                        what: str = "dense Hessian") -> int | None:
    """Raise ``MemoryError`` if a compiled program's result and temporaries —
    XLA's own accounting (``memory_analysis``), which compiling allocates
    none of — exceed ``max_bytes`` (default: the device's free memory).
    Returns those bytes, or ``None`` where the backend reports no figure."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # a backend without the analysis
        stats = None
    if stats is None:
        return None
    need = int(stats.output_size_in_bytes) + int(stats.temp_size_in_bytes)
    limit = max_bytes if max_bytes is not None else available_memory()
    if limit is not None and need > limit:
        detail = (f"the compiled program: {_format_bytes(stats.output_size_in_bytes)} of result and "
                  f"{_format_bytes(stats.temp_size_in_bytes)} of working memory")
        raise _memory_error(what, num_params, need, detail, limit, max_bytes)
    return need


def dense_matrix(matvec: Matvec, like: PyTree, *params, chunk_size: int = 32,
                 max_bytes: int | None = None, symmetrize: bool = False) -> jax.Array:
    """The ``n × n`` matrix of a linear operator on pytrees shaped like ``like``.
    With ``symmetrize``, ``(M + Mᵀ)/2`` (for a symmetric operator: a Hessian,
    Gauss–Newton or Fisher matrix), in the same compiled program.

    Column ``j`` is ``matvec(e_j, *params)`` (flattened); columns are computed
    ``chunk_size`` at a time (``lax.map`` over vmapped products) to bound
    working memory. Raises ``MemoryError`` first if the matrix would not fit:
    by :func:`check_dense_fits`'s estimate before anything is traced, then —
    called outside ``jax.jit`` — by XLA's figure for the compiled program
    before it runs.
    """
    flat, unflatten = flatten(like)
    n = flat.shape[0]
    if n == 0:  # no parameters: the 0 × 0 matrix
        return jnp.zeros((0, 0), flat.dtype)
    chunk_size = min(check_count(chunk_size, "chunk_size", hint="how many products to batch at once"), n)
    check_dense_fits(n, flat.dtype, chunk_size=chunk_size, max_bytes=max_bytes, what="dense matrix")

    def compute(*params):
        def column(j):
            e = jnp.zeros((n,), flat.dtype).at[j].set(1)
            tree = unflatten(e)
            product = matvec(tree, *params)
            out, _ = ravel_pytree(product)
            # Shapes are static: a product of the wrong size or structure is refused at
            # trace time, not stacked into a non-square (or silently permuted) matrix.
            check_product_size(out, e)
            check_product_structure(product, tree)
            return out.astype(flat.dtype)

        m = jax.lax.map(column, jnp.arange(n), batch_size=chunk_size).T
        return (m + m.T) / 2 if symmetrize else m

    return jit_over_arrays(compute, *params, memory=(n, max_bytes, "dense matrix"))


def dense_hessian(loss: Callable[..., jax.Array], params: PyTree, *args, chunk_size: int = 32,
                  max_bytes: int | None = None, symmetrize: bool = True) -> jax.Array:
    """The dense Hessian ``∇²L(θ)`` (``n × n``, flattened in ``ravel_pytree`` order).

    Seed 000 notes that the Hessian's side equals the parameter count — so this
    is for small models only. Before any work, the memory the matrix needs is
    compared with ``max_bytes`` (default: the free memory of the device) and a
    ``MemoryError`` names the size and the matrix-free alternatives: first
    :func:`check_dense_fits`'s estimate, before the loss is traced; then,
    called outside ``jax.jit``, XLA's own figure for the compiled program
    (result and temporaries, the loss's activations for a chunk of products
    included), before it runs. Inside a caller's ``jax.jit`` only the estimate
    applies.

    Rows are reverse-over-reverse products ``eⱼᵀ H = vjp(∇L)(eⱼ)``,
    ``chunk_size`` unit vectors at a time (``lax.map`` over vmapped products).
    On CPU this measured about twice as fast as forward-over-reverse columns
    for MLPs, and chunks of 32 beat larger ones (1.6 s against 2.4 s for 256
    at 3 466 parameters and 1 797 examples: the batch of products stays in
    cache); the two agree to rounding. With
    ``symmetrize`` the result is ``(H + Hᵀ)/2``, removing the rounding asymmetry.

    Args:
      loss: ``loss(params, *args) -> scalar``.
      params: the point (pytree).
      *args: fixed further arguments of ``loss``.
      chunk_size: unit vectors per vmapped batch of products.
      max_bytes: memory allowed for the result (default: what is free).
      symmetrize: return ``(H + Hᵀ)/2``.
    """
    flat, unflatten = flatten(params)
    n = flat.shape[0]
    if n == 0:  # no parameters: the 0 × 0 matrix
        return jnp.zeros((0, 0), flat.dtype)
    chunk_size = min(check_count(chunk_size, "chunk_size", hint="how many products to batch at once"), n)
    check_dense_fits(n, flat.dtype, chunk_size=chunk_size, max_bytes=max_bytes)

    def compute(x, *args):
        def flat_grad(x):
            g, _ = ravel_pytree(jax.grad(lambda p: loss(p, *args))(unflatten(x)))
            return g.astype(x.dtype)

        def row(j):
            _, pullback = jax.vjp(flat_grad, x)
            return pullback(jnp.zeros((n,), x.dtype).at[j].set(1))[0]

        h = jax.lax.map(row, jnp.arange(n), batch_size=chunk_size)
        return (h + h.T) / 2 if symmetrize else h

    # Always one compiled program: run eagerly, the stacking of the chunks and
    # the symmetrisation are separate operations with their own n × n outputs
    # (measured: 3.3 n² at n = 6 000, not the 2 n² budgeted).
    return jit_over_arrays(compute, flat, *args, memory=(n, max_bytes, "dense Hessian"))


def jit_over_arrays(fn: Callable, *args, memory: tuple[int, int | None, str] | None = None):
    """``jax.jit(fn)(*args)`` with the array leaves of ``args`` as arguments and
    every other leaf (a Python number, a string) held fixed as ``fn`` would see
    it called directly; inlined when already traced.

    ``memory=(num_params, max_bytes, what)``: called on concrete arrays, the
    program is compiled first and its memory checked
    (:func:`check_compiled_fits`) before it runs.
    """
    leaves, treedef = jax.tree.flatten(args)
    dynamic = [isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves]
    arrays = [leaf for d, leaf in zip(dynamic, leaves) if d]

    def call(arrays):
        it = iter(arrays)
        return fn(*jax.tree.unflatten(treedef, [next(it) if d else leaf for d, leaf in zip(dynamic, leaves)]))

    program = jax.jit(call)
    if memory is None or any(isinstance(a, jax.core.Tracer) for a in arrays):
        return program(arrays)
    num_params, max_bytes, what = memory
    compiled = program.lower(arrays).compile()
    check_compiled_fits(compiled, num_params, max_bytes=max_bytes, what=what)
    return compiled(arrays)


def dense_eigenvalues(matrix) -> jax.Array:
    """All eigenvalues of a symmetric matrix, ascending.

    On concrete arrays this calls LAPACK's ``syevr`` for eigenvalues only
    (``scipy.linalg.eigh(..., eigvals_only=True)``), which measured 1.5–2× faster
    than ``jnp.linalg.eigvalsh`` at 3 500 × 3 500 on CPU (that one computes
    eigenvectors too); under ``jax.jit`` (traced input) it is
    ``jnp.linalg.eigvalsh``. The dtype is kept: float32 or float64 (the
    eigensolver supports no other; half precision raises ``TypeError``); an
    integer or bool matrix is converted to JAX's default float first.
    """
    dtype = jnp.result_type(matrix)
    check_eigensolver_dtype(dtype, "dense_eigenvalues")
    if not jnp.issubdtype(dtype, jnp.floating):  # integers, bools: JAX's default float
        matrix = jnp.asarray(matrix, jnp.result_type(float))
    if isinstance(matrix, jax.core.Tracer):
        return jnp.linalg.eigvalsh(matrix)
    import scipy.linalg

    host = np.asarray(matrix)
    if host.shape == (0, 0):
        return jnp.zeros((0,), host.dtype)
    values = scipy.linalg.eigh(host, eigvals_only=True, driver="evr", check_finite=True)
    return jnp.asarray(values.astype(host.dtype, copy=False))


def dense_spectrum(loss: Callable[..., jax.Array], params: PyTree, *args, chunk_size: int = 32,
                   max_bytes: int | None = None) -> jax.Array:
    """Every eigenvalue of ``∇²L(θ)``, ascending: :func:`dense_hessian` (compiled)
    then :func:`dense_eigenvalues`. For small models (seed 000: the Hessian's side
    is the parameter count). The params must be float32 or float64 (what the
    eigensolver supports); half precision raises ``TypeError`` before any work.
    Each call compiles the Hessian afresh (a closure over ``loss``, so nothing
    of it outlives the call); to take many spectra of one model, jit
    ``lambda p, *a: dense_eigenvalues(dense_hessian(loss, p, *a))`` once."""
    check_eigensolver_dtype(flatten(params)[0].dtype, "dense_spectrum")
    return dense_eigenvalues(dense_hessian(loss, params, *args, chunk_size=chunk_size, max_bytes=max_bytes))

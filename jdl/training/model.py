"""The model protocol: a model is a pair of pure functions.

    init(key, sample) -> Variables(params, model_state)
    apply(variables, x, *, train, key) -> (outputs, new_model_state)

``params`` are what the optimizer updates; ``model_state`` is everything else the
model carries between calls (BatchNorm running statistics, for instance). Both
are pytrees, so ``jax.grad``, ``jax.vmap``, ``lax.scan`` and Hessian products
apply to them directly. Randomness (dropout) enters only through the explicit
``key`` argument.

Adapters build a :class:`Model` from a Flax NNX module (:func:`from_nnx`), a
Linen module (:func:`from_linen`) or a bare function of a params pytree
(:func:`from_function`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

PyTree = Any


class Variables(NamedTuple):
    """What a model's ``init`` returns: trainable ``params`` and the rest."""

    params: PyTree
    model_state: PyTree


class InitFn(Protocol):
    def __call__(self, key: jax.Array, sample: jax.Array) -> Variables: ...


class ApplyFn(Protocol):
    def __call__(
        self, variables: Variables, x: jax.Array, *, train: bool, key: jax.Array | None
    ) -> tuple[jax.Array, PyTree]: ...


class Model(NamedTuple):
    """A model as two pure functions (see the module docstring).

    Attributes:
      init: ``init(key, sample) -> Variables``; ``sample`` is a batch of inputs.
      apply: ``apply(variables, x, *, train, key) -> (outputs, new_model_state)``.
      name: a label used in summaries and checkpoints' metadata.
    """

    init: InitFn
    apply: ApplyFn
    name: str = "model"


def _as_typed_key(key: jax.Array) -> jax.Array:
    """Accept both raw ``uint32[2]`` keys and typed keys."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def from_nnx(module: nnx.Module, *, name: str | None = None) -> Model:
    """Build a :class:`Model` from a Flax NNX module, splitting it once.

    The module is split into a static graph definition and three states:
    ``nnx.Param`` (the params), ``nnx.RngState`` (its random streams) and
    everything else (the model state, e.g. ``nnx.BatchStat``). Train and eval
    behaviour (``Dropout.deterministic``, ``BatchNorm.use_running_average``) is
    baked into two graph definitions taken from ``module.train()`` and
    ``module.eval()``, so switching costs nothing at run time. ``apply`` is a
    plain function of pytrees for ``jax.jit``; no ``nnx.jit`` in the hot loop
    (the Flax performance guide's advice).

    Random streams: the module's streams (create it with e.g.
    ``rngs=nnx.Rngs(0, dropout=1)`` so ``nnx.Dropout`` has one) are reseeded on
    every call from the explicit ``key``, so dropout masks depend only on the
    key that the train step passes in. Called without a key — in evaluation,
    or in training by a direct caller (jdl's steps always pass one) — they
    are seeded from a fixed key, ``jax.random.key(0)``: a module that draws
    (a VAE sampling ``z``, dropout in train mode) then draws the same noise on
    every call, which keeps evaluation reproducible; pass ``key`` for fresh
    draws.

    ``init(key, sample)`` returns a copy of the module's values when
    ``from_nnx`` was called (NNX modules are initialised eagerly when
    constructed; later changes to the module do not reach it, and the module
    is left in train mode); pass different seeds to
    the module's ``nnx.Rngs`` for different initialisations, or use
    :func:`from_nnx_factory` to initialise from ``key``.
    """
    module.train()
    graphdef_train, params, rng_state, model_state = nnx.split(module, nnx.Param, nnx.RngState, ...)
    # A snapshot: the split's leaves are the module's own variables, which an
    # eager call or an optimizer step on the module would change under init.
    params, model_state = jax.tree.map(lambda a: jnp.array(a) if isinstance(a, jax.Array) else a,
                                       (params, model_state))
    module.eval()
    graphdef_eval, *_ = nnx.split(module, nnx.Param, nnx.RngState, ...)
    module.train()

    def init(key: jax.Array, sample: jax.Array) -> Variables:
        del key, sample
        return Variables(params, model_state)

    apply = _nnx_apply(graphdef_train, graphdef_eval, rng_state)
    return Model(init, apply, name or type(module).__name__)


def from_nnx_factory(make_module: Callable[[nnx.Rngs], nnx.Module], *, name: str | None = None) -> Model:
    """Build a :class:`Model` from ``make_module(rngs) -> nnx.Module``.

    Unlike :func:`from_nnx`, ``init(key, sample)`` really initialises from
    ``key``, so ``jax.vmap(model.init)`` over keys builds an ensemble. The
    structure is taken once from an abstract module (``nnx.eval_shape``), so
    building the model allocates nothing.
    """
    # The structure only: built abstractly (no initialiser runs, nothing is allocated).
    template = nnx.eval_shape(lambda: make_module(nnx.Rngs(0)))
    base = from_nnx(template, name=name or type(template).__name__)

    def init(key: jax.Array, sample: jax.Array) -> Variables:
        del sample
        module = make_module(nnx.Rngs(_as_typed_key(key)))
        module.train()
        _, params, _, model_state = nnx.split(module, nnx.Param, nnx.RngState, ...)
        return Variables(params, model_state)

    return base._replace(init=init)


def _nnx_apply(graphdef_train, graphdef_eval, rng_state) -> ApplyFn:
    rng_leaves, rng_treedef = jax.tree.flatten(rng_state)

    def reseeded(key: jax.Array | None):
        # Always fresh values derived from the key (a fixed one when there is none, as in
        # eval mode), so the stored rng state is only a template and may be abstract.
        key = jax.random.key(0) if key is None else _as_typed_key(key)
        fresh = []
        for i, leaf in enumerate(rng_leaves):
            if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                fresh.append(jax.random.fold_in(key, i))
            else:  # the stream's counter
                fresh.append(jnp.zeros(leaf.shape, leaf.dtype))
        return jax.tree.unflatten(rng_treedef, fresh)

    def apply(variables: Variables, x, *, train: bool, key=None):
        graphdef = graphdef_train if train else graphdef_eval
        module = nnx.merge(graphdef, variables.params, reseeded(key), variables.model_state, copy=True)
        outputs = module(x)
        new_model_state = nnx.split(module, nnx.Param, nnx.RngState, ...)[3]
        return outputs, new_model_state

    return apply


def from_linen(
    module,
    *,
    train_kwarg: str | None = "train",
    rng_collections: tuple[str, ...] = ("dropout",),
    name: str | None = None,
) -> Model:
    """Build a :class:`Model` from a Flax Linen module.

    Args:
      module: a ``flax.linen.Module``.
      train_kwarg: name of the boolean keyword its ``__call__`` takes to switch
        train/eval behaviour, ``True`` meaning training (``None`` if it takes
        none). A module switched by ``deterministic`` (``True`` meaning
        evaluation) needs a wrapper: passing ``"deterministic"`` here would
        invert the modes.
      rng_collections: the RNG collections it draws from (``"dropout"``; a
        VAE's sampling collection, say).
      name: label for summaries.

    Every collection other than ``"params"`` (e.g. ``"batch_stats"``) is model
    state, marked mutable in training.

    Random streams, as for :func:`from_nnx`: each collection's key is folded
    from the explicit ``key``; called without one (in evaluation, or by a
    direct caller), from a fixed ``jax.random.key(0)``, so that a module that
    draws in eval (a VAE sampling ``z``) runs, reproducibly, rather than
    failing for want of a key.
    """

    def _kwargs(train: bool) -> dict:
        return {} if train_kwarg is None else {train_kwarg: train}

    def init(key: jax.Array, sample: jax.Array) -> Variables:
        key = _as_typed_key(key)
        keys = jax.random.split(key, 1 + len(rng_collections))
        rngs = {"params": keys[0], **dict(zip(rng_collections, keys[1:]))}
        variables = dict(module.init(rngs, sample, **_kwargs(False)))
        params = variables.pop("params", {})
        return Variables(params, variables)

    def apply(variables: Variables, x, *, train: bool, key=None):
        all_vars = {"params": variables.params, **variables.model_state}
        key = jax.random.key(0) if key is None else _as_typed_key(key)
        rngs = {c: jax.random.fold_in(key, i) for i, c in enumerate(rng_collections)}
        collections = list(variables.model_state.keys())
        if train and collections:
            outputs, new_state = module.apply(all_vars, x, rngs=rngs, mutable=collections, **_kwargs(train))
            return outputs, dict(new_state)
        outputs = module.apply(all_vars, x, rngs=rngs, **_kwargs(train))
        return outputs, variables.model_state

    return Model(init, apply, name or type(module).__name__)


def from_function(
    fn: Callable[[PyTree, jax.Array], jax.Array],
    init_params: Callable[[jax.Array, jax.Array], PyTree] | PyTree,
    *,
    name: str = "function",
) -> Model:
    """Build a :class:`Model` from a bare ``fn(params, x) -> outputs``.

    Args:
      fn: a pure function of a params pytree and an input batch.
      init_params: either ``init_params(key, sample) -> params`` or a params
        pytree to start from.
      name: label for summaries.

    The model has no model state (it is ``{}``) and ignores ``train``/``key``.
    """

    def init(key: jax.Array, sample: jax.Array) -> Variables:
        params = init_params(key, sample) if callable(init_params) else init_params
        return Variables(params, {})

    def apply(variables: Variables, x, *, train: bool = False, key=None):
        del train, key
        return fn(variables.params, x), variables.model_state

    return Model(init, apply, name)

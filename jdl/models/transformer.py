"""A small Transformer encoder for classifying sequences (seed 000: attention reads the
whole sequence at once, in parallel, and picks out what is relevant).

Tokens are non-overlapping patches of ``patch_size`` time steps (a ViT-style
embedding: ``patch_size=1`` makes every step a token), embedded linearly, with
learned position embeddings. Each block is pre-norm:

    x ← x + MHSA(LN(x)),    x ← x + MLP(LN(x))

with multi-head self-attention ``softmax(QKᵀ/√d_k) V`` per head (Flax's
``nnx.MultiHeadAttention`` with :func:`dot_product_attention`, which computes in
the inputs' dtype, float64 included). The encoded tokens are averaged and classified.

References:
  Vaswani et al. (2017), "Attention is all you need", NeurIPS;
  Dosovitskiy et al. (2021), "An image is worth 16×16 words", ICLR.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.attention import dot_product_attention_weights
from flax.nnx.nn.dtypes import promote_dtype

from jdl.models import _checks
from jdl.models.sequence import as_sequence


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype=None,
    precision=None,
    module: nnx.Module | None = None,
    is_causal: bool = False,
) -> jax.Array:
    """``softmax(QKᵀ/√d_k + bias, masked) V`` per head, computed in the inputs' dtype.

    A drop-in ``attention_fn`` for ``nnx.MultiHeadAttention`` (same arguments as
    Flax's ``nnx.dot_product_attention``; shapes ``[batch..., length, heads,
    depth]``). Flax's version hands dropout-free attention to
    ``jax.nn.dot_product_attention``, whose softmax runs in float32 even for
    float64 inputs; this one always takes Flax's explicit path
    (``dot_product_attention_weights``: ``jax.nn.softmax``, masking and attention
    dropout exactly as Flax does them), so float64 stays float64 and float32
    results are unchanged.
    """
    query, key, value = promote_dtype((query, key, value), dtype=dtype)
    weights = dot_product_attention_weights(
        query,
        key,
        bias,
        mask,
        broadcast_dropout,
        dropout_rng,
        dropout_rate,
        deterministic,
        query.dtype,
        precision,
        module,
        is_causal=is_causal,
    )
    return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=precision)


class TransformerBlock(nnx.Module):
    """Pre-norm encoder block: ``x + MHSA(LN(x))`` then ``x + MLP(LN(x))``.

    Args:
      width: model width ``d_model``.
      num_heads: attention heads (``width`` must divide by it).
      mlp_ratio: the MLP's hidden width is ``mlp_ratio · width`` (GELU).
      dropout_rate: dropout on the attention weights and after each sublayer.
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, width: int, num_heads: int, *, mlp_ratio: int = 2, dropout_rate: float = 0.0, rngs: nnx.Rngs):
        width = _checks.count(width, "width")
        num_heads = _checks.count(num_heads, "num_heads")
        mlp_ratio = _checks.count(mlp_ratio, "mlp_ratio")
        dropout_rate = _checks.rate(dropout_rate, "dropout_rate")
        if width % num_heads:
            raise ValueError(f"width {width} must be divisible by num_heads {num_heads}")
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads,
            width,
            dropout_rate=dropout_rate,
            decode=False,
            attention_fn=dot_product_attention,
            rngs=rngs,
        )
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)
        self.mlp_in = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_ratio * width, width, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.dropout(self.attention(self.norm1(x)))
        h = self.mlp_out(nnx.gelu(self.mlp_in(self.norm2(x))))
        return x + self.dropout(h)


class TransformerEncoder(nnx.Module):
    """Patch embedding + positions → ``num_layers`` × :class:`TransformerBlock` → LN → mean → Linear.

    Args:
      in_features: features per time step ``C``.
      num_classes: outputs.
      max_length: sequence length ``T`` (position embeddings are learned per patch).
      width: model width ``d_model``.
      num_heads: attention heads.
      num_layers: encoder blocks.
      patch_size: time steps per token (``T`` must divide by it).
      mlp_ratio: MLP expansion in each block.
      dropout_rate: dropout in the blocks.
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        max_length: int,
        width: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        patch_size: int = 1,
        mlp_ratio: int = 2,
        dropout_rate: float = 0.0,
        rngs: nnx.Rngs,
    ):
        in_features = _checks.count(in_features, "in_features")
        num_classes = _checks.count(num_classes, "num_classes")
        max_length = _checks.count(max_length, "max_length")
        patch_size = _checks.count(patch_size, "patch_size")
        num_layers = _checks.count(num_layers, "num_layers", minimum=0)
        width = _checks.count(width, "width")
        dropout_rate = _checks.rate(dropout_rate, "dropout_rate")
        if max_length % patch_size:
            raise ValueError(f"sequence length {max_length} must be divisible by patch_size {patch_size}")
        self.patch_size = patch_size
        self.in_features = in_features
        self.num_tokens = max_length // patch_size
        self.embed = nnx.Linear(patch_size * in_features, width, rngs=rngs)
        # float32 like every other parameter (the default float would make it float64 under x64)
        self.positions = nnx.Param(0.02 * jax.random.normal(rngs.params(), (self.num_tokens, width), jnp.float32))
        self.blocks = nnx.List(
            [
                TransformerBlock(width, num_heads, mlp_ratio=mlp_ratio, dropout_rate=dropout_rate, rngs=rngs)
                for _ in range(num_layers)
            ]
        )
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def tokens(self, x: jax.Array) -> jax.Array:
        """Encoded tokens ``(N, T / patch_size, width)``."""
        x = as_sequence(x)
        n, t, c = x.shape
        if t != self.num_tokens * self.patch_size:
            raise ValueError(
                f"the model was built for sequences of length {self.num_tokens * self.patch_size}, got {t}"
            )
        if c != self.in_features:
            raise ValueError(
                f"the model was built for {self.in_features} feature(s) per time step, got inputs of shape "
                f"{x.shape} as a sequence (N, T, C) ({c} per step)"
            )
        x = jnp.reshape(x, (n, self.num_tokens, self.patch_size * c))
        x = self.embed(x) + self.positions[...][None]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(jnp.mean(self.tokens(x), axis=1))

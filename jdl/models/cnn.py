"""Convolutional networks for 8×8 images (the digits) and 1-D sequences (MNIST-1D).

:class:`SmallCNN` is the fixed baseline; :class:`CNN` is configurable with every
convolution and pooling the notes describe (seed 000, 001, 003): same / valid
padding, 1×1, depthwise-separable, dilated and asymmetric (1×n then n×1)
convolutions, max / average / stochastic pooling, and a dense head or a
global-pooling head (1×1 convolution to the classes, then global average
pooling) instead.

Inputs are channels-last: ``(N, H, W, C)`` for 2-D, ``(N, T, C)`` for 1-D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from jdl.models import _checks
from jdl.nn.conv import AsymmetricConv, SeparableConv
from jdl.nn.pooling import StochasticPool, global_average_pool

ConvKind = Literal["standard", "separable", "asymmetric"]
PoolKind = Literal["max", "avg", "stochastic", "none"]
HeadKind = Literal["dense", "global"]


class SmallCNN(nnx.Module):
    """``[Conv 3×3 (same) → ReLU] × len(channels) → max-pool 2×2 → Dense → ReLU → Dense``.

    Args:
      in_channels: channels of the input images ``(N, H, W, C)``.
      num_classes: outputs.
      channels: output channels of each convolution.
      hidden: width of the dense layer.
      image_size: input height = width (for the dense layer's fan-in); the
        sequence length when ``spatial_dims=1``.
      spatial_dims: 2 for images ``(N, H, W, C)``, 1 for sequences ``(N, T, C)``.
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        image_size: int = 8,
        spatial_dims: int = 2,
        rngs: nnx.Rngs,
    ):
        d = spatial_dims
        if spatial_dims not in (1, 2):
            raise ValueError(f"spatial_dims must be 1 (sequences) or 2 (images), got {spatial_dims!r}")
        in_channels = _checks.count(in_channels, "in_channels")
        num_classes = _checks.count(num_classes, "num_classes")
        channels = _checks.widths(channels, "channels")
        hidden = _checks.count(hidden, "hidden (the dense layer's width)")
        image_size = _checks.count(image_size, "image_size", minimum=2)
        sizes = [in_channels, *channels]
        self.convs = nnx.List(
            [nnx.Conv(a, b, kernel_size=(3,) * d, padding="SAME", rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        self.window = (2,) * d
        self.in_channels = in_channels
        self.image_size = image_size
        pooled = image_size // 2
        self.dense = nnx.Linear(pooled**d * sizes[-1], hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        d = len(self.window)
        x = with_channels(x, d)
        _checks.channels("SmallCNN", x, self.in_channels, d)
        if x.shape[1:-1] != (self.image_size,) * d:
            raise ValueError(
                f"SmallCNN was built for inputs of spatial size {(self.image_size,) * d} (its dense layer's "
                f"fan-in depends on it), got shape {x.shape}; build it with image_size={x.shape[1]}"
            )
        for conv in self.convs:
            x = nnx.relu(conv(x))
        x = nnx.max_pool(x, window_shape=self.window, strides=self.window)
        x = x.reshape(x.shape[0], -1)
        return self.head(nnx.relu(self.dense(x)))


def with_channels(x: jax.Array, spatial_dims: int) -> jax.Array:
    """Add a channel axis to ``(N, *spatial)`` inputs (``(N, T)`` sequences)."""
    return x[..., None] if x.ndim == spatial_dims + 1 else x


def _conv_output_size(size: int, kernel: int, dilation: int, padding: str) -> int:
    return size if padding == "SAME" else size - dilation * (kernel - 1)


class CNN(nnx.Module):
    """``[conv → (BatchNorm) → ReLU → (pool 2)] × len(channels) → head``.

    Args:
      in_channels: channels of the input.
      num_classes: outputs.
      input_size: spatial size, ``(H, W)`` for images or ``(T,)`` for sequences;
        its length sets the spatial dimensions.
      channels: output channels of each convolution block.
      kernel_size: ``k`` of every ``k×k`` (or length-``k``) kernel.
      conv: ``"standard"``; ``"separable"`` (depthwise ``k×k`` + 1×1 pointwise);
        ``"asymmetric"`` (``1×k`` then ``k×1``, images only).
      dilation: kernel dilation ``d``: a ``k×k`` kernel sees ``d(k−1)+1`` pixels
        across (standard and separable convolutions).
      padding: ``"SAME"`` (keep the size) or ``"VALID"`` (shrink by ``d(k−1)``).
      pooling: ``"max"``, ``"avg"``, ``"stochastic"`` (:class:`jdl.nn.StochasticPool`)
        or ``"none"``, with window 2 after every block.
      head: ``"dense"`` (flatten → Linear(``dense_width``) → ReLU → Linear) or
        ``"global"`` (1×1 convolution to the classes, then global average
        pooling: no dense layer, any input size).
      dense_width: width of the dense head's hidden layer.
      batch_norm: BatchNorm after each convolution (a standard convolution then
        has no bias: BatchNorm's β replaces it, seed 003).
      batch_norm_momentum: decay of BatchNorm's running averages.
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        input_size: Sequence[int],
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        conv: ConvKind = "standard",
        dilation: int = 1,
        padding: str = "SAME",
        pooling: PoolKind = "max",
        head: HeadKind = "dense",
        dense_width: int = 64,
        batch_norm: bool = False,
        batch_norm_momentum: float = 0.9,
        rngs: nnx.Rngs,
    ):
        padding = padding.upper()
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
        if conv not in ("standard", "separable", "asymmetric"):
            raise ValueError(f"conv must be 'standard', 'separable' or 'asymmetric', got {conv!r}")
        if pooling not in ("max", "avg", "stochastic", "none"):
            raise ValueError(f"pooling must be 'max', 'avg', 'stochastic' or 'none', got {pooling!r}")
        if head not in ("dense", "global"):
            raise ValueError(f"head must be 'dense' or 'global', got {head!r}")
        in_channels = _checks.count(in_channels, "in_channels")
        num_classes = _checks.count(num_classes, "num_classes")
        input_size = _checks.widths(input_size, "input_size", allow_empty=False)
        if len(input_size) not in (1, 2):
            raise ValueError(f"input_size must be (H, W) for images or (T,) for sequences, got {input_size}")
        channels = _checks.widths(channels, "channels")
        kernel_size = _checks.count(kernel_size, "kernel_size")
        dilation = _checks.count(dilation, "dilation")
        dense_width = _checks.count(dense_width, "dense_width")
        batch_norm_momentum = _checks.momentum(batch_norm_momentum)
        d = len(input_size)
        if conv == "asymmetric" and (d != 2 or dilation != 1):
            raise ValueError("asymmetric (1×k then k×1) convolutions need 2-D inputs and dilation 1")
        self.pooling = pooling
        self.window = (2,) * d
        self.head_kind = head
        self.in_channels = in_channels
        self.input_size = input_size
        size = list(input_size)
        sizes = [in_channels, *channels]
        convs, norms, pools = [], [], []
        for a, b in zip(sizes[:-1], sizes[1:]):
            convs.append(self._make_conv(conv, a, b, kernel_size, dilation, padding, d, batch_norm, rngs))
            size = [_conv_output_size(s, kernel_size, dilation, padding) for s in size]
            if batch_norm:
                norms.append(nnx.BatchNorm(b, momentum=batch_norm_momentum, rngs=rngs))
            if pooling != "none":
                size = [s // 2 for s in size]
                if pooling == "stochastic":
                    pools.append(StochasticPool(self.window, rngs=rngs))
            if min(size) < 1:
                raise ValueError(
                    f"input of size {tuple(input_size)} shrinks to nothing after {len(convs)} blocks "
                    f"(padding={padding!r}, kernel {kernel_size}, dilation {dilation}, pooling "
                    f"{pooling!r}); use fewer channels, padding='SAME' or pooling='none'"
                )
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.pools = nnx.List(pools)
        if head == "global":
            self.classifier = nnx.Conv(sizes[-1], num_classes, (1,) * d, rngs=rngs)
        else:
            self.dense = nnx.Linear(math.prod(size) * sizes[-1], dense_width, rngs=rngs)
            self.classifier = nnx.Linear(dense_width, num_classes, rngs=rngs)

    @staticmethod
    def _make_conv(kind, a, b, k, dilation, padding, d, batch_norm, rngs):
        # Before BatchNorm an output bias is subtracted out again with the batch mean (BatchNorm's β
        # replaces it, seed 003): it would only add flat directions, zero Hessian eigenvalues.
        use_bias = not batch_norm
        if kind == "separable":
            return SeparableConv(a, b, (k,) * d, padding=padding, kernel_dilation=dilation, use_bias=use_bias,
                                 rngs=rngs)
        if kind == "asymmetric":
            return AsymmetricConv(a, b, k, padding=padding, use_bias=use_bias, rngs=rngs)
        return nnx.Conv(a, b, (k,) * d, padding=padding, kernel_dilation=dilation, use_bias=use_bias, rngs=rngs)

    def _pool(self, i: int, x: jax.Array) -> jax.Array:
        if self.pooling == "max":
            return nnx.max_pool(x, self.window, strides=self.window)
        if self.pooling == "avg":
            return nnx.avg_pool(x, self.window, strides=self.window)
        if self.pooling == "stochastic":
            return self.pools[i](x)
        return x

    def features(self, x: jax.Array) -> jax.Array:
        """The last block's feature maps ``(N, *spatial, C)``."""
        d = len(self.window)
        x = with_channels(x, d)
        _checks.channels("CNN", x, self.in_channels, d)
        if self.head_kind == "dense" and x.shape[1:-1] != self.input_size:
            raise ValueError(
                f"this CNN was built for inputs of spatial size {self.input_size} (its dense head's fan-in "
                f"depends on it), got shape {x.shape}; build it for this size, or use head='global'"
            )
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = self.norms[i](x)
            x = self._pool(i, nnx.relu(x))
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.features(x)
        if self.head_kind == "global":
            return global_average_pool(self.classifier(x))
        x = jnp.reshape(x, (x.shape[0], -1))
        return self.classifier(nnx.relu(self.dense(x)))

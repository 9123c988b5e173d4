"""Convolutions: Flax's ``Conv`` and the factorised forms the notes describe.

``flax.nnx.Conv`` (re-exported) already covers same / valid padding
(``padding="SAME" | "VALID"``), 1×1 convolutions (``kernel_size=(1, 1)``: mixes
channels, keeps the spatial size, seed 000) and dilated convolutions
(``kernel_dilation=d``: a ``k×k`` kernel sees a ``(d(k−1)+1)²`` field with the
same parameter count, seed 000). Written here, as compositions of ``nnx.Conv``:

- :class:`SeparableConv` — depthwise then 1×1 pointwise convolution
  (seed 000: "DepthWise: single-channel convolution + 1×1 convolution").
- :class:`AsymmetricConv` — a ``1×n`` then an ``n×1`` convolution, the
  ``n×n`` receptive field with ``2n`` instead of ``n²`` weights per channel pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import Conv as Conv


def _check_positive(value, name: str) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")


def _tuple(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return (int(value),) * dims
    return tuple(int(v) if isinstance(v, np.integer) else v for v in value)


class SeparableConv(nnx.Module):
    """Depthwise-separable convolution: a per-channel ``k×k`` convolution
    (``feature_group_count = in_features``) followed by a 1×1 convolution.

    Parameters: ``k² · C_in · m + m · C_in · C_out + C_out`` instead of
    ``k² · C_in · C_out + C_out`` for a standard convolution (``m`` = depth
    multiplier). The depthwise stage has no bias, as in Xception: a bias there
    is constant over positions and passes linearly through the 1×1 stage, so
    it only duplicates the pointwise bias — it would add ``m · C_in`` exactly
    flat directions to the loss surface (zero Hessian eigenvalues at every
    minimum).

    Args:
      in_features: input channels.
      out_features: output channels.
      kernel_size: the depthwise kernel, e.g. ``3`` or ``(3, 3)``; its length
        sets the number of spatial dimensions (an int means 2-D unless
        ``spatial_dims`` says otherwise).
      padding, kernel_dilation: as for ``nnx.Conv`` (depthwise stage).
      depth_multiplier: depthwise output channels per input channel.
      spatial_dims: spatial dimensions when ``kernel_size`` is an int.
      use_bias: the pointwise stage's bias (the layer's only one); ``False``
        before BatchNorm, whose shift ``β`` replaces it.
      dtype, param_dtype: as for ``nnx.Conv`` (the computation's dtype,
        ``None``: the inputs' and params'; the parameters', float32).
      rngs: ``nnx.Rngs``.

    References:
      Chollet (2017), "Xception: deep learning with depthwise separable
      convolutions", CVPR.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int] = 3,
        *,
        padding: str = "SAME",
        kernel_dilation: int | Sequence[int] = 1,
        depth_multiplier: int = 1,
        spatial_dims: int = 2,
        use_bias: bool = True,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        kernel = _tuple(kernel_size, spatial_dims)
        _check_positive(depth_multiplier, "depth_multiplier")
        for k in kernel:
            _check_positive(k, "kernel_size")
        mid = in_features * depth_multiplier
        self.depthwise = nnx.Conv(
            in_features,
            mid,
            kernel,
            padding=padding,
            kernel_dilation=kernel_dilation,
            feature_group_count=in_features,
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.pointwise = nnx.Conv(mid, out_features, (1,) * len(kernel), use_bias=use_bias, dtype=dtype,
                                  param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.pointwise(self.depthwise(x))


class AsymmetricConv(nnx.Module):
    """An ``n×n`` receptive field from a ``1×n`` then an ``n×1`` convolution.

    Same receptive field as one ``n×n`` convolution, ``2n`` instead of ``n²``
    weights per channel pair, and an extra composition (seed 000: suited to
    small feature maps). 2-D inputs only.

    Args:
      in_features: input channels.
      out_features: output channels.
      kernel_size: ``n``.
      padding: ``"SAME"`` or ``"VALID"`` (VALID shrinks each side by ``n − 1``).
      hidden_features: channels between the two convolutions (default ``out_features``).
      use_bias: the ``n×1`` (output) stage's bias; ``False`` before BatchNorm,
        whose shift ``β`` replaces it. The ``1×n`` stage keeps its bias: with
        ``"SAME"`` padding it reaches border positions differently, so it is
        not a constant shift.
      dtype, param_dtype: as for ``nnx.Conv``.
      rngs: ``nnx.Rngs``.

    References:
      Szegedy, Vanhoucke, Ioffe, Shlens & Wojna (2016), "Rethinking the
      Inception architecture for computer vision", CVPR, §3.2.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 3,
        *,
        padding: str = "SAME",
        hidden_features: int | None = None,
        use_bias: bool = True,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        _check_positive(kernel_size, "kernel_size")
        mid = out_features if hidden_features is None else hidden_features
        _check_positive(mid, "hidden_features")
        types = dict(padding=padding, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.row = nnx.Conv(in_features, mid, (1, kernel_size), **types)
        self.column = nnx.Conv(mid, out_features, (kernel_size, 1), use_bias=use_bias, **types)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(
                f"AsymmetricConv works on images (N, H, W, C), got shape {x.shape}; for sequences "
                "a 1×n convolution is already the whole kernel"
            )
        return self.column(self.row(x))

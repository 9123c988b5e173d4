"""ResNet-style residual networks, small enough for 8×8 images or 1-D sequences.

A residual block computes ``y = ReLU(F(x) + S(x))`` with
``F = Conv → BN → ReLU → Conv → BN`` and ``S`` the identity (or a 1×1
convolution with BatchNorm where the shape changes). The identity path carries
the gradient to early layers unattenuated, which is why very deep residual
networks still train (seed 000, 002).

References:
  He, Zhang, Ren & Sun (2016), "Deep residual learning for image recognition", CVPR.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from jdl.models import _checks
from jdl.models.cnn import with_channels
from jdl.nn.pooling import global_average_pool


class ResidualBlock(nnx.Module):
    """``ReLU(BN(Conv(ReLU(BN(Conv(x))))) + shortcut(x))``, 3×3 (or length-3) kernels.

    Args:
      in_features: input channels.
      out_features: output channels.
      stride: stride of the first convolution (2 halves the spatial size).
      spatial_dims: 2 for images, 1 for sequences.
      batch_norm: BatchNorm after each convolution (off: the plain residual form).
      batch_norm_momentum: decay of BatchNorm's running averages (see :class:`jdl.models.MLP`).
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        stride: int = 1,
        spatial_dims: int = 2,
        batch_norm: bool = True,
        batch_norm_momentum: float = 0.9,
        rngs: nnx.Rngs,
    ):
        d = spatial_dims
        if spatial_dims not in (1, 2):
            raise ValueError(f"spatial_dims must be 1 (sequences) or 2 (images), got {spatial_dims!r}")
        in_features = _checks.count(in_features, "in_features")
        out_features = _checks.count(out_features, "out_features")
        stride = _checks.count(stride, "stride")
        batch_norm_momentum = _checks.momentum(batch_norm_momentum)

        def norm(channels: int) -> nnx.BatchNorm | None:
            return nnx.BatchNorm(channels, momentum=batch_norm_momentum, rngs=rngs) if batch_norm else None

        kernel = (3,) * d
        self.conv1 = nnx.Conv(in_features, out_features, kernel, strides=stride, use_bias=not batch_norm, rngs=rngs)
        self.conv2 = nnx.Conv(out_features, out_features, kernel, use_bias=not batch_norm, rngs=rngs)
        self.norm1 = norm(out_features)
        self.norm2 = norm(out_features)
        if stride != 1 or in_features != out_features:
            self.projection = nnx.Conv(
                in_features, out_features, (1,) * d, strides=stride, use_bias=not batch_norm, rngs=rngs
            )
            self.projection_norm = norm(out_features)
        else:
            self.projection = None
            self.projection_norm = None

    @staticmethod
    def _norm(norm, x):
        return x if norm is None else norm(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = nnx.relu(self._norm(self.norm1, self.conv1(x)))
        h = self._norm(self.norm2, self.conv2(h))
        shortcut = x if self.projection is None else self._norm(self.projection_norm, self.projection(x))
        return nnx.relu(h + shortcut)


class ResNet(nnx.Module):
    """``stem (Conv 3 → BN → ReLU) → stages of ResidualBlocks → global average pool → Linear``.

    Each stage after the first halves the spatial size (stride 2) and changes
    the channel count to the stage's width.

    Args:
      in_channels: channels of the input ``(N, *spatial, C)``.
      num_classes: outputs.
      stages: channels of each stage, e.g. ``(16, 32)`` (8×8 → 8×8 → 4×4).
      blocks_per_stage: residual blocks per stage.
      spatial_dims: 2 for images, 1 for sequences.
      batch_norm: BatchNorm in the stem and blocks.
      batch_norm_momentum: decay of BatchNorm's running averages.
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        stages: Sequence[int] = (16, 32),
        blocks_per_stage: int = 1,
        spatial_dims: int = 2,
        batch_norm: bool = True,
        batch_norm_momentum: float = 0.9,
        rngs: nnx.Rngs,
    ):
        stages = _checks.widths(stages, "stages (the channels of each stage)", allow_empty=False)
        blocks_per_stage = _checks.count(blocks_per_stage, "blocks_per_stage")
        in_channels = _checks.count(in_channels, "in_channels")
        num_classes = _checks.count(num_classes, "num_classes")
        batch_norm_momentum = _checks.momentum(batch_norm_momentum)
        if spatial_dims not in (1, 2):
            raise ValueError(f"spatial_dims must be 1 (sequences) or 2 (images), got {spatial_dims!r}")
        d = spatial_dims
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.stem = nnx.Conv(in_channels, stages[0], (3,) * d, use_bias=not batch_norm, rngs=rngs)
        self.stem_norm = nnx.BatchNorm(stages[0], momentum=batch_norm_momentum, rngs=rngs) if batch_norm else None
        blocks = []
        width = stages[0]
        for s, out in enumerate(stages):
            for b in range(blocks_per_stage):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(
                    ResidualBlock(
                        width,
                        out,
                        stride=stride,
                        spatial_dims=d,
                        batch_norm=batch_norm,
                        batch_norm_momentum=batch_norm_momentum,
                        rngs=rngs,
                    )
                )
                width = out
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Globally pooled features ``(N, C)``."""
        x = with_channels(x, self.spatial_dims)
        _checks.channels("ResNet", x, self.in_channels, self.spatial_dims)
        x = self.stem(x)
        if self.stem_norm is not None:
            x = self.stem_norm(x)
        x = nnx.relu(x)
        for block in self.blocks:
            x = block(x)
        return global_average_pool(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))

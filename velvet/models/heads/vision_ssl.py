"""Heads of the vision self-supervision (method.md 4.1): rotation, contrastive projection, reconstruction.

They read only the encoder's top map (and, for :meth:`ReconstructionDecoder.for_encoder`, the encoder's
``feature_dims``/``feature_strides``), never its internals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from velvet.models.vision.base import VisionEncoder

__all__ = ["ContrastiveProjection", "ReconstructionDecoder", "RotationHead"]


def _global_pool(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w, d)`` -> ``(B, C)`` average; ``(B, C)`` passes through."""
    if x.ndim == 5:
        return x.mean(dim=(2, 3, 4))
    if x.ndim == 2:
        return x
    raise ValueError(f"expected a feature map (B, C, h, w, d) or vectors (B, C), got shape {tuple(x.shape)}")


class RotationHead(nn.Module):
    """Average-pool the top map, then a linear classifier of the quarter turns (768 -> 4 in the reference).

    Args:
        in_dim: channels of the top map ``E``.
        num_classes: rotation classes (4 quarter turns).
    """

    def __init__(self, in_dim: int, num_classes: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, E, h, w, d)`` top map or ``(B, E)`` pooled features. Returns ``(B, num_classes)`` logits."""
        return self.fc(_global_pool(x))


class ContrastiveProjection(nn.Module):
    """Average-pool the top map, then a linear projection for the NT-Xent loss (768 -> 512 in the reference).

    Args:
        in_dim: channels of the top map ``E``.
        out_dim: projection width.
    """

    def __init__(self, in_dim: int, out_dim: int = 512) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, E, h, w, d)`` or ``(B, E)``. Returns ``(B, out_dim)`` (not normalised)."""
        return self.fc(_global_pool(x))


def _upsample_plan(stride: Sequence[int]) -> list[tuple[int, int, int]]:
    """Per-stage ``(H, W, D)`` strides (2 or 1) whose product per axis is ``stride``.

    An axis with a smaller total stride is upsampled in the last stages only, so the early, coarse
    stages stay isotropic where possible: ``(16, 16, 4)`` -> ``[(2,2,1), (2,2,1), (2,2,2), (2,2,2)]``.
    """
    steps = []
    for s in stride:
        n = int(round(math.log2(s)))
        if s < 1 or 2**n != s:
            raise ValueError(f"decoder strides must be powers of two, got {tuple(stride)}")
        steps.append(n)
    stages = max(steps)
    if stages == 0:
        raise ValueError(f"nothing to upsample: stride {tuple(stride)}")
    return [tuple(2 if i >= stages - n else 1 for n in steps) for i in range(stages)]  # type: ignore[misc]


class ReconstructionDecoder(nn.Module):
    """The reference's ``DeconvBlock``: transposed convolutions from the top map to full resolution.

    Each stage is a ``ConvTranspose3d`` with kernel = stride (2 or 1 per axis) that halves the channels
    (``E -> E/2 -> ... -> out_channels``); with ``stride=32`` and E=768 this is the reference's
    768->384->192->96->48->1, 3^3 -> 96^3. The reference has no nonlinearity between the layers
    (``activation=None``). Module names (``up_blocks``, ``out_layer``) follow the reference.

    Args:
        in_dim: channels ``E`` of the top map.
        out_channels: channels of the reconstruction (the input's channels).
        stride: total stride of the top map, an int or per-axis ``(H, W, D)`` powers of two
            (32 for the Swin with patch 2, ``(16, 16, 4)`` for the M3D ViT).
        activation: a module type put between layers (e.g. ``nn.GELU``), or None.
    """

    def __init__(
        self,
        in_dim: int,
        out_channels: int = 1,
        *,
        stride: int | Sequence[int] = 32,
        activation: type[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        plan = _upsample_plan(stride)
        widths = [max(1, in_dim // 2**i) for i in range(len(plan))]
        self.stride: tuple[int, int, int] = stride  # type: ignore[assignment]
        self.up_blocks = nn.ModuleList(
            nn.ConvTranspose3d(widths[i], widths[i + 1], kernel_size=s, stride=s)
            for i, s in enumerate(plan[:-1])
        )
        self.out_layer = nn.ConvTranspose3d(widths[-1], out_channels, kernel_size=plan[-1], stride=plan[-1])
        self.act = activation() if activation is not None else nn.Identity()

    @classmethod
    def for_encoder(
        cls, encoder: VisionEncoder, out_channels: int = 1, *, activation: type[nn.Module] | None = None
    ) -> ReconstructionDecoder:
        """A decoder sized from an encoder's top map (``feature_dims[-1]``, ``feature_strides[-1]``)."""
        return cls(
            encoder.feature_dims[-1], out_channels, stride=encoder.feature_strides[-1], activation=activation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, E, h, w, d)`` top map. Returns ``(B, out_channels, h*s_H, w*s_W, d*s_D)``."""
        for block in self.up_blocks:
            x = self.act(block(x))
        return self.out_layer(x)

"""The interface every velvet vision encoder follows, so heads, losses and tasks never reach inside one.

Imports nothing heavy (torch only for type checkers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    import torch

__all__ = ["VisionEncoder", "VisionEncoderOutput", "resolve_level_indices"]


class VisionEncoderOutput(TypedDict):
    """What ``VisionEncoder.forward`` returns.

    Keys:
        maps: feature maps ``(B, C_i, h_i, w_i, d_i)`` ordered fine -> coarse; the last is the top map.
            For the Swin encoder (method.md 1.1): ``maps[1]`` is the "bottom" map (word-level regions),
            ``maps[2]`` the "middle" map (sentence level), ``maps[3]`` the "top" map.
        pooled: ``(B, embed_dim)`` global feature: the average of the top map (Swin), or the ``[CLS]``
            token (ViT with ``classification=True``).
    """

    maps: list[torch.Tensor]
    pooled: torch.Tensor


@runtime_checkable
class VisionEncoder(Protocol):
    """A 3D encoder of ``(B, C_in, H, W, D)`` volumes into multi-level feature maps.

    Attributes:
        embed_dim: channels of the top map, i.e. the width of ``pooled``.
        feature_dims: channels of each returned map, fine -> coarse.
        feature_strides: ``(H, W, D)`` stride of each returned map relative to the input.
        img_size: the ``(H, W, D)`` input the encoder was configured for.
        patch_size: ``(H, W, D)`` edge of the patch embedding.
    """

    embed_dim: int
    feature_dims: tuple[int, ...]
    feature_strides: tuple[tuple[int, int, int], ...]
    img_size: tuple[int, int, int]
    patch_size: tuple[int, int, int]

    def forward(self, x: torch.Tensor) -> VisionEncoderOutput:
        """Encode ``x`` ``(B, C_in, H, W, D)`` into ``{"maps", "pooled"}``."""
        ...

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """The maps at level ``indices`` (None: all; an int n: the last n), computing no deeper than needed."""
        ...

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass instead of storing them."""
        ...

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to the encoder) to exclude from weight decay."""
        ...


def resolve_level_indices(indices: int | Sequence[int] | None, num_levels: int) -> list[int]:
    """Normalise ``forward_intermediates`` indices to sorted non-negative level numbers.

    Args:
        indices: None (all levels), an int ``n`` (the last ``n`` levels) or level indices (negative
            ones count from the top).
        num_levels: levels the encoder returns.

    Raises:
        ValueError: an index out of range, a repeated index, or ``n`` outside ``1..num_levels``.
    """
    if indices is None:
        return list(range(num_levels))
    if isinstance(indices, int):
        if not 1 <= indices <= num_levels:
            raise ValueError(f"asked for the last {indices} levels, the encoder has {num_levels}")
        return list(range(num_levels - indices, num_levels))
    out = []
    for i in indices:
        if not -num_levels <= i < num_levels:
            raise ValueError(f"level index {i} out of range for {num_levels} levels")
        out.append(i % num_levels)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated level indices {list(indices)}")
    return sorted(out)

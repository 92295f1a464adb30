"""Projection heads into the shared image-text space."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """Linear projection, optionally followed by feature-wise batch standardisation.

    ``norm="none"`` is the reference's plain ``Linear``. ``norm="batch"`` adds a
    ``BatchNorm1d(affine=False)`` over every valid leading position (SimCLR / MoCo-v3 heads): each
    embedding dimension is centred and scaled across the batch, so the part of the features that
    differs between samples drives the cosine similarity even when, early in training from scratch,
    the encoder output is nearly the same for every input (which otherwise lets the contrastive
    loss settle at ln B with all embeddings equal).

    Its running statistics lag the weights while they move fast; the pretraining task therefore
    re-estimates them with the current weights before each validation
    (:func:`velvet.pretraining.precise_bn.recalibrate_batch_norm`). Under DDP each rank normalises
    its own shard, so ``"batch"`` suits runs with a reasonable per-device batch.

    Args:
        in_dim: input width.
        out_dim: output width ``E``.
        norm: ``"none"`` or ``"batch"``.
    """

    def __init__(self, in_dim: int, out_dim: int, *, norm: Literal["none", "batch"] = "none") -> None:
        super().__init__()
        if norm not in ("none", "batch"):
            raise ValueError(f"norm must be 'none' or 'batch', got {norm!r}")
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.BatchNorm1d(out_dim, affine=False) if norm == "batch" else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Project ``(..., in_dim)`` to ``(..., out_dim)``.

        Args:
            x: ``(..., in_dim)`` features.
            mask: optional boolean ``(...)`` of valid positions (padded sentences/words): only
                those enter the batch statistics, and padded positions come back as zeros.
        """
        y = self.linear(x)
        if self.norm is None:
            return y
        if mask is None:
            return self.norm(y.reshape(-1, y.shape[-1])).reshape(y.shape)  # statistics over all positions
        out = y.new_zeros(y.shape)
        out[mask] = self.norm(y[mask])
        return out

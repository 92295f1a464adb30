"""Report-level image-text contrastive loss (CLIP) with cross-rank negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from velvet.losses import distributed as _dist

__all__ = ["ClipLoss"]


class ClipLoss(nn.Module):
    """Symmetric InfoNCE of CLIP (Radford et al. 2021) with label smoothing, as in VELVET-Med.

    ``L = 0.5 * [CE_ls(s * v t^T, y) + CE_ls(s * t v^T, y)]`` over L2-normalised ``v``, ``t``, with
    ``s`` the (clamped, learnable) logit scale from :class:`~velvet.losses.temperature.LogitScale`
    and ``y`` the diagonal.

    With ``gather=True`` under DDP the local rows are compared with the features of every rank
    ("local loss": ``B`` rows x ``world_size * B`` columns, targets offset by ``rank * B``); the
    mean of the per-rank losses equals the single-process loss on the concatenated batch, and the
    gradient convention is described in :mod:`velvet.losses.distributed`. Label smoothing spreads
    ``label_smoothing`` over all global columns, exactly as on the concatenated batch.

    Args:
        label_smoothing: CE label smoothing in [0, 1) (0.1 in VELVET-Med).
        gather: gather negatives from all DDP ranks (no effect when not distributed).
        name: output key prefix; the loss is returned as ``f"{name}_loss"``.

    Raises:
        ValueError: if ``label_smoothing`` is outside [0, 1).
    """

    def __init__(self, label_smoothing: float = 0.1, gather: bool = True, name: str = "itc_report"):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.gather = gather
        self.name = name

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        logit_scale: torch.Tensor,
        *,
        return_logits: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Compute the symmetric contrastive loss.

        Args:
            image: ``(B, E)`` float image embeddings (any norm; normalised here).
            text: ``(B, E)`` float text embeddings of the paired reports (normalised here).
            logit_scale: 0-dim (or 1-element) float tensor, ``1 / temperature``, already clamped.
            return_logits: also return the logits (for retrieval metrics and ITM hard negatives).

        Returns:
            ``{f"{name}_loss": ()}``, plus with ``return_logits`` ``"logits_per_image": (B, N)``
            (local images vs all texts) and ``"logits_per_text": (B, N)`` (local texts vs all
            images), where ``N = world_size * B`` when gathering, else ``B``. Targets are the
            columns ``rank * B + arange(B)``.

        Raises:
            ValueError: on mismatched or non-2-D inputs, or a non-scalar ``logit_scale``.
        """
        if image.dim() != 2 or image.shape != text.shape:
            raise ValueError(
                f"image and text must both be (B, E); got {tuple(image.shape)}, {tuple(text.shape)}"
            )
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must be a scalar tensor, got shape {tuple(logit_scale.shape)}")
        image = F.normalize(image, dim=-1)
        text = F.normalize(text, dim=-1)
        scale = logit_scale.reshape(())
        b = image.shape[0]
        if self.gather and _dist.world_size() > 1:
            all_image = _dist.all_gather_with_grad(image)  # (N, E)
            all_text = _dist.all_gather_with_grad(text)  # (N, E)
            offset = _dist.rank_offset(b)
        else:
            all_image, all_text, offset = image, text, 0
        logits_per_image = scale * image @ all_text.T  # (B, N)
        logits_per_text = scale * text @ all_image.T  # (B, N)
        labels = torch.arange(b, device=image.device) + offset
        loss = 0.5 * (
            F.cross_entropy(logits_per_image, labels, label_smoothing=self.label_smoothing)
            + F.cross_entropy(logits_per_text, labels, label_smoothing=self.label_smoothing)
        )
        out = {f"{self.name}_loss": loss}
        if return_logits:
            out["logits_per_image"] = logits_per_image
            out["logits_per_text"] = logits_per_text
        return out

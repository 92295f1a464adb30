"""SimCLR NT-Xent loss over two views, with cross-rank negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from velvet.losses import distributed as _dist

__all__ = ["NTXentLoss"]


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020).

    Over the ``2B`` L2-normalised views ``z = [z1; z2]``: ``L = mean_a -log(exp(z_a . z_p(a) / tau)
    / sum_{c != a} exp(z_a . z_c / tau))``, where ``p(a)`` is the other view of the same sample.

    With ``gather=True`` under DDP each rank's ``2B`` local views are the rows and the ``2N`` views
    of all ranks (``[Z1; Z2]``, ``N = world_size * B``) are the columns, so the mean of the
    per-rank losses equals the single-process loss on the concatenated batch (gradient
    convention: :mod:`velvet.losses.distributed`).

    Args:
        temperature: ``tau`` (0.5 in VELVET-Med's vision SSL, fixed).
        gather: gather negatives from all DDP ranks (no effect when not distributed).
        name: output key prefix; the loss is returned as ``f"{name}_loss"``.

    Raises:
        ValueError: if ``temperature`` is not positive.
    """

    def __init__(self, temperature: float = 0.5, gather: bool = True, name: str = "vis_contrast"):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather = gather
        self.name = name

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute NT-Xent.

        Args:
            z1: ``(B, E)`` float projections of the first views (normalised here).
            z2: ``(B, E)`` float projections of the second views, row ``b`` pairs with ``z1[b]``.

        Returns:
            ``{f"{name}_loss": ()}`` scalar loss.

        Raises:
            ValueError: on mismatched or non-2-D inputs.
        """
        if z1.dim() != 2 or z1.shape != z2.shape:
            raise ValueError(f"z1 and z2 must both be (B, E); got {tuple(z1.shape)}, {tuple(z2.shape)}")
        z1 = F.normalize(z1, dim=-1)
        z2 = F.normalize(z2, dim=-1)
        b = z1.shape[0]
        if self.gather and _dist.world_size() > 1:
            all_z1 = _dist.all_gather_with_grad(z1)  # (N, E)
            all_z2 = _dist.all_gather_with_grad(z2)  # (N, E)
            offset = _dist.rank_offset(b)
        else:
            all_z1, all_z2, offset = z1, z2, 0
        n = all_z1.shape[0]
        rows = torch.cat([z1, z2])  # (2B, E)
        logits = rows @ torch.cat([all_z1, all_z2]).T / self.temperature  # (2B, 2N)
        local = torch.arange(b, device=z1.device) + offset
        self_cols = torch.cat([local, local + n])  # column of each row's own view
        pos_cols = torch.cat([local + n, local])  # column of each row's other view
        # a view is never its own negative
        logits = logits.scatter(1, self_cols[:, None], float("-inf"))
        return {f"{self.name}_loss": F.cross_entropy(logits, pos_cols)}

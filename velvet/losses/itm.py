"""Image-text matching (ALBEF-style) with hard negatives sampled from the contrastive similarities.

How the pretraining task combines the pieces (method.md section 4.3):

1. ``ClipLoss(..., return_logits=True)`` gives ``logits_per_image (B, N)`` (local images vs all
   texts) and ``logits_per_text (B, N)`` (local texts vs all images), already divided by the
   temperature; ``N = world_size * B`` under DDP, else ``B``.
2. ``sample_hard_negatives(logits_per_image.detach(), sim_t2i=logits_per_text.detach(),
   local_offset=rank_offset(B))`` returns, for each local image, the global index of a negative
   text, and for each local text, the global index of a negative image.
3. The fusion layers score ``3B`` pairs, in this order: the ``B`` positives (image b, text b), the
   ``B`` pairs (image b, negative text), the ``B`` pairs (negative image, text b). Under DDP the
   negatives are rows of the *gathered* batch: the task gathers the text hidden states (padded,
   with their masks) and the visual tokens with :func:`~velvet.losses.distributed.all_gather_padded`
   / :func:`~velvet.losses.distributed.all_gather_with_grad` and indexes them with these indices.
4. ``ITMLoss()(logits)`` with the ``(3B, 2)`` match logits; labels default to ``[1]*B + [0]*2B``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ITMLoss", "itm_labels", "sample_hard_negatives"]


def _sample_rows(
    sim: torch.Tensor, positive: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Draw one column per row with probability softmax(sim) restricted to the non-positive columns."""
    # masking the positive logit with -inf before the softmax is the same distribution as zeroing
    # its softmax weight and renormalising, but never underflows to an all-zero row
    logits = sim.detach().float().scatter(1, positive[:, None], float("-inf"))
    weights = logits.softmax(dim=1)  # (B, N)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (B,)


def sample_hard_negatives(
    sim_i2t: torch.Tensor,
    *,
    local_offset: int,
    sim_t2i: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one hard negative text per local image and one hard negative image per local text.

    ALBEF (Li et al. 2021): the probability of picking column ``c`` for row ``b`` is
    ``softmax(sim[b])_c`` with the positive column ``b + local_offset`` excluded. One
    ``torch.multinomial`` call per direction (row-wise over the 2-D weights), no loop per sample.

    Args:
        sim_i2t: ``(B, N)`` float similarities of the local images to all texts (logits, i.e.
            already divided by the temperature); gradients are not used.
        local_offset: global index of the first local row (``rank * B``; 0 without DDP).
        sim_t2i: ``(B, N)`` float similarities of the local texts to all images; may be omitted
            when ``sim_i2t`` is square (single process), where it is ``sim_i2t.T``.
        generator: random generator on ``sim_i2t.device`` for reproducible draws.

    Returns:
        ``(neg_text_idx, neg_image_idx)``: two ``(B,)`` int64 tensors of global indices in ``0..N-1``,
        never the positive.

    Raises:
        ValueError: if ``N < 2`` (ITM needs at least 2 pairs), on bad shapes or offset, or if
            ``sim_t2i`` is missing for a non-square ``sim_i2t``.
    """
    if sim_i2t.dim() != 2:
        raise ValueError(f"sim_i2t must be (B, N), got {tuple(sim_i2t.shape)}")
    b, n = sim_i2t.shape
    if n < 2:
        raise ValueError(f"ITM needs at least 2 pairs in the (gathered) batch to draw negatives, got {n}")
    if not 0 <= local_offset <= n - b:
        raise ValueError(f"local_offset {local_offset} does not fit {b} local rows among {n} columns")
    if sim_t2i is None:
        if b != n:
            raise ValueError("sim_t2i is required when sim_i2t is not square (gathered columns)")
        sim_t2i = sim_i2t.T
    if sim_t2i.shape != sim_i2t.shape:
        raise ValueError(f"sim_t2i must have the shape of sim_i2t {(b, n)}, got {tuple(sim_t2i.shape)}")
    positive = torch.arange(b, device=sim_i2t.device) + local_offset
    neg_text = _sample_rows(sim_i2t, positive, generator)
    neg_image = _sample_rows(sim_t2i, positive, generator)
    return neg_text, neg_image


def itm_labels(
    num_positive: int, num_negative: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """``(num_positive + num_negative,)`` int64 labels: 1 (match) for the positives first, then 0."""
    return torch.cat([
        torch.ones(num_positive, dtype=torch.long, device=device),
        torch.zeros(num_negative, dtype=torch.long, device=device),
    ])  # fmt: skip


class ITMLoss(nn.Module):
    """Binary image-text matching cross-entropy: ``L = mean CE(logits, match labels)``.

    Class 1 is "match", class 0 "no match". The default layout is the one of the module docstring:
    ``B`` positives then ``2B`` negatives.

    Args:
        name: output key prefix; the loss is returned as ``f"{name}_loss"``.
    """

    def __init__(self, name: str = "itm"):
        super().__init__()
        self.name = name

    def forward(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Compute the ITM loss.

        Args:
            logits: ``(3B, 2)`` float match logits (positives, image+negative text, negative
                image+text), or any ``(M, 2)`` when ``labels`` is given.
            labels: ``(M,)`` int64 in {0, 1}, or None for ``[1]*B + [0]*2B``.

        Returns:
            ``{f"{name}_loss": ()}`` scalar loss.

        Raises:
            ValueError: on a wrong logits shape, or a row count not divisible by 3 without labels.
        """
        if logits.dim() != 2 or logits.shape[1] != 2:
            raise ValueError(f"logits must be (M, 2), got {tuple(logits.shape)}")
        if labels is None:
            if logits.shape[0] % 3:
                raise ValueError(f"without labels, logits must have 3B rows, got {logits.shape[0]}")
            b = logits.shape[0] // 3
            labels = itm_labels(b, 2 * b, device=logits.device)
        elif labels.shape != logits.shape[:1]:
            raise ValueError(f"labels must be ({logits.shape[0]},), got {tuple(labels.shape)}")
        return {f"{self.name}_loss": F.cross_entropy(logits, labels)}

"""Masked language modelling: BERT token masking and the MLM cross-entropy.

Used twice in VELVET-Med: text-only MLM on the text layers (``MLMLoss(name="txt_mlm")``) and
vision-conditioned MLM through the fusion layers (``MLMLoss(name="mm_mlm")``), each with its own
independent call of :func:`mask_tokens`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["IGNORE_INDEX", "MLMLoss", "mask_tokens"]

IGNORE_INDEX = -100


def _force_one_selection(
    selected: torch.Tensor, maskable: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Select one random maskable token in every row that has maskable tokens but no selection."""
    scores = torch.rand(maskable.shape, generator=generator, device=maskable.device)
    scores = scores.masked_fill(~maskable, -1.0)
    pick = scores.argmax(dim=1, keepdim=True)  # (B, 1), a uniformly random maskable position
    needs = maskable.any(dim=1, keepdim=True) & ~selected.any(dim=1, keepdim=True)  # (B, 1)
    forced = torch.zeros_like(selected).scatter_(1, pick, True) & needs
    return selected | forced


def mask_tokens(
    input_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
    random_token_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (Devlin et al. 2019): select 15 % of the tokens, then 80 / 10 / 10.

    Each token that is not special is selected with ``probability``; of the selected tokens 80 %
    become ``mask_token_id``, 10 % a random id and 10 % stay unchanged. Special tokens (``[CLS]``,
    ``[SEN_k]``, padding: whatever ``special_tokens_mask`` marks) are never selected or replaced.
    Every row with at least one maskable token gets at least one selected token (one is drawn
    uniformly among its maskable tokens when the Bernoulli draw selected none), so a short text
    never yields an all-ignored row; this raises the selection rate of very short rows slightly.

    Args:
        input_ids: ``(B, L)`` int64 token ids.
        special_tokens_mask: ``(B, L)`` bool, True on tokens that must never be masked.
        mask_token_id: id of ``[MASK]``.
        vocab_size: vocabulary size, for uniform random replacements when ``random_token_ids`` is
            None.
        probability: selection probability (0.15).
        generator: random generator on ``input_ids.device`` for reproducible masks; None uses the
            global RNG.
        random_token_ids: ``(V',)`` int64 ids to draw random replacements from (e.g. all
            non-special ids, so a replacement is never ``[SEN_k]``/``[CLS]``/``[PAD]``); None draws
            uniformly from ``0..vocab_size-1``.

    Returns:
        ``(masked_ids, labels)``: ``masked_ids (B, L)`` int64 with the replacements applied (a new
        tensor), ``labels (B, L)`` int64 with the original id at selected positions and
        ``IGNORE_INDEX`` (-100) elsewhere.

    Raises:
        ValueError: on mismatched shapes, a probability outside (0, 1], or empty ``random_token_ids``.
    """
    if input_ids.dim() != 2 or special_tokens_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids and special_tokens_mask must both be (B, L); got "
            f"{tuple(input_ids.shape)}, {tuple(special_tokens_mask.shape)}"
        )
    if not 0.0 < probability <= 1.0:
        raise ValueError(f"probability must be in (0, 1], got {probability}")
    if random_token_ids is not None and random_token_ids.numel() == 0:
        raise ValueError("random_token_ids must not be empty")
    device = input_ids.device
    maskable = ~special_tokens_mask.bool()
    draw = torch.rand(input_ids.shape, generator=generator, device=device)
    selected = _force_one_selection((draw < probability) & maskable, maskable, generator)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

    # one uniform per token decides the 80 / 10 / 10 split of the selected ones
    split = torch.rand(input_ids.shape, generator=generator, device=device)
    to_mask = selected & (split < 0.8)
    to_random = selected & (split >= 0.8) & (split < 0.9)
    if random_token_ids is None:
        random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=device)
    else:
        pool = random_token_ids.to(device=device, dtype=input_ids.dtype)
        idx = torch.randint(pool.numel(), input_ids.shape, generator=generator, device=device)
        random_ids = pool[idx]
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_ids.to(input_ids.dtype), masked)
    return masked, labels


class MLMLoss(nn.Module):
    """Mean token cross-entropy over the masked positions: ``L = mean_{labels != -100} CE``.

    A batch without any labelled position gives 0 (not NaN), with the graph kept so every
    parameter still receives a (zero) gradient under DDP. Under DDP each rank averages over its
    own labelled tokens (the usual convention; token counts differ slightly between ranks).

    Args:
        name: output key prefix (``"txt_mlm"`` for text MLM, ``"mm_mlm"`` for the vision-conditioned
            MLM); the loss is returned as ``f"{name}_loss"``.
    """

    def __init__(self, name: str = "txt_mlm"):
        super().__init__()
        self.name = name

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the MLM loss.

        Args:
            logits: ``(B, L, V)`` float vocabulary logits.
            labels: ``(B, L)`` int64 original ids at masked positions, -100 elsewhere.

        Returns:
            ``{f"{name}_loss": ()}`` scalar loss.

        Raises:
            ValueError: on mismatched shapes.
        """
        if logits.dim() != 3 or labels.shape != logits.shape[:2]:
            raise ValueError(
                f"logits must be (B, L, V) and labels (B, L); got "
                f"{tuple(logits.shape)}, {tuple(labels.shape)}"
            )
        total = F.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        # sum / count avoids the NaN of a mean over zero labels, and needs no host sync to check
        count = (labels != IGNORE_INDEX).sum().clamp_min(1)
        return {f"{self.name}_loss": total / count}

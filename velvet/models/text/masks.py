"""Attention masks for TriBERT: the tri-level sentence mask and its 4D form for BERT layers.

:func:`sentence_attention_mask` (method.md 2.4: ``[SEN_k]`` rows see only ``[CLS]`` and their own
sentence, padding rows only themselves) is :func:`velvet.data.attention_mask.sentence_attention_mask`,
re-exported here.

Masks here are boolean, True where attention is allowed. :func:`attention_bias` turns them into the
format of the installed transformers attention functions: ``sdpa`` takes a ``(B, 1, Lq, Lk)`` bool
mask as is, ``eager`` adds a float mask (0 where allowed, the dtype's minimum where not) to the scores.
"""

from __future__ import annotations

from typing import Literal

import torch

# The tri-level mask lives beside the tokenizer that defines the layout; one copy of the rule.
from velvet.data.attention_mask import sentence_attention_mask

__all__ = ["attention_bias", "key_padding_mask", "sentence_attention_mask"]


def key_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A plain BERT padding mask: every query attends to every real token.

    Args:
        attention_mask: ``(B, L)`` bool (or 0/1), True on real tokens.

    Returns:
        ``(B, 1, L)`` bool, broadcastable over queries (the layout ``BertModel`` uses). A sequence with
        no real token at all attends everywhere instead of nowhere (no NaN).
    """
    valid = attention_mask.bool()
    valid = valid | ~valid.any(dim=1, keepdim=True)
    return valid[:, None, :]


def attention_bias(
    mask: torch.Tensor, *, implementation: Literal["eager", "sdpa"], dtype: torch.dtype
) -> torch.Tensor:
    """Convert a boolean mask to the 4D mask the BERT attention interface expects.

    Args:
        mask: ``(B, Lq, Lk)`` bool, True where attention is allowed (``Lq`` may be 1 to broadcast).
        implementation: the config's ``attn_implementation``.
        dtype: dtype of the attention scores (the hidden states' dtype), for the eager additive mask.

    Returns:
        ``(B, 1, Lq, Lk)``: bool for ``sdpa``; float ``dtype`` with 0 / ``finfo(dtype).min`` for ``eager``.
    """
    mask = mask[:, None]  # (B, 1, Lq, Lk): one mask shared by all heads
    if implementation == "sdpa":
        return mask
    if implementation == "eager":
        zero = torch.zeros((), dtype=dtype, device=mask.device)
        return torch.where(mask, zero, torch.finfo(dtype).min)
    raise ValueError(f"implementation must be 'eager' or 'sdpa', got {implementation!r}")

"""The TriBERT "tri-level" self-attention mask (method.md 2.4), built by broadcasting."""

from __future__ import annotations

import torch

__all__ = ["sentence_attention_mask"]


def sentence_attention_mask(
    sentence_ids: torch.Tensor,
    sentence_token_mask: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Which key each query token may attend to in the TriBERT layout.

    Every token attends to every non-padding token, except the ``[SEN_k]`` rows: a ``[SEN_k]``
    token sees only position 0 (``[CLS]``) and the tokens of its own sentence (itself included).
    Padding rows attend to themselves only: never an all-masked row (SDPA would return NaN), and
    no real token depends on them. (Same rule as :func:`velvet.models.text.masks.sentence_attention_mask`.)

    Args:
        sentence_ids: ``(B, L)`` int64 sentence index of each token (``[CLS]`` 0, padding -1).
        sentence_token_mask: ``(B, L)`` bool, True on ``[SEN_k]`` tokens.
        attention_mask: ``(B, L)`` bool (or 0/1), True on real tokens.

    Returns:
        ``(B, L, L)`` bool, ``[b, query, key]`` True where the query may attend to the key.

    Example:
        >>> mask = sentence_attention_mask(batch["sentence_ids"], batch["sentence_token_mask"],
        ...                                batch["attention_mask"])  # doctest: +SKIP
    """
    if (
        not (sentence_ids.shape == sentence_token_mask.shape == attention_mask.shape)
        or sentence_ids.dim() != 2
    ):
        raise ValueError(
            "sentence_ids, sentence_token_mask and attention_mask must all be (B, L); got "
            f"{tuple(sentence_ids.shape)}, {tuple(sentence_token_mask.shape)}, {tuple(attention_mask.shape)}"
        )
    real = attention_mask.bool()
    positions = torch.arange(real.shape[1], device=real.device)
    same_sentence = sentence_ids[:, :, None] == sentence_ids[:, None, :]  # (B, L, L)
    restricted = sentence_token_mask.bool()[:, :, None]  # (B, L, 1): [SEN_k] query rows
    mask = real[:, None, :] & (~restricted | same_sentence | (positions == 0))  # (B, L, L)
    padding_rows = ~real[:, :, None]  # (B, L, 1)
    return torch.where(padding_rows, positions[:, None] == positions[None, :], mask)

"""Report, word and sentence vectors from TriBERT token states (method.md 2.5), vectorised.

The reference merges sub-word pieces with a Python loop over tokens and forgets the last word of a
sequence without padding; here every level is one ``index_add`` over flattened ``(b, id)`` slots.
Tokens that belong to no slot (``[CLS]``, ``[SEN_k]`` for words, padding) are routed to one extra
"dump" row that is dropped afterwards, which keeps every shape static except ``T`` and ``S``.
"""

from __future__ import annotations

from typing import TypedDict

import torch

__all__ = ["PooledText", "pool_text"]


class PooledText(TypedDict):
    """Output of :func:`pool_text`.

    Keys:
        report: ``(B, E)`` the ``[CLS]`` vector.
        words: ``(B, T, E)`` merged words (sum of their pieces), zero where ``word_mask`` is False.
        word_mask: ``(B, T)`` bool, True on real words.
        sentences: ``(B, S, E)`` sentence vectors, zero where ``sentence_mask`` is False.
        sentence_mask: ``(B, S)`` bool, True on real sentences.
    """

    report: torch.Tensor
    words: torch.Tensor
    word_mask: torch.Tensor
    sentences: torch.Tensor
    sentence_mask: torch.Tensor


def _count(required: int, given: int | None, name: str) -> int:
    if given is None:
        return required
    if given < required:
        raise ValueError(f"{name}={given} is smaller than the {required} the batch needs")
    return given


def _scatter_sum(values: torch.Tensor, slots: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Sum ``values (M, ...)`` into ``num_slots`` rows; slot ``num_slots`` is the dropped dump row."""
    out = values.new_zeros((num_slots + 1, *values.shape[1:]))
    return out.index_add(0, slots, values)[:num_slots]


def pool_text(
    hidden: torch.Tensor,
    word_ids: torch.Tensor,
    sentence_ids: torch.Tensor,
    sentence_token_mask: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    sentence_modeling: bool = True,
    max_words: int | None = None,
    max_sentences: int | None = None,
) -> PooledText:
    """Pool token states into report, word and sentence vectors.

    - report: the ``[CLS]`` vector (position 0);
    - word ``t``: the sum of the vectors of the pieces with ``word_ids == t``;
    - sentence ``k``: the mean over the merged vectors of the sentence, i.e. its ``[SEN_k]`` vector and
      its merged words, so the divisor is ``1 + number of words`` (not the number of pieces). With
      ``sentence_modeling=False`` there is no ``[SEN_k]``: each report is one sentence, the mean of all
      its merged words (``sentence_ids`` is ignored).

    Args:
        hidden: ``(B, L, E)`` token states.
        word_ids: ``(B, L)`` int64 merged-word index 0..T-1 of each piece, -1 elsewhere.
        sentence_ids: ``(B, L)`` int64 sentence index 1..S, 0 for ``[CLS]``, -1 for padding.
        sentence_token_mask: ``(B, L)`` bool, True on ``[SEN_k]`` tokens.
        attention_mask: ``(B, L)`` bool, True on real tokens.
        sentence_modeling: whether the batch has the ``[SEN_k]`` layout.
        max_words: pad ``T`` to this size (e.g. equal shapes on every DDP rank); default: the batch max.
        max_sentences: pad ``S`` to this size; default: the batch max.

    Returns:
        A :class:`PooledText` dict.

    Raises:
        ValueError: ``max_words``/``max_sentences`` smaller than the batch needs.
    """
    batch, length, width = hidden.shape
    flat_hidden = hidden.reshape(batch * length, width)  # (B*L, E)
    valid = attention_mask.bool()
    row = torch.arange(batch, device=hidden.device)[:, None]  # (B, 1)

    # Words: piece -> slot b*T + word_id.
    is_piece = valid & (word_ids >= 0)
    num_words = _count(
        int(word_ids.max().clamp(min=-1)) + 1 if word_ids.numel() else 0, max_words, "max_words"
    )
    word_slots = torch.where(is_piece, row * num_words + word_ids, batch * num_words).flatten()  # (B*L,)
    words = _scatter_sum(flat_hidden, word_slots, batch * num_words)  # (B*T, E)
    pieces = _scatter_sum(is_piece.flatten().to(hidden.dtype), word_slots, batch * num_words)  # (B*T,)
    word_mask = pieces > 0

    # Sentence of each word: all its pieces share one sentence id, so any reduction picks it.
    if sentence_modeling:
        word_sentence = torch.full(
            (batch * num_words + 1,), -1, dtype=sentence_ids.dtype, device=hidden.device
        )
        word_sentence = word_sentence.scatter_reduce(0, word_slots, sentence_ids.flatten(), "amax")[:-1]
        num_sentences = int(sentence_ids.max().clamp(min=0)) if sentence_ids.numel() else 0
    else:
        word_sentence = torch.ones(batch * num_words, dtype=torch.long, device=hidden.device)
        num_sentences = 1
    num_sentences = _count(num_sentences, max_sentences, "max_sentences")

    # Sentences: merged words and [SEN_k] tokens -> slot b*S + (k - 1).
    dump = batch * num_sentences
    word_row = torch.arange(batch, device=hidden.device).repeat_interleave(num_words)  # (B*T,)
    word_in_sentence = word_mask & (word_sentence >= 1)
    sentence_of_word = torch.where(word_in_sentence, word_row * num_sentences + word_sentence - 1, dump)
    totals = _scatter_sum(words, sentence_of_word, dump)  # (B*S, E)
    counts = _scatter_sum(word_in_sentence.to(hidden.dtype), sentence_of_word, dump)  # (B*S,)
    if sentence_modeling:
        is_sen = valid & sentence_token_mask.bool() & (sentence_ids >= 1)
        sen_slots = torch.where(is_sen, row * num_sentences + sentence_ids - 1, dump).flatten()
        totals = totals + _scatter_sum(flat_hidden, sen_slots, dump)
        counts = counts + _scatter_sum(is_sen.flatten().to(hidden.dtype), sen_slots, dump)
    sentence_mask = counts > 0
    sentences = totals / counts.clamp(min=1)[:, None]

    return PooledText(
        report=hidden[:, 0],
        words=words.view(batch, num_words, width),  # (B, T, E)
        word_mask=word_mask.view(batch, num_words),
        sentences=sentences.view(batch, num_sentences, width),  # (B, S, E)
        sentence_mask=sentence_mask.view(batch, num_sentences),
    )

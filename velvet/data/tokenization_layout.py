"""Numpy construction of the TriBERT layout from flat piece arrays (no per-token Python loops).

Used by :class:`velvet.data.tokenization.TriBertTokenizer`. Inputs are the word-piece ids of all
sentences of the batch concatenated (report-major, sentence order), the pieces per sentence and
the sentences per report; every output is built with cumulative sums, ``np.repeat`` and one
fancy-indexed scatter per token kind into ``(B, L)`` arrays.

Shapes: ``P`` pieces, ``S`` sentences and ``B`` reports of the batch, ``L`` the padded length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["build_plain_layout", "build_sentence_layout", "gather_sentences", "kept_sentences"]


def kept_sentences(count: int, max_sentences: int, seed: int, key: bytes) -> np.ndarray:
    """Indices of the sentences kept when a report has more than ``max_sentences`` (sorted).

    The choice depends only on (``seed``, ``key``), through blake2b rather than Python's salted
    ``hash``, so it is the same in every process and every run.
    """
    if count <= max_sentences:
        return np.arange(count)
    digest = hashlib.blake2b(int(seed).to_bytes(8, "little", signed=True) + key, digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    return np.sort(rng.choice(count, size=max_sentences, replace=False))


def _ragged_take(lengths: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Flat indices of the segments ``rows`` of a ragged array with segment ``lengths``."""
    starts = np.cumsum(lengths) - lengths
    take = lengths[rows]
    offsets = np.repeat(starts[rows] - (np.cumsum(take) - take), take)
    return offsets + np.arange(int(take.sum()))


def gather_sentences(
    encoded: Sequence[tuple[np.ndarray, np.ndarray, bytes]],
    max_sentences: int | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the reports' encodings, dropping sentences beyond ``max_sentences``.

    Args:
        encoded: per report ``(piece ids (P_b,), pieces per sentence (S_b,), content key)``.
        max_sentences: the most sentences kept per report (None keeps all).
        seed: the dropping seed.

    Returns:
        ``ids (P,)``, ``lengths (S,)`` pieces per kept sentence, ``counts (B,)`` kept sentences.
    """
    ids, lengths, counts = [], [], []
    for piece_ids, sentence_lengths, key in encoded:
        if max_sentences is not None and len(sentence_lengths) > max_sentences:
            keep = kept_sentences(len(sentence_lengths), max_sentences, seed, key)
            piece_ids = piece_ids[_ragged_take(sentence_lengths, keep)]
            sentence_lengths = sentence_lengths[keep]
        ids.append(piece_ids)
        lengths.append(sentence_lengths)
        counts.append(len(sentence_lengths))
    return np.concatenate(ids), np.concatenate(lengths), np.asarray(counts, dtype=np.int64)


def _empty_batch(batch: int, length: int, pad_token_id: int) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.full((batch, length), pad_token_id, dtype=np.int64),
        "attention_mask": np.zeros((batch, length), dtype=bool),
        "token_type_ids": np.zeros((batch, length), dtype=np.int64),
        "sentence_ids": np.full((batch, length), -1, dtype=np.int64),
        "sentence_token_mask": np.zeros((batch, length), dtype=bool),
        "word_ids": np.full((batch, length), -1, dtype=np.int64),
        "special_tokens_mask": np.ones((batch, length), dtype=bool),
    }


def _padded_length(lengths: np.ndarray, multiple: int, max_length: int) -> int:
    longest = int(lengths.max())
    return min(-(-longest // multiple) * multiple, max_length)


def build_sentence_layout(
    ids: np.ndarray,
    lengths: np.ndarray,
    counts: np.ndarray,
    *,
    sen_token_ids: np.ndarray,
    cls_token_id: int,
    pad_token_id: int,
    is_continuation: np.ndarray,
    max_length: int,
    max_sentence_tokens: int,
    pad_to_multiple_of: int,
) -> dict[str, np.ndarray]:
    """``[CLS] [SEN_1] w ... [SEN_2] w ... [PAD]`` arrays (the keys of :class:`~velvet.types.TextBatch`).

    Args:
        ids: ``(P,)`` piece ids of the kept sentences.
        lengths: ``(S,)`` pieces per sentence.
        counts: ``(B,)`` sentences per report; every report has at least one piece.
        sen_token_ids: ``(K,)`` ids of ``[SEN_1]``..``[SEN_K]``.
        cls_token_id, pad_token_id: special ids.
        is_continuation: ``(V,)`` bool, True for ``##`` pieces (they do not start a word).
        max_length: ``L`` cap; longer reports lose their end, never leaving a ``[SEN_k]`` last.
        max_sentence_tokens: pieces kept per sentence.
        pad_to_multiple_of: the padded length is a multiple of this (capped at ``max_length``).
    """
    batch = len(counts)
    # sentences without pieces (text the normaliser removes entirely) would leave a bare [SEN_k]
    if (lengths == 0).any():
        nonempty = lengths > 0
        counts = np.bincount(np.repeat(np.arange(batch), counts)[nonempty], minlength=batch)
        lengths = lengths[nonempty]
    report_of_sentence = np.repeat(np.arange(batch), counts)  # (S,)
    sentence_of_piece = np.repeat(np.arange(len(lengths)), lengths)  # (P,)
    piece_in_sentence = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    if (lengths > max_sentence_tokens).any():
        keep = piece_in_sentence < max_sentence_tokens
        ids, sentence_of_piece, piece_in_sentence = (
            ids[keep],
            sentence_of_piece[keep],
            piece_in_sentence[keep],
        )
        lengths = np.minimum(lengths, max_sentence_tokens)
    report_of_piece = report_of_sentence[sentence_of_piece]
    # 0-based sentence index within its report -> [SEN_{k+1}], token type / sentence id k+1
    first_sentence = np.cumsum(counts) - counts  # (B,)
    k = np.arange(len(lengths)) - first_sentence[report_of_sentence]
    # flat position in the concatenation of all rows: tokens before + CLS/SEN markers before
    piece_flat = np.arange(len(ids)) + sentence_of_piece + report_of_piece + 2
    sen_flat = (np.cumsum(lengths) - lengths) + np.arange(len(lengths)) + report_of_sentence + 1
    row_tokens = (
        1 + counts + np.bincount(report_of_sentence, weights=lengths, minlength=batch).astype(np.int64)
    )
    cls_flat = np.cumsum(row_tokens) - row_tokens
    piece_col = piece_flat - cls_flat[report_of_piece]
    sen_col = sen_flat - cls_flat[report_of_sentence]
    row_len = np.minimum(row_tokens, max_length)
    # a [SEN_k] in the last kept position would head an empty sentence: cut it too
    dangling = np.zeros(batch, dtype=bool)
    dangling[report_of_sentence[sen_col == row_len[report_of_sentence] - 1]] = True
    row_len -= dangling
    # words: a piece starts a word unless it is a "##" continuation (or heads a sentence)
    starts = ~is_continuation[ids] | (piece_in_sentence == 0)
    words_before = np.cumsum(starts) - starts
    first_piece = np.cumsum(row_tokens - 1 - counts) - (row_tokens - 1 - counts)  # (B,) every row has pieces
    word_id = words_before + starts - 1 - words_before[first_piece][report_of_piece]  # (P,)

    width = _padded_length(row_len, pad_to_multiple_of, max_length)
    out = _empty_batch(batch, width, pad_token_id)
    out["attention_mask"][:] = np.arange(width) < row_len[:, None]
    rows = np.arange(batch)
    out["input_ids"][rows, 0] = cls_token_id
    out["token_type_ids"][rows, 0] = 1
    out["sentence_ids"][rows, 0] = 0
    kept = sen_col < row_len[report_of_sentence]
    r, c, kk = report_of_sentence[kept], sen_col[kept], k[kept]
    out["input_ids"][r, c] = sen_token_ids[kk]
    out["token_type_ids"][r, c] = kk + 1
    out["sentence_ids"][r, c] = kk + 1
    out["sentence_token_mask"][r, c] = True
    kept = piece_col < row_len[report_of_piece]
    r, c = report_of_piece[kept], piece_col[kept]
    kk = k[sentence_of_piece[kept]] + 1
    out["input_ids"][r, c] = ids[kept]
    out["token_type_ids"][r, c] = kk
    out["sentence_ids"][r, c] = kk
    out["word_ids"][r, c] = word_id[kept]
    out["special_tokens_mask"][r, c] = False
    out["num_sentences"] = out["sentence_ids"].max(axis=1)
    out["num_words"] = out["word_ids"].max(axis=1) + 1
    return out


def build_plain_layout(
    ids: np.ndarray,
    pieces_per_report: np.ndarray,
    *,
    cls_token_id: int,
    sep_token_id: int,
    pad_token_id: int,
    is_continuation: np.ndarray,
    max_length: int,
    pad_to_multiple_of: int,
) -> dict[str, np.ndarray]:
    """``[CLS] pieces [SEP] [PAD]`` arrays: the layout without sentence modelling.

    Type id 1 on every real token; ``sentence_ids`` 1 on pieces and 0 on ``[CLS]``/``[SEP]``;
    ``word_ids`` -1 on ``[CLS]``/``[SEP]``; ``num_sentences`` 1. Longer reports keep their first
    ``max_length - 2`` pieces, then ``[SEP]``.

    Args:
        ids: ``(P,)`` piece ids of all reports, concatenated.
        pieces_per_report: ``(B,)`` pieces of each report, at least 1.
    """
    batch = len(pieces_per_report)
    report_of_piece = np.repeat(np.arange(batch), pieces_per_report)
    first_piece = np.cumsum(pieces_per_report) - pieces_per_report
    piece_col = np.arange(len(ids)) - first_piece[report_of_piece] + 1
    row_len = np.minimum(pieces_per_report + 2, max_length)
    starts = ~is_continuation[ids]
    starts[first_piece] = True  # every row has pieces
    words_before = np.cumsum(starts) - starts
    word_id = words_before + starts - 1 - words_before[first_piece][report_of_piece]  # (P,)

    width = _padded_length(row_len, pad_to_multiple_of, max_length)
    out = _empty_batch(batch, width, pad_token_id)
    real = np.arange(width) < row_len[:, None]
    out["attention_mask"][:] = real
    out["token_type_ids"][real] = 1
    rows = np.arange(batch)
    out["input_ids"][rows, 0] = cls_token_id
    out["sentence_ids"][rows, 0] = 0
    kept = piece_col < row_len[report_of_piece] - 1
    r, c = report_of_piece[kept], piece_col[kept]
    out["input_ids"][r, c] = ids[kept]
    out["sentence_ids"][r, c] = 1
    out["word_ids"][r, c] = word_id[kept]
    out["special_tokens_mask"][r, c] = False
    out["input_ids"][rows, row_len - 1] = sep_token_id
    out["sentence_ids"][rows, row_len - 1] = 0
    out["num_sentences"] = np.ones(batch, dtype=np.int64)
    out["num_words"] = out["word_ids"].max(axis=1) + 1
    return out

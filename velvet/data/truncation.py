"""Truncation of reports to the tokenizer's limits: which sentences stay, and what a data set loses.

Used by :class:`~velvet.data.tokenization.TriBertTokenizer`: :func:`gather_sentences_kept` drops
sentences beyond ``max_sentences`` (seeded, optionally keeping the first and last),
:func:`fit_whole_sentences` picks the sentences that fit ``max_length`` from both ends, and
:class:`TruncationStats` reports per data set how many reports lose text and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from velvet.data.tokenization_layout import kept_sentences

__all__ = ["Truncation", "TruncationStats", "fit_whole_sentences", "gather_sentences_kept"]


class Truncation(NamedTuple):
    """Per report of a batch (``(B,)`` arrays): what the length limits took from it."""

    reports: np.ndarray  # 1 per report
    truncated: np.ndarray  # lost at least one word piece
    over_length: np.ndarray  # the whole report's layout is longer than max_length
    over_sentences: np.ndarray  # more than max_sentences sentences
    long_sentences: np.ndarray  # a sentence longer than max_sentence_tokens pieces
    last_sentence_lost: np.ndarray  # the last sentence is not kept whole
    sentences: np.ndarray
    lost_sentences: np.ndarray  # sentences of which no piece is kept
    pieces: np.ndarray
    lost_pieces: np.ndarray


@dataclass(frozen=True)
class TruncationStats:
    """How many reports of a data set lose text to the length limits (:meth:`TriBertTokenizer.truncation_stats`).

    Attributes:
        reports: reports counted (``skipped`` ones left out).
        truncated: reports that lose at least one word piece, for any reason below.
        over_length: reports whose layout is longer than ``max_length`` tokens.
        over_sentences: reports with more than ``max_sentences`` sentences.
        long_sentences: reports with a sentence of more than ``max_sentence_tokens`` pieces.
        last_sentence_lost: reports whose last sentence (the impression's end in CT-RATE) is not
            kept whole.
        sentences, lost_sentences: sentences in all, and sentences of which nothing is kept.
        pieces, lost_pieces: word pieces in all, and word pieces cut.
        skipped: reports that could not be tokenised (empty).
        truncated_indices, skipped_indices: their positions in the input.
        max_length, max_sentences, max_sentence_tokens, truncation: the tokenizer's limits
            (``max_sentences``/``max_sentence_tokens`` are None without sentence modelling).
    """

    reports: int
    truncated: int
    over_length: int
    over_sentences: int
    long_sentences: int
    last_sentence_lost: int
    sentences: int
    lost_sentences: int
    pieces: int
    lost_pieces: int
    skipped: int
    truncated_indices: tuple[int, ...]
    skipped_indices: tuple[int, ...]
    max_length: int
    max_sentences: int | None
    max_sentence_tokens: int | None
    truncation: str

    def __str__(self) -> str:
        def share(count: int, total: int) -> str:
            return f"{count:,} ({100 * count / total:.1f}%)" if total else f"{count:,}"

        causes = [f"{self.over_length:,} longer than {self.max_length} tokens"]
        if self.max_sentences is not None:
            causes.append(f"{self.over_sentences:,} with more than {self.max_sentences} sentences")
            causes.append(f"{self.long_sentences:,} with a sentence over {self.max_sentence_tokens} pieces")
        lines = [
            f"{self.reports:,} reports"
            + (f" ({self.skipped:,} empty ones skipped)" if self.skipped else "")
            + f", truncation {self.truncation!r}: {share(self.truncated, self.reports)} lose text "
            f"({', '.join(causes)})",
            f"last sentence (the impression in CT-RATE) not kept whole: {share(self.last_sentence_lost, self.reports)}",
            f"word pieces lost: {share(self.lost_pieces, self.pieces)}; "
            f"sentences lost entirely: {share(self.lost_sentences, self.sentences)}",
        ]
        return "\n".join(lines)


def gather_sentences_kept(
    encoded: Sequence[tuple[np.ndarray, np.ndarray, bytes]],
    max_sentences: int | None,
    seed: int,
    keep_ends: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the reports' encodings, dropping sentences beyond ``max_sentences``.

    Sentences are dropped as :func:`~velvet.data.tokenization_layout.gather_sentences` drops
    them (seeded by the report's content); with ``keep_ends`` (and ``max_sentences >= 2``) the
    first and last sentences are always kept and the others drawn from the middle ones. One
    Python step per report, none per token.

    Returns:
        ``ids (P,)``, ``lengths (S,)`` pieces per kept sentence, ``counts (B,)`` kept sentences,
        ``last_kept (B,)`` whether the last sentence is among the kept ones.
    """
    ids, lengths, counts = [], [], []
    last_kept = np.ones(len(encoded), dtype=bool)
    for index, (piece_ids, sentence_lengths, key) in enumerate(encoded):
        count = len(sentence_lengths)
        if max_sentences is not None and count > max_sentences:
            if keep_ends and max_sentences >= 2:
                middle = kept_sentences(count - 2, max_sentences - 2, seed, key) + 1
                keep = np.concatenate(([0], middle, [count - 1]))
            else:
                keep = kept_sentences(count, max_sentences, seed, key)
            last_kept[index] = keep[-1] == count - 1
            starts = np.cumsum(sentence_lengths) - sentence_lengths
            take = sentence_lengths[keep]
            flat = np.repeat(starts[keep] - (np.cumsum(take) - take), take) + np.arange(int(take.sum()))
            piece_ids = piece_ids[flat]
            sentence_lengths = take
        ids.append(piece_ids)
        lengths.append(sentence_lengths)
        counts.append(len(sentence_lengths))
    return np.concatenate(ids), np.concatenate(lengths), np.asarray(counts, dtype=np.int64), last_kept


def fit_whole_sentences(costs: np.ndarray, counts: np.ndarray, budget: int) -> np.ndarray:
    """Which sentences to keep so that each report's kept ``costs`` fit in ``budget`` (vectorised).

    Sentences are taken alternately from the start and the end of each report (first, last,
    second, second-last, ...) while the running total fits, so the middle ones go. The first
    sentence is always kept (the layout then cuts its end if it alone is too long).

    Args:
        costs: ``(S,)`` tokens of each sentence (its pieces, plus its ``[SEN_k]``), > 0.
        counts: ``(B,)`` sentences of each report, >= 1.
        budget: tokens a report may take.

    Returns:
        ``(S,)`` bool, True for the sentences kept.
    """
    report = np.repeat(np.arange(len(counts)), counts)
    first = np.cumsum(counts) - counts
    index = np.arange(len(costs)) - first[report]
    priority = np.minimum(2 * index, 2 * (counts[report] - 1 - index) + 1)
    order = np.lexsort((priority, report))  # report-major: each report keeps its block of positions
    sorted_costs = costs[order]
    running = np.cumsum(sorted_costs)
    within = running - (running - sorted_costs)[first][report]
    keep = np.empty(len(costs), dtype=bool)
    keep[order] = (within <= budget) | (priority[order] == 0)
    return keep

"""METEOR with exact and Porter-stem matching (no WordNet synonyms: not installable offline).

The variant is declared in :data:`velvet.metrics.nlg.NLG_DEFINITIONS`; see :mod:`velvet.metrics.nlg`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from velvet.metrics.nlg_text import References, Tokens, _prepare, _prepare_one
from velvet.metrics.porter import porter_stem

__all__ = ["mean_meteor", "meteor"]

# ----------------------------------------------------------------------------------------------
# METEOR (exact + stem)
# ----------------------------------------------------------------------------------------------

_Indexed = list[tuple[int, str]]


def _greedy_align(hyp: _Indexed, ref: _Indexed) -> tuple[list[tuple[int, int]], _Indexed, _Indexed]:
    """nltk's matching stage: from the last hypothesis word, take the last unused equal reference word.

    Returns:
        ``(matched (hyp position, ref position) pairs, unmatched hyp, unmatched ref)``.
    """
    positions: dict[str, list[int]] = {}
    for j, (_, word) in enumerate(ref):
        positions.setdefault(word, []).append(j)
    pairs: list[tuple[int, int]] = []
    used_hyp: set[int] = set()
    used_ref: set[int] = set()
    for i in range(len(hyp) - 1, -1, -1):
        free = positions.get(hyp[i][1])
        if free:
            j = free.pop()
            used_hyp.add(i)
            used_ref.add(j)
            pairs.append((hyp[i][0], ref[j][0]))
    rest_hyp = [item for i, item in enumerate(hyp) if i not in used_hyp]
    rest_ref = [item for j, item in enumerate(ref) if j not in used_ref]
    return pairs, rest_hyp, rest_ref


def _chunks(pairs: list[tuple[int, int]]) -> int:
    """Number of runs of matches adjacent in both texts (pairs sorted by hypothesis position)."""
    breaks = sum(1 for (h0, r0), (h1, r1) in pairwise(pairs) if not (h1 == h0 + 1 and r1 == r0 + 1))
    return 1 + breaks


def _meteor_pair(hyp: Tokens, ref: Tokens, alpha: float, beta: float, gamma: float) -> float:
    """METEOR of one hypothesis against one reference (exact, then stem matches)."""
    exact, rest_hyp, rest_ref = _greedy_align(list(enumerate(hyp)), list(enumerate(ref)))
    stemmed, _, _ = _greedy_align(
        [(i, porter_stem(w)) for i, w in rest_hyp], [(j, porter_stem(w)) for j, w in rest_ref]
    )
    pairs = sorted(exact + stemmed)
    if not pairs:
        return 0.0
    precision, recall = len(pairs) / len(hyp), len(pairs) / len(ref)
    f_mean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    penalty = gamma * (_chunks(pairs) / len(pairs)) ** beta
    return (1 - penalty) * f_mean


def _meteor_tokens(hyp: Tokens, refs: list[Tokens], alpha: float, beta: float, gamma: float) -> float:
    return max(_meteor_pair(hyp, ref, alpha, beta, gamma) for ref in refs)


def meteor(
    hypothesis: str,
    references: str | Sequence[str],
    alpha: float = 0.9,
    beta: float = 3.0,
    gamma: float = 0.5,
) -> float:
    """METEOR (exact + Porter-stem modules, no WordNet synonyms) of one text: the best over its references.

    Args:
        hypothesis: the generated text.
        references: a reference string or a sequence of reference strings.
        alpha: precision weight of ``Fmean = P R / (alpha P + (1 - alpha) R)``.
        beta: exponent of the fragmentation penalty.
        gamma: weight of the fragmentation penalty ``gamma * (chunks / matches) ** beta``.

    Returns:
        METEOR in ``[0, 1)``; 0 without a matched token.
    """
    hyp, refs = _prepare_one(hypothesis, references)
    return _meteor_tokens(hyp, refs, alpha, beta, gamma)


def mean_meteor(
    hypotheses: Sequence[str],
    references: References,
    alpha: float = 0.9,
    beta: float = 3.0,
    gamma: float = 0.5,
) -> float:
    """Mean over samples of :func:`meteor`.

    Args:
        hypotheses: one generated text per sample.
        references: per sample a reference string or a sequence of reference strings.
        alpha, beta, gamma: METEOR parameters (nltk's defaults).

    Returns:
        Mean METEOR.
    """
    hyps, refs = _prepare(hypotheses, references)
    return float(np.mean([_meteor_tokens(h, r, alpha, beta, gamma) for h, r in zip(hyps, refs, strict=True)]))

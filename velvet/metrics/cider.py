"""CIDEr-D (Vedantam et al. 2015) as pycocoevalcap computes it.

The variant is declared in :data:`velvet.metrics.nlg.NLG_DEFINITIONS`; see :mod:`velvet.metrics.nlg`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from velvet.metrics.nlg_text import NGram, References, Tokens, _check_order, _ngrams, _prepare

__all__ = ["cider_scores", "corpus_cider"]

# ----------------------------------------------------------------------------------------------
# CIDEr-D
# ----------------------------------------------------------------------------------------------


def _all_ngrams(tokens: Tokens, max_n: int) -> Counter[NGram]:
    counts: Counter[NGram] = Counter()
    for n in range(1, max_n + 1):
        counts.update(_ngrams(tokens, n))
    return counts


class _TfIdf:
    """TF-IDF vector of one text, split by n-gram order, as pycocoevalcap's ``counts2vec``."""

    def __init__(self, counts: Counter[NGram], df: Counter[NGram], log_docs: float, max_n: int) -> None:
        self.weights: list[dict[NGram, float]] = [{} for _ in range(max_n)]
        for gram, tf in counts.items():
            # An n-gram absent from every reference gets df 1 (log 1 = 0), i.e. the highest IDF.
            self.weights[len(gram) - 1][gram] = tf * (log_docs - math.log(max(1.0, df[gram])))
        self.norms = np.array([math.sqrt(sum(w * w for w in order.values())) for order in self.weights])
        # pycocoevalcap counts bigrams (length - 1); only differences of lengths are used, and an
        # empty text has an all-zero vector, so the token count gives identical scores.
        self.length = sum(tf for gram, tf in counts.items() if len(gram) == 1)


def _cider_similarity(hyp: _TfIdf, ref: _TfIdf, sigma: float) -> float:
    """Mean over orders of the clipped cosine similarity times the Gaussian length penalty."""
    dots = np.zeros(len(hyp.weights))
    for k, (hyp_order, ref_order) in enumerate(zip(hyp.weights, ref.weights, strict=True)):
        # CIDEr-D clipping: a hypothesis weight counts at most as much as the reference weight.
        dots[k] = sum(min(w, ref_order.get(g, 0.0)) * ref_order.get(g, 0.0) for g, w in hyp_order.items())
    denominators = hyp.norms * ref.norms
    cosines = np.divide(dots, denominators, out=np.zeros_like(dots), where=denominators != 0)
    delta = float(hyp.length - ref.length)
    return float(np.mean(cosines * math.exp(-(delta**2) / (2 * sigma**2))))


def _cider_tokens(hyps: list[Tokens], refs: list[list[Tokens]], max_n: int, sigma: float) -> np.ndarray:
    hyp_counts = [_all_ngrams(h, max_n) for h in hyps]
    ref_counts = [[_all_ngrams(r, max_n) for r in rs] for rs in refs]
    # Document frequency: in how many samples' reference sets the n-gram occurs (once per sample).
    df: Counter[NGram] = Counter()
    for sample in ref_counts:
        df.update(set().union(*sample))
    log_docs = math.log(float(len(hyps)))
    scores = np.zeros(len(hyps))
    for i, (h, rs) in enumerate(zip(hyp_counts, ref_counts, strict=True)):
        hyp_vec = _TfIdf(h, df, log_docs, max_n)
        total = sum(_cider_similarity(hyp_vec, _TfIdf(r, df, log_docs, max_n), sigma) for r in rs)
        scores[i] = 10.0 * total / len(rs)
    return scores


def cider_scores(
    hypotheses: Sequence[str], references: References, max_n: int = 4, sigma: float = 6.0
) -> np.ndarray:
    """Per-sample CIDEr-D, with IDF from the references of this set (as pycocoevalcap).

    Args:
        hypotheses: one generated text per sample.
        references: per sample a reference string or a sequence of reference strings.
        max_n: highest n-gram order.
        sigma: standard deviation of the Gaussian length penalty.

    Returns:
        ``(N,)`` scores on pycocoevalcap's scale (x10); all 0 for a set of one sample.
    """
    _check_order(max_n)
    hyps, refs = _prepare(hypotheses, references)
    return _cider_tokens(hyps, refs, max_n, sigma)


def corpus_cider(
    hypotheses: Sequence[str], references: References, max_n: int = 4, sigma: float = 6.0
) -> float:
    """CIDEr-D of a set: the mean of :func:`cider_scores`.

    Args:
        hypotheses: one generated text per sample.
        references: per sample a reference string or a sequence of reference strings.
        max_n: highest n-gram order.
        sigma: standard deviation of the Gaussian length penalty.

    Returns:
        CIDEr-D (x10 scale, as pycocoevalcap).
    """
    return float(cider_scores(hypotheses, references, max_n, sigma).mean())

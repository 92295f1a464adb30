"""Natural-language-generation metrics for open VQA answers and generated reports.

The reference code of the field (pycocoevalcap, nltk) scores raw or differently tokenised strings
and does not say which variant it computed. Here every score is computed on one declared
tokenisation and every variant is written into :data:`NLG_DEFINITIONS`, one line per key of
:func:`nlg_metrics`, so that a result file can record exactly what was measured.

Variants:

- **Tokenisation** (:data:`TOKENIZATION`, :func:`tokenize`): Unicode NFKC, lower-cased, curly
  apostrophes and the multiplication sign folded to ASCII, then split into numbers (``3.5``,
  ``18x12``), words (``t2-weighted``, ``patient's``) and single punctuation marks.
- **BLEU-n** (Papineni et al. 2002) is the cumulative BLEU over orders ``1..n`` with uniform weights
  ``1/n`` (as pycocoevalcap's B@1..B@4), on a 0..1 scale. Clipped n-gram counts use the maximum
  count over a hypothesis' references; the brevity penalty uses the closest reference length
  (ties: the shorter one). *Corpus* BLEU sums counts and lengths over the corpus and is not
  smoothed (= sacrebleu ``smooth_method="none"``). *Per-sample* BLEU is smoothed with Chen & Cherry
  (2014) method 2, the add-one of Lin & Och (2004): ``(matches + 1) / (total + 1)`` for orders
  ``n >= 2`` only (= sacrebleu ``smooth_method="add-k", smooth_value=1``), then averaged over
  samples. So a correct one-word answer scores 1, and a hypothesis shorter than ``n`` gets
  precision 1 for the orders it has no n-gram of (it is still scaled by the brevity penalty).
- **ROUGE-L** (Lin 2004): LCS-based ``F = (1 + beta^2) P R / (R + beta^2 P)`` with ``beta = 1.2``
  (pycocoevalcap's value; ``beta`` is an argument), per sample; with several references the best
  F over the references (pycocoevalcap instead combines the best P and the best R, which differs
  only with several references); mean over samples.
- **METEOR** (exact + stem modules, no WordNet synonyms): nltk's ``meteor_score`` algorithm. Exact
  matches first, then matches of Porter stems of the words left over, each stage aligning greedily
  from the last hypothesis word to the last unused reference occurrence (nltk's alignment, not the
  chunk-minimising search of the METEOR 1.x jar); ``Fmean = P R / (alpha P + (1 - alpha) R)`` with
  ``alpha = 0.9``, penalty ``gamma * (chunks / matches) ** beta`` with ``gamma = 0.5, beta = 3``;
  best score over the references; mean over samples. An identical text of ``m`` tokens is one
  chunk, so it scores ``1 - 0.5 / m**3`` (0.5 for one word, 0.9375 for two), not 1.
- **CIDEr** is CIDEr-D as pycocoevalcap computes it: n-grams ``1..4``, TF-IDF weights with document
  frequencies counted over the references *of the evaluated set* (one count per sample), clipped
  hypothesis weights, Gaussian length penalty with ``sigma = 6`` on the token-length difference
  (pycocoevalcap measures length in bigrams, which gives the same difference whenever both texts
  are non-empty, and an empty text scores 0 either way), the mean over the references, times 10,
  mean over samples. It is a corpus metric: IDF
  needs several samples, and a set of one sample scores 0 (``log 1 = 0``).

Why no WordNet synonyms: METEOR's synonym module needs the WordNet database, which no package on
PyPI ships in a form we can read offline (``wn`` and ``nltk`` download it at run time from their own
hosts), and nothing may download at run time. Why an own Porter stemmer: it is about a hundred short
lines, so the metric needs no ``nltk`` at run time; it follows nltk's default ``PorterStemmer`` mode
(``NLTK_EXTENSIONS``) so that scores equal nltk's ``meteor_score`` with an empty synonym source, and
the tests check both against nltk.

Empty hypotheses score 0 on every metric; empty references are allowed (a hypothesis can only score
0 against them). Lists of different lengths, an empty list, or a sample without any reference raise
``ValueError``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from velvet.metrics.cider import _cider_tokens, cider_scores, corpus_cider
from velvet.metrics.meteor import _meteor_tokens, mean_meteor, meteor
from velvet.metrics.nlg_text import (
    TOKENIZATION,
    NGram,
    References,
    Tokens,
    _check_order,
    _ngrams,
    _prepare,
    _prepare_one,
    tokenize,
)
from velvet.metrics.porter import porter_stem

__all__ = [
    "NLG_DEFINITIONS",
    "TOKENIZATION",
    "cider_scores",
    "corpus_bleu",
    "corpus_cider",
    "mean_meteor",
    "mean_rouge_l",
    "mean_sentence_bleu",
    "meteor",
    "nlg_metrics",
    "porter_stem",
    "rouge_l",
    "sentence_bleu",
    "tokenize",
]

# ----------------------------------------------------------------------------------------------
# BLEU
# ----------------------------------------------------------------------------------------------


def _closest_length(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length closest to the hypothesis length; ties go to the shorter reference."""
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def _bleu_statistics(
    hyps: list[Tokens], refs: list[list[Tokens]], max_n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sufficient statistics of BLEU for every sample.

    Returns:
        ``(hyp_len (N,), closest_ref_len (N,), matches (N, max_n), totals (N, max_n))``, where
        ``matches[i, n-1]`` is the clipped count of n-grams of hypothesis ``i`` and ``totals[i, n-1]``
        its number of n-grams.
    """
    count = len(hyps)
    matches = np.zeros((count, max_n), dtype=np.int64)
    totals = np.zeros((count, max_n), dtype=np.int64)
    hyp_len = np.array([len(h) for h in hyps], dtype=np.int64)
    ref_len = np.array(
        [_closest_length(len(h), [len(r) for r in rs]) for h, rs in zip(hyps, refs, strict=True)], np.int64
    )
    for i, (hyp, sample_refs) in enumerate(zip(hyps, refs, strict=True)):
        for n in range(1, max_n + 1):
            hyp_counts = _ngrams(hyp, n)
            # Clipping (Papineni): an n-gram counts at most as often as in the reference that has it most.
            ceiling: Counter[NGram] = Counter()
            for ref in sample_refs:
                ceiling |= _ngrams(ref, n)
            matches[i, n - 1] = sum(min(c, ceiling[g]) for g, c in hyp_counts.items())
            totals[i, n - 1] = sum(hyp_counts.values())
    return hyp_len, ref_len, matches, totals


def _brevity_penalty(hyp_len: np.ndarray, ref_len: np.ndarray) -> np.ndarray:
    """``exp(1 - r / c)`` when the hypothesis is shorter, 1 otherwise, 0 for an empty hypothesis."""
    c = hyp_len.astype(np.float64)
    r = ref_len.astype(np.float64)
    shorter = np.exp(1.0 - r / np.maximum(c, 1.0))
    return np.where(c >= r, 1.0, np.where(c > 0, shorter, 0.0))


def _bleu_from_statistics(
    hyp_len: np.ndarray,
    ref_len: np.ndarray,
    matches: np.ndarray,
    totals: np.ndarray,
    order: int,
    add_one: bool,
) -> np.ndarray:
    """Cumulative BLEU-``order`` (uniform weights) of rows of statistics.

    Args:
        hyp_len, ref_len: ``(K,)`` lengths.
        matches, totals: ``(K, >= order)`` clipped and total n-gram counts.
        order: highest n-gram order included.
        add_one: add 1 to matches and totals of orders ``>= 2`` (Lin & Och smoothing).

    Returns:
        ``(K,)`` scores in ``[0, 1]``.
    """
    m = matches[:, :order].astype(np.float64)
    t = totals[:, :order].astype(np.float64)
    if add_one:
        m[:, 1:] += 1.0
        t[:, 1:] += 1.0
    # A zero precision (no match, or no n-gram at all) makes the geometric mean 0, as in Papineni;
    # an empty hypothesis has no unigram, so it scores 0 whatever the smoothing of higher orders.
    log_p = np.full(m.shape, -np.inf)
    np.log(m / np.maximum(t, 1.0), out=log_p, where=m > 0)
    return _brevity_penalty(hyp_len, ref_len) * np.exp(log_p.mean(axis=1))


def corpus_bleu(hypotheses: Sequence[str], references: References, max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` (Papineni et al. 2002), unsmoothed, on a 0..1 scale.

    Args:
        hypotheses: one generated text per sample.
        references: per sample a reference string or a sequence of reference strings.
        max_n: highest n-gram order; BLEU-n is the geometric mean of the precisions of orders 1..n.

    Returns:
        BLEU in ``[0, 1]``: 0 when some order has no clipped match anywhere in the corpus.

    Raises:
        ValueError: empty or mismatched lists, a sample without reference, or ``max_n < 1``.
    """
    _check_order(max_n)
    hyps, refs = _prepare(hypotheses, references)
    hyp_len, ref_len, matches, totals = _bleu_statistics(hyps, refs, max_n)
    return _corpus_bleu_of(hyp_len, ref_len, matches, totals, max_n)


def _corpus_bleu_of(
    hyp_len: np.ndarray, ref_len: np.ndarray, matches: np.ndarray, totals: np.ndarray, order: int
) -> float:
    """Corpus BLEU from per-sample statistics: counts and lengths are summed before dividing."""
    score = _bleu_from_statistics(
        hyp_len.sum(keepdims=True),
        ref_len.sum(keepdims=True),
        matches.sum(axis=0, keepdims=True),
        totals.sum(axis=0, keepdims=True),
        order,
        add_one=False,
    )
    return float(score[0])


def sentence_bleu(hypothesis: str, references: str | Sequence[str], max_n: int = 4) -> float:
    """BLEU-``max_n`` of one text, smoothed by add-one on orders ``>= 2`` (Lin & Och 2004).

    Args:
        hypothesis: the generated text.
        references: a reference string or a sequence of reference strings.
        max_n: highest n-gram order.

    Returns:
        BLEU in ``[0, 1]``; 0 for an empty hypothesis or one without any matching word.
    """
    _check_order(max_n)
    hyp, refs = _prepare_one(hypothesis, references)
    stats = _bleu_statistics([hyp], [refs], max_n)
    return float(_bleu_from_statistics(*stats, max_n, add_one=True)[0])


def mean_sentence_bleu(hypotheses: Sequence[str], references: References, max_n: int = 4) -> float:
    """Mean over samples of :func:`sentence_bleu` (add-one smoothing on orders ``>= 2``).

    Args:
        hypotheses: one generated text per sample.
        references: per sample a reference string or a sequence of reference strings.
        max_n: highest n-gram order.

    Returns:
        Mean per-sample BLEU in ``[0, 1]``.
    """
    _check_order(max_n)
    hyps, refs = _prepare(hypotheses, references)
    stats = _bleu_statistics(hyps, refs, max_n)
    return float(_bleu_from_statistics(*stats, max_n, add_one=True).mean())


# ----------------------------------------------------------------------------------------------
# ROUGE-L
# ----------------------------------------------------------------------------------------------


def _lcs_length(a: Tokens, b: Tokens) -> int:
    """Length of the longest common subsequence, one numpy row per token of ``a``.

    The DP row ``L[i, j] = max(L[i, j-1], L[i-1, j-1] + 1 if a_i = b_j else L[i-1, j])`` is a running
    maximum along ``j`` of a candidate that only needs the previous row, because a row never grows
    by more than 1 per column; so each row is one ``np.maximum.accumulate``.
    """
    if not a or not b:
        return 0
    ids: dict[str, int] = {}
    b_ids = np.array([ids.setdefault(t, len(ids)) for t in b], dtype=np.int64)
    row = np.zeros(len(b) + 1, dtype=np.int64)
    for token in a:
        match = b_ids == ids.get(token, -1)
        candidate = np.where(match, row[:-1] + 1, row[1:])
        row[1:] = np.maximum.accumulate(candidate)
    return int(row[-1])


def _rouge_l_tokens(hyp: Tokens, refs: list[Tokens], beta: float) -> float:
    """Best LCS F-measure of one hypothesis over its references."""
    best = 0.0
    for ref in refs:
        lcs = _lcs_length(hyp, ref)
        if lcs == 0:
            continue
        precision, recall = lcs / len(hyp), lcs / len(ref)
        f = (1 + beta**2) * precision * recall / (recall + beta**2 * precision)
        best = max(best, f)
    return best


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta!r}")


def rouge_l(hypothesis: str, references: str | Sequence[str], beta: float = 1.2) -> float:
    """ROUGE-L F-measure of one text: the best over its references.

    Args:
        hypothesis: the generated text.
        references: a reference string or a sequence of reference strings.
        beta: recall weight; 1.2 as in pycocoevalcap (1.0 gives F1).

    Returns:
        ``(1 + beta^2) P R / (R + beta^2 P)`` with ``P = LCS / len(hyp)``, ``R = LCS / len(ref)``;
        0 without a common token.
    """
    _check_beta(beta)
    hyp, refs = _prepare_one(hypothesis, references)
    return _rouge_l_tokens(hyp, refs, beta)


def mean_rouge_l(hypotheses: Sequence[str], references: References, beta: float = 1.2) -> float:
    """Mean over samples of :func:`rouge_l`.

    Args:
        hypotheses: one generated text per sample.
        references: per sample a reference string or a sequence of reference strings.
        beta: recall weight of the F-measure.

    Returns:
        Mean ROUGE-L in ``[0, 1]``.
    """
    _check_beta(beta)
    hyps, refs = _prepare(hypotheses, references)
    return float(np.mean([_rouge_l_tokens(h, r, beta) for h, r in zip(hyps, refs, strict=True)]))


# ----------------------------------------------------------------------------------------------
# All metrics
# ----------------------------------------------------------------------------------------------

_TOK = "tokens: velvet-nlg-tok-v1 (NFKC, lower-cased, numbers/words/punctuation; see TOKENIZATION)"
_REFS_BLEU = "clipping by the max count over references, brevity penalty with the closest reference length (ties: shorter)"

NLG_DEFINITIONS: dict[str, str] = {
    **{
        f"bleu{n}": (
            f"corpus BLEU-{n} (Papineni 2002) on 0..1: counts summed over the corpus, geometric mean of "
            f"precisions 1..{n} with weights 1/{n}, no smoothing, {_REFS_BLEU}; {_TOK}"
        )
        for n in range(1, 5)
    },
    **{
        f"bleu{n}_mean": (
            f"mean over samples of sentence BLEU-{n} on 0..1: precisions 1..{n} with weights 1/{n}, "
            f"add-one on orders >= 2 (Lin & Och 2004 = Chen & Cherry method 2 = sacrebleu add-k, k=1), "
            f"{_REFS_BLEU}; {_TOK}"
        )
        for n in range(1, 5)
    },
    "rouge_l": (
        "mean over samples of ROUGE-L (Lin 2004) F = (1+beta^2)PR/(R+beta^2 P) with beta=1.2 on the token LCS, "
        f"best F over the references; {_TOK}"
    ),
    "meteor": (
        "mean over samples of METEOR (exact + stem modules, no WordNet synonyms): nltk meteor_score "
        "algorithm, greedy exact then nltk-default Porter-stem alignment, alpha=0.9, beta=3, gamma=0.5, "
        f"best over the references; {_TOK}"
    ),
    "cider": (
        "CIDEr-D as pycocoevalcap: n=1..4, TF-IDF with document frequencies from this set's references, "
        "clipped weights, Gaussian penalty sigma=6 on the token-length difference, mean over references, x10, "
        f"mean over samples; {_TOK}"
    ),
}


def nlg_metrics(hypotheses: Sequence[str], references: References) -> dict[str, float]:
    """Every metric of this module on one set of generated texts, tokenised once.

    Args:
        hypotheses: one generated text per sample (an empty string is allowed and scores 0).
        references: per sample a reference string or a sequence of reference strings.

    Returns:
        ``bleu1..bleu4`` (corpus), ``bleu1_mean..bleu4_mean`` (per-sample mean), ``rouge_l``,
        ``meteor`` and ``cider``; :data:`NLG_DEFINITIONS` has the definition of each key.

    Raises:
        ValueError: empty or mismatched lists, or a sample without reference.
    """
    hyps, refs = _prepare(hypotheses, references)
    hyp_len, ref_len, matches, totals = _bleu_statistics(hyps, refs, 4)
    result: dict[str, float] = {}
    for n in range(1, 5):
        result[f"bleu{n}"] = _corpus_bleu_of(hyp_len, ref_len, matches, totals, n)
    for n in range(1, 5):
        per_sample = _bleu_from_statistics(hyp_len, ref_len, matches, totals, n, add_one=True)
        result[f"bleu{n}_mean"] = float(per_sample.mean())
    result["rouge_l"] = float(np.mean([_rouge_l_tokens(h, r, 1.2) for h, r in zip(hyps, refs, strict=True)]))
    result["meteor"] = float(
        np.mean([_meteor_tokens(h, r, 0.9, 3.0, 0.5) for h, r in zip(hyps, refs, strict=True)])
    )
    result["cider"] = float(_cider_tokens(hyps, refs, 4, 6.0).mean())
    return result

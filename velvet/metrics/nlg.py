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

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np

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

References = Sequence[str | Sequence[str]]
"""One entry per hypothesis: a reference string, or a sequence of reference strings."""

Tokens = list[str]
NGram = tuple[str, ...]

# ----------------------------------------------------------------------------------------------
# Tokenisation
# ----------------------------------------------------------------------------------------------

TOKENIZATION = (
    "velvet-nlg-tok-v1: Unicode NFKC, then str.lower(), then U+2018/U+2019 -> ' and U+00D7 -> x; "
    "tokens are regex matches of, in this order: numbers \\d+(?:[.x]\\d+)* (3.5, 18x12; letters "
    "glued after a number start a new token: 3.5cm -> 3.5 cm, 2nd -> 2 nd, 3d -> 3 d), words \\w+(?:[-']\\w+)* "
    "(t2-weighted, patient's), and any other single non-space character (punctuation); "
    "whitespace is dropped"
)

_FOLD = str.maketrans({"\u2018": "'", "\u2019": "'", "\u00d7": "x"})
_TOKEN_RE = re.compile(r"\d+(?:[.x]\d+)*|\w+(?:[-']\w+)*|[^\w\s]")


def tokenize(text: str) -> Tokens:
    """Split a text into the tokens every metric here counts (see :data:`TOKENIZATION`).

    Args:
        text: any string.

    Returns:
        Lower-cased tokens; ``[]`` for an empty or blank text.

    Example:
        ``tokenize("Lesion 18x12 mm, T2-weighted.")`` is
        ``["lesion", "18x12", "mm", ",", "t2-weighted", "."]``.
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, got {type(text).__name__}")
    # NFKC first so that ligatures and full-width digits become the letters the regex knows.
    normal = unicodedata.normalize("NFKC", text).lower().translate(_FOLD)
    return _TOKEN_RE.findall(normal)


# ----------------------------------------------------------------------------------------------
# Input checking
# ----------------------------------------------------------------------------------------------


def _reference_list(refs: str | Sequence[str], index: int) -> list[str]:
    """One sample's references as a non-empty list of strings."""
    if isinstance(refs, str):
        return [refs]
    listed = list(refs)
    if not listed:
        raise ValueError(f"sample {index} has no reference")
    if not all(isinstance(r, str) for r in listed):
        raise TypeError(f"references of sample {index} must be strings")
    return listed


def _prepare(hypotheses: Sequence[str], references: References) -> tuple[list[Tokens], list[list[Tokens]]]:
    """Validate and tokenise a corpus: ``(hypothesis tokens, reference tokens per sample)``."""
    # A bare string is a Sequence[str] of characters; scoring it letter by letter would be silent nonsense.
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("hypotheses and references must be lists (one entry per sample), not a single string")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"hypotheses and references differ in length: {len(hypotheses)} hypotheses, "
            f"{len(references)} references"
        )
    if len(hypotheses) == 0:
        raise ValueError("no samples: hypotheses and references are empty")
    if not all(isinstance(h, str) for h in hypotheses):
        raise TypeError("every hypothesis must be a str")
    hyp_tokens = [tokenize(h) for h in hypotheses]
    ref_tokens = [[tokenize(r) for r in _reference_list(refs, i)] for i, refs in enumerate(references)]
    return hyp_tokens, ref_tokens


def _prepare_one(hypothesis: str, references: str | Sequence[str]) -> tuple[Tokens, list[Tokens]]:
    """Validate and tokenise a single sample."""
    if not isinstance(hypothesis, str):
        raise TypeError(f"hypothesis must be a str, got {type(hypothesis).__name__}")
    return tokenize(hypothesis), [tokenize(r) for r in _reference_list(references, 0)]


# ----------------------------------------------------------------------------------------------
# BLEU
# ----------------------------------------------------------------------------------------------


def _ngrams(tokens: Tokens, n: int) -> Counter[NGram]:
    """Counts of the n-grams of one order."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


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


def _check_order(max_n: int) -> None:
    if not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n must be a positive integer, got {max_n!r}")


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
# Porter stemmer (nltk's default NLTK_EXTENSIONS mode)
# ----------------------------------------------------------------------------------------------

_VOWELS = frozenset("aeiou")
# nltk's NLTK_EXTENSIONS pool of irregular forms, looked up before any rule.
_IRREGULAR = {
    "skies": "sky",
    "sky": "sky",
    "dying": "die",
    "lying": "lie",
    "tying": "tie",
    "news": "news",
    "innings": "inning",
    "inning": "inning",
    "outings": "outing",
    "outing": "outing",
    "cannings": "canning",
    "canning": "canning",
    "howe": "howe",
    "proceed": "proceed",
    "exceed": "exceed",
    "succeed": "succeed",
}

_Condition = Callable[[str], bool] | None


def _consonants(word: str) -> list[bool]:
    """Per letter: consonant? ``y`` is a consonant at the start or after a vowel (Porter's definition)."""
    flags: list[bool] = []
    for i, ch in enumerate(word):
        flags.append(ch not in _VOWELS and (ch != "y" or i == 0 or not flags[i - 1]))
    return flags


def _measure(stem: str) -> int:
    """Porter's m: the number of vowel-to-consonant transitions, ``[C](VC){m}[V]``."""
    flags = _consonants(stem)
    return sum(1 for prev, cur in pairwise(flags) if not prev and cur)


def _has_vowel(stem: str) -> bool:
    return not all(_consonants(stem))


def _double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _consonants(word)[-1]


def _cvc(word: str) -> bool:
    """Porter's ``*o`` (consonant-vowel-consonant, last not w/x/y), plus nltk's two-letter ``vc``."""
    flags = _consonants(word)
    if len(word) >= 3 and flags[-3] and not flags[-2] and flags[-1] and word[-1] not in "wxy":
        return True
    return len(word) == 2 and not flags[0] and flags[1]


def _positive(stem: str) -> bool:
    return _measure(stem) > 0


def _above_one(stem: str) -> bool:
    return _measure(stem) > 1


def _apply_rules(word: str, rules: Sequence[tuple[str, str, _Condition]]) -> str:
    """Apply the first rule whose suffix the word has; if its condition fails, the step does nothing."""
    for suffix, replacement, condition in rules:
        if word.endswith(suffix):
            stem = word[: len(word) - len(suffix)]
            return stem + replacement if condition is None or condition(stem) else word
    return word


def _step1a(word: str) -> str:
    if word.endswith("ies") and len(word) == 4:
        return word[:-3] + "ie"
    return _apply_rules(word, [("sses", "ss", None), ("ies", "i", None), ("ss", "ss", None), ("s", "", None)])


def _step1b(word: str) -> str:
    if word.endswith("ied"):
        return word[:-3] + ("ie" if len(word) == 4 else "i")
    if word.endswith("eed"):
        return word[:-1] if _positive(word[:-3]) else word
    for suffix in ("ed", "ing"):
        if word.endswith(suffix) and _has_vowel(word[: -len(suffix)]):
            stem = word[: -len(suffix)]
            break
    else:
        return word
    if stem.endswith(("at", "bl", "iz")):
        return stem + "e"
    if _double_consonant(stem):
        return stem if stem[-1] in "lsz" else stem[:-1]
    return stem + "e" if _measure(stem) == 1 and _cvc(stem) else stem


def _step1c(word: str) -> str:
    return _apply_rules(word, [("y", "i", lambda s: len(s) > 1 and _consonants(s)[-1])])


_STEP2 = [
    ("ational", "ate"),
    ("tional", "tion"),
    ("enci", "ence"),
    ("anci", "ance"),
    ("izer", "ize"),
    ("bli", "ble"),
    ("alli", "al"),
    ("entli", "ent"),
    ("eli", "e"),
    ("ousli", "ous"),
    ("ization", "ize"),
    ("ation", "ate"),
    ("ator", "ate"),
    ("alism", "al"),
    ("iveness", "ive"),
    ("fulness", "ful"),
    ("ousness", "ous"),
    ("aliti", "al"),
    ("iviti", "ive"),
    ("biliti", "ble"),
    ("fulli", "ful"),
]


def _step2(word: str) -> str:
    if word.endswith("alli") and _positive(word[:-4]):
        return _step2(word[:-4] + "al")
    rules: list[tuple[str, str, _Condition]] = [(s, r, _positive) for s, r in _STEP2]
    # nltk measures "logi" on the word without "ogi", i.e. the stem plus its "l".
    rules.append(("logi", "log", lambda stem: _positive(stem + "l")))
    return _apply_rules(word, rules)


_STEP3 = [
    ("icate", "ic"),
    ("ative", ""),
    ("alize", "al"),
    ("iciti", "ic"),
    ("ical", "ic"),
    ("ful", ""),
    ("ness", ""),
]
_STEP4 = ["al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion"]
_STEP4 += ["ou", "ism", "ate", "iti", "ous", "ive", "ize"]


def _step4(word: str) -> str:
    rules: list[tuple[str, str, _Condition]] = [
        (s, "", (lambda stem: _above_one(stem) and stem[-1] in "st") if s == "ion" else _above_one)
        for s in _STEP4
    ]
    return _apply_rules(word, rules)


def _step5(word: str) -> str:
    if word.endswith("e"):
        m = _measure(word[:-1])
        if m > 1 or (m == 1 and not _cvc(word[:-1])):
            word = word[:-1]
    if word.endswith("ll") and _measure(word[:-1]) > 1:
        word = word[:-1]
    return word


@lru_cache(maxsize=65536)
def porter_stem(word: str) -> str:
    """Porter (1980) stem of a word, exactly as nltk's default ``PorterStemmer().stem``.

    That is the ``NLTK_EXTENSIONS`` mode: a small pool of irregular forms, words of up to two letters
    left alone, and nltk's refinements of steps 1a-1c and 2 (``-ied``, ``y -> i`` only after a
    consonant, ``-bli``, ``-fulli``, ``-logi``).

    Args:
        word: one token (lower-cased here).

    Returns:
        The stem.
    """
    lowered = word.lower()
    if lowered in _IRREGULAR:
        return _IRREGULAR[lowered]
    if len(word) <= 2:
        return lowered
    stem = _step1c(_step1b(_step1a(lowered)))
    stem = _apply_rules(_step2(stem), [(s, r, _positive) for s, r in _STEP3])
    return _step5(_step4(stem))


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

"""NLG metrics against independent implementations and hand cases.

References (test-only, the ``dev`` extra): sacrebleu (corpus BLEU, add-k sentence BLEU), nltk (corpus
and sentence BLEU, ``meteor_score`` with a synonym-free WordNet stand-in, ``PorterStemmer``),
pycocoevalcap (CIDEr-D, ROUGE-L with one reference; both pure Python), and a naive recursive LCS
written here. Random corpora are seeded perturbed copies of their references, so that high-order
n-grams match and every metric is far from 0.
"""

from __future__ import annotations

import functools
import math
import random
import warnings

import numpy as np
import pytest
from nltk.stem.porter import PorterStemmer
from nltk.translate import bleu_score as nltk_bleu
from nltk.translate.meteor_score import meteor_score as nltk_meteor_score
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from sacrebleu.metrics import BLEU

from velvet.metrics.nlg import (
    NLG_DEFINITIONS,
    TOKENIZATION,
    cider_scores,
    corpus_bleu,
    corpus_cider,
    mean_meteor,
    mean_rouge_l,
    mean_sentence_bleu,
    meteor,
    nlg_metrics,
    porter_stem,
    rouge_l,
    sentence_bleu,
    tokenize,
)

# Inflected forms on purpose, so that METEOR's stem stage has work to do.
_VOCAB = [
    "lesion", "lesions", "enhancing", "enhanced", "enhancement", "nodule", "nodules", "mass",
    "the", "a", "of", "in", "left", "right", "lobe", "lobes", "measuring", "measures", "liver", "no",
]  # fmt: skip


def _perturb(tokens: list[str], rng: random.Random) -> list[str]:
    """Drop, substitute and insert words at random: a plausible imperfect generation."""
    out: list[str] = []
    for token in tokens:
        roll = rng.random()
        if roll < 0.12:
            continue
        out.append(rng.choice(_VOCAB) if roll < 0.25 else token)
        if rng.random() < 0.08:
            out.append(rng.choice(_VOCAB))
    return out


def _random_corpus(
    seed: int, samples: int, ref_len: tuple[int, int], max_refs: int, min_hyp_len: int = 0
) -> tuple[list[list[str]], list[list[list[str]]]]:
    """Token lists: hypotheses, and one to ``max_refs`` references per sample."""
    rng = random.Random(seed)
    hyps, refs = [], []
    for _ in range(samples):
        sample_refs = [
            [rng.choice(_VOCAB) for _ in range(rng.randint(*ref_len))]
            for _ in range(rng.randint(1, max_refs))
        ]
        hyp = _perturb(rng.choice(sample_refs), rng)
        while len(hyp) < min_hyp_len:
            hyp.append(rng.choice(_VOCAB))
        hyps.append(hyp)
        refs.append(sample_refs)
    return hyps, refs


def _join(hyps: list[list[str]], refs: list[list[list[str]]]) -> tuple[list[str], list[list[str]]]:
    """Space-joined strings; asserts our tokeniser gives the very same tokens back."""
    hyp_text = [" ".join(h) for h in hyps]
    ref_text = [[" ".join(r) for r in rs] for rs in refs]
    assert [tokenize(h) for h in hyp_text] == hyps
    return hyp_text, ref_text


def _sacrebleu_streams(ref_text: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu wants one stream per reference slot; ``None`` marks a missing reference."""
    slots = max(len(rs) for rs in ref_text)
    return [[rs[k] if k < len(rs) else None for rs in ref_text] for k in range(slots)]


# ----------------------------------------------------------------------------------------------
# Tokenisation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Lesion 18x12 mm, T2-weighted.", ["lesion", "18x12", "mm", ",", "t2-weighted", "."]),
        ("measuring 3.5cm.", ["measuring", "3.5", "cm", "."]),
        ("18X12×9 MM", ["18x12x9", "mm"]),
        ("patient\u2019s ﬁbrosis", ["patient's", "fibrosis"]),  # curly apostrophe, NFKC ligature
        ("\uff11\uff18 mm", ["18", "mm"]),  # full-width digits
        ("No acute findings.", ["no", "acute", "findings", "."]),
        ("3D CT, 2nd exam", ["3", "d", "ct", ",", "2", "nd", "exam"]),  # numbers end at letters
        ("   ", []),
        ("", []),
    ],
)
def test_tokenize_examples(text, tokens):
    assert tokenize(text) == tokens


def test_tokenization_is_declared():
    assert "NFKC" in TOKENIZATION and "lower" in TOKENIZATION
    assert all("velvet-nlg-tok-v1" in line for line in NLG_DEFINITIONS.values())


# ----------------------------------------------------------------------------------------------
# BLEU
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_corpus_bleu_matches_sacrebleu(seed):
    # Short hypotheses (even empty ones) included: sacrebleu sums the true n-gram counts.
    hyps, refs = _random_corpus(seed, samples=40, ref_len=(0, 14), max_refs=3)
    hyp_text, ref_text = _join(hyps, refs)
    for n in range(1, 5):
        ref = BLEU(tokenize="none", smooth_method="none", max_ngram_order=n, force=True)
        expected = ref.corpus_score(hyp_text, _sacrebleu_streams(ref_text)).score / 100
        assert expected > 0.2
        assert corpus_bleu(hyp_text, ref_text, max_n=n) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_corpus_bleu_matches_nltk(seed):
    # nltk counts at least one n-gram per hypothesis (max(1, count)); with >= 4 tokens it is Papineni.
    hyps, refs = _random_corpus(seed + 10, samples=40, ref_len=(4, 14), max_refs=3, min_hyp_len=4)
    hyp_text, ref_text = _join(hyps, refs)
    for n in range(1, 5):
        expected = nltk_bleu.corpus_bleu(refs, hyps, weights=(1 / n,) * n)
        assert corpus_bleu(hyp_text, ref_text, max_n=n) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_sentence_bleu_matches_sacrebleu_add_k(seed):
    # Very short hypotheses on purpose: the add-k treatment of orders longer than the text matters.
    hyps, refs = _random_corpus(seed + 20, samples=60, ref_len=(0, 8), max_refs=3)
    hyp_text, ref_text = _join(hyps, refs)
    for n in range(1, 5):
        ref = BLEU(
            tokenize="none", smooth_method="add-k", smooth_value=1, max_ngram_order=n, effective_order=True
        )
        expected = [ref.sentence_score(h, rs).score / 100 for h, rs in zip(hyp_text, ref_text, strict=True)]
        ours = [sentence_bleu(h, rs, max_n=n) for h, rs in zip(hyp_text, ref_text, strict=True)]
        np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
        assert mean_sentence_bleu(hyp_text, ref_text, max_n=n) == pytest.approx(np.mean(expected), rel=1e-12)
        assert np.mean(expected) > 0.2


def test_sentence_bleu_matches_nltk_method2():
    # nltk's method2 is the same add-one on orders >= 2 when the hypothesis has an n-gram of every order.
    hyps, refs = _random_corpus(30, samples=60, ref_len=(1, 10), max_refs=2, min_hyp_len=4)
    hyp_text, ref_text = _join(hyps, refs)
    smooth = nltk_bleu.SmoothingFunction().method2
    for n in range(1, 5):
        for hyp, rs, h_text, r_text in zip(hyps, refs, hyp_text, ref_text, strict=True):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # nltk warns about zero counts
                expected = nltk_bleu.sentence_bleu(rs, hyp, weights=(1 / n,) * n, smoothing_function=smooth)
            assert sentence_bleu(h_text, r_text, max_n=n) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_bleu_hand_cases():
    text = "the lesion in the left lobe measures 12 mm"
    for n in range(1, 5):
        assert corpus_bleu([text, text], [text, [text, "x"]], max_n=n) == pytest.approx(1.0)
        assert mean_sentence_bleu([text], [text], max_n=n) == pytest.approx(1.0)
        assert corpus_bleu(["a b c d"], ["e f g h"], max_n=n) == 0.0
        assert sentence_bleu("a b c d", "e f g h", max_n=n) == 0.0
        # All n-grams match, so BLEU is the brevity penalty exp(1 - 6/4).
        assert corpus_bleu(["a b c d"], ["a b c d e f"], max_n=n) == pytest.approx(math.exp(-0.5))
        assert sentence_bleu("a b c d", "a b c d e f", max_n=n) == pytest.approx(math.exp(-0.5))
        # Closest reference length: 2 and 6 tie at distance 2, the shorter wins, so no penalty.
        assert corpus_bleu(["a b c d"], [["a b c d e f", "a b"]], max_n=n) == pytest.approx(1.0)
        assert sentence_bleu("", "a b", max_n=n) == 0.0
    # A correct one-word answer: per-sample BLEU-4 is 1 (add-one), unsmoothed corpus BLEU-4 is 0.
    assert sentence_bleu("yes", "yes") == 1.0
    assert sentence_bleu("yes", "no") == 0.0
    assert corpus_bleu(["yes"], ["yes"], max_n=4) == 0.0 and corpus_bleu(["yes"], ["yes"], max_n=1) == 1.0
    # Clipping: "the the the the" has one "the" in the reference.
    assert corpus_bleu(["the the the the"], ["the cat"], max_n=1) == pytest.approx(0.25)


# ----------------------------------------------------------------------------------------------
# ROUGE-L
# ----------------------------------------------------------------------------------------------


def _naive_lcs(a: list[str], b: list[str]) -> int:
    @functools.cache
    def lcs(i: int, j: int) -> int:
        if i == len(a) or j == len(b):
            return 0
        if a[i] == b[j]:
            return 1 + lcs(i + 1, j + 1)
        return max(lcs(i + 1, j), lcs(i, j + 1))

    return lcs(0, 0)


def _naive_rouge_l(hyp: list[str], refs: list[list[str]], beta: float) -> float:
    scores = [0.0]
    for ref in refs:
        lcs = _naive_lcs(hyp, ref)
        if lcs:
            p, r = lcs / len(hyp), lcs / len(ref)
            scores.append((1 + beta**2) * p * r / (r + beta**2 * p))
    return max(scores)


@pytest.mark.parametrize("beta", [1.2, 1.0, 3.0])
def test_rouge_l_matches_naive_lcs(beta):
    hyps, refs = _random_corpus(40, samples=80, ref_len=(0, 25), max_refs=3)
    hyp_text, ref_text = _join(hyps, refs)
    expected = [_naive_rouge_l(h, rs, beta) for h, rs in zip(hyps, refs, strict=True)]
    ours = [rouge_l(h, rs, beta=beta) for h, rs in zip(hyp_text, ref_text, strict=True)]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    assert mean_rouge_l(hyp_text, ref_text, beta=beta) == pytest.approx(np.mean(expected), rel=1e-12)
    assert np.mean(expected) > 0.3


def test_rouge_l_matches_pycocoevalcap_single_reference():
    hyps, refs = _random_corpus(41, samples=60, ref_len=(1, 25), max_refs=1, min_hyp_len=1)
    hyp_text, ref_text = _join(hyps, refs)
    coco = Rouge()  # beta = 1.2
    for h, rs in zip(hyp_text, ref_text, strict=True):
        assert rouge_l(h, rs) == pytest.approx(coco.calc_score([h], rs), rel=1e-12)


def test_rouge_l_hand_cases():
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)  # LCS 3, P = R = 3/4
    # P = 1, R = 1/2: F = (1 + 1.44) * 0.5 / (0.5 + 1.44).
    assert rouge_l("a b", "a b c d") == pytest.approx(2.44 * 0.5 / 1.94)
    assert rouge_l("a b", "a b c d", beta=1.0) == pytest.approx(2 / 3)
    assert rouge_l("no acute findings", "No acute findings") == 1.0
    assert rouge_l("a b", "c d") == 0.0 and rouge_l("", "c d") == 0.0 and rouge_l("a", "") == 0.0
    assert rouge_l("a b", ["c d", "a b"]) == 1.0  # the best reference
    with pytest.raises(ValueError, match="beta"):
        rouge_l("a", "a", beta=0.0)


# ----------------------------------------------------------------------------------------------
# Porter stemmer and METEOR
# ----------------------------------------------------------------------------------------------

_WORDS = (
    "caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated troubled sized hopping "
    "tanned falling hissing fizzed failing filing happy sky relational conditional rational valenci hesitanci "
    "digitizer conformabli radicalli differentli vileli analogousli vietnamization predication operator "
    "feudalism decisiveness hopefulness callousness formaliti sensitiviti sensibiliti triplicate formative "
    "formalize electriciti electrical hopeful goodness revival allowance inference airliner gyroscopic "
    "adjustable defensible irritant replacement adjustment dependent adoption homologou communism activate "
    "angulariti homologous effective bowdlerize probate rate cease controll roll generalizations oscillators "
    "dying lying tying skies news innings outings cannings howe proceed exceed succeed died cried spied "
    "enjoy enjoyment flies fly spy try tried analogy archaeology hopefulli enhancing enhanced enhancement "
    "lesions nodules measuring measures opacities consolidation atelectasis hypodense calcified bilateral "
    "is as us a i yy yyy y by toy syzygy at ed ing eed ies sses"
)
_SUFFIXES = sorted(
    {
        "s", "es", "ies", "sses", "ed", "ing", "eed", "y", "ational", "tional", "enci", "anci", "izer", "bli",
        "abli", "alli", "entli", "eli", "ousli", "ization", "ation", "ator", "alism", "iveness", "fulness",
        "ousness", "aliti", "iviti", "biliti", "fulli", "logi", "icate", "ative", "alize", "iciti", "ical",
        "ful", "ness", "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "sion",
        "tion", "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize", "e", "ll", "ied",
    }
)  # fmt: skip
_ROOTS = [
    "c",
    "tr",
    "oat",
    "hop",
    "fil",
    "conflat",
    "rel",
    "condit",
    "format",
    "sens",
    "enhanc",
    "gener",
    "by",
    "ay",
]


def test_porter_stem_matches_nltk():
    rng = random.Random(50)
    words = _WORDS.split() + [root + suffix for root in _ROOTS for suffix in _SUFFIXES]
    words += [
        "".join(rng.choice("aeiouybcdlmnrstzg") for _ in range(rng.randint(1, 12))) for _ in range(3000)
    ]
    stemmer = PorterStemmer()  # nltk's default mode, NLTK_EXTENSIONS
    mismatches = [(w, porter_stem(w), stemmer.stem(w)) for w in words if porter_stem(w) != stemmer.stem(w)]
    assert mismatches == []


class _NoSynonyms:
    """A WordNet stand-in without synonyms: nltk's METEOR reduced to its exact and stem modules."""

    def synsets(self, word: str) -> list:
        return []


def _nltk_meteor(hyp: list[str], refs: list[list[str]]) -> float:
    return nltk_meteor_score(refs, hyp, wordnet=_NoSynonyms())


@pytest.mark.parametrize("seed", range(3))
def test_meteor_matches_nltk(seed):
    hyps, refs = _random_corpus(60 + seed, samples=80, ref_len=(0, 20), max_refs=3)
    hyp_text, ref_text = _join(hyps, refs)
    expected = [_nltk_meteor(h, rs) for h, rs in zip(hyps, refs, strict=True)]
    ours = [meteor(h, rs) for h, rs in zip(hyp_text, ref_text, strict=True)]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    assert mean_meteor(hyp_text, ref_text) == pytest.approx(np.mean(expected), rel=1e-12)
    assert np.mean(expected) > 0.3


def test_meteor_hand_cases():
    # Identical texts are one chunk: 1 - 0.5 * (1 / m)^3.
    for text in ["yes", "no acute findings", "the lesion in the left lobe measures 12 mm ."]:
        m = len(tokenize(text))
        assert meteor(text, text) == pytest.approx(1 - 0.5 / m**3)
    # Stem matches count like exact ones: lesions/lesion, enhancing/enhanced.
    assert meteor("lesions enhancing", "lesion enhanced") == pytest.approx(1 - 0.5 / 8)
    assert meteor("lesions enhancing", "lesion enhanced") == pytest.approx(
        _nltk_meteor(["lesions", "enhancing"], [["lesion", "enhanced"]])
    )
    assert meteor("a b", "c d") == 0.0 and meteor("", "c d") == 0.0 and meteor("a", "") == 0.0
    # Swapped halves: 2 chunks of 4 matches.
    expected = 1 - 0.5 * (2 / 4) ** 3
    assert meteor("c d a b", "a b c d") == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------
# CIDEr-D
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_cider_matches_pycocoevalcap(seed):
    # Empty and one-word hypotheses included: pycocoevalcap measures their length in bigrams (0).
    hyps, refs = _random_corpus(70 + seed, samples=50, ref_len=(1, 20), max_refs=4)
    hyps[0], hyps[1] = [], ["lesion"]
    hyp_text, ref_text = _join(hyps, refs)
    gts = {i: rs for i, rs in enumerate(ref_text)}
    res = {i: [h] for i, h in enumerate(hyp_text)}
    expected_mean, expected = Cider().compute_score(gts, res)
    np.testing.assert_allclose(cider_scores(hyp_text, ref_text), expected, rtol=1e-9, atol=1e-12)
    assert corpus_cider(hyp_text, ref_text) == pytest.approx(expected_mean, rel=1e-9)
    assert expected_mean > 1.0


def test_cider_hand_cases():
    # IDF needs several samples: one sample has log(1) = 0 weights everywhere.
    assert corpus_cider(["a b c"], ["a b c"]) == 0.0
    scores = cider_scores(["x y z", "a b c"], ["a b c", "a b c"])
    assert scores[0] == 0.0 and scores[1] == 0.0  # "a b c" is in every reference set: IDF 0
    scores = cider_scores(["a b c d", "p q r s"], ["a b c d", "e f g h"])
    # Identical text, every n-gram unique to its sample: cosine 1 for each order, no length penalty.
    assert scores[0] == pytest.approx(10.0) and scores[1] == 0.0


# ----------------------------------------------------------------------------------------------
# All metrics together, and input checking
# ----------------------------------------------------------------------------------------------


def test_nlg_metrics_agrees_with_the_single_metrics():
    hyps, refs = _random_corpus(80, samples=30, ref_len=(0, 15), max_refs=3)
    hyp_text, ref_text = _join(hyps, refs)
    result = nlg_metrics(hyp_text, ref_text)
    assert set(result) == set(NLG_DEFINITIONS)
    for n in range(1, 5):
        assert result[f"bleu{n}"] == pytest.approx(corpus_bleu(hyp_text, ref_text, max_n=n), rel=1e-12)
        assert result[f"bleu{n}_mean"] == pytest.approx(
            mean_sentence_bleu(hyp_text, ref_text, max_n=n), rel=1e-12
        )
    assert result["rouge_l"] == pytest.approx(mean_rouge_l(hyp_text, ref_text), rel=1e-12)
    assert result["meteor"] == pytest.approx(mean_meteor(hyp_text, ref_text), rel=1e-12)
    assert result["cider"] == pytest.approx(corpus_cider(hyp_text, ref_text), rel=1e-12)
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.values())


def test_empty_hypotheses_score_zero():
    result = nlg_metrics(["", "   "], ["no acute findings", ["a b", "c"]])
    assert all(v == 0.0 for v in result.values()), result
    mixed = nlg_metrics(["", "no acute findings"], ["no acute findings", "no acute findings"])
    assert mixed["rouge_l"] == pytest.approx(0.5) and mixed["bleu1_mean"] == pytest.approx(0.5)


def test_definitions_declare_the_variants():
    assert "beta=1.2" in NLG_DEFINITIONS["rouge_l"] and "best F" in NLG_DEFINITIONS["rouge_l"]
    assert "no WordNet synonyms" in NLG_DEFINITIONS["meteor"] and "alpha=0.9" in NLG_DEFINITIONS["meteor"]
    assert "add-k" in NLG_DEFINITIONS["bleu4_mean"] and "no smoothing" in NLG_DEFINITIONS["bleu4"]
    assert "sigma=6" in NLG_DEFINITIONS["cider"] and "this set's references" in NLG_DEFINITIONS["cider"]


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"3 hypotheses.*2 references"):
        nlg_metrics(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match="no samples"):
        nlg_metrics([], [])
    with pytest.raises(ValueError, match="no reference"):
        corpus_bleu(["a"], [[]])
    with pytest.raises(TypeError, match="single string"):
        mean_rouge_l("a b", ["a b", "c"])
    with pytest.raises(ValueError, match="max_n"):
        corpus_bleu(["a"], ["a"], max_n=0)

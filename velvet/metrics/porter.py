"""The Porter stemmer, as nltk's default ``PorterStemmer`` (``NLTK_EXTENSIONS`` mode) stems.

METEOR's stem stage (:mod:`velvet.metrics.nlg`) needs it; written here so that the library needs no
nltk at run time. The tests compare it with nltk's on about 4,000 words.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import pairwise

__all__ = ["porter_stem"]

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

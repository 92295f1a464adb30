"""The declared tokenisation of velvet's NLG metrics and the checks on their inputs.

See :mod:`velvet.metrics.nlg` for the metrics and their variants.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

__all__ = ["NGram", "References", "TOKENIZATION", "Tokens", "tokenize"]

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


def _ngrams(tokens: Tokens, n: int) -> Counter[NGram]:
    """Counts of the n-grams of one order."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _check_order(max_n: int) -> None:
    if not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n must be a positive integer, got {max_n!r}")

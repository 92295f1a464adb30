"""Read back the findings a phantom radiology report states, from its text alone.

The reader follows the grammar of :mod:`~velvet.data.phantoms.reports` and
:mod:`~velvet.data.phantoms.statements`, so that reports written by a model can be scored
clinically: the same reader turns a generated and a reference report into the eleven
:data:`~velvet.data.phantoms.findings.LABEL_NAMES` labels, and :func:`finding_f1` compares them.

How a report is read (plain regular expressions, no model):

1. **Normalise**: lower-case; ``n't`` -> `` not``; unicode dashes and ``×`` -> ``-`` and ``x``;
   ``low - attenuation`` (how a WordPiece decoder spaces hyphens) -> ``low-attenuation``.
2. **Sections**: ``technique`` / ``findings`` / ``impression`` (with or without ``:``) start a
   section. The impression may repeat findings: labels are the union over all sections, and an
   impression lesion that matches a findings lesion (organ, side, size) is not listed twice.
3. **Sentences**: cut at ``. ! ? ;`` (not at a decimal point ``3.5``) and at line breaks, so
   numbered impression items (``1. ...``) and headers are separate.
4. **Statements**: a sentence is cut further before words that open a statement in the grammar
   (``no``, ``there is``, ``the liver is``, ``a 20 mm``, ``24 mm``, ``cardiomegaly``, ``status post``,
   ``small right``...), and a piece is glued back to the next one when it cannot stand alone
   (it ends with ``is``, ``of``, ``the``, ``x``, ``(``, ``or``, ``no``, ``contains``...; it starts with
   ``in``, as ``In the liver, there is ...``; or it is a negation followed only by modifiers, as
   ``no significant``). A bare size (``41 mm``) joins the piece before it, and a trailing place
   goes to a following ``there is`` when the piece before does not need it (``no ascites in the
   right hepatic lobe there is a cyst``: the grammar's ``In <place>, there is ...``). On
   grammatical text this changes nothing (every template survives intact, which the tests check
   on thousands of reports); on text whose punctuation a model dropped it keeps a negation from
   reaching the next statement (``no ascites cardiomegaly is present``).
5. **Polarity**: a statement with a negation word (``no``, ``not``, ``without``, ``none``,
   ``neither``, ``nor``) asserts absence and is otherwise ignored; the grammar promises that
   positive statements never contain one. ``absent`` and ``absence`` are *not* negations: the
   grammar uses them for a nephrectomy (``the left kidney is surgically absent``).
6. **Findings** of a positive statement:

   - a lesion: a lesion noun (``nodule``, ``granuloma``, ``mass``, ``cyst``, ``lesion``, ``focus``,
     ``tumor``, ``metastasis``) and an organ word (``liver``/``hepatic``; ``spleen``/``splenic``;
     ``kidney``/``renal``; ``lung``/``pulmonary``/``upper|middle|lower lobe``). Every organ named in
     the statement gets the lesion; a lesion noun with no organ is ignored. Size: the first
     ``A [x B] mm`` (or ``cm``); density: the first density word (``hypodense``, ``low-attenuation``,
     ``cystic``...), else the noun (``cyst`` -> hypodense, ``granuloma`` -> calcified);
   - global findings: ``hepatomegaly`` or liver/hepatic ... ``enlarged`` (within four words);
     ``steatosis`` / ``fatty infiltration``; ``splenomegaly`` or spleen ... ``enlarged``;
     ``pleural effusion(s)`` (not pericardial); ``ascites`` / ``free fluid``; ``cardiomegaly`` or
     heart ... ``enlarged``; ``nephrectomy``, ``absent kidney``, ``kidney is surgically absent``,
     ``solitary``/``remaining kidney`` (which the grammar writes only after a nephrectomy).

A label is True when at least one positive statement states it, else False (not stated, or only
denied). Unknown sentences state nothing, the empty string gives all False, and a truncated last
sentence states at most what its complete form would.

Limitation: on text without any punctuation, only the openers separate statements; two
statements that meet with no opener between them are read as one (the generator's reports with
their punctuation stripped are all read right, which the tests check).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from velvet.data.phantoms.findings import LABEL_NAMES

__all__ = [
    "findings_from_report",
    "lesion_words",
    "lesions_from_report",
]


# ----------------------------------------------------------------------------- vocabulary

_NEGATION = re.compile(r"\b(?:no|not|without|none|neither|nor)\b")
_HEADER = re.compile(r"\b(technique|findings|impression)\b\s*:?")
# a sentence ends at . ! ? ; unless the dot is a decimal point (3.5 cm), and at line breaks
_TERMINATOR = re.compile(r"(?<!\d)\.|\.(?!\d)|[!?;\n]")

_LESION_NOUN = re.compile(
    r"\b(?:nodules?|granulomas?|mass(?:es)?|cysts?|lesions?|foc(?:us|i)|tumou?rs?|metastas[ie]s)\b"
)
_ORGAN_WORDS = {
    "liver": re.compile(r"\b(?:liver|hepatic)\b"),
    "spleen": re.compile(r"\b(?:spleen|splenic)\b"),
    "kidney": re.compile(r"\b(?:kidneys?|renal)\b"),
    "lung": re.compile(r"\b(?:lungs?|pulmonary|(?:upper|middle|lower)\s+lobes?|lingula)\b"),
}
_PAIRED = ("kidney", "lung")
_SIDE = re.compile(r"\b(right|left|bilateral|both)\b")
_SIZE_MM = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:x\s*(\d+(?:\.\d+)?)\s*)?mm\b")
_SIZE_CM = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:x\s*(\d+(?:\.\d+)?)\s*)?cm\b")
# density words in the order of their first occurrence decide; nouns only as a fallback
_DENSITY_WORDS = (
    ("calcified", re.compile(r"\bcalcifi\w*")),
    (
        "hypodense",
        re.compile(
            r"\bhypo-?(?:dense|attenuating|attenuation|enhancing)\b|\blow-?(?:attenuation|attenuating|density)\b"
            r"|\bcystic\b"
        ),
    ),
    (
        "hyperdense",
        re.compile(
            r"\bhyper-?(?:dense|attenuating|attenuation|enhancing)\b|\bhigh-?(?:attenuation|attenuating|density)\b"
            r"|\benhancing\b"
        ),
    ),
    ("soft_tissue", re.compile(r"\bsolid\b|\bsoft-?tissue\b")),
)
_DENSITY_NOUNS = (("hypodense", re.compile(r"\bcysts?\b")), ("calcified", re.compile(r"\bgranulomas?\b")))


def _enlarged(organ: str) -> str:
    """``<organ> ... enlarged`` within four words, or ``enlarged [..] <organ>``."""
    return rf"\b(?:{organ})\b(?:\W+\w+){{0,4}}?\W+enlarg\w*|\benlarg\w*\W+(?:\w+\W+){{0,2}}?(?:{organ})\b"


_GLOBALS = {
    "Hepatomegaly": re.compile(rf"\bhepato(?:spleno)?megaly\b|{_enlarged('liver|hepatic')}"),
    "Hepatic steatosis": re.compile(r"\bsteatosis\b|\bfatty\s+(?:infiltration|liver|change)\b"),
    "Splenomegaly": re.compile(rf"(?:\bhepato|\b)splenomegaly\b|{_enlarged('spleen|splenic')}"),
    "Pleural effusion": re.compile(r"(?<!pericardial )\beffusions?\b"),
    "Ascites": re.compile(r"\bascites\b|\bfree\s+(?:intraperitoneal\s+|abdominal\s+|pelvic\s+)?fluid\b"),
    "Cardiomegaly": re.compile(rf"\bcardiomegaly\b|{_enlarged('heart|cardiac')}"),
    "Nephrectomy": re.compile(
        r"\bnephrectomy\b"
        r"|\b(?:kidney|renal)\b(?:\W+\w+){0,3}?\W+absent\b"
        r"|\babsen(?:t|ce)\s+(?:of\s+)?(?:the\s+)?(?:right\s+|left\s+)?kidney\b"
        r"|\b(?:solitary|remaining)\s+(?:right\s+|left\s+)?kidney\b"
    ),
}
_LESION_LABELS = {
    "liver": "Liver lesion",
    "spleen": "Splenic lesion",
    "kidney": "Renal lesion",
    "lung": "Lung nodule",
}

# Words that open a statement in the grammar; a sentence is cut before each (step 4). Zero-width
# (a lookahead), so that one opener never hides another that starts inside it.
_OPENER = re.compile(
    r"""(?<![\w-])(?=
        no\b
      | there\s+(?:is|are)\b
      | the\s+(?:(?!(?:there|is|are)\b)[\w-]+\s+){0,6}?(?:is|are|contains|demonstrates)\b
      | an?\s+(?:[\w-]+\s+){0,3}?(?:\d|LESION_NOUN)
      | an?\s+(?:small|moderate|large)\b
      | \d+(?:\.\d+)?\s*(?:x\s*\d+(?:\.\d+)?\s*)?mm\b
      | (?:hepato(?:spleno)?|spleno|cardio)megaly\b
      | (?:hepatic\s+)?steatosis\b
      | diffuse\b
      | status\s+post\b
      | postsurgical\b
      | heart\s+size\b
      | both\s+kidneys\b
      | (?:small|moderate|large)(?:-volume)?\s+(?:bilateral|right|left|ascites|free)\b
      | (?:small|moderate|large)-volume\b
    )""".replace("LESION_NOUN", _LESION_NOUN.pattern),
    re.VERBOSE,
)
# A place phrase at the end of a piece: "in the upper pole of the left kidney".
_TRAILING_PLACE = re.compile(
    r"(?:^|\s)in(?:\s+(?:the|of|right|left|upper|lower|middle|lobe|pole|interpolar|region|hepatic|renal"
    r"|splenic|parenchyma|liver|spleen|kidney|lung))+$"
)
_BARE_SIZE = re.compile(r"\(?\s*\d+(?:\.\d+)?\s*(?:x\s*\d+(?:\.\d+)?\s*)?mm\s*\)?")
# A piece ending with one of these needs the next piece ("there is" + "a 20 mm cyst ...").
_NEEDS_MORE = frozenset(
    ("is", "are", "was", "were", "of", "in", "the", "a", "an", "measuring", "contains", "demonstrates")
    + ("shows", "with", "x", "and", "or", "nor", "no", "not", "without", "for", "to", "at", "on", "by")
    + ("post", "there", "likely", "probably", "(")
)
# Words that may follow a negation without naming what is denied ("no significant" + "ascites").
_MODIFIERS = frozenset(
    ("significant", "definite", "acute", "evidence", "suspicious", "focal", "obvious", "new", "other")
    + ("any", "appreciable", "overt", "gross", "frank", "convincing", "residual", "further", "additional")
    + ("is", "are", "seen", "identified", "present", "there", "a", "an", "the", "detected", "demonstrated")
    + ("visible",)
)


# ----------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class _Statement:
    section: str  # "findings" (also technique and text before any header) or "impression"
    text: str  # normalised: lower case, single spaces, parentheses as tokens
    negated: bool


def _normalise(text: str) -> str:
    t = text.lower()
    t = t.replace("n't", " not").replace("×", " x ")
    t = re.sub(r"[\u2010-\u2015\u2212]", "-", t)
    # a decoder writes "low - attenuation": hyphenated words are matched unspaced
    return re.sub(r"(?<=[a-z])\s*-\s*(?=[a-z])", "-", t)


def _clean(sentence: str) -> str:
    s = re.sub(r"[()]", lambda m: f" {m.group()} ", sentence)
    s = re.sub(r"[^\w\s()\-.]", " ", s)  # commas, colons, quotes: no meaning to the reader
    return " ".join(s.split())


def _needs_more(piece: str) -> bool:
    words = piece.split()
    if not words:
        return True
    if words[-1] in _NEEDS_MORE:
        return True
    if words[0] in ("in", "within") and not _LESION_NOUN.search(piece):
        return True  # "in the liver," before "there is a cyst": the place of what follows
    negations = list(_NEGATION.finditer(piece))
    if negations:  # a negation not yet followed by what it denies
        after = piece[negations[-1].end() :].split()
        return all(w in _MODIFIERS for w in after)
    return False


def _pieces(sentence: str) -> list[str]:
    """Cut ``sentence`` before each opener, then glue pieces that cannot stand alone."""
    cuts = [0] + [m.start() for m in _OPENER.finditer(sentence) if m.start() > 0] + [len(sentence)]
    raw = [sentence[a:b].strip() for a, b in pairwise(cuts)]
    out: list[str] = []
    current = ""
    for piece in raw:
        current = f"{current} {piece}".strip()
        if not _needs_more(current):
            out.append(current)
            current = ""
    if current:  # a truncated last statement, or one that only needed more: keep what is there
        out.append(current)
    return _move_places(out)


def _move_places(pieces: list[str]) -> list[str]:
    """Give a trailing place (``in the right hepatic lobe``) to a following ``there is ...``.

    Without punctuation, ``no ascites in the right hepatic lobe there is a cystic lesion`` reads
    as a statement ending in a place; the grammar's ``In <place>, there is ...`` is likelier. A
    lesion statement keeps its place unless it already named one (``a cyst in the liver there is
    ...``: the place ends the cyst's statement). A bare size (``... there is a cyst 41 mm``, from
    ``(41 mm)``) joins the statement before it.
    """
    out = list(pieces)
    for k in range(len(out) - 1):
        head, nxt = out[k], out[k + 1]
        m = _TRAILING_PLACE.search(head)
        if not (m and m.start() > 0 and re.match(r"there\s+(?:is|are)\b", nxt)):
            continue
        keeps = _LESION_NOUN.search(head) and not _NEGATION.search(head)
        if keeps and not any(p.search(head[: m.start()]) for p in _ORGAN_WORDS.values()):
            continue
        out[k], out[k + 1] = head[: m.start()].strip(), f"{m.group().strip()} {nxt}"
    glued: list[str] = []
    for piece in out:  # after the places moved: "78 mm in the left lung" is now a bare "78 mm"
        if glued and _BARE_SIZE.fullmatch(piece):
            glued[-1] = f"{glued[-1]} {piece}"
        else:
            glued.append(piece)
    return glued


def _statements(text: str) -> Iterator[_Statement]:
    parts = _HEADER.split(_normalise(text))
    section = "findings"
    # re.split with one group alternates text and header names: even indices are text
    for k, part in enumerate(parts):
        if k % 2 == 1:
            section = "impression" if part == "impression" else "findings"
            continue
        for sentence in _TERMINATOR.split(part):
            cleaned = _clean(sentence)
            if not cleaned:
                continue
            for piece in _pieces(cleaned):
                yield _Statement(section, piece, bool(_NEGATION.search(piece)))


# ----------------------------------------------------------------------------- findings of a statement


def _side_near(text: str, position: int) -> str | None:
    sides = [(abs(m.start() - position), m.group(1)) for m in _SIDE.finditer(text)]
    if not sides:
        return None
    word = min(sides)[1]
    return "bilateral" if word in ("both", "bilateral") else word


def _size(text: str) -> tuple[int | None, int | None]:
    for pattern, scale in ((_SIZE_MM, 1.0), (_SIZE_CM, 10.0)):
        m = pattern.search(text)
        if m:
            minor = round(float(m.group(2)) * scale) if m.group(2) else None
            return round(float(m.group(1)) * scale), minor
    return None, None


def _density(text: str) -> str | None:
    found = [(m.start(), name) for name, pat in _DENSITY_WORDS for m in [pat.search(text)] if m]
    if found:
        return min(found)[1]
    for name, pat in _DENSITY_NOUNS:
        if pat.search(text):
            return name
    return None


def _lesions_of(statement: _Statement) -> list[dict[str, Any]]:
    """The lesions a positive statement describes: one per organ it names."""
    text = statement.text
    if not _LESION_NOUN.search(text):
        return []
    diameter, minor = _size(text)
    density = _density(text)
    lesions = []
    for organ, pattern in _ORGAN_WORDS.items():
        m = pattern.search(text)
        if m:
            lesions.append(
                {
                    "organ": organ,
                    "side": _side_near(text, m.start()) if organ in _PAIRED else None,
                    "diameter_mm": diameter,
                    "minor_mm": minor,
                    "density": density,
                    "section": statement.section,
                }
            )
    return lesions


def _positive_statements(text: str) -> list[_Statement]:
    if not isinstance(text, str):
        raise TypeError(f"a report must be a str, got {type(text).__name__}")
    return [s for s in _statements(text) if not s.negated]


def findings_from_report(text: str) -> dict[str, bool]:
    """The finding labels a phantom report states, read from its text alone.

    Args:
        text: a report, as written by :func:`~velvet.data.phantoms.reports.write_report` or by a
            model trained on such reports (any case, spacing or punctuation).

    Returns:
        One entry per :data:`~velvet.data.phantoms.findings.LABEL_NAMES` label, in that order:
        True when a non-negated statement states the finding (see the module docstring).

    Raises:
        TypeError: ``text`` is not a string.
    """
    labels = dict.fromkeys(LABEL_NAMES, False)
    for statement in _positive_statements(text):
        for lesion in _lesions_of(statement):
            labels[_LESION_LABELS[lesion["organ"]]] = True
        for name, pattern in _GLOBALS.items():
            if pattern.search(statement.text):
                labels[name] = True
    return labels


def lesions_from_report(text: str) -> list[dict[str, Any]]:
    """The focal lesions a phantom report describes.

    Lesions come in report order, those of the findings (and any text outside an impression)
    first. A sentence repeated verbatim within a section (a generation loop) counts once, and an
    impression lesion that matches a findings lesion of the same organ and side with the same
    diameter (or one without a diameter) is the same lesion, stated again.

    Args:
        text: a report (see :func:`findings_from_report`).

    Returns:
        Dicts with ``organ`` (``liver``, ``spleen``, ``kidney``, ``lung``), ``side`` (``left``,
        ``right``, ``bilateral`` for kidneys and lungs when stated, else None), ``diameter_mm`` and
        ``minor_mm`` (ints, None when not stated), ``density`` (``hypodense``, ``hyperdense``,
        ``calcified``, ``soft_tissue`` or None) and ``section`` (``findings`` or ``impression``).

    Raises:
        TypeError: ``text`` is not a string.
    """
    by_section: dict[str, list[dict[str, Any]]] = {"findings": [], "impression": []}
    seen: set[tuple[str, str]] = set()
    for statement in _positive_statements(text):
        if (statement.section, statement.text) in seen:
            continue
        seen.add((statement.section, statement.text))
        by_section[statement.section].extend(_lesions_of(statement))
    lesions = list(by_section["findings"])
    unmatched = list(lesions)
    for lesion in by_section["impression"]:
        match = next((f for f in unmatched if _same_lesion(f, lesion)), None)
        if match is None:
            lesions.append(lesion)
        else:
            unmatched.remove(match)
    return lesions


def _same_lesion(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a["organ"] != b["organ"] or a["side"] != b["side"]:
        return False
    return a["diameter_mm"] is None or b["diameter_mm"] is None or a["diameter_mm"] == b["diameter_mm"]


def lesion_words(words: Sequence[str]) -> list[int]:
    """Positions of the lesion nouns that a report's words state, not those it denies.

    For grounding: in ``No focal liver lesion. A 24 mm cyst in the left kidney.`` the word that
    names a lesion in the scan is ``cyst``, not the first ``lesion``. The words are cut into
    sentences at ``.``, ``!``, ``?``, ``;`` and line breaks, and a lesion noun counts when its
    sentence, read like a report (:func:`lesions_from_report`), describes a lesion.

    Args:
        words: the text as words and punctuation marks, in order (as
            :meth:`~velvet.data.tokenization.Tokenizer.words_from_pieces` or a grounding's
            ``units`` give them).

    Returns:
        Indices into ``words``, in text order.
    """
    found: list[int] = []
    sentence: list[int] = []
    for k, word in enumerate([*words, "."]):
        if word not in (".", "!", "?", ";", "\n"):
            sentence.append(k)
            continue
        if sentence and lesions_from_report(" ".join(words[i] for i in sentence)):
            found.extend(i for i in sentence if _LESION_NOUN.fullmatch(words[i].lower()))
        sentence = []
    return found

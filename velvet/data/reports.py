"""Radiology report text: cleaning and sentence splitting.

:func:`clean_report` normalises the characters of a report (odd spaces, quotes, control
characters, M3D section headers) but keeps its line structure, which :func:`split_sentences`
needs. :func:`split_sentences` follows the reference ``custom_split`` (method.md 2.2) and fixes the
places where that splitter makes meaningless sentences.

Splitting rules, in order:

1. Blocks: the text is cut at runs of 3 or more newlines (paragraph-level sections of M3D-Cap).
2. Bullets start a new sentence and are removed: ``•``, ``●``, ``▪``, ``◦``, ``‣`` anywhere, ``·``
   after a space or at the start (``kg·m`` is kept), and a ``"`` with spaces on both sides (CT-RATE
   separates impression items with `` " ``). A line starting with ``-``/``*``/``+`` or an
   enumerator (``1.``, ``2)``, ``(3)``) starts a new sentence too (the marker is kept).
3. Terminators: a run of ``.``, ``!``, ``?``, ``…`` (with closing brackets/quotes that follow it,
   ``?).`` or ``."``) ends a sentence, keeping the punctuation, when followed by whitespace or the
   end of the block; or, for a single terminator, directly by an upper-case letter (M3D-Cap has
   ``"structures.No extra-axial"``). It does not end one:

   - inside a number: ``3.5 cm``, dates ``19.06.2020`` (no space follows the dot);
   - after an abbreviation that never ends a sentence: ``e.g.``, ``i.e.``, ``approx.``, ``vs.``,
     ``Dr.``, ``cf.``, ``Fig.``, ``et al.``, dotted acronyms (``U.S.``), a single capital initial
     (``J. Smith``), and ``No.`` before a digit;
   - inside a parenthesis that closes within 100 characters: ``(airway disease ? vascular?)``;
   - after a unit or ``etc.`` (``3 cm. in diameter``), an ellipsis (``lung ..... posteriorly``) or a
     terminator that closes a bracket (``(cyst?) in the liver``), unless the next word starts with
     an upper-case letter (``3 cm. The liver`` does end a sentence).

   Otherwise the reference behaviour is kept: a ``.`` followed by a space ends a sentence even if
   the next word is lower-case (real reports start sentences in lower case: ``arteries. abdominal
   aortic branches are open``).
4. Long chunks: a chunk of more than 30 words that contains a newline is split at its newlines;
   otherwise its newlines become spaces (reference rule).
5. Merging instead of meaningless sentences: a chunk that is only an enumerator (``1.``, ``b)``)
   is prefixed to the next chunk; a chunk with no letter or digit (a stray ``"`` or ``)``) is
   appended to the previous one (prefixed to the next one at the start of a block). So no text is lost, and a non-empty report always gives at least
   one sentence.
"""

from __future__ import annotations

import os
import re

from velvet.data.errors import ReportError

__all__ = [
    "HEADER_WORDS",
    "MAX_REPORT_CHARS",
    "clean_report",
    "normalize_text",
    "split_cleaned",
    "split_sentences",
]

# A "report" longer than this is a misplaced document, log or binary file read as text.
MAX_REPORT_CHARS = 100_000

# M3D-Cap section headers removed by the reference splitter (matched case-insensitively here).
HEADER_WORDS = ("Title:", "presentation:", "patient:", "Age:", "Gender:", "study_findings:", "discussion:")

# ----------------------------------------------------------------------------------- cleaning

_CHAR_REPLACEMENTS = {
    **dict.fromkeys("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a", " "),
    **dict.fromkeys("\u202f\u205f\u3000", " "),
    **dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff\u00ad", ""),  # zero-width, soft hyphen
    **dict.fromkeys("\u2028\u2029\x85", "\n"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033", '"'),
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032", "'"),
}
# a regex finds the few odd characters; str.translate would look up every character (slow)
_ODD_CHARS = re.compile("[" + "".join(_CHAR_REPLACEMENTS) + "]")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_HEADERS = re.compile(
    r"(?<![\w])(?:" + "|".join(re.escape(w) for w in HEADER_WORDS) + r")",
    re.IGNORECASE,
)
_HEADER_KEYS = tuple(w.lower() for w in HEADER_WORDS)
_SPACES = re.compile(r" {2,}")
_LINE_EDGES = re.compile(r" *\n *")
_ALNUM = re.compile(r"[^\W_]")


def _odd_replacement(match: re.Match[str]) -> str:
    return _CHAR_REPLACEMENTS[match.group()]


def _control_replacement(match: re.Match[str]) -> str:
    return " " if match.group() in "\t\x0b\x0c" else ""


def normalize_text(text: str) -> str:
    """The character-level cleaning of :func:`clean_report`, without its checks (never raises)."""
    # each step is guarded by a cheap test: most reports need none of them (speed, not style)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():
        text = _ODD_CHARS.sub(_odd_replacement, text)
    if not text.isprintable():  # tabs, control characters (newlines too: then the sub is a no-op)
        text = _CONTROL.sub(_control_replacement, text)
    low = text.lower()
    if any(w in low for w in _HEADER_KEYS):
        text = _HEADERS.sub(" ", text)
    if "  " in text:
        text = _SPACES.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = _LINE_EDGES.sub("\n", text)
    return text.strip()


def clean_report(text: str, *, source: str | os.PathLike[str] = "report") -> str:
    """Normalise a report's characters, keeping its line structure.

    Unicode spaces (NBSP, thin spaces, tabs) become plain spaces; zero-width characters, soft
    hyphens and control characters are removed; ``\\r\\n`` becomes ``\\n``; curly quotes become
    ASCII; the M3D section header words (:data:`HEADER_WORDS`, any case) are removed; runs of
    spaces collapse and lines are stripped. Newlines are kept: :func:`split_sentences` uses them.
    The function is idempotent.

    Args:
        text: the raw report.
        source: what an error names (a file, ``"report of case 'x'"``).

    Returns:
        The cleaned report.

    Raises:
        ReportError: the text is empty or has no letter/digit after cleaning, or is longer than
            :data:`MAX_REPORT_CHARS` characters.
    """
    if not isinstance(text, str):
        raise ReportError(source, f"report must be a string, got {type(text).__name__}")
    if len(text) > MAX_REPORT_CHARS:
        raise ReportError(
            source, f"report has {len(text):,} characters, more than a report can have ({MAX_REPORT_CHARS:,})"
        )
    cleaned = normalize_text(text)
    if not cleaned:
        raise ReportError(source, "report is empty after cleaning")
    if not _ALNUM.search(cleaned):
        raise ReportError(source, f"report has no letter or digit: {cleaned[:40]!r}")
    return cleaned


# ---------------------------------------------------------------------------------- splitting

_BOUNDARY = "\x1e"  # record separator: cannot survive cleaning, so it is a safe cut marker
_BLOCKS = re.compile(r"\n{3,}")
# "·" counts after a space (not in "kg·m"), a '"' only between spaces (CT-RATE separates
# impression items with ' " ')
_BULLETS = re.compile(r"[•●▪◦‣·\"](?:(?<=[•●▪◦‣])|(?<=·)(?<![^ \n]·)|(?<=\")(?<![^ \n]\")(?=[ \n]|$))")
_BULLET_CHARS = re.compile(r"[•●▪◦‣·\"]")
_LINE_ITEMS = re.compile(r"^(?=[-*+] |\(?\d{1,2}[.)] )", re.MULTILINE)
# a terminator run with the closing brackets/quotes (and further terminators) that follow it;
# capturing, so that re.split keeps it: [text, terminator, text, terminator, ..., text]
_TERMINATOR = re.compile(r"((?:[.!?]|…)[.!?…)\]}\"']*)")
_DOTTED_ACRONYM = re.compile(r"^(?:[a-z]\.)+[a-z]$")
_ENUMERATOR_ONLY = re.compile(r"^(?:\(?\d{1,3}[.)]|\(?[A-Za-z][.)]|[-*+])$")
_WORD_SPLIT = re.compile(r"[ \n]+")

# abbreviations (lower case, without the final dot) after which a "." never ends a sentence
_ABBREVIATIONS = frozenset(
    "e.g i.e eg ie approx appr vs dr mr mrs ms prof assist assoc cf fig figs al viz incl resp ref nos".split()  # noqa: SIM905
)
# units and the like: the "." ends a sentence only if the next word starts upper-case
_WEAK_ABBREVIATIONS = frozenset(
    "mm cm m ml cc l kg mg g hu sec s min h hr hrs wk wks mo yr yrs y etc ca".split()  # noqa: SIM905
)
_OPENERS = "([{\"'"
_LONGEST_ABBREVIATION = max(len(a) for a in _ABBREVIATIONS | _WEAK_ABBREVIATIONS)


def _dot_verdict(current: list[str], nxt: str) -> bool | None:
    """Rule 3 for a "." after the token ending ``current[-2]``: False/True, or None = no opinion."""
    tail = current[-2]
    cut = max(tail.rfind(" "), tail.rfind("\n"))
    if cut == -1 and len(current) >= 4:
        tail = current[-4] + current[-3] + tail  # a dotted token spans parts: "e" "." "g"
        cut = max(tail.rfind(" "), tail.rfind("\n"))
    raw = tail[cut + 1 :]
    if len(raw) > _LONGEST_ABBREVIATION and raw.isalpha():
        return None  # the common case, an ordinary word: "normal."
    raw = raw.lstrip(_OPENERS).strip(".")
    token = raw.lower()
    last = token.rsplit(".", 1)[-1]  # "assist.prof" -> "prof"
    if token in _ABBREVIATIONS or last in _ABBREVIATIONS or ("." in token and _DOTTED_ACRONYM.match(token)):
        return False
    if len(last) == 1 and raw[-1].isupper():
        return False  # an initial: "J. Smith"
    if last == "no" and nxt.isdigit():
        return False
    if last.lstrip("0123456789") in _WEAK_ABBREVIATIONS:  # "3 cm.", "5mm."
        return nxt.isupper()
    return None


def _ends_sentence(current: list[str], after: str, inside_parenthesis: bool) -> bool:
    """Whether the terminator ``current[-1]``, followed by the text ``after``, ends a sentence."""
    term = current[-1]
    if not after:
        return True
    c0 = after[0]
    if c0 == " " or c0 == "\n":
        nxt = after[1:2]
        if nxt == " " or nxt == "\n":
            nxt = after.lstrip(" \n")[:1]
        if not nxt:
            return True
    elif term == "." and c0.isupper():
        nxt = c0  # "structures.No": a missing space
    else:
        return False  # "3.5", "19.06.2020", "e.g.,"
    if inside_parenthesis:
        return False  # "(small airway disease ? vascular pathology?)"
    if term[0] == ".":
        verdict = _dot_verdict(current, nxt)
        if verdict is not None:
            return verdict
    if (len(term) > 1 and term[1] in ".!?…") or term[0] == "…" or term[-1] in ")]}":
        return nxt.isupper()  # an ellipsis, or a terminator closing a bracket: "(cyst?) in the"
    return True


def _cut_block(block: str) -> list[str]:
    """Cut one block at bullets, line items and sentence ends; returns the raw chunks."""
    if _BULLET_CHARS.search(block):
        block = _BULLETS.sub(_BOUNDARY, block)
    if "\n" in block:
        block = _LINE_ITEMS.sub(_BOUNDARY, block)
    parts = _TERMINATOR.split(block)
    chunks: list[str] = []
    current = [parts[0]]
    depth = max(0, parts[0].count("(") - parts[0].count(")"))
    pos = len(parts[0])
    for k in range(1, len(parts), 2):
        term, after = parts[k], parts[k + 1]
        current.append(term)
        pos += len(term)
        depth = max(0, depth - term.count(")"))
        # an unclosed "(" counts only if a ")" follows soon: a stray "(" must not glue the report
        inside = depth > 0 and block.find(")", pos, pos + 100) != -1
        if _ends_sentence(current, after, inside):
            chunks.append("".join(current))
            current, depth = [], 0
        current.append(after)
        pos += len(after)
        if "(" in after or ")" in after:
            depth = max(0, depth + after.count("(") - after.count(")"))
    chunks.append("".join(current))
    return [c for chunk in chunks for c in chunk.split(_BOUNDARY)] if _BOUNDARY in block else chunks


def _finish_chunks(raw: list[str]) -> list[str]:
    """Apply the newline rule (4) and the merging rule (5) to raw chunks."""
    chunks: list[str] = []
    for chunk in raw:
        chunk = chunk.strip()
        if not chunk:
            continue
        if "\n" not in chunk:
            chunks.append(chunk)
        elif len(_WORD_SPLIT.split(chunk)) > 30:
            chunks.extend(line.strip() for line in chunk.split("\n") if line.strip())
        else:
            chunks.append(_SPACES.sub(" ", chunk.replace("\n", " ")))
    out: list[str] = []
    carry = ""
    for chunk in chunks:
        if carry:
            chunk, carry = f"{carry} {chunk}", ""
        if len(chunk) <= 4 and _ENUMERATOR_ONLY.match(chunk):
            carry = chunk
        elif not _ALNUM.search(chunk):
            if out:
                out[-1] = f"{out[-1]} {chunk}" if chunk[0] not in ".!?,;:)]}" else out[-1] + chunk
            else:
                carry = chunk  # nothing before it: it goes with the next sentence
        else:
            out.append(chunk)
    if carry:  # left over at the very end: keep it with the previous sentence
        if out:
            out[-1] = f"{out[-1]} {carry}"
        else:
            out.append(carry)
    return out


def split_sentences(text: str) -> list[str]:
    """Split a report into sentences (rules in the module docstring).

    The text is normalised like :func:`clean_report` first (idempotent, so cleaned text may be
    passed), but no error is raised: an empty text gives an empty list.

    Args:
        text: a report.

    Returns:
        The sentences in order, each stripped, single-spaced and non-empty; at least one when
        the cleaned text is not empty.

    Example:
        >>> split_sentences("Nodule of 3.5 cm, e.g. in segment 6. No effusion.")
        ['Nodule of 3.5 cm, e.g. in segment 6.', 'No effusion.']
    """
    cleaned = normalize_text(text)
    if not cleaned:
        return []
    return split_cleaned(cleaned)


def split_cleaned(cleaned: str) -> list[str]:
    """:func:`split_sentences` for text already passed through :func:`clean_report` (no re-cleaning)."""
    sentences: list[str] = []
    for block in _BLOCKS.split(cleaned):
        sentences.extend(_finish_chunks(_cut_block(block)))
    return sentences

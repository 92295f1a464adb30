"""The LM's text side of a VQA item or a report: prompt, target, and reading an answer back.

One layout for training, generation and option scoring (so what the LM is scored on is what it
was trained to write)::

    closed:  "Question: <q>\nOptions: A. <a> B. <b> ...\nAnswer:"  ->  " B. <b>"
    open:    "Question: <q>\nAnswer:"                              ->  " <answer>"
    report:  "<instruction>\nReport:"                              ->  " <report>"

With expert knowledge (:mod:`velvet.vlm.expert`) its line comes first: ``"Segmentation: ...\n"``.

The closed target is ``"<letter>. <option>"`` as M3D-VQA's, so both a letter and the option text
can be read from a generation (:func:`parse_choice`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

__all__ = [
    "LETTERS",
    "REPORT_INSTRUCTION",
    "closed_target",
    "normalize_answer",
    "parse_choice",
    "prompt_text",
]

LETTERS = "ABCDEFGH"
REPORT_INSTRUCTION = "Write the radiology report of this CT scan."


def prompt_text(
    question: str | None,
    choices: Sequence[str] = (),
    *,
    with_question: bool = True,
    context: str | None = None,
) -> str:
    """The LM prompt of a question (``None``: report generation).

    Args:
        question: the question, or None for a report.
        choices: the options of a closed question, in letter order.
        with_question: write the question (and options) into the prompt; without, the LM sees
            only the soft prompt and the answer cue (the method's bridge carries the question).
        context: a line put first (the expert-knowledge line), or None.
    """
    head = [] if context is None else [" ".join(context.split())]
    if question is None:
        return "\n".join([*head, REPORT_INSTRUCTION, "Report:"])
    if not with_question:
        return "\n".join([*head, "Answer:"])
    lines = [*head, f"Question: {question.strip()}"]
    if choices:
        lines.append("Options: " + " ".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)))
    lines.append("Answer:")
    return "\n".join(lines)


def closed_target(choices: Sequence[str], index: int) -> str:
    """The target of a closed item: ``"<letter>. <option>"``."""
    return f"{LETTERS[index]}. {choices[index]}"


def normalize_answer(text: str) -> str:
    """Lower-case, NFKC, collapse spaces, strip surrounding punctuation (answer comparison)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\s+", " ", text).strip()
    return text.strip(" .,:;!?\"'()")


_LETTER = re.compile(r"^\s*\(?([A-H])\s*[\).:]")


def parse_choice(generated: str, choices: Sequence[str]) -> int | None:
    """Which option a generated answer names, or None when it names none or several.

    Rules, in order: a leading letter ``"B."`` / ``"B)"`` / ``"(B)"`` within the options; else the
    whole normalised text equals one option; else exactly one option occurs in the text as whole
    words (an answer naming two options is not a choice).
    """
    match = _LETTER.match(generated)
    if match and LETTERS.index(match.group(1)) < len(choices):
        return LETTERS.index(match.group(1))
    text = normalize_answer(generated)
    options = [normalize_answer(c) for c in choices]
    if text in options:
        return options.index(text)
    found = [i for i, o in enumerate(options) if o and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", text)]
    # an option inside another ("left" in "left kidney") is not a second match
    found = [i for i in found if not any(j != i and options[i] in options[j] for j in found)]
    return found[0] if len(found) == 1 else None

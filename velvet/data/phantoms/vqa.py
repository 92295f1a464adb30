"""Visual question answering items about a phantom: closed (multiple choice, yes/no) and open.

Each item is a dict in the ``vqa.jsonl`` layout::

    {"id": "phantom_00007_q03", "case_id": "phantom_00007", "question": "...", "answer": "...",
     "type": "closed", "choices": ["...", ...], "answer_choice": "B", "question_type": "lesion_density"}

Open items have ``"type": "open"`` and no ``choices`` / ``answer_choice``. Answers are derived from
the findings only, so they are true of the rendered volume. ``question_type`` (one of
:data:`QUESTION_TYPES`) groups items for per-type accuracy; files written before it existed lack
the key, and :func:`question_type_of` recovers it from the question text.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from velvet.data.phantoms.findings import LESION_ORGANS, Findings
from velvet.data.phantoms.reports import describe_lesion, summarize_findings

__all__ = ["ORGAN_WORDS", "QUESTION_TYPES", "make_vqa", "question_type_of"]

ORGAN_WORDS = {
    "liver": "liver",
    "spleen": "spleen",
    "kidney_right": "right kidney",
    "kidney_left": "left kidney",
    "lung_right": "right lung",
    "lung_left": "left lung",
}
_DENSITY_ANSWERS = {
    "hypodense": "hypodense (cystic)",
    "hyperdense": "hyperdense",
    "calcified": "calcified",
    "soft_tissue": "soft tissue",
}
_SIZE_ANSWERS = {"small": "smaller than 20 mm", "medium": "20 to 39 mm", "large": "40 mm or larger"}
_LETTERS = "ABCDEFGH"
QUESTION_TYPES = (
    "lesion_presence",
    "lesion_count",
    "lesion_organ",
    "lesion_density",
    "lesion_size",
    "lesion_description",
    "effusion",
    "global_finding",
    "findings_summary",
)
# question text -> type, for files generated before items carried "question_type"; every template
# used below must match exactly one pattern (a test checks this on generated items)
_TYPE_PATTERNS = (
    (re.compile(r"Is there a focal lesion in the [a-z ]+\?"), "lesion_presence"),
    (re.compile(r"How many focal lesions are seen\?"), "lesion_count"),
    (re.compile(r"Which organ contains the largest lesion\?"), "lesion_organ"),
    (re.compile(r"What is the attenuation of the largest lesion in the [a-z ]+\?"), "lesion_density"),
    (re.compile(r"What is the approximate diameter of the largest lesion\?"), "lesion_size"),
    (re.compile(r"Describe the (?:largest )?lesion in the [a-z ]+\."), "lesion_description"),
    (re.compile(r"Is there a pleural effusion, and on which side\?"), "effusion"),
    (
        re.compile(
            r"Is the (?:liver|spleen|heart) enlarged\?|Is there (?:hepatic steatosis|ascites)\?"
            r"|Are both kidneys present\?"
        ),
        "global_finding",
    ),
    (re.compile(r"What are the main findings\?"), "findings_summary"),
)


def question_type_of(question: str) -> str:
    """The question type of a phantom question (what :func:`make_vqa` stores as ``question_type``).

    Args:
        question: a question text written by :func:`make_vqa`.

    Returns:
        One of :data:`QUESTION_TYPES`.

    Raises:
        ValueError: the text is not one of the generator's question templates.
    """
    text = question.strip()
    for pattern, kind in _TYPE_PATTERNS:
        if pattern.fullmatch(text):
            return kind
    raise ValueError(f"not a phantom VQA question: {question!r}")


def _closed(question: str, answer: str, choices: list[str], question_type: str) -> dict[str, Any]:
    return {
        "question": question,
        "answer": answer,
        "type": "closed",
        "choices": choices,
        "answer_choice": _LETTERS[choices.index(answer)],
        "question_type": question_type,
    }


def _open(question: str, answer: str, question_type: str) -> dict[str, Any]:
    return {"question": question, "answer": answer, "type": "open", "question_type": question_type}


def _shuffled(rng: np.random.Generator, items: list[str]) -> list[str]:
    return [items[i] for i in rng.permutation(len(items))]


def make_vqa(case_id: str, f: Findings, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Questions about one case: 4-9 items, closed and open.

    Args:
        case_id: the case's id (each item gets ``<case_id>_qNN``).
        f: the case's findings.
        rng: the case's VQA random stream.

    Returns:
        The items, in the ``vqa.jsonl`` layout.
    """
    items = [
        _lesion_yes_no(f, rng),
        _closed(
            "How many focal lesions are seen?", str(len(f.lesions)), ["0", "1", "2", "3"], "lesion_count"
        ),
    ]
    if f.lesions:
        largest = f.lesions[0]
        organ = ORGAN_WORDS[largest.organ]
        others = [ORGAN_WORDS[o] for o in LESION_ORGANS if o != largest.organ]
        distractors = [others[i] for i in rng.choice(len(others), size=3, replace=False)]
        items.append(
            _closed(
                "Which organ contains the largest lesion?",
                organ,
                _shuffled(rng, [organ, *distractors]),
                "lesion_organ",
            )
        )
        items.append(
            _closed(
                f"What is the attenuation of the largest lesion in the {organ}?",
                _DENSITY_ANSWERS[largest.density],
                _shuffled(rng, list(_DENSITY_ANSWERS.values())),
                "lesion_density",
            )
        )
        items.append(
            _closed(
                "What is the approximate diameter of the largest lesion?",
                _SIZE_ANSWERS[largest.size_word],
                [*_SIZE_ANSWERS.values(), "no lesion"],
                "lesion_size",
            )
        )
        several = len(f.lesions_in(largest.organ)) > 1
        items.append(
            _open(
                f"Describe the {'largest ' if several else ''}lesion in the {organ}.",
                describe_lesion(largest),
                "lesion_description",
            )
        )
    items.append(
        _closed(
            "Is there a pleural effusion, and on which side?",
            f.effusion or "none",
            _shuffled(rng, ["right", "left", "bilateral", "none"]),
            "effusion",
        )
    )
    items.append(_global_yes_no(f, rng))
    items.append(_open("What are the main findings?", summarize_findings(f), "findings_summary"))
    return [{"id": f"{case_id}_q{k:02d}", "case_id": case_id, **item} for k, item in enumerate(items)]


def _lesion_yes_no(f: Findings, rng: np.random.Generator) -> dict[str, Any]:
    present = [o for o in LESION_ORGANS if o != f"kidney_{f.nephrectomy}"]
    with_lesion = sorted({les.organ for les in f.lesions})
    # ask about an affected organ half of the time, so "Yes" is not rare
    pool = with_lesion if with_lesion and rng.random() < 0.5 else present
    organ = pool[int(rng.integers(len(pool)))]
    answer = "Yes" if organ in with_lesion else "No"
    return _closed(
        f"Is there a focal lesion in the {ORGAN_WORDS[organ]}?", answer, ["Yes", "No"], "lesion_presence"
    )


def _global_yes_no(f: Findings, rng: np.random.Generator) -> dict[str, Any]:
    questions = [  # (question, truth, truth is abnormal)
        ("Is the liver enlarged?", f.hepatomegaly, f.hepatomegaly),
        ("Is there hepatic steatosis?", f.steatosis, f.steatosis),
        ("Is the spleen enlarged?", f.splenomegaly, f.splenomegaly),
        ("Is there ascites?", f.ascites is not None, f.ascites is not None),
        ("Is the heart enlarged?", f.cardiomegaly, f.cardiomegaly),
        ("Are both kidneys present?", f.nephrectomy is None, f.nephrectomy is not None),
    ]
    abnormal = [q for q in questions if q[2]]
    pool = abnormal if abnormal and rng.random() < 0.5 else questions
    question, truth, _ = pool[int(rng.integers(len(pool)))]
    return _closed(question, "Yes" if truth else "No", ["Yes", "No"], "global_finding")

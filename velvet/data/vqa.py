"""Visual question answering items: one schema for every VQA source, and its ``vqa.jsonl`` file.

A ``vqa.jsonl`` file holds one JSON object per line (what velvet's converters and the phantom
generator write)::

    {"id": "rad-0001", "case_id": "valid_1_a_1", "question": "Is emphysema visible?", "answer": "Yes",
     "type": "closed", "choices": ["Yes", "No"], "answer_choice": "A", "question_type": "task4/Emphysema",
     "split": "test", "volume": "../ct_rate/valid_1_a_1.nii.gz", "source": "3d-rad"}

=================== ======== =================================================================
key                 required meaning
=================== ======== =================================================================
``id``              yes      unique within the file
``question``        yes      the question text
``answer``          yes      the answer text; for closed items the correct option's text
``type``            yes      ``closed`` (multiple choice, yes/no) or ``open``
``choices``         closed   the options, in letter order A, B, C, ...
``answer_choice``   closed   the letter of the correct option
``question_type``   no       category for per-type accuracy (default: the phantom question type
                             for phantom files, else ``closed`` / ``open``)
``split``           no       ``train``, ``val`` or ``test``
``volume``          one of   volume path, relative to the file's folder or absolute
``case_id``         one of   a manifest record id (volume and split come from the manifest)
``source``          no       ``phantoms``, ``3d-rad``, ``m3d-vqa``, ``velvet`` (default: ``phantoms``
                             when a ``phantoms.json`` lies beside the file, else ``velvet``)
=================== ======== =================================================================

Other keys (a converter's provenance, e.g. 3D-RAD's ``task``) are ignored.
"""

from __future__ import annotations

import json
import math
import os
import re
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from velvet.data.atomic import atomic_path
from velvet.data.errors import DataError
from velvet.data.manifest import SPLITS, Manifest, ManifestRecord, read_manifest

__all__ = [
    "KINDS",
    "SOURCES",
    "VQA_NAME",
    "VQAItem",
    "majority_baseline",
    "normalize_answer",
    "read_vqa",
    "write_vqa",
]

VQA_NAME = "vqa.jsonl"
KINDS = ("closed", "open")
SOURCES = ("phantoms", "3d-rad", "m3d-vqa", "velvet")
LETTERS = string.ascii_uppercase
# a phantom set is recognised by the info file its generator writes first (velvet.data.phantoms.generate)
_PHANTOM_INFO = "phantoms.json"


@dataclass(frozen=True)
class VQAItem:
    """One question about one volume.

    Attributes:
        id: unique within a file.
        question: the question text.
        answer: the answer text (for closed items: the correct option's text).
        kind: ``"closed"`` or ``"open"``.
        choices: closed: the options in letter order A, B, C, ...; open: ``()``.
        answer_index: closed: index into ``choices`` of the correct option; open: None.
        question_type: category for per-type accuracy (yes/no is not a type: see :attr:`is_yes_no`).
        volume: resolved absolute path of the volume (None if unresolved).
        case_id: the manifest record id the item refers to, if any.
        split: ``train`` / ``val`` / ``test`` or None.
        source: ``"phantoms"``, ``"3d-rad"``, ``"m3d-vqa"`` or ``"velvet"``.
    """

    id: str
    question: str
    answer: str
    kind: str
    choices: tuple[str, ...]
    answer_index: int | None
    question_type: str
    volume: Path | None
    case_id: str | None
    split: str | None
    source: str

    @property
    def answer_letter(self) -> str | None:
        """The correct option's letter (``"A"`` ...) for closed items, None for open ones."""
        return None if self.answer_index is None else LETTERS[self.answer_index]

    @property
    def is_yes_no(self) -> bool:
        """A closed item whose options are exactly Yes and No (any case, any order)."""
        return (
            self.kind == "closed"
            and len(self.choices) == 2
            and {c.strip().lower() for c in self.choices} == {"yes", "no"}
        )


# --------------------------------------------------------------------------------------- reading


def read_vqa(
    path: str | os.PathLike[str],
    manifest: str | os.PathLike[str] | Manifest | None = None,
    *,
    split: str | None = None,
    source: str | None = None,
) -> list[VQAItem]:
    """Read and validate a ``vqa.jsonl`` file (see the module docstring for the keys).

    Every line is validated, also those that ``split`` filters out.

    Args:
        path: the ``vqa.jsonl`` file.
        manifest: a velvet manifest (path or read :class:`~velvet.data.manifest.Manifest`) that
            resolves ``case_id`` to the volume and split. An item's own ``volume`` / ``split``
            must agree with its record's.
        split: keep only the items of this split (after resolution through the manifest).
        source: the source of lines without a ``source`` key (default: see the module docstring).

    Returns:
        The items in file order.

    Raises:
        DataError: ``path:line: item 'id': problem`` for bad JSON, a missing or malformed key, an
            unknown type, an ``answer_choice`` that is not a letter of a choice, a chosen option
            whose text is not the answer, a duplicate id, a ``case_id`` not in the manifest, a
            split conflicting with the manifest's, or a volume file that does not exist. Also for a
            missing or empty file.
        ValueError: ``split`` or ``source`` is not a known name.
    """
    path = Path(path)
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source is not None and source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if not path.is_file():
        raise DataError(path, "VQA file does not exist")
    folder = path.resolve().parent
    if source is None:
        source = "phantoms" if (folder / _PHANTOM_INFO).is_file() else "velvet"
    records: dict[str, ManifestRecord] | None = None
    if manifest is not None:
        if not isinstance(manifest, Manifest):
            # volumes are checked per referenced case below; reports are not needed for VQA
            manifest = read_manifest(manifest, check_files=False, require_report=False)
        records = {r.id: r for r in manifest.records}
    exists: dict[str, bool] = {}  # many items share a volume: stat each file once
    items: list[VQAItem] = []
    first_line: dict[str, int] = {}
    try:
        with path.open(encoding="utf-8-sig") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                parser = _LineParser(path, line_no, folder, source, records, exists)
                item = parser.parse(line)
                if item.id in first_line:
                    parser.fail(f"duplicate id (first on line {first_line[item.id]})")
                first_line[item.id] = line_no
                items.append(item)
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not items:
        raise DataError(path, "VQA file has no items")
    return items if split is None else [item for item in items if item.split == split]


class _LineParser:
    """Validates one line; every error names the file, the line and (once known) the item id."""

    def __init__(
        self,
        path: Path,
        line_no: int,
        folder: Path,
        source: str,
        records: dict[str, ManifestRecord] | None,
        exists: dict[str, bool],
    ) -> None:
        self.where = f"{path}:{line_no}"
        self.folder = folder
        self.source = source
        self.records = records
        self.exists = exists
        self.item_id: str | None = None

    def fail(self, problem: str) -> NoReturn:
        who = f"item {self.item_id!r}: " if self.item_id is not None else ""
        raise DataError(self.where, who + problem)

    def optional(self, row: dict[str, Any], key: str) -> str | None:
        value = row.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(f"{key!r} must be a non-empty string, got {value!r}")
        return value

    def required(self, row: dict[str, Any], key: str) -> str:
        value = self.optional(row, key)
        if value is None:
            self.fail(f"missing key {key!r}")
        return value

    def parse(self, line: str) -> VQAItem:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            self.fail(f"invalid JSON ({exc.msg} at column {exc.colno})")
        if not isinstance(row, dict):
            self.fail("each line must be a JSON object")
        if isinstance(row.get("id"), str):
            self.item_id = row["id"]  # name the item in every later error
        item_id = self.required(row, "id")
        question = self.required(row, "question")
        answer = self.required(row, "answer")
        kind = self.required(row, "type")
        if kind not in KINDS:
            self.fail(f"unknown type {kind!r}; expected one of {KINDS}")
        choices, answer_index = self._choices(row, kind, answer)
        source = self.optional(row, "source") or self.source
        if source not in SOURCES:
            self.fail(f"unknown source {source!r}; expected one of {SOURCES}")
        question_type = self.optional(row, "question_type") or self._default_type(question, kind, source)
        split = self.optional(row, "split")
        if split is not None and split not in SPLITS:
            self.fail(f"split {split!r} is not one of {SPLITS}")
        case_id = self.optional(row, "case_id")
        volume_text = self.optional(row, "volume")
        if case_id is None and volume_text is None:
            self.fail("missing key 'volume' or 'case_id' (one is needed to find the image)")
        volume = self._resolve(volume_text) if volume_text is not None else None
        if case_id is not None and self.records is not None:
            volume, split = self._through_manifest(case_id, volume, split)
        if volume is not None:
            self._check_exists(volume)
        return VQAItem(
            id=item_id,
            question=question,
            answer=answer,
            kind=kind,
            choices=choices,
            answer_index=answer_index,
            question_type=question_type,
            volume=volume,
            case_id=case_id,
            split=split,
            source=source,
        )

    def _choices(self, row: dict[str, Any], kind: str, answer: str) -> tuple[tuple[str, ...], int | None]:
        raw, letter = row.get("choices"), row.get("answer_choice")
        if kind == "open":
            if raw or letter:  # [] / null are tolerated: a writer may emit empty keys
                self.fail("open item has 'choices' / 'answer_choice'")
            return (), None
        if raw is None or letter is None:
            self.fail("closed item needs 'choices' and 'answer_choice'")
        if not isinstance(raw, list) or not all(isinstance(c, str) and c.strip() for c in raw):
            self.fail(f"'choices' must be a list of non-empty strings, got {raw!r}")
        if not 2 <= len(raw) <= len(LETTERS):
            self.fail(f"closed item needs 2 to {len(LETTERS)} choices, got {len(raw)}")
        letters = LETTERS[: len(raw)]
        if not isinstance(letter, str) or len(letter) != 1 or letter not in letters:
            self.fail(f"answer_choice {letter!r} is not a letter of a choice ({letters[0]}-{letters[-1]})")
        index = letters.index(letter)
        if raw[index] != answer:
            self.fail(f"choice {letter} is {raw[index]!r} but the answer is {answer!r}")
        return tuple(raw), index

    def _default_type(self, question: str, kind: str, source: str) -> str:
        if source != "phantoms":
            return kind
        from velvet.data.phantoms.vqa import question_type_of  # numpy-heavy package: import on use

        try:
            return question_type_of(question)
        except ValueError as exc:
            self.fail(f"no 'question_type' and {exc}")

    def _resolve(self, value: str) -> Path:
        p = Path(value.strip()).expanduser()
        return Path(os.path.normpath(p if p.is_absolute() else self.folder / p))

    def _through_manifest(
        self, case_id: str, volume: Path | None, split: str | None
    ) -> tuple[Path, str | None]:
        record = self.records.get(case_id) if self.records is not None else None
        if record is None:
            self.fail(f"case_id {case_id!r} is not in the manifest")
        record_volume = Path(os.path.normpath(record.volume))
        if volume is not None and volume != record_volume:
            self.fail(
                f"volume {str(volume)!r} is not the volume of case {case_id!r} ({str(record_volume)!r})"
            )
        if split is not None and split != record.split:
            self.fail(
                f"split {split!r} conflicts with the manifest, which puts case {case_id!r} in {record.split!r}"
            )
        return record_volume, record.split

    def _check_exists(self, volume: Path) -> None:
        key = str(volume)
        if key not in self.exists:
            self.exists[key] = volume.exists()  # a file, or a DICOM series folder
        if not self.exists[key]:
            self.fail(f"volume file {key!r} does not exist")


# --------------------------------------------------------------------------------------- writing


def _item_to_dict(item: VQAItem, folder: Path) -> dict[str, Any]:
    """The ``vqa.jsonl`` object of an item, with the volume path relative to ``folder`` when possible."""
    d: dict[str, Any] = {"id": item.id}
    if item.case_id is not None:
        d["case_id"] = item.case_id
    d.update(question=item.question, answer=item.answer, type=item.kind)
    if item.kind == "closed":
        d["choices"] = list(item.choices)
        d["answer_choice"] = item.answer_letter
    d["question_type"] = item.question_type
    if item.split is not None:
        d["split"] = item.split
    if item.volume is not None:
        try:
            d["volume"] = os.path.relpath(item.volume, folder)
        except ValueError:  # another drive (Windows): keep it absolute
            d["volume"] = str(item.volume)
    d["source"] = item.source
    return d


def write_vqa(items: Iterable[VQAItem], path: str | os.PathLike[str]) -> Path:
    """Write items as ``vqa.jsonl`` atomically (temp file + rename); items may be a generator.

    Args:
        items: the items to write, in order.
        path: the output file; volume paths are written relative to its folder.

    Returns:
        The written path.

    Raises:
        ValueError: an item has neither a volume nor a case id (it could not be read back), or a
            closed item's ``answer_index`` does not point at its answer.
    """
    path = Path(path)
    folder = path.parent.resolve()
    # atomic: a reader (or a converter re-run) sees the old file or the new one, never half
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for item in items:
            if item.volume is None and item.case_id is None:
                raise ValueError(f"VQA item {item.id!r} has neither a volume nor a case_id")
            if item.kind == "closed" and (
                item.answer_index is None or item.choices[item.answer_index] != item.answer
            ):
                raise ValueError(f"VQA item {item.id!r}: answer_index does not point at the answer")
            fh.write(json.dumps(_item_to_dict(item, folder), ensure_ascii=False) + "\n")
    return path


# -------------------------------------------------------------------------------------- baseline


def normalize_answer(text: str) -> str:
    """Answer text for comparison: case-folded, whitespace collapsed, trailing full stops dropped."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".").strip().casefold()


def majority_baseline(train_items: Iterable[VQAItem], test_items: Iterable[VQAItem]) -> dict[str, Any]:
    """Accuracy of answering every closed test item with its type's most frequent train answer.

    Only closed items count. Answers are compared by :func:`normalize_answer`; ties between equally
    frequent train answers go to the alphabetically first. A test type absent from train has no
    prediction (all its items count as wrong).

    Args:
        train_items: items the majority answers are learnt from.
        test_items: items scored.

    Returns:
        ``{"per_type": {question_type: {"answer", "n_train", "n_test", "correct", "accuracy"}},
        "overall": {"n_test", "correct", "accuracy", "macro_accuracy"}}``; ``accuracy`` is NaN
        for zero test items, ``macro_accuracy`` the mean over the test types.
    """
    counts: dict[str, Counter[str]] = {}
    for item in train_items:
        if item.kind == "closed":
            counts.setdefault(item.question_type, Counter())[normalize_answer(item.answer)] += 1
    majority = {
        qt: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]  # most frequent, then alphabetical
        for qt, c in counts.items()
    }
    per_type: dict[str, dict[str, Any]] = {}
    for item in test_items:
        if item.kind != "closed":
            continue
        qt = item.question_type
        entry = per_type.setdefault(
            qt,
            {
                "answer": majority.get(qt),
                "n_train": sum(counts.get(qt, Counter()).values()),
                "n_test": 0,
                "correct": 0,
            },
        )
        entry["n_test"] += 1
        entry["correct"] += int(normalize_answer(item.answer) == entry["answer"])
    for entry in per_type.values():
        entry["accuracy"] = entry["correct"] / entry["n_test"]
    n_test = sum(e["n_test"] for e in per_type.values())
    correct = sum(e["correct"] for e in per_type.values())
    overall = {
        "n_test": n_test,
        "correct": correct,
        "accuracy": correct / n_test if n_test else math.nan,
        "macro_accuracy": (
            sum(e["accuracy"] for e in per_type.values()) / len(per_type) if per_type else math.nan
        ),
    }
    return {"per_type": dict(sorted(per_type.items())), "overall": overall}

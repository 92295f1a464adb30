"""Reader of 3D-RAD question files (VQA on CT-RATE volumes; ``/work/shared/datasets.md`` section 4).

A 3D-RAD file is a CSV with exactly these columns (UTF-8, standard quoting; a BOM is tolerated)::

    Task,Subtask,VolumeName,Question,Answer,QuestionType,AnswerChoice,Choice A,Choice B,Choice C,Choice D
    4,7,test_1016_a_1.nii.gz,Is emphysema visible on the CT scan?,Yes,Close,A,Yes,No,-,-

``-`` marks an empty choice; ``QuestionType`` is ``Open`` (no choices) or ``Close``. Files live in
``{train,test}/Task<N>_<Name>/<Subtask name>.csv``; file names may hold spaces (``Lung nodule.csv``).
A row's question type is ``task<Task>/<file stem>``, 3D-RAD's own grouping (Task 5 and Task 6 reuse
the letter file names ``b.csv`` ...; the task number keeps them apart).

``VolumeName`` keeps CT-RATE's naming, except that 3D-RAD's ``test_<P>_<s>_<r>`` are CT-RATE
*validation* volumes ``valid_<P>_<s>_<r>``: see :func:`ctrate_volume_name`.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from velvet.data.errors import DataError

__all__ = ["COLUMNS", "RadRow", "ctrate_volume_name", "read_3drad", "read_3drad_csv"]

COLUMNS = (
    "Task",
    "Subtask",
    "VolumeName",
    "Question",
    "Answer",
    "QuestionType",
    "AnswerChoice",
    "Choice A",
    "Choice B",
    "Choice C",
    "Choice D",
)
_CHOICE_COLUMNS = COLUMNS[7:]
_LETTERS = "ABCD"
_EMPTY = "-"
_KINDS = {"open": "open", "close": "closed"}
_VOLUME_RE = re.compile(r"^(train|test|valid)_(\d+)_([A-Za-z]+)_(\d+)(\.nii\.gz)?$")


@dataclass(frozen=True)
class RadRow:
    """One 3D-RAD question.

    Attributes:
        file: the CSV it came from.
        line: physical line (1-based) where the row starts, for error messages and item ids.
        task: the ``Task`` number (1-6).
        subtask: the ``Subtask`` number (the file within the task).
        volume_name: ``VolumeName`` as written (``test_1016_a_1.nii.gz``).
        question: the question text.
        answer: the ``Answer`` text as written (may differ from the option text in case or a final ``.``).
        kind: ``"open"`` or ``"closed"`` (3D-RAD's ``Open`` / ``Close``).
        choices: the non-empty options in letter order (``()`` for open rows).
        answer_index: index into ``choices`` of ``AnswerChoice`` (None for open rows).
        question_type: ``task<Task>/<file stem>``, e.g. ``task2/Abnormality_type``.
    """

    file: Path
    line: int
    task: int
    subtask: int
    volume_name: str
    question: str
    answer: str
    kind: str
    choices: tuple[str, ...]
    answer_index: int | None
    question_type: str

    @property
    def answer_letter(self) -> str | None:
        """``AnswerChoice`` (``"A"`` ...) of a closed row, None for an open one."""
        return None if self.answer_index is None else _LETTERS[self.answer_index]


def ctrate_volume_name(volume_name: str) -> str:
    """The CT-RATE file name of a 3D-RAD ``VolumeName``.

    3D-RAD's test volumes are CT-RATE's validation volumes renamed ``test_``; train volumes keep
    their CT-RATE name. A missing ``.nii.gz`` is added.

    Args:
        volume_name: e.g. ``test_1001_a_1.nii.gz``.

    Returns:
        e.g. ``valid_1001_a_1.nii.gz``.

    Raises:
        ValueError: the name is not ``<train|test|valid>_<patient>_<scan>_<recon>[.nii.gz]``.
    """
    match = _VOLUME_RE.match(volume_name.strip())
    if match is None:
        raise ValueError(
            f"VolumeName {volume_name!r} is not <train|test>_<patient>_<scan>_<reconstruction>.nii.gz"
        )
    prefix = "valid" if match.group(1) == "test" else match.group(1)
    return f"{prefix}_{match.group(2)}_{match.group(3)}_{match.group(4)}.nii.gz"


def _same_text(a: str, b: str) -> bool:
    # 3D-RAD writes "Yes" as the option and "yes." as the answer now and then
    def norm(s: str) -> str:
        return s.strip().rstrip(".").strip().casefold()

    return norm(a) == norm(b)


def _parse_row(path: Path, line: int, values: dict[str, str]) -> RadRow:
    volume = values["VolumeName"].strip()

    def fail(problem: str) -> DataError:
        return DataError(f"{path}:{line}", f"row of volume {volume!r}: {problem}")

    try:
        task, subtask = int(values["Task"]), int(values["Subtask"])
    except ValueError:
        raise fail(f"Task/Subtask must be integers, got {values['Task']!r}/{values['Subtask']!r}") from None
    question, answer = values["Question"].strip(), values["Answer"].strip()
    if not volume or not question or not answer:
        raise fail("empty VolumeName, Question or Answer")
    kind = _KINDS.get(values["QuestionType"].strip().lower())
    if kind is None:
        raise fail(f"QuestionType must be Open or Close, got {values['QuestionType']!r}")
    raw = [values[c].strip() for c in _CHOICE_COLUMNS]
    given = [c not in ("", _EMPTY) for c in raw]
    letter = values["AnswerChoice"].strip()
    if kind == "open":
        if any(given) or letter not in ("", _EMPTY):
            raise fail("an Open row must have '-' for AnswerChoice and every choice")
        choices: tuple[str, ...] = ()
        index = None
    else:
        n = sum(given)
        if given[:n] != [True] * n:  # a gap would shift the letters of the options after it
            raise fail(f"empty choice before a given one ({', '.join(raw)}); empties must be trailing")
        if n < 2:
            raise fail(f"a Close row needs at least 2 choices, got {n}")
        choices = tuple(raw[:n])
        if len(letter) != 1 or letter not in _LETTERS[:n]:
            raise fail(f"AnswerChoice {letter!r} is not the letter of a given choice (A-{_LETTERS[n - 1]})")
        index = _LETTERS.index(letter)
        if not _same_text(choices[index], answer):
            raise fail(f"AnswerChoice {letter} is {choices[index]!r} but Answer is {answer!r}")
    return RadRow(
        file=path,
        line=line,
        task=task,
        subtask=subtask,
        volume_name=volume,
        question=question,
        answer=answer,
        kind=kind,
        choices=choices,
        answer_index=index,
        question_type=f"task{task}/{path.stem}",
    )


def read_3drad_csv(path: str | os.PathLike[str]) -> list[RadRow]:
    """Read and validate one 3D-RAD CSV.

    Args:
        path: the CSV file.

    Returns:
        Its rows in file order (blank lines are ignored).

    Raises:
        DataError: ``file:line: ...`` naming the volume for a missing column, a row with the wrong
            number of fields, a non-integer Task/Subtask, an empty question or answer, a
            ``QuestionType`` other than Open/Close, an Open row with choices, a gap among the
            choices, an ``AnswerChoice`` that is not a given choice's letter, an option whose text
            is not the ``Answer``; also for text that is not UTF-8 or not CSV.
    """
    path = Path(path)
    csv.field_size_limit(2**31 - 1)  # long Task 6 questions embed the history; no data limit here
    rows: list[RadRow] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise DataError(path, f"missing 3D-RAD column(s) {missing}; header is {header}")
            index = {c: header.index(c) for c in COLUMNS}
            while True:
                start = reader.line_num + 1  # a quoted field may span lines: report where the row starts
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    raise DataError(f"{path}:{start}", f"cannot be read as CSV ({exc})") from None
                if not "".join(fields).strip():
                    continue
                if len(fields) != len(header):
                    raise DataError(
                        f"{path}:{start}", f"{len(fields)} fields, but the header has {len(header)}"
                    )
                rows.append(_parse_row(path, start, {c: fields[i] for c, i in index.items()}))
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return rows


def _csv_files(root: Path) -> list[Path]:
    # hidden files and macOS "._x" / __MACOSX junk are not question files
    found = []
    for p in root.rglob("*.csv"):
        parts = p.relative_to(root).parts  # only below root: the root itself may sit under a hidden folder
        if p.is_file() and not any(part.startswith(".") or part == "__MACOSX" for part in parts):
            found.append(p)
    return sorted(found)


def read_3drad(root_or_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[RadRow]:
    """Read every 3D-RAD CSV of a folder (recursively), one file, or a list of files.

    Args:
        root_or_files: a folder (its ``*.csv`` files at any depth, in sorted path order), a CSV
            file, or an iterable of CSV files (read in the given order).

    Returns:
        All rows, file after file.

    Raises:
        FileNotFoundError: a path does not exist, or a folder holds no CSV.
        DataError: as :func:`read_3drad_csv`.
    """
    if isinstance(root_or_files, (str, os.PathLike)):
        root = Path(root_or_files)
        if root.is_dir():
            files = _csv_files(root)
            if not files:
                raise FileNotFoundError(f"{root}: no .csv file found")
        else:
            files = [root]
    else:
        files = [Path(p) for p in root_or_files]
    rows: list[RadRow] = []
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: 3D-RAD file does not exist")
        rows += read_3drad_csv(f)
    return rows

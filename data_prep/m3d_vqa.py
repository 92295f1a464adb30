"""Convert M3D-VQA question CSVs into a velvet ``vqa.jsonl`` on the volumes of ``data_prep/m3d_cap.py``.

Input (see ``data_prep/m3d_vqa.md``): the hub CSVs ``M3D_VQA_{train,val,test,test5k}.csv`` with the
columns ``Image Path,Text,Question Type,Question,Choice A,Choice B,Choice C,Choice D,Answer,Answer Choice``
and the output folder (or ``manifest.csv``) of ``data_prep/m3d_cap.py``. ``Image Path`` points into
M3D's preprocessed copy, ``M3D_Cap_npy/<source>/<case>/<Series_Name>.npy``; the M3D-Cap converter
names that series ``<source>-<case>-<Series_Name>`` (names made file-safe), which is how an image
finds its volume.

Output under ``--out``: ``vqa.jsonl`` (written last) and ``skipped.csv``. Each usable row gives two
items, as M3D evaluates both: ``<id>-closed`` (the options and the letter) and ``<id>-open`` (the
same question, the ``Answer`` text). The split comes from the file name (train, val, test, test5k ->
train, val, test, test); the question type is the type's name (plane, phase, organ, abnormality,
location).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep._common import (
    DEFAULT_ENCODING,
    MANIFEST_NAME,
    SKIPPED_NAME,
    Skips,
    add_common_arguments,
    configure_logging,
    is_junk,
    open_csv,
    prepare_output,
    run_main,
    safe_name,
)
from velvet.data.atomic import atomic_path
from velvet.data.errors import DataError
from velvet.data.manifest import ManifestRecord, read_manifest
from velvet.data.vqa import VQA_NAME, VQAItem, write_vqa

__all__ = ["COLUMNS", "QUESTION_TYPES", "convert_m3d_vqa", "image_id", "main", "split_of_file"]

logger = logging.getLogger("data_prep.m3d_vqa")  # not "__main__" when run as a script

COLUMNS = (
    "Image Path",
    "Text",
    "Question Type",
    "Question",
    "Choice A",
    "Choice B",
    "Choice C",
    "Choice D",
    "Answer",
    "Answer Choice",
)
QUESTION_TYPES = {1: "plane", 2: "phase", 3: "organ", 4: "abnormality", 5: "location"}
_CHOICE_COLUMNS = COLUMNS[4:8]
_LETTERS = "ABCD"
_MISSING = ("", "NA")  # M3D writes the string NA for an absent option
# ct_case, ct_quizze and their unzipped chunks ct_case_00 ... (as data_prep/m3d_cap.py discovers them)
_SOURCE_RE = re.compile(r"^(ct_case|ct_quizze)(?:_\d+)?$")
_SPLIT_RE = re.compile(r"(?:^|_)(train|val|validation|test|test\d+k?)$", re.IGNORECASE)


def split_of_file(path: str | os.PathLike[str]) -> str:
    """The velvet split of an M3D-VQA file, from its name.

    Args:
        path: e.g. ``M3D_VQA_test5k.csv``.

    Returns:
        ``train``, ``val`` or ``test`` (``test5k`` and other ``test`` subsets are ``test``).

    Raises:
        ValueError: the file name does not end in ``_train``, ``_val``, ``_test`` or ``_test<N>k``.
    """
    match = _SPLIT_RE.search(Path(path).stem)
    if match is None:
        raise ValueError(
            f"{path}: cannot tell the split from the file name (expected *_train/_val/_test/_test5k.csv)"
        )
    word = match.group(1).lower()
    return {"train": "train", "val": "val", "validation": "val"}.get(word, "test")


def image_id(image_path: str) -> str:
    """The ``data_prep/m3d_cap.py`` series id of an M3D-VQA ``Image Path``.

    Args:
        image_path: e.g. ``M3D_Cap_npy/ct_case/000123/Axial_non_contrast.npy``.

    Returns:
        e.g. ``ct_case-000123-Axial_non_contrast``.

    Raises:
        ValueError: no ``ct_case`` / ``ct_quizze`` folder followed by ``<case>/<series file>``.
    """
    parts = [p for p in image_path.strip().replace("\\", "/").split("/") if p]
    for k, part in enumerate(parts):
        match = _SOURCE_RE.match(part)
        if match and len(parts) - k >= 3:  # an unzipped chunk folder may sit between source and case
            case, series = parts[-2], Path(parts[-1]).stem
            return f"{match.group(1)}-{safe_name(case)}-{safe_name(series)}"
    raise ValueError(f"Image Path {image_path!r} is not .../<ct_case|ct_quizze>/<case>/<series>.npy")


def _csv_files(inputs: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files += sorted(
                f for f in p.rglob("*.csv") if not any(is_junk(x) for x in f.relative_to(p).parts)
            )
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: M3D-VQA file or folder does not exist")
    if not files:
        raise FileNotFoundError(f"no .csv file in {', '.join(map(str, inputs))}")
    return files


def _manifest_path(m3d_cap: Path) -> Path:
    path = m3d_cap / MANIFEST_NAME if m3d_cap.is_dir() else m3d_cap
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no M3D-Cap manifest (run data_prep/m3d_cap.py first)")
    return path


def _same_text(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return s.strip().rstrip(".").strip().casefold()

    return norm(a) == norm(b)


class _Converter:
    """Turns the rows of the CSVs into items, counting what it skips."""

    def __init__(self, records: dict[str, ManifestRecord], encoding: str) -> None:
        self.records = records
        self.encoding = encoding
        self.skips = Skips()
        self.notes: Counter[str] = Counter()
        self.counts: Counter[tuple[str, str]] = Counter()  # (split, question type) -> rows
        self.exists: dict[str, bool] = {}
        self.ids: set[str] = set()

    def items(self, files: Sequence[Path]) -> Iterator[VQAItem]:
        for path in files:
            split = split_of_file(path)
            tag = safe_name(re.sub(r"^m3d_vqa_", "", path.stem, flags=re.IGNORECASE))
            with open_csv(path, encoding=self.encoding) as fh:
                reader = csv.reader(fh)
                header = [h.strip() for h in next(reader, [])]
                missing = [c for c in COLUMNS if c not in header]
                if missing:
                    raise DataError(path, f"missing M3D-VQA column(s) {missing}; header is {header}")
                index = {c: header.index(c) for c in COLUMNS}
                while True:
                    start = reader.line_num + 1  # a quoted field may span lines: name the row's first line
                    fields = next(reader, None)
                    if fields is None:
                        break
                    if not "".join(fields).strip():
                        continue
                    fields += [""] * (len(header) - len(fields))
                    row = {c: fields[i].strip() for c, i in index.items()}
                    yield from self._row(f"{path}:{start}", f"m3d-vqa-{tag}-{start}", split, row)

    def _row(self, where: str, base_id: str, split: str, row: dict[str, str]) -> Iterator[VQAItem]:
        try:
            series_id = image_id(row["Image Path"])
        except ValueError as exc:
            self.skips.add(where, "unrecognised Image Path", str(exc))
            return
        record = self.records.get(series_id)
        if record is None:
            self.skips.add(where, "image not in the M3D-Cap manifest", series_id)
            return
        if record.volume not in self.exists:
            self.exists[record.volume] = os.path.exists(record.volume)
        if not self.exists[record.volume]:
            self.skips.add(where, "volume in the M3D-Cap manifest but missing on disk", record.volume)
            return
        question_type = (
            QUESTION_TYPES.get(int(row["Question Type"])) if row["Question Type"].isdigit() else None
        )
        if question_type is None:
            self.skips.add(where, "unknown Question Type (expected 1-5)", row["Question Type"])
            return
        if not row["Question"] or not row["Answer"]:
            self.skips.add(where, "empty Question or Answer")
            return
        raw = [row[c] for c in _CHOICE_COLUMNS]
        n = sum(c not in _MISSING for c in raw)
        if any(c in _MISSING for c in raw[:n]):  # a gap would shift the letters of later options
            self.skips.add(where, "missing choice (NA) before a given one", ", ".join(raw))
            return
        if n < 2:
            self.skips.add(where, "fewer than 2 choices", ", ".join(raw))
            return
        letter = row["Answer Choice"].upper()
        if len(letter) != 1 or letter not in _LETTERS[:n]:
            self.skips.add(where, "Answer Choice is not the letter of a given choice", row["Answer Choice"])
            return
        if base_id in self.ids:
            self.skips.add(where, "duplicate item id (the same file given twice?)", base_id)
            return
        self.ids.add(base_id)
        choices = tuple(raw[:n])
        index = _LETTERS.index(letter)
        if not _same_text(choices[index], row["Answer"]):
            # M3D scores closed items by the letter and open items by the Answer: keep both as given
            self.notes["Answer text differs from the chosen option (closed: option, open: Answer)"] += 1
        if split == "test" and record.split != "test":
            self.notes[f"test items on an image the M3D-Cap manifest puts in {record.split}"] += 1
        self.counts[(split, question_type)] += 1

        def item(suffix: str, answer: str, options: tuple[str, ...], answer_index: int | None) -> VQAItem:
            return VQAItem(
                id=f"{base_id}-{suffix}",
                question=row["Question"],
                answer=answer,
                kind=suffix,
                choices=options,
                answer_index=answer_index,
                question_type=question_type,
                volume=Path(record.volume),
                case_id=record.id,
                split=split,
                source="m3d-vqa",
            )

        yield item("closed", choices[index], choices, index)
        yield item("open", row["Answer"], (), None)


class _NoItems(Exception):
    """Raised inside the atomic write when no row was usable, so that no vqa.jsonl appears."""


def convert_m3d_vqa(
    csvs: Sequence[str | os.PathLike[str]],
    m3d_cap: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    encoding: str = DEFAULT_ENCODING,
) -> Path:
    """Write ``out/vqa.jsonl`` for M3D-VQA CSVs; see the module docstring.

    Args:
        csvs: M3D-VQA CSV files, or folders holding them (searched recursively).
        m3d_cap: the output folder of ``data_prep/m3d_cap.py`` or its ``manifest.csv``.
        out: output folder.
        encoding: text encoding of the CSVs (default UTF-8, BOM allowed).

    Returns:
        The ``vqa.jsonl`` path (absent when no row was usable).

    Raises:
        FileNotFoundError: a CSV / folder or the M3D-Cap manifest does not exist.
        ValueError: a file name does not tell its split.
        DataError: a CSV lacks a column, is not ``encoding`` text or not CSV; a malformed manifest.
    """
    files = _csv_files([Path(p) for p in csvs])
    for f in files:
        split_of_file(f)  # fail before any work on a file whose split is unknown
    manifest = read_manifest(_manifest_path(Path(m3d_cap)), check_files=False, require_report=False)
    converter = _Converter({r.id: r for r in manifest}, encoding)
    out = prepare_output(out)
    path = out / VQA_NAME
    path.unlink(missing_ok=True)  # its presence must mean "this run finished"
    n_items = 0

    def counted(items: Iterator[VQAItem]) -> Iterator[VQAItem]:
        nonlocal n_items
        for item in items:
            n_items += 1
            yield item

    # items are streamed (the train CSV has ~480k rows); skipped.csv must still precede vqa.jsonl
    try:
        with atomic_path(path) as tmp:
            write_vqa(counted(converter.items(files)), tmp)
            converter.skips.write_csv(out / SKIPPED_NAME)
            if n_items == 0:
                raise _NoItems
    except _NoItems:
        logger.warning("no row was usable; writing no %s", VQA_NAME)
    converter.skips.log_summary(logger, n_items // 2, "rows (2 items each)", converter.notes)
    for (split, question_type), count in sorted(converter.counts.items()):
        logger.info("  %-5s %-11s %7d rows", split, question_type, count)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of this converter."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.m3d_vqa",
        description="Convert M3D-VQA CSVs into a velvet vqa.jsonl on the volumes of data_prep/m3d_cap.py.",
    )
    parser.add_argument("csvs", nargs="+", type=Path, help="M3D_VQA_*.csv files or folders holding them")
    parser.add_argument(
        "--m3d-cap", required=True, type=Path, help="output folder (or manifest.csv) of data_prep/m3d_cap.py"
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--encoding", default=DEFAULT_ENCODING, help="text encoding of the CSVs (default UTF-8; e.g. latin-1)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    kwargs = vars(build_parser().parse_args(argv))
    configure_logging(kwargs.pop("log_level"))
    kwargs.pop("seed")  # no random split here: the split comes from the file name
    return run_main(lambda: convert_m3d_vqa(**kwargs))


if __name__ == "__main__":
    sys.exit(main())

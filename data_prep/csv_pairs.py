"""Turn any CSV of (volume path, report text) rows into a velvet manifest.

Example::

    python -m data_prep.csv_pairs --csv pairs.csv --volume-column path \\
        --report-column findings impression --id-column accession --out data/mine

Paths are relative to the CSV's folder unless ``--root`` is given. Splits come from
``--split-column`` or, without one, from a seeded shuffle of rows (or of ``--group-column`` values,
e.g. patients, so that one patient never lands in two splits). Rows whose volume is missing or
whose report is empty are skipped and counted (``--strict`` makes them errors). The manifest
references the volumes in place; see ``data_prep/csv_pairs.md``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
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
    open_csv,
    parse_fraction,
    prepare_output,
    run_main,
    seeded_split,
)
from velvet.data.errors import DataError
from velvet.data.manifest import ManifestRecord, write_manifest

__all__ = ["SPLIT_ALIASES", "convert_csv_pairs", "main"]

logger = logging.getLogger("data_prep.csv_pairs")  # not "__main__" when run as a script

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".npy", ".npz", ".dcm")


@dataclass(frozen=True)
class _Row:
    line: int
    id: str
    volume: Path
    report: str
    split: str | None
    group: str


class _Problems:
    """Skip-and-count, or raise at the first problem when strict."""

    def __init__(self, skips: Skips, strict: bool) -> None:
        self.skips, self.strict = skips, strict

    def __call__(self, where: str, reason: str, detail: str = "") -> None:
        if self.strict:
            raise DataError(where, f"{reason} ({detail})" if detail else reason)
        self.skips.add(where, reason, detail)


def _derive_id(volume: str) -> str:
    """``case7/ct.nii.gz`` -> ``case7_ct``: unique where the relative paths are."""
    name = volume.strip().replace("\\", "/").lstrip("./")
    for suffix in _VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.rstrip("/").replace("/", "_")


def _read_rows(
    path: Path,
    base: Path,
    *,
    volume_column: str,
    report_columns: Sequence[str],
    id_column: str | None,
    split_column: str | None,
    group_column: str | None,
    delimiter: str,
    encoding: str,
    problem: _Problems,
) -> list[_Row]:
    with open_csv(path, encoding=encoding, options="--encoding/--delimiter") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        header = reader.fieldnames or []
        wanted = [volume_column, *report_columns, id_column, split_column, group_column]
        missing = [c for c in wanted if c is not None and c not in header]
        if missing:
            raise DataError(path, f"missing column(s) {missing}; header is {header}")
        rows: list[_Row] = []
        seen: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            where = f"{path}:{line}"
            volume_text = (row.get(volume_column) or "").strip()
            if not volume_text:
                problem(where, "no volume path")
                continue
            rid = (row.get(id_column) or "").strip() if id_column else _derive_id(volume_text)
            if not rid:
                problem(where, "empty id")
                continue
            if rid in seen:
                problem(where, "duplicate id", f"{rid!r} first on line {seen[rid]}")
                continue
            volume = Path(volume_text).expanduser()
            volume = volume if volume.is_absolute() else base / volume
            if not volume.exists():
                problem(where, "volume file not found", str(volume))
                continue
            parts = [(row.get(c) or "").strip() for c in report_columns]
            report = "\n".join(p for p in parts if p)
            if not report:
                problem(where, "empty report")
                continue
            split = None
            if split_column:
                split = SPLIT_ALIASES.get((row.get(split_column) or "").strip().lower())
                if split is None:
                    problem(where, "unknown split value", repr(row.get(split_column)))
                    continue
            group = (row.get(group_column) or "").strip() if group_column else rid
            seen[rid] = line
            rows.append(_Row(line, rid, volume, report, split, group or rid))
    return rows


def convert_csv_pairs(
    csv_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    volume_column: str,
    report_columns: Sequence[str],
    id_column: str | None = None,
    split_column: str | None = None,
    group_column: str | None = None,
    val_fraction: float = 0.05,
    test_fraction: float = 0.0,
    root: str | os.PathLike[str] | None = None,
    strict: bool = False,
    seed: int = 1,
    delimiter: str = ",",
    encoding: str = DEFAULT_ENCODING,
) -> Path:
    """Write ``out/manifest.csv`` from a CSV of volume paths and report text.

    Args:
        csv_path: the input CSV (UTF-8, BOM allowed).
        out: output folder; manifest paths are written relative to it.
        volume_column: column holding the volume file (or DICOM folder) path.
        report_columns: one or more text columns, joined with newlines (empty ones left out).
        id_column: unique case id column; default: the volume's relative path without its suffix.
        split_column: column of ``train``/``val``/``test`` (also ``training``, ``valid``,
            ``validation``, ``dev``, ``testing``); default: seeded fractions.
        group_column: rows sharing this value (e.g. a patient) land in one split.
        val_fraction, test_fraction: held-out fractions of groups when there is no split column.
        root: folder relative volume paths start from (default: the CSV's folder).
        strict: raise at the first unusable row instead of skipping it.
        seed: split shuffle seed.
        delimiter: field separator.
        encoding: the CSV's text encoding (default UTF-8, BOM allowed).

    Returns:
        The manifest path.

    Raises:
        DataError: a named column is missing; the file is not ``encoding`` text or not CSV (names the line); in strict mode, any unusable row (``csv:line: problem``).
        FileNotFoundError: the CSV does not exist.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: CSV file does not exist")
    if not report_columns:
        raise ValueError("give at least one report column")
    base = Path(root) if root is not None else csv_path.parent
    out = prepare_output(out)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    skips = Skips()
    rows = _read_rows(
        csv_path,
        base,
        volume_column=volume_column,
        report_columns=report_columns,
        id_column=id_column,
        split_column=split_column,
        group_column=group_column,
        delimiter=delimiter,
        encoding=encoding,
        problem=_Problems(skips, strict),
    )
    split_of: dict[str, str] = {}
    if split_column is None:
        split_of = seeded_split(
            (r.group for r in rows), {"val": val_fraction, "test": test_fraction}, seed=seed
        )
    records = [
        ManifestRecord(
            id=r.id,
            volume=str(r.volume),
            split=(r.split or split_of[r.group]),  # type: ignore[arg-type]
            report=r.report,
        )
        for r in rows
    ]
    skips.write_csv(out / SKIPPED_NAME)
    skips.log_summary(logger, len(records), "rows")
    if not records:
        logger.warning("no usable row in %s; writing no manifest", csv_path)
        return out / MANIFEST_NAME
    logger.info(
        "splits: %s", ", ".join(f"{k} {v}" for k, v in sorted(Counter(r.split for r in records).items()))
    )
    return write_manifest(records, out / MANIFEST_NAME)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of this converter."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.csv_pairs",
        description="Write a velvet manifest from a CSV of volume paths and report text.",
    )
    parser.add_argument("--csv", dest="csv_path", required=True, type=Path, help="input CSV file")
    add_common_arguments(parser)
    parser.add_argument("--volume-column", required=True, help="column with the volume path")
    parser.add_argument(
        "--report-column", dest="report_columns", required=True, nargs="+", help="report column(s), joined"
    )
    parser.add_argument("--id-column", default=None, help="unique id column (default: from the path)")
    parser.add_argument("--split-column", default=None, help="train/val/test column (default: seeded split)")
    parser.add_argument("--group-column", default=None, help="keep rows with one value in one split")
    parser.add_argument("--val-fraction", type=parse_fraction, default=0.05, help="held out as val (0.05)")
    parser.add_argument("--test-fraction", type=parse_fraction, default=0.0, help="held out as test (0)")
    parser.add_argument("--root", type=Path, default=None, help="base of relative paths (the CSV's folder)")
    parser.add_argument("--strict", action="store_true", help="stop at the first unusable row")
    parser.add_argument("--delimiter", default=",", help="field separator (default ',')")
    parser.add_argument(
        "--encoding",
        default=DEFAULT_ENCODING,
        help="text encoding of the CSV (default UTF-8; e.g. latin-1, cp1252)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    kwargs = vars(build_parser().parse_args(argv))  # dests are convert_csv_pairs' parameter names
    configure_logging(kwargs.pop("log_level"))
    return run_main(lambda: convert_csv_pairs(**kwargs))


if __name__ == "__main__":
    sys.exit(main())

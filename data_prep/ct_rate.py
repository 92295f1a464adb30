"""Build a velvet manifest for CT-RATE: chest CT volumes (referenced in place), reports, 18 labels.

Input: a CT-RATE download (the hub repo root or its ``dataset/`` folder; see ``data_prep/ct_rate.md``)::

    dataset/{train,valid}[_fixed]/<split>_<P>/<split>_<P>_<s>/<split>_<P>_<s>_<r>.nii.gz
    dataset/radiology_text_reports/{train,validation}_reports.csv
    dataset/metadata/{train,validation}_metadata.csv
    dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv

Output under ``--out``: ``manifest.csv`` (id, volume, split, report, v1 only: spacing and rescale,
``label:<name>`` x 18) and ``skipped.csv``. No volume is copied.

v2 (``*_fixed``) volumes are int16 HU with a correct header: no overrides. v1 volumes have a blank
header and stored DICOM values: the manifest gives their spacing (``XYSpacing``/``ZSpacing``) and
rescale (``RescaleSlope``/``RescaleIntercept``) from the metadata CSV. One run never mixes the two.
CT-RATE ``valid`` becomes ``test``; a seeded fraction of the ``train`` *patients* becomes ``val``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
    parse_fraction,
    prepare_output,
    progress,
    run_main,
    seeded_split,
)
from velvet.data.errors import DataError
from velvet.data.manifest import ManifestRecord, write_manifest

__all__ = ["LABEL_NAMES", "compose_report", "convert_ct_rate", "main"]

logger = logging.getLogger("data_prep.ct_rate")  # not "__main__" when run as a script

Version = Literal["auto", "v1", "v2"]
TextPart = Literal["findings", "impression", "both"]
CT_RATE_SPLITS = ("train", "valid")
# the 18 abnormalities, in the labels CSV's column order (CT-CLIP zero_shot.py)
LABEL_NAMES = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)
# reports and metadata say "validation_", labels and volumes say "valid_"; accept either spelling
_CSV_FILES = {
    ("reports", "train"): ("radiology_text_reports/train_reports.csv",),
    ("reports", "valid"): (
        "radiology_text_reports/validation_reports.csv",
        "radiology_text_reports/valid_reports.csv",
    ),
    ("metadata", "train"): ("metadata/train_metadata.csv",),
    ("metadata", "valid"): ("metadata/validation_metadata.csv", "metadata/valid_metadata.csv"),
    ("labels", "train"): ("multi_abnormality_labels/train_predicted_labels.csv",),
    ("labels", "valid"): (
        "multi_abnormality_labels/valid_predicted_labels.csv",
        "multi_abnormality_labels/validation_predicted_labels.csv",
    ),
}
_NAME_RE = re.compile(r"^(train|valid)_(\d+)_([A-Za-z]+)_(\d+)\.nii\.gz$")
_NOT_GIVEN = re.compile(r"^\s*not given\.?\s*$", re.IGNORECASE)


# ------------------------------------------------------------------------------------ CSV reading


def _find_csv(bases: Sequence[Path], kind: str, split: str) -> Path | None:
    for rel in _CSV_FILES[(kind, split)]:
        for base in bases:
            for candidate in (base / rel, base / Path(rel).name):
                if candidate.is_file():
                    return candidate
    return None


def _volume_name(value: str) -> str:
    name = value.strip()
    return name if name.endswith(".nii.gz") else name + ".nii.gz"


def _read_csv(
    path: Path, columns: Sequence[str], encoding: str = DEFAULT_ENCODING
) -> Iterator[tuple[str, ...]]:
    """Yield ``(VolumeName, *columns)`` per row, keeping only those columns (memory: 50k rows x 44 columns).

    Raises:
        DataError: a required column is missing from the header; the file is not ``encoding`` text
            or not CSV (the message names the line).
    """
    with open_csv(path, encoding=encoding) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in ("VolumeName", *columns) if c not in header]
        if missing:
            raise DataError(path, f"missing column(s) {missing}; header is {header[:8]}...")
        index = [header.index(c) for c in ("VolumeName", *columns)]
        for row in reader:
            if not row or not "".join(row).strip():
                continue
            row = row + [""] * (len(header) - len(row))
            yield (_volume_name(row[index[0]]), *(row[i] for i in index[1:]))


def _dedupe(path: Path, rows: Iterator[tuple[str, ...]], notes: Counter[str]) -> dict[str, tuple[str, ...]]:
    """First row per VolumeName; duplicated rows are counted (conflicting ones separately)."""
    table: dict[str, tuple[str, ...]] = {}
    for name, *values in rows:
        if name in table:
            same = table[name] == tuple(values)
            notes[f"{path.name}: {'duplicated' if same else 'conflicting duplicated'} rows (first kept)"] += 1
            continue
        table[name] = tuple(values)
    return table


def compose_report(findings: str, impression: str, part: TextPart = "both") -> str:
    """Report text from the CSV sections, dropping empty ones and the literal ``Not given.``.

    Returns:
        Findings and impression joined by a newline (or one of them); ``""`` if nothing is left.
    """
    sections = {"findings": (findings,), "impression": (impression,), "both": (findings, impression)}[part]
    kept = [s.strip() for s in sections if s and s.strip() and not _NOT_GIVEN.match(s)]
    return "\n".join(kept)


_LABEL_VALUES = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0}


def _parse_labels(values: Sequence[str], notes: Counter[str]) -> list[float]:
    out = []
    for v in values:
        number = _LABEL_VALUES.get(v.strip(), math.nan)  # a dict lookup: 900k values for CT-RATE train
        if math.isnan(number):
            notes["label values that are not 0/1 (written as unknown)"] += 1
        out.append(number)
    return out


def _v1_overrides(
    xy: str, z: str, slope: str, intercept: str
) -> tuple[tuple[float, float, float], tuple[float, float]]:
    """Spacing ``(row, column, slice)`` mm and ``(slope, intercept)`` from metadata strings.

    Raises:
        ValueError: a value is missing or not a positive / finite number.
    """
    xy_values = [float(v) for v in xy.strip().strip("[]()").split(",") if v.strip()]
    if len(xy_values) == 1:  # a single number means square pixels
        xy_values *= 2
    if len(xy_values) != 2:
        raise ValueError(f"spacing XYSpacing={xy!r} is not '[row, column]'")
    spacing = (xy_values[0], xy_values[1], float(z))
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing XYSpacing={xy!r} ZSpacing={z!r}")
    rescale = (float(slope), float(intercept))
    if not all(math.isfinite(v) for v in rescale) or rescale[0] == 0:
        raise ValueError(f"rescale slope={slope!r} intercept={intercept!r}")
    return spacing, rescale


# ------------------------------------------------------------------------------------ conversion


def _index_volumes(folder: Path) -> dict[str, str]:
    """Basename -> path of every ``.nii.gz`` under a split folder (one walk, no per-row globbing)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not is_junk(d)]
        for f in filenames:
            if f.endswith(".nii.gz") and not is_junk(f):
                found.setdefault(f, os.path.join(dirpath, f))  # str, not Path: 50k of them
    return found


def _choose_version(dataset: Path, version: Version) -> str:
    if version != "auto":
        return version
    # any v2 folder decides for the whole download, so that runs on different splits never mix
    return "v2" if any((dataset / f"{s}_fixed").is_dir() for s in CT_RATE_SPLITS) else "v1"


@dataclass
class _Tables:
    """The CSV rows of one CT-RATE split, keyed by VolumeName (``.nii.gz`` included)."""

    reports: dict[str, tuple[str, ...]] = field(default_factory=dict)
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    label_names: tuple[str, ...] = LABEL_NAMES
    metadata: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _load_tables(
    split: str, bases: Sequence[Path], version: str, notes: Counter[str], encoding: str = DEFAULT_ENCODING
) -> _Tables:
    found = {kind: _find_csv(bases, kind, split) for kind in ("reports", "labels", "metadata")}
    for kind, path in found.items():
        if path is None and (kind != "metadata" or version == "v1"):
            logger.warning("%s: no %s CSV found (looked for %s)", split, kind, _CSV_FILES[(kind, split)])
    tables = _Tables()
    if found["reports"] is not None:
        rows = _read_csv(found["reports"], ("Findings_EN", "Impressions_EN"), encoding)
        tables.reports = _dedupe(found["reports"], rows, notes)
    if found["labels"] is not None:
        with open_csv(found["labels"], encoding=encoding) as fh:
            tables.label_names = tuple(h.strip() for h in next(csv.reader(fh), [])[1:])
        if set(tables.label_names) != set(LABEL_NAMES):
            logger.warning(
                "%s: label columns are not the 18 CT-RATE names: %s", found["labels"], tables.label_names
            )
        tables.labels = _dedupe(
            found["labels"], _read_csv(found["labels"], tables.label_names, encoding), notes
        )
    if version == "v1" and found["metadata"] is not None:
        columns = ("XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept")
        tables.metadata = _dedupe(found["metadata"], _read_csv(found["metadata"], columns, encoding), notes)
    return tables


def _convert_split(
    split: str,
    folder: Path,
    tables: _Tables,
    *,
    version: str,
    text: TextPart,
    split_of: dict[str, str],
    skips: Skips,
    notes: Counter[str],
) -> list[ManifestRecord]:
    """One record per usable volume of a CT-RATE split; the rest are skipped and counted."""
    disk = _index_volumes(folder)
    logger.info("%s: %d volumes on disk under %s", split, len(disk), folder)
    records = []
    for name in progress(sorted(set(tables.reports) | set(disk)), desc=f"CT-RATE {split}", unit="volume"):
        if name not in disk:
            skips.add(name, "listed in the reports CSV but missing on disk")
            continue
        if name not in tables.reports:
            skips.add(disk[name], "volume has no row in the reports CSV")
            continue
        match = _NAME_RE.match(name)
        if match is None:
            skips.add(disk[name], "unrecognised VolumeName (expected <split>_<patient>_<scan>_<recon>)")
            continue
        report = compose_report(*tables.reports[name], part=text)
        if not report:
            skips.add(name, f"empty report ({text}: missing or 'Not given.')")
            continue
        spacing = rescale = None
        if version == "v1":
            try:
                spacing, rescale = _v1_overrides(*tables.metadata[name])
            except KeyError:
                skips.add(name, "no metadata row (v1 needs its spacing and rescale)")
                continue
            except ValueError as exc:
                skips.add(name, "unusable metadata values", str(exc))
                continue
        values = tables.labels.get(name)
        if values is None:
            notes["volumes without a label row (labels left unknown)"] += 1
        records.append(
            ManifestRecord(
                id=name[: -len(".nii.gz")],
                volume=disk[name],
                split="test" if split == "valid" else split_of[match.group(2)],  # type: ignore[arg-type]
                report=report,
                labels={}
                if values is None
                else dict(zip(tables.label_names, _parse_labels(values, notes), strict=True)),
                spacing=spacing,
                rescale=rescale,
            )
        )
    return records


def convert_ct_rate(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    version: Version = "auto",
    text: TextPart = "both",
    val_fraction: float = 0.05,
    seed: int = 1,
    splits: Sequence[str] = CT_RATE_SPLITS,
    encoding: str = DEFAULT_ENCODING,
) -> Path:
    """Write ``out/manifest.csv`` for a CT-RATE download; see the module docstring.

    Args:
        root: the hub repo root (holding ``dataset/``) or the ``dataset/`` folder itself.
        out: output folder; volume paths in the manifest are relative to it.
        version: ``v2`` (``*_fixed`` folders, HU with correct headers), ``v1`` (``train``/``valid``
            with metadata overrides) or ``auto`` (v2 when any ``*_fixed`` folder exists).
        text: which report sections form ``report``.
        val_fraction: fraction of CT-RATE train *patients* held out as ``val`` (chosen from the
            reports CSV, so a partial download keeps the same assignment when completed).
        seed: split shuffle seed.
        splits: CT-RATE splits to convert (``train``, ``valid``); absent folders are skipped with a warning.
        encoding: text encoding of the CSVs (default UTF-8, BOM allowed).

    Returns:
        The manifest path.

    Raises:
        FileNotFoundError: no volume folder of the chosen version exists.
        DataError: a CSV lacks a required column, is not ``encoding`` text or is not CSV (names the line).
    """
    root = Path(root)
    dataset = root / "dataset" if (root / "dataset").is_dir() else root
    bases = [dataset, root] if dataset != root else [root]
    bad = [s for s in splits if s not in CT_RATE_SPLITS]
    if bad:
        raise ValueError(f"unknown CT-RATE split(s) {bad}; expected some of {CT_RATE_SPLITS}")
    version = _choose_version(dataset, version)
    folders = {s: dataset / (f"{s}_fixed" if version == "v2" else s) for s in splits}
    present = {s: f for s, f in folders.items() if f.is_dir()}
    for s in sorted(set(folders) - set(present)):
        logger.warning("CT-RATE %s: no %s folder %s; split not converted", s, version, folders[s])
    if not present:
        raise FileNotFoundError(
            f"{dataset}: no CT-RATE {version} volume folder ({', '.join(map(str, folders.values()))})"
        )
    logger.info(
        "CT-RATE %s (%s volumes) from %s",
        version,
        "HU, header spacing" if version == "v2" else "raw + metadata",
        dataset,
    )
    out = prepare_output(out)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    skips, notes, records = Skips(), Counter[str](), []
    for split, folder in present.items():
        tables = _load_tables(split, bases, version, notes, encoding)
        # patients from the reports CSV, not from disk: a partial download keeps its assignment
        patients = [m.group(2) for m in map(_NAME_RE.match, tables.reports) if m]
        split_of = seeded_split(patients, {"val": val_fraction}, seed=seed) if split == "train" else {}
        records += _convert_split(
            split, folder, tables, version=version, text=text, split_of=split_of, skips=skips, notes=notes
        )
    skips.write_csv(out / SKIPPED_NAME)
    skips.log_summary(logger, len(records), "volumes", notes)
    if not records:
        logger.warning("no volume was usable; writing no manifest")
        return out / MANIFEST_NAME
    counts = Counter(r.split for r in records)
    logger.info("splits: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return write_manifest(records, out / MANIFEST_NAME)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of this converter."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.ct_rate",
        description="Write a velvet manifest for CT-RATE volumes (in place), reports and 18 labels.",
    )
    parser.add_argument("root", type=Path, help="CT-RATE download (repo root or its dataset/ folder)")
    add_common_arguments(parser)
    parser.add_argument(
        "--version", choices=["auto", "v1", "v2"], default="auto", help="volume version (auto)"
    )
    parser.add_argument(
        "--text", choices=["findings", "impression", "both"], default="both", help="report (both)"
    )
    parser.add_argument(
        "--val-fraction", type=parse_fraction, default=0.05, help="train patients held out (0.05)"
    )
    parser.add_argument("--splits", nargs="+", choices=CT_RATE_SPLITS, default=list(CT_RATE_SPLITS))
    parser.add_argument(
        "--encoding", default=DEFAULT_ENCODING, help="text encoding of the CSVs (default UTF-8; e.g. latin-1)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    kwargs = vars(build_parser().parse_args(argv))  # dests are convert_ct_rate's parameter names
    configure_logging(kwargs.pop("log_level"))
    return run_main(lambda: convert_ct_rate(**kwargs))


if __name__ == "__main__":
    sys.exit(main())

"""Manifests: the one table every dataset, converter and the phantom generator agree on.

A manifest is a CSV or JSON-lines file, one row per (volume, report) pair. Paths are relative to
the manifest's folder (or absolute). Columns / keys:

=================== ======== =================================================================
name                required meaning
=================== ======== =================================================================
``id``              yes      unique case id
``volume``          yes      volume file or DICOM series folder
``split``           yes      ``train``, ``val`` or ``test``
``report``          one of   the report text
``report_file``     one of   a UTF-8 text file holding the report
``label_map``       no       segmentation label map on the volume's grid
``label_geometry``  no       ``check`` (default): the label map's header must put it on the
                             volume's grid (shape, orientation, spacing, origin), else the case
                             fails naming both files; ``use_image``: the label's header is
                             known to be wrong, take its voxels as they are on the volume's grid
``spacing``         no       voxel spacing override in mm, ``"x,y,z"`` (for headers without one)
``rescale_slope``   no       raw value -> HU: ``hu = slope * raw + intercept`` (with intercept)
``rescale_intercept`` no     see above
``label:<name>``    no       finding label 0/1 (empty = unknown); JSONL: ``"labels": {name: 0/1}``
=================== ======== =================================================================

Example (CSV)::

    id,volume,split,report,label:Lung nodule
    case_000,volumes/case_000.nii.gz,train,"No focal lesion. Lungs are clear.",0
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from velvet.data.atomic import atomic_path
from velvet.data.errors import ManifestError

__all__ = ["SPLITS", "Manifest", "ManifestRecord", "read_manifest", "write_manifest"]

SPLITS = ("train", "val", "test")
Split = Literal["train", "val", "test"]
LABEL_PREFIX = "label:"
_BASE_COLUMNS = (
    "id",
    "volume",
    "split",
    "report",
    "report_file",
    "label_map",
    "label_geometry",
    "spacing",
    "rescale_slope",
    "rescale_intercept",
)
LABEL_GEOMETRY_MODES = ("check", "use_image")
# A report file bigger than this is not a report (a misplaced volume or log): refuse to read it.
MAX_REPORT_BYTES = 1 << 20


@dataclass(frozen=True)
class ManifestRecord:
    """One (volume, report) pair. Paths are absolute once read through :func:`read_manifest`.

    Attributes:
        id: unique case id.
        volume: path of the volume file or DICOM folder.
        split: ``train`` / ``val`` / ``test``.
        report: report text, if given inline.
        report_file: path of a text file holding the report, if not inline.
        label_map: path of a segmentation label map, if any.
        labels: finding name -> 0.0 / 1.0 (NaN = unknown).
        spacing: voxel spacing override (mm) for files whose header has none.
        rescale: ``(slope, intercept)`` mapping stored values to HU, for raw-valued files.
        label_geometry: ``"check"`` the label map's header against the volume's grid (default), or
            ``"use_image"``: ignore the label's header, its voxels lie on the volume's grid.
    """

    id: str
    volume: str
    split: Split
    report: str | None = None
    report_file: str | None = None
    label_map: str | None = None
    labels: dict[str, float] = field(default_factory=dict, hash=False, compare=True)
    spacing: tuple[float, float, float] | None = None
    rescale: tuple[float, float] | None = None
    label_geometry: Literal["check", "use_image"] = "check"

    def load_report(self) -> str | None:
        """The report text: inline, else read from ``report_file``, else None.

        Raises:
            ManifestError: the report file is missing, not UTF-8 or implausibly large.
        """
        if self.report is not None:
            return self.report
        if self.report_file is None:
            return None
        path = Path(self.report_file)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ManifestError(
                path, f"report file of case {self.id!r} cannot be read ({exc.strerror})"
            ) from None
        if size > MAX_REPORT_BYTES:
            raise ManifestError(
                path, f"report file is {size} bytes, more than a report can be ({MAX_REPORT_BYTES})"
            )
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(
                path, f"report file is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None


@dataclass
class Manifest:
    """The rows of a manifest file, validated.

    Attributes:
        path: the manifest file.
        records: all rows, in file order.
        label_names: finding label names, in column order (empty if none).
    """

    path: Path
    records: list[ManifestRecord]
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ManifestRecord]:
        return iter(self.records)

    def split(self, name: Split) -> list[ManifestRecord]:
        """The rows of one split, in file order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return [r for r in self.records if r.split == name]


def read_manifest(
    path: str | os.PathLike[str],
    *,
    check_files: bool = True,
    require_report: bool = True,
) -> Manifest:
    """Read and validate a manifest (``.csv`` or ``.jsonl``).

    Args:
        path: the manifest file.
        check_files: verify that every referenced volume / report / label map exists.
        require_report: every row must carry ``report`` or ``report_file``.

    Returns:
        The validated manifest with absolute paths.

    Raises:
        ManifestError: on a malformed file, missing required values, duplicate ids, an unknown
            split, bad labels / spacing, or (with ``check_files``) missing files. The message names
            the manifest and the row.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, "manifest file does not exist")
    rows = list(_read_rows(path))
    if not rows:
        raise ManifestError(path, "manifest has no rows")
    root = path.resolve().parent
    records: list[ManifestRecord] = []
    seen: dict[str, int] = {}
    label_names: list[str] = []
    for line_no, row in rows:
        where = f"{path}:{line_no}"
        record = _parse_row(row, root, where, require_report)
        if record.id in seen:
            raise ManifestError(where, f"duplicate id {record.id!r} (first on line {seen[record.id]})")
        seen[record.id] = line_no
        for name in record.labels:
            if name not in label_names:
                label_names.append(name)
        records.append(record)
    if check_files:
        _check_files(path, records)
    return Manifest(path=path, records=records, label_names=label_names)


def write_manifest(
    records: Iterable[ManifestRecord],
    path: str | os.PathLike[str],
    *,
    relative_to: str | os.PathLike[str] | None = None,
) -> Path:
    """Write records atomically (temp file + rename) as CSV or JSONL, chosen by the suffix.

    Args:
        records: rows to write.
        path: output ``.csv`` or ``.jsonl`` file.
        relative_to: folder paths are written relative to (default: the manifest's folder).

    Returns:
        The written path.
    """
    path = Path(path)
    base = Path(relative_to) if relative_to is not None else path.parent
    records = list(records)
    label_names: list[str] = []
    for r in records:
        label_names.extend(n for n in r.labels if n not in label_names)
    parents: dict[str, str] = {}
    dicts = [_record_to_dict(r, base, parents) for r in records]
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"manifest suffix must be .csv or .jsonl, got {path.name!r}")
    # atomic: a reader (or a re-run after a crash) sees the old manifest or the new one, never half
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        if suffix == ".jsonl":
            for d in dicts:
                fh.write(json.dumps(d, ensure_ascii=False) + "\n")
        else:
            _write_csv(fh, dicts, label_names)
    return path


# --------------------------------------------------------------------------------------- parsing


def _read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                for line_no, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ManifestError(f"{path}:{line_no}", f"invalid JSON ({exc.msg})") from None
                    if not isinstance(row, dict):
                        raise ManifestError(f"{path}:{line_no}", "each line must be a JSON object")
                    yield line_no, row
        elif suffix == ".csv":
            # inline reports can be long: the csv module's default field limit (128 KiB) is not a data limit
            csv.field_size_limit(2**31 - 1)
            with path.open(encoding="utf-8-sig", newline="") as fh:
                reader = csv.DictReader(fh)
                missing = [c for c in ("id", "volume", "split") if c not in (reader.fieldnames or [])]
                if missing:
                    raise ManifestError(
                        path, f"missing required column(s) {missing}; header is {reader.fieldnames}"
                    )
                try:
                    for row in reader:
                        # csv line numbers count the header; report the physical line of the row
                        yield reader.line_num, row
                except csv.Error as exc:
                    raise ManifestError(f"{path}:{reader.line_num}", f"cannot be read as CSV ({exc})") from None
        else:
            raise ManifestError(path, "manifest must be a .csv or .jsonl file")
    except UnicodeDecodeError as exc:
        raise ManifestError(path, f"manifest is not UTF-8 text ({exc.reason})") from None


def _parse_row(row: dict[str, Any], root: Path, where: str, require_report: bool) -> ManifestRecord:
    def text(key: str) -> str | None:
        value = row.get(key)
        if value is None:
            return None
        value = str(value)
        return value if value.strip() else None

    rid = text("id")
    volume = text("volume")
    split = text("split")
    if rid is None or volume is None or split is None:
        missing = [k for k, v in (("id", rid), ("volume", volume), ("split", split)) if v is None]
        raise ManifestError(where, f"missing value(s) for {missing}")
    split = split.strip().lower()
    if split not in SPLITS:
        raise ManifestError(where, f"split {split!r} is not one of {SPLITS}")
    report = text("report")
    report_file = text("report_file")
    if report is not None and report_file is not None:
        raise ManifestError(where, "give either 'report' or 'report_file', not both")
    if require_report and report is None and report_file is None:
        raise ManifestError(where, f"case {rid!r} has no report (empty 'report' and no 'report_file')")
    return ManifestRecord(
        id=rid.strip(),
        volume=_resolve(root, volume),
        split=split,  # type: ignore[arg-type]
        report=report,
        report_file=_resolve(root, report_file) if report_file else None,
        label_map=_resolve(root, text("label_map")) if text("label_map") else None,
        labels=_parse_labels(row, where),
        spacing=_parse_spacing(row.get("spacing"), where),
        rescale=_parse_rescale(row, where),
        label_geometry=_parse_label_geometry(row.get("label_geometry"), where),
    )


def _resolve(root: Path, value: str) -> str:
    p = Path(value.strip()).expanduser()
    return str(p if p.is_absolute() else root / p)


def _parse_labels(row: dict[str, Any], where: str) -> dict[str, float]:
    raw: dict[str, Any] = {}
    if isinstance(row.get("labels"), dict):
        raw.update(row["labels"])
    raw.update({k[len(LABEL_PREFIX) :]: v for k, v in row.items() if k and k.startswith(LABEL_PREFIX)})
    labels: dict[str, float] = {}
    for name, value in raw.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            labels[name] = math.nan
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ManifestError(where, f"label {name!r} must be 0, 1 or empty, got {value!r}") from None
        if number not in (0.0, 1.0):
            raise ManifestError(where, f"label {name!r} must be 0, 1 or empty, got {value!r}")
        labels[name] = number
    return labels


def _parse_spacing(value: Any, where: str) -> tuple[float, float, float] | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        parts: Sequence[Any] = value.strip().strip("[]()").replace(";", ",").split(",")
    elif isinstance(value, (list, tuple)):
        parts = value
    else:
        raise ManifestError(where, f"spacing must be 'x,y,z' in mm, got {value!r}")
    try:
        spacing = tuple(float(p) for p in parts)
    except ValueError:
        raise ManifestError(where, f"spacing must be 'x,y,z' in mm, got {value!r}") from None
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ManifestError(where, f"spacing must be three positive numbers (mm), got {value!r}")
    return spacing  # type: ignore[return-value]


def _parse_label_geometry(value: Any, where: str) -> Literal["check", "use_image"]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return "check"
    mode = str(value).strip().lower()
    if mode not in LABEL_GEOMETRY_MODES:
        raise ManifestError(where, f"label_geometry must be one of {LABEL_GEOMETRY_MODES}, got {value!r}")
    return mode  # type: ignore[return-value]


def _parse_rescale(row: dict[str, Any], where: str) -> tuple[float, float] | None:
    slope, intercept = row.get("rescale_slope"), row.get("rescale_intercept")
    blank = [v is None or (isinstance(v, str) and not v.strip()) for v in (slope, intercept)]
    if all(blank):
        return None
    if any(blank):
        raise ManifestError(where, "give both rescale_slope and rescale_intercept, or neither")
    try:
        pair = (float(slope), float(intercept))  # type: ignore[arg-type]
    except ValueError:
        raise ManifestError(where, f"rescale values must be numbers, got {slope!r}, {intercept!r}") from None
    if not all(math.isfinite(v) for v in pair) or pair[0] == 0:
        raise ManifestError(where, f"rescale slope must be finite and non-zero, got {slope!r}")
    return pair


def _check_files(path: Path, records: list[ManifestRecord]) -> None:
    missing: list[str] = []
    for r in records:
        for kind, p in (("volume", r.volume), ("report_file", r.report_file), ("label_map", r.label_map)):
            if p is not None and not os.path.exists(p):
                missing.append(f"{r.id} ({kind}: {p})")
    if missing:
        shown = "; ".join(missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ManifestError(path, f"{len(missing)} referenced file(s) do not exist: {shown}{more}")


# --------------------------------------------------------------------------------------- writing


def _record_to_dict(r: ManifestRecord, base: Path, parents: dict[str, str]) -> dict[str, Any]:
    def rel(p: str | None) -> str | None:
        if p is None:
            return None
        folder, name = os.path.split(p)
        if folder not in parents:  # relpath is slow; a data set has few folders and many files
            try:
                parents[folder] = os.path.relpath(folder, base)
            except ValueError:  # different drive (Windows)
                parents[folder] = folder
        return os.path.join(parents[folder], name) if parents[folder] != "." else name

    d: dict[str, Any] = {"id": r.id, "volume": rel(r.volume), "split": r.split}
    if r.report is not None:
        d["report"] = r.report
    if r.report_file is not None:
        d["report_file"] = rel(r.report_file)
    if r.label_map is not None:
        d["label_map"] = rel(r.label_map)
    if r.label_geometry != "check":
        d["label_geometry"] = r.label_geometry
    if r.spacing is not None:
        d["spacing"] = list(r.spacing)
    if r.rescale is not None:
        d["rescale_slope"], d["rescale_intercept"] = r.rescale
    if r.labels:
        d["labels"] = {k: (None if math.isnan(v) else int(v)) for k, v in r.labels.items()}
    return d


def _write_csv(fh: Any, dicts: list[dict[str, Any]], label_names: list[str]) -> None:
    present = [c for c in _BASE_COLUMNS if any(c in d for d in dicts)]
    columns = present + [LABEL_PREFIX + n for n in label_names]
    writer = csv.DictWriter(fh, fieldnames=columns)
    writer.writeheader()
    for d in dicts:
        row = {k: v for k, v in d.items() if k not in ("labels", "spacing")}
        if "spacing" in d:
            row["spacing"] = ",".join(f"{s:g}" for s in d["spacing"])
        for name, value in d.get("labels", {}).items():
            row[LABEL_PREFIX + name] = "" if value is None else value
        writer.writerow(row)

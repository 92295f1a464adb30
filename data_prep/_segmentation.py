"""Shared pieces of the segmentation converters (MSD, BTCV, AbdomenCT-1K, CT-ORG, TotalSegmentator).

Each of them writes, under ``--out``: ``classes.json`` (``{"0": "background", "1": name, ...}``, the
phantom generator's format), ``skipped.csv`` and, last, ``manifest.csv`` with ``id``, ``volume``,
``split`` and ``label_map`` (no report: read it with ``read_manifest(path, require_report=False)``).

Pairs are checked from their NIfTI headers only (no voxel is read): the image must be 3-D (one
channel) and the label map must lie on the image's grid (:func:`velvet.data.geometry.check_same_grid`,
the loader's own contract), else the case is skipped with the reason and the error text.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_prep._common import (
    MANIFEST_NAME,
    SKIPPED_NAME,
    Skips,
    is_junk,
    parse_fraction,
    prepare_output,
    seeded_split,
    write_text_atomic,
)
from velvet.data.geometry import GeometryMismatchError, check_same_grid
from velvet.data.manifest import ManifestRecord, write_manifest

__all__ = [
    "CLASSES_NAME",
    "NIFTI_SUFFIX",
    "UNLABELLED",
    "add_fraction_arguments",
    "assign_splits",
    "check_pair",
    "finish",
    "label_dtype",
    "pair_record",
    "pair_records",
    "parse_class_list",
    "read_header",
    "require_dir",
    "select_classes",
    "spatial_shape",
    "start_output",
    "strip_nifti_suffix",
    "walk_files",
    "write_classes",
]

logger = logging.getLogger("data_prep.segmentation")

CLASSES_NAME = "classes.json"
NIFTI_SUFFIX = r"\.nii(?:\.gz)?"  # regex: the suffixes of a NIfTI file name
UNLABELLED = "no label map (unlabelled test image; segmentation needs labels)"


# ------------------------------------------------------------------------------------ classes


def write_classes(path: str | os.PathLike[str], names: Sequence[str]) -> Path:
    """Write ``classes.json``: ``{"0": names[0], "1": names[1], ...}`` (contiguous ids), atomically."""
    return write_text_atomic(path, json.dumps({str(i): n for i, n in enumerate(names)}, indent=2) + "\n")


def parse_class_list(text: str) -> list[str]:
    """argparse type for ``--classes liver,spleen,...``: the names in order, blanks dropped.

    Raises:
        argparse.ArgumentTypeError: no name, or a name given twice.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one class name (comma separated)")
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:
        raise argparse.ArgumentTypeError(f"class name(s) given twice: {', '.join(repeated)}")
    return names


def select_classes(available: Mapping[int, str], wanted: Sequence[str] | None) -> list[str]:
    """The foreground class names to keep, in output-id order (output id = position + 1).

    Args:
        available: source id -> name (background excluded).
        wanted: names to keep, in the order of their new ids 1..K; None keeps all, by source id.

    Returns:
        The kept names, index ``i`` becoming class id ``i + 1``.

    Raises:
        ValueError: an empty selection, an unknown or repeated name (the message lists the valid names).
    """
    if wanted is None:
        return [available[i] for i in sorted(available)]
    if not wanted:
        raise ValueError("select at least one class (or none, for all of them)")
    valid = set(available.values())
    unknown = [n for n in wanted if n not in valid]
    if unknown:
        listing = ", ".join(available[i] for i in sorted(available))
        raise ValueError(f"unknown class name(s) {unknown}; valid names: {listing}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"class names given twice in {list(wanted)}")
    return list(wanted)


def label_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """The smallest label map dtype holding ids 0..``num_classes`` (uint8 below 256 classes)."""
    return np.uint8 if num_classes < 256 else np.uint16


# ------------------------------------------------------------------------------------ files


def walk_files(root: Path) -> Iterator[Path]:
    """Every file under ``root`` (sorted), skipping macOS ``._*`` junk, hidden files and folders."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
        for name in sorted(filenames):
            if not is_junk(name):
                yield Path(dirpath, name)


def strip_nifti_suffix(name: str) -> str:
    """``img0001.nii.gz`` -> ``img0001`` (also ``.nii``); other names unchanged."""
    return re.sub(NIFTI_SUFFIX + "$", "", name)


def read_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.ndarray]:
    """``(shape, affine)`` of a NIfTI file from its header alone (no voxel is read)."""
    import nibabel as nib

    img: Any = nib.load(os.fspath(path))
    return tuple(int(s) for s in img.header.get_data_shape()), np.asarray(img.affine, np.float64)


def spatial_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape without trailing singleton axes beyond the third (``(8, 8, 6, 1)`` -> 3-D)."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def check_pair(image: Path, label: Path) -> tuple[str, str] | None:
    """Why an image/label pair cannot be used, from the headers; None when it can.

    Returns:
        ``(reason, detail)`` for a skip: an unreadable header, a multi-channel (4-D) image, a label
        map that is not 3-D or not on the image's grid.
    """
    try:
        image_shape, image_affine = read_header(image)
        label_shape, label_affine = read_header(label)
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, ValueError, ...
        return "unreadable NIfTI header", f"{type(exc).__name__}: {exc}"
    image_shape, label_shape = spatial_shape(image_shape), spatial_shape(label_shape)
    if len(image_shape) == 4:
        return "4-D multi-channel image (segmentation here takes one CT channel)", f"shape {image_shape}"
    if len(image_shape) != 3:
        return "image is not 3-D", f"shape {image_shape}"
    if len(label_shape) != 3:
        return "label map is not 3-D", f"shape {label_shape}"
    try:
        check_same_grid(image, image_affine, image_shape, label, label_affine, label_shape)
    except GeometryMismatchError as exc:
        return "label map does not lie on the image's grid", str(exc)
    return None


# ------------------------------------------------------------------------------------ splits


def assign_splits(
    cases: Iterable[str],
    *,
    val: Collection[str] | None = None,
    test: Collection[str] | None = None,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    seed: int = 1,
) -> dict[str, str]:
    """Case -> split: official ``val``/``test`` sets where given, seeded fractions for the others.

    The cases in neither official set are split with :func:`seeded_split`, using ``val_fraction``
    only when there is no official ``val`` set and ``test_fraction`` only when there is no official
    ``test`` set; the rest is ``train``.
    """
    cases = sorted(set(cases))
    fixed = {c: "test" for c in cases if test is not None and c in test}
    fixed.update({c: "val" for c in cases if val is not None and c in val and c not in fixed})
    fractions = {}
    if val is None and val_fraction > 0:
        fractions["val"] = val_fraction
    if test is None and test_fraction > 0:
        fractions["test"] = test_fraction
    rest = [c for c in cases if c not in fixed]
    return {**seeded_split(rest, fractions, seed=seed), **fixed}


def add_fraction_arguments(
    parser: argparse.ArgumentParser, *, val: float | None = 0.2, test: float | None = 0.0
) -> None:
    """``--val-fraction`` / ``--test-fraction`` (each only when its default is not None)."""
    if val is not None:
        parser.add_argument(
            "--val-fraction", type=parse_fraction, default=val, help=f"cases held out as val ({val})"
        )
    if test is not None:
        parser.add_argument(
            "--test-fraction", type=parse_fraction, default=test, help=f"cases held out as test ({test})"
        )


# ------------------------------------------------------------------------------------ output


def start_output(out: str | os.PathLike[str]) -> Path:
    """Create ``out``, remove a killed run's ``.tmp-*`` files and an old manifest (it is written last)."""
    out = prepare_output(out)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    return out


def finish(
    out: Path,
    records: Sequence[ManifestRecord],
    class_names: Sequence[str],
    skips: Skips,
    notes: Mapping[str, int] | None = None,
    *,
    log: logging.Logger = logger,
) -> Path:
    """Write ``classes.json``, ``skipped.csv``, log the summary, then the manifest (sorted by id).

    Returns:
        The manifest path (not written when no case was usable: a warning says so).
    """
    write_classes(out / CLASSES_NAME, class_names)
    skips.write_csv(out / SKIPPED_NAME)
    skips.log_summary(log, len(records), "cases", notes)
    if not records:
        log.warning("no case was usable; writing no manifest")
        return out / MANIFEST_NAME
    counts = Counter(r.split for r in records)
    log.info("splits: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return write_manifest(sorted(records, key=lambda r: r.id), out / MANIFEST_NAME)


def require_dir(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path, or FileNotFoundError / NotADirectoryError naming ``what``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: {what} is not a folder")
    return path


def pair_record(case: str, image: Path, label: Path, split: str, skips: Skips) -> ManifestRecord | None:
    """A manifest row for a checked pair, or None after recording why it was skipped."""
    problem = check_pair(image, label)
    if problem is not None:
        skips.add(image, *problem)
        return None
    return ManifestRecord(id=case, volume=str(image), split=split, label_map=str(label))  # type: ignore[arg-type]


def pair_records(
    cases: Mapping[str, tuple[Path, Path]],
    split_of: Mapping[str, str],
    skips: Skips,
    *,
    desc: str,
    order: Sequence[str] | None = None,
) -> list[ManifestRecord]:
    """One manifest row per checked ``(image, label)`` pair, with a progress bar (see :func:`pair_record`).

    Args:
        cases: case id -> (image, label map).
        split_of: case id -> split.
        skips: where pairs that fail the header check are recorded.
        desc: progress-bar label.
        order: case order (default: sorted ids).
    """
    from data_prep._common import progress

    records = []
    for case in progress(order if order is not None else sorted(cases), desc=desc, unit="case"):
        record = pair_record(case, *cases[case], split_of[case], skips)
        if record is not None:
            records.append(record)
    return records

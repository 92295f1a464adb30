"""Build a velvet segmentation manifest for TotalSegmentator CT (v2: 117 classes; v1 with ``--class-map``).

Input: the unpacked Zenodo download (or the one folder inside it that holds ``meta.csv``)::

    meta.csv                                  semicolon separated, UTF-8 with BOM; image_id, split, ...
    s0000/ct.nii.gz
    s0000/segmentations/spleen.nii.gz ...     one binary mask per class

Output under ``--out``: ``labels/<id>.nii.gz`` (the selected masks merged into one label map on the
CT's grid, uint8 below 256 classes, else uint16), ``manifest.csv`` (CT referenced in place, the new
label map), ``classes.json``, ``skipped.csv``.

Classes: the v2 map (``class_map_total_v2.json`` beside this file, ids 1-117) or ``--class-map``;
``--classes a,b,c`` keeps a subset, renumbered 1..K in the order given. Masks are painted in
ascending output id, a later id overwriting an earlier one where they overlap (as the official
nnU-Net converter does). A mask whose header puts it off the CT's grid skips the case (the detail
names the difference); an empty mask is a structure not present; a missing mask file is treated as
absent and counted in a note. Splits are meta.csv's ``split`` column (train/val/test). A label map
already in ``labels/`` is kept (a re-run converts only what is missing).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep._common import (
    Skips,
    add_common_arguments,
    configure_logging,
    is_junk,
    open_csv,
    run_main,
    run_parallel,
)
from data_prep._segmentation import (
    CLASSES_NAME,
    finish,
    label_dtype,
    parse_class_list,
    read_header,
    require_dir,
    select_classes,
    spatial_shape,
    start_output,
    write_classes,
)
from velvet.data.atomic import save_nifti
from velvet.data.errors import DataError
from velvet.data.geometry import GeometryMismatchError, check_same_grid, resample_nearest
from velvet.data.manifest import SPLITS, ManifestRecord

__all__ = ["DEFAULT_CLASS_MAP", "convert_totalsegmentator", "load_class_map", "main"]

logger = logging.getLogger("data_prep.totalsegmentator")

DEFAULT_CLASS_MAP = Path(__file__).with_name("class_map_total_v2.json")
LABELS_DIR = "labels"
_MISSING_NOTE = "selected mask files missing (structure treated as absent)"
_KEPT_NOTE = "label maps already in labels/ (kept from an earlier run)"
# (case, ct path, segmentations folder, output path, class names by output id - 1, dtype name)
_Task = tuple[str, str, str, str, tuple[str, ...], str]


def load_class_map(path: str | os.PathLike[str] = DEFAULT_CLASS_MAP) -> dict[int, str]:
    """Class id -> structure name from a JSON ``{"labels": {id: name}}`` or a flat ``{id: name}``.

    Raises:
        DataError: not JSON, or ids that are not positive integers.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read the class map ({exc})") from None
    labels = data.get("labels", data) if isinstance(data, dict) else None
    if not isinstance(labels, dict):
        raise DataError(path, "expected {id: name} or {'labels': {id: name}}")
    try:
        table = {int(k): str(v) for k, v in labels.items()}
    except ValueError:
        raise DataError(path, f"class ids must be integers, got {sorted(labels)[:5]}...") from None
    table.pop(0, None)  # background, if listed
    if any(k < 0 for k in table):
        raise DataError(path, "class ids must be positive")
    return table


def _find_root(root: Path) -> Path:
    """The folder holding ``meta.csv``: ``root`` or its single subfolder that does."""
    root = require_dir(root, "TotalSegmentator folder")
    if (root / "meta.csv").is_file():
        return root
    inner = [d for d in root.iterdir() if d.is_dir() and not is_junk(d.name) and (d / "meta.csv").is_file()]
    if len(inner) == 1:
        return inner[0]
    raise FileNotFoundError(f"{root}: no meta.csv (expected <root>/meta.csv beside the sNNNN folders)")


def _read_meta(path: Path, notes: Counter[str]) -> dict[str, str]:
    """``image_id`` -> ``split`` (as written) from meta.csv (``;`` or ``,`` separated, BOM allowed).

    Raises:
        DataError: no ``image_id`` or ``split`` column, or unreadable text / CSV (names the line).
    """
    table: dict[str, str] = {}
    with open_csv(path) as fh:
        first = next(fh, "")  # type: ignore[call-overload]
        delimiter = ";" if ";" in first else ","  # v2 is ";"; accept a re-saved "," file too
        reader = csv.reader(itertools.chain([first], fh), delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in ("image_id", "split") if c not in header]
        if missing:
            raise DataError(path, f"missing column(s) {missing}; header is {header}")
        id_col, split_col = header.index("image_id"), header.index("split")
        for row in reader:
            if len(row) <= max(id_col, split_col) or not row[id_col].strip():
                continue
            case = row[id_col].strip()
            if case in table:
                notes["duplicated meta.csv rows (first kept)"] += 1
                continue
            table[case] = row[split_col].strip()
    return table


def _merge_case(task: _Task) -> tuple[str, str, str, int]:
    """Merge one case's masks into ``labels/<case>.nii.gz``.

    Returns:
        ``(case, status, detail, missing)``: status ``"ok"``, ``"kept"`` (output existed) or a skip
        reason (detail: the error text); ``missing``: selected masks without a file.
    """
    case, ct, seg_dir, out, names, dtype = task
    if os.path.exists(out):
        return case, "kept", "", 0
    import nibabel as nib

    try:
        ct_shape, ct_affine = read_header(ct)
        ct_shape = spatial_shape(ct_shape)
        if len(ct_shape) != 3:
            return case, "CT is not 3-D", f"shape {ct_shape}", 0
        masks = [(i, os.path.join(seg_dir, f"{n}.nii.gz")) for i, n in enumerate(names, start=1)]
        present = [(i, p) for i, p in masks if os.path.isfile(p)]
        headers = {p: read_header(p) for _, p in present}
        for _, p in present:  # every header first: a bad case is refused before any voxel is read
            shape, affine = headers[p]
            check_same_grid(ct, ct_affine, ct_shape, p, affine, spatial_shape(shape), what="mask")
        label = np.zeros(ct_shape, dtype=dtype)
        for i, p in present:  # ascending output id: a later class overwrites an earlier one
            shape, affine = headers[p]
            img: Any = nib.load(p)
            mask = np.asanyarray(img.dataobj).reshape(spatial_shape(shape))
            if mask.shape != ct_shape or not np.allclose(affine, ct_affine, atol=1e-6):
                mask = resample_nearest(mask, affine, ct_affine, ct_shape)  # same grid, other axis order
            label[mask > 0.5] = i
    except GeometryMismatchError as exc:
        return case, "mask does not lie on the CT's grid", str(exc), 0
    except Exception as exc:  # an unreadable or truncated file: skip this case, keep converting
        return case, "unreadable NIfTI file", f"{type(exc).__name__}: {exc}", 0
    save_nifti(label, ct_affine, out)
    return case, "ok", "", len(masks) - len(present)


def _check_classes_file(out: Path, names: list[str]) -> None:
    """Refuse to mix label maps of another class list (an earlier run into the same ``--out``)."""
    wanted = {str(i): n for i, n in enumerate(names)}
    path = out / CLASSES_NAME
    labels = out / LABELS_DIR
    if not path.is_file() or not labels.is_dir() or not any(labels.iterdir()):
        return
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        existing = None
    if existing != wanted:
        raise ValueError(
            f"{out}: its label maps were made with other classes ({path}); "
            f"use a new --out or delete {labels} and {path}"
        )


def convert_totalsegmentator(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    class_map: str | os.PathLike[str] = DEFAULT_CLASS_MAP,
    workers: int = 1,
) -> Path:
    """Merge masks and write ``out/manifest.csv`` for TotalSegmentator; see the module docstring.

    Args:
        root: the folder holding ``meta.csv`` and the ``sNNNN`` folders (or the one folder above it).
        out: output folder: ``labels/``, ``classes.json``, ``skipped.csv``, ``manifest.csv``.
        classes: structure names to keep, in the order of their new ids 1..K; None keeps the whole
            class map in its id order.
        class_map: JSON of id -> structure name (default: the v2 map, 117 classes).
        workers: processes merging cases in parallel.

    Returns:
        The manifest path.

    Raises:
        FileNotFoundError: ``root`` or ``meta.csv`` does not exist.
        DataError: meta.csv lacks ``image_id``/``split``; the class map is unreadable.
        ValueError: an unknown class name; ``out`` holds label maps made with other classes.
    """
    base = _find_root(Path(root))
    table = load_class_map(class_map)
    names = select_classes(table, classes)
    all_names = ["background", *names]
    dtype = np.dtype(label_dtype(len(names))).name
    notes = Counter[str]()
    meta = _read_meta(base / "meta.csv", notes)
    out = start_output(out)
    _check_classes_file(out, all_names)
    write_classes(out / CLASSES_NAME, all_names)  # first: it describes the label maps being written
    (out / LABELS_DIR).mkdir(exist_ok=True)
    skips = Skips()
    on_disk = {
        d.name: d
        for d in sorted(base.iterdir())
        if d.is_dir() and not is_junk(d.name) and (d / "ct.nii.gz").is_file()
    }
    logger.info(
        "TotalSegmentator %s: %d cases on disk, %d in meta.csv, %d classes",
        base,
        len(on_disk),
        len(meta),
        len(names),
    )
    for case in sorted(set(meta) - set(on_disk)):
        skips.add(base / case, "listed in meta.csv but no <id>/ct.nii.gz on disk")
    tasks: list[_Task] = []
    split_of: dict[str, str] = {}
    for case, folder in on_disk.items():
        split = meta.get(case, "").lower()
        if case not in meta:
            skips.add(folder, "no meta.csv row (split unknown)")
        elif split not in SPLITS:
            skips.add(folder, "unknown split in meta.csv", f"split {meta[case]!r}")
        elif not (folder / "segmentations").is_dir():
            skips.add(folder, "no segmentations/ folder")
        else:
            split_of[case] = split
            target = out / LABELS_DIR / f"{case}.nii.gz"
            tasks.append(
                (
                    case,
                    str(folder / "ct.nii.gz"),
                    str(folder / "segmentations"),
                    str(target),
                    tuple(names),
                    dtype,
                )
            )
    results = sorted(run_parallel(_merge_case, tasks, workers=workers, desc="TotalSegmentator", unit="case"))
    records = []
    for case, status, detail, missing in results:
        notes[_MISSING_NOTE] += missing
        if status not in ("ok", "kept"):
            skips.add(on_disk[case], status, detail)
            continue
        notes[_KEPT_NOTE] += int(status == "kept")
        records.append(
            ManifestRecord(
                id=case,
                volume=str(on_disk[case] / "ct.nii.gz"),
                split=split_of[case],  # type: ignore[arg-type]
                label_map=str(out / LABELS_DIR / f"{case}.nii.gz"),
            )
        )
    return finish(out, records, all_names, skips, notes, log=logger)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of this converter."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.totalsegmentator",
        description="Merge TotalSegmentator masks into label maps and write a velvet segmentation manifest.",
    )
    parser.add_argument("root", type=Path, help="folder holding meta.csv and the sNNNN case folders")
    add_common_arguments(parser)
    parser.add_argument(
        "--classes",
        type=parse_class_list,
        default=None,
        help="comma-separated structures to keep, renumbered 1..K in this order (default: all)",
    )
    parser.add_argument(
        "--class-map", type=Path, default=DEFAULT_CLASS_MAP, help="JSON id -> name (default: the v2 map)"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes merging cases (1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    kwargs = vars(build_parser().parse_args(argv))
    configure_logging(kwargs.pop("log_level"))
    kwargs.pop("seed")  # the split is meta.csv's: nothing to shuffle
    return run_main(lambda: convert_totalsegmentator(**kwargs))


if __name__ == "__main__":
    sys.exit(main())

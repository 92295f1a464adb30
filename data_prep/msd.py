"""Build a velvet segmentation manifest for a Medical Segmentation Decathlon task (``dataset.json``).

Input: a task folder (or the JSON file itself; also MONAI's decathlon-style lists such as BTCV's
``dataset_0.json``)::

    TaskNN_Name/dataset.json   imagesTr/<name>_<id>.nii.gz   labelsTr/<name>_<id>.nii.gz   imagesTs/...

``dataset.json`` keys used: ``labels`` (string id -> name, ids 0..K-1), ``training`` (``{image,
label}``), optional ``validation`` (same form) and ``test`` (paths, or ``{image[, label]}``); paths
are relative to the JSON's folder. The count fields (``numTraining``, ...) are ignored (BTCV's says
80 for 30 cases), and so is ``relase``/``release``.

Output under ``--out``: ``manifest.csv`` (images and labels referenced in place), ``classes.json``
(the JSON's ``labels``), ``skipped.csv``. Splits: ``validation`` -> ``val`` when the JSON has it,
else a seeded ``--val-fraction`` of the training cases; labelled ``test`` entries -> ``test``, else
an optional seeded ``--test-fraction``. Unlabelled test images, 4-D (multi-channel) images, missing
files and labels off the image's grid are skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep._common import Skips, add_common_arguments, configure_logging, is_junk, run_main
from data_prep._segmentation import (
    UNLABELLED,
    add_fraction_arguments,
    assign_splits,
    finish,
    pair_records,
    start_output,
    strip_nifti_suffix,
)
from velvet.data.errors import DataError

__all__ = ["convert_msd", "main"]

logger = logging.getLogger("data_prep.msd")

_JUNK_NOTE = "macOS ._* junk entries in the JSON (ignored)"
_UNLISTED_NOTE = "NIfTI files beside the listed images but not in the JSON (not converted)"


def _find_json(root: Path) -> Path:
    """The datalist JSON: ``root`` itself, ``root/dataset.json``, or the one ``*.json`` in ``root``."""
    if root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: MSD task folder does not exist")
    if (root / "dataset.json").is_file():
        return root / "dataset.json"
    found = sorted(p for p in root.glob("*.json") if not is_junk(p.name))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"{root}: no dataset.json"
        + (f" (and several JSON files: {[p.name for p in found]})" if found else "")
    )


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not a JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object with 'labels' and 'training'")
    missing = [k for k in ("labels", "training") if k not in data]
    if missing:
        raise DataError(path, f"missing key(s) {missing}; keys are {sorted(data)}")
    return data


def _class_names(labels: Any, path: Path) -> list[str]:
    """The ``labels`` names by id; ids must be the integers 0..K-1 (label maps are used as they are)."""
    if not isinstance(labels, dict):
        raise DataError(path, f"'labels' must map ids to names, got {type(labels).__name__}")
    try:
        by_id = {int(k): str(v) for k, v in labels.items()}
    except ValueError:
        raise DataError(path, f"'labels' ids must be integers, got {sorted(labels)}") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise DataError(path, f"'labels' ids must be 0..K-1 without gaps, got {sorted(by_id)}")
    return [by_id[i] for i in range(len(by_id))]


def _entries(data: dict[str, Any], key: str, path: Path) -> list[tuple[Any, Any]]:
    """``(image, label)`` per entry of a list key (strings are images without label)."""
    value = data.get(key) or []
    if not isinstance(value, list):
        raise DataError(path, f"'{key}' must be a list, got {type(value).__name__}")
    out = []
    for item in value:
        if isinstance(item, dict):
            out.append((item.get("image"), item.get("label")))
        else:
            out.append((item, None))
    return out


def _resolve(base: Path, value: str) -> Path:
    return Path(os.path.normpath(base / value))  # "./imagesTr/x.nii.gz" -> base/imagesTr/x.nii.gz


def _count_unlisted(listed: set[Path], folders: set[Path]) -> int:
    """NIfTI files (junk excluded) in the listed images' folders that the JSON does not name."""
    count = 0
    for folder in folders:
        for p in folder.iterdir():
            if p.name.endswith((".nii", ".nii.gz")) and not is_junk(p.name) and p not in listed:
                count += 1
    return count


def convert_msd(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 1,
) -> Path:
    """Write ``out/manifest.csv`` for a decathlon-style task; see the module docstring.

    Args:
        root: the task folder holding ``dataset.json``, or a datalist JSON file.
        out: output folder; paths in the manifest are relative to it.
        val_fraction: training cases held out as ``val`` when the JSON has no ``validation``.
        test_fraction: training cases held out as ``test`` when no test entry has a label.
        seed: split shuffle seed.

    Returns:
        The manifest path.

    Raises:
        FileNotFoundError: no task folder or no datalist JSON.
        DataError: the JSON is malformed, lacks ``labels``/``training``, or its label ids have gaps.
    """
    path = _find_json(Path(root))
    base = path.parent
    data = _load_json(path)
    names = _class_names(data["labels"], path)
    modality = data.get("modality") or {}
    not_ct = [str(m) for m in (modality.values() if isinstance(modality, dict) else [modality])]
    not_ct = [m for m in not_ct if m.strip().upper() != "CT"]
    if not_ct:
        logger.warning("%s: modality %s is not CT; velvet's preprocessing assumes CT (HU)", path, not_ct)
    logger.info("%s: %s, %d classes", path, data.get("name", "?"), len(names))
    out = start_output(out)
    skips, notes = Skips(), Counter[str]()
    cases: dict[str, tuple[Path, Path]] = {}
    official: dict[str, set[str]] = {"validation": set(), "test": set()}
    listed: set[Path] = set()
    for key in ("training", "validation", "test"):
        for image_value, label_value in _entries(data, key, path):
            if not isinstance(image_value, str) or not image_value.strip():
                skips.add(f"{path.name}:{key}", "entry without one image path", repr(image_value))
                continue
            image = _resolve(base, image_value)
            listed.add(image)
            if is_junk(image.name):
                notes[_JUNK_NOTE] += 1
                continue
            if not isinstance(label_value, str) or not label_value.strip():
                skips.add(image, UNLABELLED if key == "test" else "no label map in the JSON entry")
                continue
            label = _resolve(base, label_value)
            listed.add(label)
            case = strip_nifti_suffix(image.name)
            if case in cases:
                skips.add(image, "duplicate case id (image listed twice in the JSON)", f"id {case}")
            elif not image.is_file():
                skips.add(image, "image file missing")
            elif not label.is_file():
                skips.add(label, "label file missing", f"image {image}")
            else:
                cases[case] = (image, label)
                if key in official:
                    official[key].add(case)
    split_of = assign_splits(
        cases,
        val=official["validation"] if "validation" in data else None,
        test=official["test"] or None,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    notes[_UNLISTED_NOTE] = _count_unlisted(listed, {p.parent for p in listed if p.parent.is_dir()})
    records = pair_records(cases, split_of, skips, desc="MSD")
    return finish(out, records, names, skips, notes, log=logger)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of this converter."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.msd",
        description="Write a velvet segmentation manifest for a Medical Segmentation Decathlon task.",
    )
    parser.add_argument("root", type=Path, help="task folder with dataset.json, or a datalist JSON file")
    add_common_arguments(parser)
    add_fraction_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    kwargs = vars(build_parser().parse_args(argv))
    configure_logging(kwargs.pop("log_level"))
    return run_main(lambda: convert_msd(**kwargs))


if __name__ == "__main__":
    sys.exit(main())

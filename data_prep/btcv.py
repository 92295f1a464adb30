"""Build a velvet segmentation manifest for BTCV (Synapse multi-atlas abdomen, 13 organs).

Input: the unpacked ``RawData`` folder (or the folder holding it)::

    RawData/Training/img/img0001.nii.gz   RawData/Training/label/label0001.nii.gz
    RawData/Testing/img/img0061.nii.gz    (some copies: RawData/Test/img/; no labels)

Output under ``--out``: ``manifest.csv`` (images and labels referenced in place), ``classes.json``
(:data:`CLASS_NAMES`, ids 0..13), ``skipped.csv``.

Splits: ``--split standard`` (default) is the common 24/6 split of MONAI's ``dataset_0.json`` and the
Swin UNETR recipe: ``img0035``-``img0040`` -> ``val``, the other labelled cases -> ``train``
(``--test-fraction`` may hold out a seeded part of those as ``test``). ``--split seeded`` holds out
``--val-fraction`` (0.2) and ``--test-fraction`` (0) of all labelled cases. Test images have no
labels: skipped and counted.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep._common import Skips, add_common_arguments, configure_logging, run_main
from data_prep._segmentation import (
    NIFTI_SUFFIX,
    UNLABELLED,
    add_fraction_arguments,
    assign_splits,
    finish,
    pair_records,
    require_dir,
    start_output,
    walk_files,
)

__all__ = ["CLASS_NAMES", "STANDARD_VAL", "convert_btcv", "main"]

logger = logging.getLogger("data_prep.btcv")

CLASS_NAMES = (
    "background",
    "spleen",
    "kidney_right",
    "kidney_left",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior_vena_cava",
    "portal_and_splenic_veins",
    "pancreas",
    "adrenal_gland_right",
    "adrenal_gland_left",
)
# MONAI research-contributions dataset_0.json "validation" (Swin UNETR / UNETR BTCV recipes)
STANDARD_VAL = frozenset(f"img{n:04d}" for n in range(35, 41))
SplitMode = Literal["standard", "seeded"]
_IMAGE_RE = re.compile(rf"^img(\d+){NIFTI_SUFFIX}$")
_LABEL_RE = re.compile(rf"^label(\d+){NIFTI_SUFFIX}$")


def _find_raw(root: Path) -> Path:
    """The folder holding ``Training/`` (``root/RawData`` or ``root`` itself)."""
    root = require_dir(root, "BTCV folder")
    for candidate in (root / "RawData", root):
        if (candidate / "Training").is_dir():
            return candidate
    raise FileNotFoundError(f"{root}: no RawData/Training folder (expected RawData/Training/img, .../label)")


def _index(folder: Path, pattern: re.Pattern[str], skips: Skips, what: str) -> dict[str, Path]:
    """Case number (4 digits) -> file, for the matching files under ``folder``."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in walk_files(folder):
        match = pattern.match(path.name)
        if match is None:
            if re.search(NIFTI_SUFFIX + "$", path.name):
                skips.add(path, f"unrecognised {what} file name", f"expected {pattern.pattern}")
            continue
        number = f"{int(match.group(1)):04d}"
        if number in found:
            skips.add(path, f"duplicate {what} for case {number}", f"first: {found[number]}")
            continue
        found[number] = path
    return found


def convert_btcv(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: SplitMode = "standard",
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 1,
) -> Path:
    """Write ``out/manifest.csv`` for BTCV; see the module docstring.

    Args:
        root: the ``RawData`` folder or the folder holding it.
        out: output folder; paths in the manifest are relative to it.
        split: ``standard`` (val = img0035-img0040) or ``seeded``.
        val_fraction: labelled cases held out as ``val`` (``seeded`` only).
        test_fraction: labelled cases held out as ``test`` (seeded, in either mode).
        seed: split shuffle seed.

    Returns:
        The manifest path.

    Raises:
        FileNotFoundError: ``root`` or its ``Training`` folder does not exist.
        ValueError: an unknown ``split`` mode.
    """
    if split not in ("standard", "seeded"):
        raise ValueError(f"split must be 'standard' or 'seeded', got {split!r}")
    raw = _find_raw(Path(root))
    out = start_output(out)
    skips = Skips()
    images = _index(raw / "Training" / "img", _IMAGE_RE, skips, "image")
    labels = _index(raw / "Training" / "label", _LABEL_RE, skips, "label")
    logger.info("BTCV %s: %d training images, %d labels", raw, len(images), len(labels))
    for number in sorted(set(labels) - set(images)):
        skips.add(labels[number], "label map without an image")
    for number in sorted(set(images) - set(labels)):
        skips.add(images[number], "training image without a label map")
    for test_dir in (raw / "Testing" / "img", raw / "Test" / "img"):
        for image in walk_files(test_dir) if test_dir.is_dir() else ():
            if re.search(NIFTI_SUFFIX + "$", image.name):
                skips.add(image, UNLABELLED)
    cases = {f"img{n}": (images[n], labels[n]) for n in sorted(set(images) & set(labels))}
    split_of = assign_splits(
        cases,
        val=STANDARD_VAL if split == "standard" else None,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    records = pair_records(cases, split_of, skips, desc="BTCV")
    return finish(out, records, CLASS_NAMES, skips, log=logger)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of this converter."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.btcv",
        description="Write a velvet segmentation manifest for BTCV (13 abdominal organs).",
    )
    parser.add_argument("root", type=Path, help="RawData folder, or the folder holding it")
    add_common_arguments(parser)
    parser.add_argument(
        "--split",
        choices=["standard", "seeded"],
        default="standard",
        help="standard: val = img0035-img0040 (24/6); seeded: --val-fraction of the cases",
    )
    add_fraction_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    kwargs = vars(build_parser().parse_args(argv))
    configure_logging(kwargs.pop("log_level"))
    return run_main(lambda: convert_btcv(**kwargs))


if __name__ == "__main__":
    sys.exit(main())

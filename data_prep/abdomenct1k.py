"""Build a velvet segmentation manifest for AbdomenCT-1K (liver, kidney, spleen, pancreas).

Input: the unpacked image parts and masks, anywhere under one folder (searched recursively, so a
nested ``ImagePartN/ImagePartN/`` is fine)::

    AbdomenCT-1K-ImagePart1/Case_00001_0000.nii.gz ... (Part2, Part3)
    Mask/Case_00001.nii.gz                                (no ``_0000``)

Masks may also live elsewhere (``--masks DIR``). Output under ``--out``: ``manifest.csv`` (images and
masks referenced in place), ``classes.json`` (:data:`CLASS_NAMES`), ``skipped.csv``. There is no
official split: a seeded ``--val-fraction`` (0.2) and ``--test-fraction`` (0) of the cases. An image
without a mask, a mask without an image, a duplicate file and a mask off its image's grid are
skipped and counted.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep._common import Skips, add_common_arguments, configure_logging, run_main
from data_prep._segmentation import (
    NIFTI_SUFFIX,
    add_fraction_arguments,
    assign_splits,
    finish,
    pair_records,
    require_dir,
    start_output,
    walk_files,
)

__all__ = ["CLASS_NAMES", "convert_abdomenct1k", "main"]

logger = logging.getLogger("data_prep.abdomenct1k")

CLASS_NAMES = ("background", "liver", "kidney", "spleen", "pancreas")
_IMAGE_RE = re.compile(rf"^(Case_\d+)_0000{NIFTI_SUFFIX}$")
_MASK_RE = re.compile(rf"^(Case_\d+){NIFTI_SUFFIX}$")


def _index(folders: Sequence[Path], skips: Skips) -> tuple[dict[str, Path], dict[str, Path]]:
    """Case -> image and case -> mask for every matching file under the folders (first copy kept)."""
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    seen: set[Path] = set()
    for folder in folders:
        for path in walk_files(folder):
            if path in seen:  # --masks inside root: walked twice
                continue
            seen.add(path)
            for pattern, table, what in ((_IMAGE_RE, images, "image"), (_MASK_RE, masks, "mask")):
                match = pattern.match(path.name)
                if match is None:
                    continue
                case = match.group(1)
                if case in table:
                    skips.add(path, f"duplicate {what} of {case}", f"first: {table[case]}")
                else:
                    table[case] = path
    return images, masks


def convert_abdomenct1k(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    masks: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 1,
) -> Path:
    """Write ``out/manifest.csv`` for AbdomenCT-1K; see the module docstring.

    Args:
        root: folder holding the image parts (and, by default, ``Mask/``).
        out: output folder; paths in the manifest are relative to it.
        masks: folder of the ``Case_NNNNN.nii.gz`` masks, if not under ``root``.
        val_fraction: cases held out as ``val``.
        test_fraction: cases held out as ``test``.
        seed: split shuffle seed.

    Returns:
        The manifest path.

    Raises:
        FileNotFoundError: ``root`` (or ``masks``) does not exist.
    """
    folders = [require_dir(root, "AbdomenCT-1K folder")]
    if masks is not None:
        folders.append(require_dir(masks, "mask folder"))
    out = start_output(out)
    skips = Skips()
    images, mask_files = _index(folders, skips)
    logger.info("AbdomenCT-1K: %d images, %d masks", len(images), len(mask_files))
    for case in sorted(set(images) - set(mask_files)):
        skips.add(images[case], "image without a mask")
    for case in sorted(set(mask_files) - set(images)):
        skips.add(mask_files[case], "mask without an image")
    cases = {c: (images[c], mask_files[c]) for c in sorted(set(images) & set(mask_files))}
    split_of = assign_splits(cases, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    records = pair_records(cases, split_of, skips, desc="AbdomenCT-1K")
    return finish(out, records, CLASS_NAMES, skips, log=logger)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of this converter."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.abdomenct1k",
        description="Write a velvet segmentation manifest for AbdomenCT-1K (4 abdominal organs).",
    )
    parser.add_argument("root", type=Path, help="folder holding the ImagePart folders (and Mask/)")
    add_common_arguments(parser)
    parser.add_argument("--masks", type=Path, default=None, help="mask folder, if not under root")
    add_fraction_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    kwargs = vars(build_parser().parse_args(argv))
    configure_logging(kwargs.pop("log_level"))
    return run_main(lambda: convert_abdomenct1k(**kwargs))


if __name__ == "__main__":
    sys.exit(main())

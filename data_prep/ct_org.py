"""Build a velvet segmentation manifest for CT-ORG (TCIA: liver, bladder, lungs, kidneys, bone, brain).

Input: the ``OrganSegmentations`` folder (or any folder above it; searched recursively)::

    OrganSegmentations/volume-0.nii.gz  labels-0.nii.gz  ...  volume-139.nii.gz  labels-139.nii.gz

``volumes-N.nii.gz`` (VELVET-Med's rename) is accepted too. Label maps are float32 with integral
values: referenced in place (velvet's loader casts integral floats).

Output under ``--out``: ``manifest.csv``, ``classes.json`` (:data:`CLASS_NAMES`), ``skipped.csv``.
Splits: the official test set, cases 0-20 -> ``test``; cases 21-139 -> ``train``, less a seeded
``--val-fraction`` (0.2) -> ``val``. Ids are ``volume-N``. A volume without labels, labels without a
volume and a label map off its volume's grid are skipped and counted.
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

__all__ = ["CLASS_NAMES", "OFFICIAL_TEST", "convert_ct_org", "main"]

logger = logging.getLogger("data_prep.ct_org")

CLASS_NAMES = ("background", "liver", "bladder", "lungs", "kidneys", "bone", "brain")
OFFICIAL_TEST = range(0, 21)  # CT-ORG README: cases 0-20 are the test set
_VOLUME_RE = re.compile(rf"^volumes?-(\d+){NIFTI_SUFFIX}$")
_LABEL_RE = re.compile(rf"^labels-(\d+){NIFTI_SUFFIX}$")


def _index(root: Path, skips: Skips) -> tuple[dict[int, Path], dict[int, Path]]:
    """Case number -> volume and -> label map, for every matching file under ``root``."""
    volumes: dict[int, Path] = {}
    labels: dict[int, Path] = {}
    for path in walk_files(root):
        for pattern, table, what in ((_VOLUME_RE, volumes, "volume"), (_LABEL_RE, labels, "label map")):
            match = pattern.match(path.name)
            if match is None:
                continue
            number = int(match.group(1))
            if number in table:
                skips.add(path, f"duplicate {what} of case {number}", f"first: {table[number]}")
            else:
                table[number] = path
    return volumes, labels


def convert_ct_org(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    val_fraction: float = 0.2,
    seed: int = 1,
) -> Path:
    """Write ``out/manifest.csv`` for CT-ORG; see the module docstring.

    Args:
        root: the ``OrganSegmentations`` folder or a folder above it.
        out: output folder; paths in the manifest are relative to it.
        val_fraction: official training cases (21-139) held out as ``val``.
        seed: split shuffle seed.

    Returns:
        The manifest path.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    root = require_dir(root, "CT-ORG folder")
    out = start_output(out)
    skips = Skips()
    volumes, labels = _index(root, skips)
    logger.info("CT-ORG %s: %d volumes, %d label maps", root, len(volumes), len(labels))
    for number in sorted(set(volumes) - set(labels)):
        skips.add(volumes[number], "volume without a label map")
    for number in sorted(set(labels) - set(volumes)):
        skips.add(labels[number], "label map without a volume")
    cases = {f"volume-{n}": (volumes[n], labels[n]) for n in sorted(set(volumes) & set(labels))}
    test = {f"volume-{n}" for n in OFFICIAL_TEST}
    split_of = assign_splits(cases, test=test, val_fraction=val_fraction, seed=seed)
    records = pair_records(cases, split_of, skips, desc="CT-ORG", order=sorted(cases, key=lambda c: int(c.split("-")[1])))
    return finish(out, records, CLASS_NAMES, skips, log=logger)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of this converter."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.ct_org",
        description="Write a velvet segmentation manifest for CT-ORG (6 organ classes).",
    )
    parser.add_argument("root", type=Path, help="OrganSegmentations folder (or a folder above it)")
    add_common_arguments(parser)
    add_fraction_arguments(parser, test=None)  # the official test set is cases 0-20
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    kwargs = vars(build_parser().parse_args(argv))
    configure_logging(kwargs.pop("log_level"))
    return run_main(lambda: convert_ct_org(**kwargs))


if __name__ == "__main__":
    sys.exit(main())

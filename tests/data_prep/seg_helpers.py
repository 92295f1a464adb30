"""Tiny NIfTI fixtures for the segmentation converter tests (datasets.md sections 3 and 5)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from velvet.data.manifest import read_manifest

SHAPE = (8, 8, 6)
AFFINE = np.array(
    [[0.8, 0, 0, -20.0], [0, 0.8, 0, 10.0], [0, 0, 2.5, -100.0], [0, 0, 0, 1]], dtype=np.float64
)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Save ``array`` (its own dtype) as NIfTI, creating the folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def ct(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A small int16 HU volume."""
    return np.random.default_rng(seed).integers(-1000, 400, size=shape).astype(np.int16)


def label(max_id: int, seed: int = 0, dtype: type = np.uint8) -> np.ndarray:
    """A small label map with ids 0..max_id."""
    return np.random.default_rng(seed + 100).integers(0, max_id + 1, size=SHAPE).astype(dtype)


def pair(image: Path, lab: Path, max_id: int, seed: int = 0, dtype: type = np.uint8) -> None:
    """An image and its label map on the same grid."""
    write_nifti(image, ct(seed))
    write_nifti(lab, label(max_id, seed, dtype))


def junk(path: Path) -> Path:
    """A macOS AppleDouble file (not NIfTI at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    return path


def splits(manifest: Path) -> dict[str, str]:
    """id -> split of a segmentation manifest (read back through velvet's reader)."""
    return {r.id: r.split for r in read_manifest(manifest, require_report=False)}


def skipped(out: Path) -> list[dict[str, str]]:
    """The rows of ``out/skipped.csv``."""
    with (out / "skipped.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def classes(out: Path) -> dict[str, str]:
    """``out/classes.json``."""
    return json.loads((out / "classes.json").read_text(encoding="utf-8"))

"""Atomic file output: write to a temporary sibling, then rename into place.

A reader (another DataLoader worker, another DDP rank, a re-run after a crash) therefore sees
either the complete file or no file, never a half-written one. Temporary names start with
``.tmp-`` so that a killed run's leftovers are recognisable and can be removed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["TMP_PREFIX", "atomic_path", "remove_stale_temporaries", "save_nifti"]

TMP_PREFIX = ".tmp-"


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary name keeps the full file name as its suffix (``.tmp-<uuid>-ct.nii.gz``), so
    writers that pick the format from the extension (nibabel, SimpleITK) still work.

    Example:
        >>> with atomic_path("out/ct.nii.gz") as tmp:  # doctest: +SKIP
        ...     nib.save(img, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{path.name}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete ``.tmp-*`` leftovers of killed writers under ``folder``; returns how many.

    Only call this when no other writer is running on the folder (e.g. at a converter's start).
    """
    count = 0
    for p in Path(folder).rglob(f"{TMP_PREFIX}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            count += 1
    return count


def save_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike[str],
    *,
    dtype: np.dtype | type | None = None,
) -> Path:
    """Write a 3D array as NIfTI atomically.

    Args:
        array: ``(H, W, D)`` voxel array in the affine's voxel order.
        affine: ``(4, 4)`` voxel -> RAS world (mm) matrix.
        path: output file (``.nii`` or ``.nii.gz``).
        dtype: on-disk dtype (default: the array's).

    Returns:
        The written path.
    """
    import nibabel as nib  # nibabel is light, but keep `import velvet.data.atomic` free of it

    data = np.asarray(array if dtype is None else array.astype(dtype, copy=False))
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)  # scanner coordinates; readers that prefer the qform agree
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)

"""Atomic NIfTI output, and the atomic-write helpers under their historical import path.

The helpers live in :mod:`velvet.utils.atomic` (one implementation for every subpackage); they are
re-exported here because converters and tests import them as ``velvet.data.atomic.atomic_path``.
Temporary names start with ``.tmp-`` so that a killed run's leftovers are recognisable and can be
removed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from velvet.utils.atomic import TMP_PREFIX, atomic_path, remove_stale_temporaries

__all__ = ["TMP_PREFIX", "atomic_path", "remove_stale_temporaries", "save_nifti"]


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

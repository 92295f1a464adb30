"""SimpleITK plumbing shared by the single-file reader (:mod:`velvet.data.io`) and the DICOM-series
reader (:mod:`velvet.data.io_dicom`).

ITK works in LPS with a ``(z, y, x)`` array; :func:`_itk_to_array_affine` converts its images to
nibabel's convention (``(i, j, k)`` array, RAS+ affine), here and nowhere else. Also: ITK calls
without ITK's own stderr warnings (:func:`_quiet_itk`), the useful part of a reader's error
message (:func:`_reason`), and the numpy dtype of the voxels a reader's header declares
(:func:`_itk_voxel_dtype`).

SimpleITK is imported inside the functions: importing this module stays light.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from velvet.data.errors import VolumeShapeError
from velvet.data.io_limits import _check_shape

# ITK's LPS world <-> nibabel's RAS world: negate x and y
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _reason(exc: BaseException) -> str:
    """The useful part of a reader's exception (ITK's carry source locations and object ids)."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "sitk::ERROR" in text or "ITK ERROR" in text:
        last = re.sub(
            r"^(sitk::ERROR|ITK ERROR):\s*(\w+\(0x[0-9a-f]+\):\s*)?|^\[\w+\]\s*\w+:\s*", "", lines[-1]
        )
        return last.replace("Unable to determine ImageIO reader for", "no ITK reader recognises")
    return " ".join(lines) or type(exc).__name__


def _itk_to_array_affine(p: Path, img: Any) -> tuple[np.ndarray, np.ndarray]:
    """Array ``(H, W, D)`` in ITK index order and RAS affine of a SimpleITK image.

    ITK's geometry is ``world_LPS = origin + direction @ diag(spacing) @ index``; negating x and y
    gives the RAS affine nibabel would report for the same file.
    """
    import SimpleITK as sitk

    size = tuple(img.GetSize())
    if img.GetNumberOfComponentsPerPixel() > 1:
        raise VolumeShapeError(
            p, f"has {img.GetNumberOfComponentsPerPixel()} channels per voxel; expected one CT intensity"
        )
    _check_shape(p, size)
    if img.GetDimension() > 3:  # trailing singleton dimensions only (checked above)
        img = img[(slice(None),) * 3 + (0,) * (img.GetDimension() - 3)]
    dim = img.GetDimension()
    direction = np.asarray(img.GetDirection(), np.float64).reshape(dim, dim)[:3, :3]
    spacing = np.asarray(img.GetSpacing(), np.float64)[:3]
    origin = np.asarray(img.GetOrigin(), np.float64)[:3]
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    # ITK arrays are (z, y, x) C-order: the transpose is (x, y, z) Fortran-order, like nibabel's
    array = np.array(sitk.GetArrayViewFromImage(img).T, copy=True)
    return array, affine


def _quiet_itk(fn: Any, *args: Any) -> Any:
    """Call ``fn`` with ITK's own warnings (printed straight to stderr) switched off.

    velvet reports the problems that matter itself, as Python warnings that can be filtered.
    """
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return fn(*args)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(before)


# SimpleITK pixel component type -> numpy dtype (vector and complex types by their component)
_ITK_COMPONENT_DTYPES = {
    "8-bit unsigned integer": np.uint8,
    "8-bit signed integer": np.int8,
    "16-bit unsigned integer": np.uint16,
    "16-bit signed integer": np.int16,
    "32-bit unsigned integer": np.uint32,
    "32-bit signed integer": np.int32,
    "64-bit unsigned integer": np.uint64,
    "64-bit signed integer": np.int64,
    "32-bit float": np.float32,
    "64-bit float": np.float64,
}


def _itk_voxel_dtype(reader: Any) -> np.dtype:
    """The numpy dtype of one component of the image a SimpleITK reader has read the header of."""
    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    for key, dtype in _ITK_COMPONENT_DTYPES.items():
        if name.endswith(key):  # "16-bit signed integer", "vector of 16-bit signed integer", ...
            return np.dtype(dtype)
    return np.dtype(np.uint8)  # unknown: the narrowest, so the size checks never over-count

"""Read a CT volume from NIfTI, DICOM, NRRD or MetaImage into one array + RAS affine.

Every reader returns a :class:`Volume` in nibabel's convention: ``array`` is indexed by the
image's voxel axes ``(i, j, k)`` and ``affine`` maps ``(i, j, k, 1)`` to RAS+ world millimetres.
ITK readers (DICOM, NRRD, MHA) work in LPS with a ``(z, y, x)`` array, so they are converted here
and nowhere else. Orientation is *kept*, not changed: reorienting is the transforms' job.

Bad input fails here, early, with a :class:`~velvet.data.errors.DataError` that names the file:
missing, empty, unknown format, corrupt or truncated, 2D, a single slice, several channels or
time points, no voxels, NaN/inf voxels.

Headers are not trusted with memory: the size a header declares is checked *before* any voxel is
allocated, against the bytes the file actually holds (uncompressed data: exactly; gzip/zlib data:
deflate cannot compress more than 1032:1) and against a voxel budget (``max_voxels``, default
``$VELVET_MAX_VOXELS`` or 2**31). A DICOM series is checked for completeness: files in the folder
that do not decode (empty, truncated, corrupt) and gaps between slice positions (a step larger
than 1.5x the median step: missing slices) are errors or warnings, by policy, naming the slices.

This module holds :class:`Volume`, :func:`read_volume`, the choice of reader by file name or
content, the NIfTI and single-file ITK readers (NRRD, MetaImage, one DICOM file) and the checks of
the voxels read. The rest lives beside it, and its public names are re-exported here (import them
from ``velvet.data.io``):

- :mod:`velvet.data.io_limits`: header checks before allocation (declared size vs file size, the
  voxel budget :func:`max_voxels_limit`, :class:`VolumeTooLargeError`);
- :mod:`velvet.data.io_dicom`: reading a DICOM series from a folder and checking it (damaged
  files, slice gaps), its warnings;
- :mod:`velvet.data.io_itk`: SimpleITK helpers shared by both readers (LPS -> RAS conversion).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from velvet.data.errors import DataError, VolumeReadError, VolumeShapeError, VolumeValueError
from velvet.data.io_dicom import (
    DamagedSliceWarning,
    MissingSliceWarning,
    NonUniformSpacingWarning,
    SlicePolicy,
    _dicom_meta,
    _read_dicom_folder,
)
from velvet.data.io_itk import _itk_to_array_affine, _itk_voxel_dtype, _quiet_itk, _reason
from velvet.data.io_limits import (
    DEFAULT_MAX_VOXELS,
    VolumeTooLargeError,
    _check_declared,
    _check_shape,
    _itk_data_layout,
    _shape_str,
    max_voxels_limit,
)
from velvet.data.io_limits import MAX_VOXELS_ENV as MAX_VOXELS_ENV  # re-exported, as before not in __all__

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "DamagedSliceWarning",
    "MissingSliceWarning",
    "NonUniformSpacingWarning",
    "Volume",
    "VolumeTooLargeError",
    "max_voxels_limit",
    "read_volume",
    "reader_suffix",
]

logger = logging.getLogger(__name__)

# file name ending -> format name; the longest matching ending wins (".nii.gz" before ".gz")
_EXTENSIONS: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".ima": "dicom",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
}


@dataclass
class Volume:
    """A 3D image with its geometry.

    Attributes:
        array: ``(H, W, D)`` voxels in the file's voxel order (HU for CT read from DICOM or a
            scaled NIfTI; integer dtypes are kept when the file stores unscaled integers).
        affine: ``(4, 4)`` float64, voxel index -> RAS+ world mm.
        path: the file or DICOM folder read.
        format: ``"nifti"``, ``"dicom"``, ``"nrrd"`` or ``"mha"``.
        meta: reader details (e.g. ``series_uid``, ``modality``, ``rescale``, ``warnings``).
    """

    array: np.ndarray
    affine: np.ndarray
    path: str
    format: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, W, D)`` voxel counts."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (the affine's column norms)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Axis codes of the array axes, e.g. ``"RAS"`` (nibabel) or ``"LPS"`` (DICOM order)."""
        from nibabel.orientations import aff2axcodes

        return "".join(aff2axcodes(self.affine))

    @property
    def dtype(self) -> np.dtype:
        """The array's dtype."""
        return self.array.dtype


def read_volume(
    path: str | os.PathLike[str],
    *,
    spacing: Sequence[float] | None = None,
    rescale: tuple[float, float] | None = None,
    series_uid: str | None = None,
    damaged_slices: SlicePolicy = "error",
    missing_slices: SlicePolicy = "warn",
    max_voxels: int | None = None,
) -> Volume:
    """Read one 3D volume.

    Args:
        path: a ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``, ``.mha``/``.mhd`` or ``.dcm`` file
            (extension-less files starting with a DICOM preamble are read as DICOM), or a folder
            holding one DICOM series.
        spacing: voxel size ``(x, y, z)`` in mm replacing the header's (direction kept), for
            files whose header has none.
        rescale: ``(slope, intercept)``: ``value = slope * stored + intercept`` (float32), for
            files that store raw values without their HU mapping. Applied after any rescale the
            file itself declares (DICOM RescaleSlope/Intercept, NIfTI scl_slope/scl_inter).
        series_uid: which series to read from a DICOM folder holding several.
        damaged_slices: a DICOM folder holding files that do not decode (empty, truncated,
            corrupt: DICOM readers silently leave them out of the series): ``"error"`` (default),
            or ``"warn"`` (:class:`DamagedSliceWarning` naming them) and read the rest.
        missing_slices: a DICOM series with a gap between slice positions larger than 1.5x the
            median step: ``"warn"`` (default; :class:`MissingSliceWarning` naming the slices
            around the gap, as ``velvet inspect`` wants) or ``"error"`` (what the preprocessing
            pipeline, and so the cache, ``embed`` and training, use).
        max_voxels: refuse volumes with more voxels than this, from the header, before
            allocating (default :func:`max_voxels_limit`: ``$VELVET_MAX_VOXELS`` or 2**31).

    Returns:
        The :class:`Volume`, array ``(H, W, D)``.

    Raises:
        VolumeReadError: missing, empty, unknown-format, corrupt or truncated file (also one whose
            header declares more voxel data than the file holds); a folder without DICOM files or
            with several series (and no ``series_uid``); a DICOM series with damaged files or
            missing slices (by the policies above).
        VolumeTooLargeError: the header declares more than ``max_voxels`` voxels, or the voxels
            do not fit in memory.
        VolumeShapeError: not one 3D volume (2D, single slice, several channels, no voxels).
        VolumeValueError: NaN or infinite voxels.
        ValueError: a malformed ``spacing`` or ``rescale`` argument.

    Warns:
        NonUniformSpacingWarning: a DICOM series with irregular slice steps.
        MissingSliceWarning: a gap in a DICOM series (``missing_slices="warn"``).
        DamagedSliceWarning: undecodable files beside a DICOM series (``damaged_slices="warn"``).

    Example:
        >>> vol = read_volume("ct.nii.gz")  # doctest: +SKIP
        >>> vol.shape, vol.spacing, vol.orientation  # doctest: +SKIP
        ((122, 101, 112), (3.0, 3.0, 3.0), 'RAS')
    """
    spacing = _check_spacing(spacing)
    rescale = _check_rescale(rescale)
    for name, policy in (("damaged_slices", damaged_slices), ("missing_slices", missing_slices)):
        if policy not in ("error", "warn"):
            raise ValueError(f"{name} must be 'error' or 'warn', got {policy!r}")
    budget = max_voxels_limit(max_voxels)
    p = Path(path)
    if not p.exists():
        raise VolumeReadError(p, "no such file or directory")
    try:
        if p.is_dir():
            policies = {"damaged": damaged_slices, "missing": missing_slices}
            array, affine, meta = _read_dicom_folder(p, series_uid, policies, budget)
            fmt = "dicom"
        else:
            fmt = _format_of(p)
            if fmt == "nifti":
                array, affine, meta = _read_nifti(p, budget)
            else:
                array, affine, meta = _read_itk_file(p, fmt, budget)
    except DataError:
        raise
    except MemoryError as exc:  # a header within budget, but more than this machine has free
        raise VolumeTooLargeError(
            p, f"ran out of memory reading its voxels ({_reason(exc)}); free memory or read it elsewhere"
        ) from None
    except PermissionError as exc:
        raise VolumeReadError(p, "permission denied") from exc
    except Exception as exc:  # nibabel/ITK/gzip/OS errors: say which file, keep the cause
        kind = _FORMAT_NAMES.get(_guess(p), "an image")
        raise VolumeReadError(
            p, f"cannot read as {kind} (corrupt, truncated or not {kind}): {_reason(exc)}"
        ) from exc
    array = _check_array(p, array)
    if spacing is not None:
        affine = _with_spacing(affine, spacing)
        meta["spacing_override"] = list(spacing)
    elif not np.all(np.linalg.norm(affine[:3, :3], axis=0) > 0):
        raise VolumeReadError(p, "the header gives a zero voxel size; pass spacing=(x, y, z) in mm")
    if rescale is not None:
        slope, intercept = rescale
        array = array.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        meta["rescale_override"] = [slope, intercept]
    return Volume(array=array, affine=np.asarray(affine, np.float64), path=str(p), format=fmt, meta=meta)


_FORMAT_NAMES = {"nifti": "NIfTI", "dicom": "DICOM", "nrrd": "NRRD", "mha": "MetaImage"}


def reader_suffix(path: str | os.PathLike[str]) -> str:
    """The part of a path's name that picks the reader: ``".nii.gz"``, ``".nrrd"`` ..., ``"/"`` for a
    folder (DICOM series), ``""`` for a name without a known ending (read as DICOM if the content
    says so, else refused).

    Two files with the same bytes but different endings are read differently (a ``.png`` is refused
    where its ``.nii.gz`` twin is read): caches key their results by content *and* this.
    """
    p = Path(path)
    if p.is_dir():
        return "/"
    name = p.name.lower()
    return next((ext for ext in _EXTENSIONS if name.endswith(ext)), "")


def _guess(p: Path) -> str:
    """The format suggested by the file name ("" when none); no checks."""
    if p.is_dir():
        return "dicom"
    name = p.name.lower()
    return next((fmt for ext, fmt in _EXTENSIONS.items() if name.endswith(ext)), "")


def _format_of(p: Path) -> str:
    """The reader for a file: by extension, else a DICOM preamble; raises for anything else."""
    if p.stat().st_size == 0:
        raise VolumeReadError(p, "empty file (0 bytes)")
    fmt = _guess(p)
    if fmt:
        return fmt
    with open(p, "rb") as fh:  # DICOM files often have no extension (e.g. "IM0001", "7106")
        head = fh.read(132)
    if head[128:132] == b"DICM":
        return "dicom"
    known = ", ".join(sorted(_EXTENSIONS))
    raise VolumeReadError(p, f"unknown image format (file name ending not one of {known}, and not DICOM)")


def _read_nifti(p: Path, max_voxels: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """nibabel read; the voxels are loaded here so truncated data fails inside read_volume."""
    import nibabel as nib

    img: Any = nib.load(str(p), mmap=False)  # a memory map would defer (and hide) read errors
    _check_shape(p, tuple(img.shape))  # before loading: a 4D series can be large
    # nibabel allocates the whole declared array before it reads: check the header first
    size = p.stat().st_size
    if p.name.lower().endswith(".gz"):  # the offset counts uncompressed bytes: compare the whole file
        encoding, available = "deflate", size
    else:  # (the loaded header's vox_offset is reset; the array proxy keeps where the voxels start)
        offset = int(getattr(img.dataobj, "offset", 0) or img.header.get_data_offset())
        encoding, available = "raw", max(size - offset, 0)
    _check_declared(p, tuple(img.shape), img.get_data_dtype(), encoding, available, max_voxels)
    proxy = img.dataobj
    slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
    # np.asanyarray(dataobj) applies scl_slope/scl_inter and returns the stored dtype when they
    # are the identity (an int16 CT stays int16: 4x less memory than float64)
    array = np.asanyarray(proxy)
    meta: dict[str, Any] = {
        "qform_code": int(img.header["qform_code"]),
        "sform_code": int(img.header["sform_code"]),
    }
    if (slope, inter) != (1.0, 0.0):
        array = array.astype(np.float32, copy=False)
        meta["rescale"] = [slope, inter]
    return array, np.asarray(img.affine, np.float64), meta


def _read_itk_file(p: Path, fmt: str, max_voxels: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """SimpleITK read of a single file (NRRD, MetaImage, one DICOM file, also NIfTI)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    # ITK allocates the whole declared image before it reads the voxels: check the header first
    _quiet_itk(reader.ReadImageInformation)
    size = tuple(int(s) for s in reader.GetSize())
    if fmt == "dicom" and len(size) == 3 and 1 in size:
        raise VolumeShapeError(
            p,
            f"is a single slice ({_shape_str(size)}), not a volume; "
            "to read a DICOM series, pass the folder that holds all its files",
        )
    _check_shape(p, size)
    encoding, available, data_file = _itk_data_layout(p, fmt)
    _check_declared(
        p,
        size,
        _itk_voxel_dtype(reader),
        encoding,
        available,
        max_voxels,
        components=int(reader.GetNumberOfComponents()),
        data_file=data_file,
    )
    img = _quiet_itk(reader.Execute)
    meta = _dicom_meta(img) if fmt == "dicom" else {}
    array, affine = _itk_to_array_affine(p, img)
    return array, affine, meta


def _check_array(p: Path, array: np.ndarray) -> np.ndarray:
    """Squeeze trailing singleton axes, re-check the shape, refuse NaN/inf voxels."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    _check_shape(p, tuple(array.shape))
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        if np.iscomplexobj(array):
            raise VolumeValueError(p, "has complex-valued voxels; expected real intensities")
        finite = np.isfinite(array)
        if not finite.all():
            n_nan = int(np.count_nonzero(np.isnan(array)))
            n_inf = int(array.size - np.count_nonzero(finite) - n_nan)
            parts = [f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
            raise VolumeValueError(p, f"contains {' and '.join(parts)} voxels (of {array.size})")
    elif array.dtype.names is not None:  # NIfTI RGB/RGBA voxels
        raise VolumeShapeError(
            p, f"has {len(array.dtype.names)}-channel voxels ({array.dtype}); expected one intensity"
        )
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8)
    return array


def _with_spacing(affine: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The affine with its column norms set to ``spacing`` (direction and origin kept)."""
    out = np.array(affine, np.float64)
    norms = np.linalg.norm(out[:3, :3], axis=0)
    for i in range(3):
        # a zero column (blank header) has no direction to keep: use the RAS axis
        unit = out[:3, i] / norms[i] if norms[i] > 0 else np.eye(3)[i]
        out[:3, i] = unit * spacing[i]
    return out


def _check_spacing(spacing: Sequence[float] | None) -> tuple[float, float, float] | None:
    if spacing is None:
        return None
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive numbers (mm), got {spacing!r}")
    return values  # type: ignore[return-value]


def _check_rescale(rescale: tuple[float, float] | None) -> tuple[float, float] | None:
    if rescale is None:
        return None
    values = tuple(float(v) for v in rescale)
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[0] == 0:
        raise ValueError(f"rescale must be (slope, intercept) with a finite non-zero slope, got {rescale!r}")
    return values  # type: ignore[return-value]

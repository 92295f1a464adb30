"""Read a CT volume from NIfTI, DICOM, NRRD or MetaImage into one array + RAS affine.

Every reader returns a :class:`Volume` in nibabel's convention: ``array`` is indexed by the
image's voxel axes ``(i, j, k)`` and ``affine`` maps ``(i, j, k, 1)`` to RAS+ world millimetres.
ITK readers (DICOM, NRRD, MHA) work in LPS with a ``(z, y, x)`` array, so they are converted here
and nowhere else. Orientation is *kept*, not changed: reorienting is the transforms' job.

Bad input fails here, early, with a :class:`~velvet.data.errors.DataError` that names the file:
missing, empty, unknown format, corrupt or truncated, 2D, a single slice, several channels or
time points, no voxels, NaN/inf voxels.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from velvet.data.errors import DataError, VolumeReadError, VolumeShapeError, VolumeValueError

__all__ = ["NonUniformSpacingWarning", "Volume", "read_volume"]

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
# ITK's LPS world <-> nibabel's RAS world: negate x and y
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# relative spread of DICOM slice steps above which the series is reported as non-uniform
_SPACING_TOLERANCE = 1e-2


class NonUniformSpacingWarning(UserWarning):
    """A DICOM series whose slice positions are not evenly spaced (missing or irregular slices).

    The volume's affine then uses one average step, so world positions along the slice axis are
    approximate.
    """


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

    Returns:
        The :class:`Volume`, array ``(H, W, D)``.

    Raises:
        VolumeReadError: missing, empty, unknown-format, corrupt or truncated file; a folder
            without DICOM files or with several series (and no ``series_uid``).
        VolumeShapeError: not one 3D volume (2D, single slice, several channels, no voxels).
        VolumeValueError: NaN or infinite voxels.
        ValueError: a malformed ``spacing`` or ``rescale`` argument.

    Warns:
        NonUniformSpacingWarning: a DICOM series with irregular slice steps.

    Example:
        >>> vol = read_volume("ct.nii.gz")  # doctest: +SKIP
        >>> vol.shape, vol.spacing, vol.orientation  # doctest: +SKIP
        ((122, 101, 112), (3.0, 3.0, 3.0), 'RAS')
    """
    spacing = _check_spacing(spacing)
    rescale = _check_rescale(rescale)
    p = Path(path)
    if not p.exists():
        raise VolumeReadError(p, "no such file or directory")
    try:
        if p.is_dir():
            array, affine, meta = _read_dicom_folder(p, series_uid)
            fmt = "dicom"
        else:
            fmt = _format_of(p)
            if fmt == "nifti":
                array, affine, meta = _read_nifti(p)
            else:
                array, affine, meta = _read_itk_file(p, fmt)
    except (DataError, MemoryError):
        raise
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


def _read_nifti(p: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """nibabel read; the voxels are loaded here so truncated data fails inside read_volume."""
    import nibabel as nib

    img = nib.load(str(p), mmap=False)  # a memory map would defer (and hide) read errors
    _check_shape(p, tuple(img.shape))  # before loading: a 4D series can be large
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


def _read_itk_file(p: Path, fmt: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """SimpleITK read of a single file (NRRD, MetaImage, one DICOM file, also NIfTI)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    img = _quiet_itk(reader.Execute)
    meta = _dicom_meta(img) if fmt == "dicom" else {}
    if fmt == "dicom" and img.GetDimension() == 3 and 1 in img.GetSize():
        raise VolumeShapeError(
            p,
            f"is a single slice ({_shape_str(img.GetSize())}), not a volume; "
            "to read a DICOM series, pass the folder that holds all its files",
        )
    array, affine = _itk_to_array_affine(p, img)
    return array, affine, meta


def _read_dicom_folder(p: Path, series_uid: str | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """SimpleITK/GDCM read of one series in a folder (GDCM decodes JPEG 2000 and applies rescale)."""
    import SimpleITK as sitk

    ids = list(_quiet_itk(sitk.ImageSeriesReader.GetGDCMSeriesIDs, str(p)))
    if not ids:
        names = sorted(f.name for f in p.iterdir() if not f.name.startswith("."))
        held = (
            f"it holds {len(names)} entr{'y' if len(names) == 1 else 'ies'}, e.g. {', '.join(names[:3])}"
            if names
            else "it is empty"
        )
        raise VolumeReadError(p, f"folder holds no DICOM files ({held})")
    files_of = {uid: _quiet_itk(sitk.ImageSeriesReader.GetGDCMSeriesFileNames, str(p), uid) for uid in ids}
    listing = "; ".join(f"{uid or '(no SeriesInstanceUID)'} ({len(files_of[uid])} files)" for uid in ids)
    if series_uid is None and len(ids) > 1:
        raise VolumeReadError(
            p, f"folder holds {len(ids)} DICOM series: {listing}; pass series_uid= to pick one"
        )
    if series_uid is not None and series_uid not in ids:
        raise VolumeReadError(p, f"no DICOM series {series_uid!r} in the folder; it holds: {listing}")
    uid = ids[0] if series_uid is None else series_uid
    files = files_of[uid]
    if len(files) == 1:
        raise VolumeShapeError(p, f"the DICOM series is a single slice ({Path(files[0]).name}), not a volume")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()  # per-slice tags, for the spacing check below
    img = _quiet_itk(reader.Execute)  # ITK's own non-uniform sampling message is replaced by ours
    meta = _dicom_meta(reader, 0)
    meta.update(series_uid=uid, n_files=len(files))
    steps = _slice_steps(reader, len(files))
    if steps is not None and steps.max() - steps.min() > _SPACING_TOLERANCE * max(abs(steps.mean()), 1e-3):
        message = (
            f"{p}: non-uniform DICOM slice spacing: slice steps range from {steps.min():.4g} to "
            f"{steps.max():.4g} mm ({len(files)} slices; missing or irregular slices?); the volume uses "
            f"an average step of {img.GetSpacing()[2]:.4g} mm, so positions along the slice axis are approximate"
        )
        warnings.warn(message, NonUniformSpacingWarning, stacklevel=3)
        meta["warnings"] = [message]
    array, affine = _itk_to_array_affine(p, img)
    return array, affine, meta


def _slice_steps(reader: Any, n: int) -> np.ndarray | None:
    """Sorted distances (mm) between neighbouring slice positions along the slice normal."""
    try:
        iop = np.array(reader.GetMetaData(0, "0020|0037").split("\\"), dtype=np.float64)
        ipp = np.array([reader.GetMetaData(i, "0020|0032").split("\\") for i in range(n)], dtype=np.float64)
    except (RuntimeError, ValueError):  # tags missing or malformed: nothing to check
        return None
    if iop.shape != (6,) or ipp.shape != (n, 3):
        return None
    normal = np.cross(iop[:3], iop[3:])
    return np.diff(np.sort(ipp @ normal))


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


# DICOM tag -> meta key kept in Volume.meta
_DICOM_TAGS = {
    "0008|0060": "modality",
    "0020|000e": "series_uid",
    "0008|103e": "series_description",
    "0028|1053": "rescale_slope",
    "0028|1052": "rescale_intercept",
}


def _dicom_meta(img_or_reader: Any, index: int | None = None) -> dict[str, Any]:
    """The DICOM tags of :data:`_DICOM_TAGS` present on an image (or a series reader's slice)."""
    meta: dict[str, Any] = {}
    for tag, key in _DICOM_TAGS.items():
        args = (tag,) if index is None else (index, tag)
        if img_or_reader.HasMetaDataKey(*args):
            value = img_or_reader.GetMetaData(*args).strip()
            if key.startswith("rescale"):
                try:
                    meta[key] = float(value)
                except ValueError:
                    continue
            elif value:
                meta[key] = value
    return meta


def _shape_str(shape: Sequence[int]) -> str:
    return " x ".join(str(int(s)) for s in shape)


def _check_shape(p: Path, shape: tuple[int, ...]) -> None:
    """Refuse anything but one 3D volume of at least 2 voxels along each axis."""
    while len(shape) > 3 and shape[-1] == 1:  # (H, W, D, 1) and NIfTI's (H, W, D, 1, 1) are 3D
        shape = shape[:-1]
    if any(s == 0 for s in shape):
        raise VolumeShapeError(p, f"has no voxels (shape {_shape_str(shape)})")
    if len(shape) < 3:
        raise VolumeShapeError(p, f"is a {len(shape)}D image (shape {_shape_str(shape)}), not a 3D volume")
    if len(shape) > 3:
        raise VolumeShapeError(
            p,
            f"is {len(shape)}D (shape {_shape_str(shape)}): {math.prod(shape[3:])} volumes or channels, "
            "expected one 3D volume",
        )
    if 1 in shape:
        raise VolumeShapeError(p, f"is a single slice (shape {_shape_str(shape)}), not a volume")


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

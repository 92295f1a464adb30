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
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from velvet.data.errors import DataError, VolumeReadError, VolumeShapeError, VolumeValueError

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
# ITK's LPS world <-> nibabel's RAS world: negate x and y
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# relative spread of DICOM slice steps above which the series is reported as non-uniform
_SPACING_TOLERANCE = 1e-2
# a DICOM slice step larger than this many median steps is a gap: one or more slices are missing
_GAP_FACTOR = 1.5
# voxel budget of one volume when neither max_voxels= nor $VELVET_MAX_VOXELS says otherwise
DEFAULT_MAX_VOXELS = 2**31
MAX_VOXELS_ENV = "VELVET_MAX_VOXELS"
# deflate (gzip, zlib) cannot compress better than 1032:1: a smaller file cannot hold the voxels
_DEFLATE_MAX_RATIO = 1032
_DEFLATE_SLACK = 1024  # bytes: gzip/zlib framing, a NIfTI header and extensions

SlicePolicy = Literal["error", "warn"]


class NonUniformSpacingWarning(UserWarning):
    """A DICOM series whose slice positions are not evenly spaced (missing or irregular slices).

    The volume's affine then uses one average step, so world positions along the slice axis are
    approximate.
    """


class MissingSliceWarning(NonUniformSpacingWarning):
    """A DICOM series with a gap between slice positions (one or more slices missing), read anyway

    because ``missing_slices="warn"``. The message names the slices on both sides of the gap.
    """


class DamagedSliceWarning(UserWarning):
    """A DICOM folder holds files that do not decode (empty, truncated, corrupt); the series was read
    without them because ``damaged_slices="warn"``. The message names the files.
    """


class VolumeTooLargeError(VolumeReadError):
    """The volume needs more memory than allowed (``max_voxels``) or available.

    ``transient``: the verdict depends on the machine and settings, not on the file alone, so
    caches do not record it as a permanent failure.
    """

    transient = True


def max_voxels_limit(max_voxels: int | None = None) -> int:
    """The voxel budget of one volume: ``max_voxels``, else ``$VELVET_MAX_VOXELS``, else 2**31.

    Raises:
        ValueError: a non-positive value, or a ``$VELVET_MAX_VOXELS`` that is not an integer.
    """
    if max_voxels is None:
        raw = os.environ.get(MAX_VOXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_VOXELS
        try:
            max_voxels = int(float(raw)) if "e" in raw.lower() else int(raw)
        except ValueError:
            raise ValueError(f"{MAX_VOXELS_ENV} must be a positive integer, got {raw!r}") from None
    if int(max_voxels) < 1:
        raise ValueError(f"max_voxels must be a positive integer, got {max_voxels!r}")
    return int(max_voxels)


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


def _read_dicom_folder(
    p: Path, series_uid: str | None, policies: Mapping[str, str], max_voxels: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """SimpleITK/GDCM read of one series in a folder (GDCM decodes JPEG 2000 and applies rescale).

    GDCM leaves files it cannot parse (empty, truncated, corrupt) out of the series without a
    word, so the folder's files are counted against the series' (:func:`_damaged_files`), and the
    slice positions are checked for gaps after reading (:func:`_check_slice_positions`).
    """
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
    files = list(files_of[uid])
    messages: list[str] = []
    damaged = _damaged_files(p, {os.path.realpath(f) for fs in files_of.values() for f in fs})
    if damaged:
        shown = ", ".join(f"{f.name} ({why})" for f, why in damaged[:5])
        more = f" and {len(damaged) - 5} more" if len(damaged) > 5 else ""
        problem = (
            f"{len(damaged)} file(s) in the DICOM folder do not decode and are not part of the series "
            f"(it keeps {len(files)} readable slice(s)): {shown}{more}"
        )
        if policies["damaged"] == "error":
            raise VolumeReadError(p, f"{problem}; repair or remove them (or read with damaged_slices='warn')")
        message = f"{p}: {problem}; the series is read without them"
        warnings.warn(message, DamagedSliceWarning, stacklevel=3)
        messages.append(message)
    if len(files) == 1:
        raise VolumeShapeError(p, f"the DICOM series is a single slice ({Path(files[0]).name}), not a volume")
    _check_series_size(p, files, max_voxels)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()  # per-slice tags, for the position checks below
    try:
        img = _quiet_itk(reader.Execute)  # ITK's own non-uniform sampling message is replaced by ours
    except RuntimeError as exc:
        raise VolumeReadError(p, _undecodable_slice(files, exc)) from exc
    meta = _dicom_meta(reader, 0)
    meta.update(series_uid=uid, n_files=len(files))
    messages += _check_slice_positions(p, reader, files, img.GetSpacing()[2], policies["missing"])
    if messages:
        meta["warnings"] = messages
    array, affine = _itk_to_array_affine(p, img)
    return array, affine, meta


def _slice_positions(reader: Any, n: int) -> np.ndarray | None:
    """Each slice's position (mm) along the slice normal, in the reader's file order."""
    try:
        iop = np.array(reader.GetMetaData(0, "0020|0037").split("\\"), dtype=np.float64)
        ipp = np.array([reader.GetMetaData(i, "0020|0032").split("\\") for i in range(n)], dtype=np.float64)
    except (RuntimeError, ValueError):  # tags missing or malformed: nothing to check
        return None
    if iop.shape != (6,) or ipp.shape != (n, 3):
        return None
    return ipp @ np.cross(iop[:3], iop[3:])


def _check_slice_positions(p: Path, reader: Any, files: Sequence[str], step: float, policy: str) -> list[str]:
    """Gaps (missing slices: an error or a warning) and irregular steps (a warning) of a series.

    Returns:
        The warning messages issued.
    """
    positions = _slice_positions(reader, len(files))
    if positions is None:
        return []
    order = np.argsort(positions, kind="stable")
    z = positions[order]
    steps = np.diff(z)
    if steps.size == 0:
        return []
    median = float(np.median(steps))
    messages: list[str] = []
    gaps = np.flatnonzero(steps > _GAP_FACTOR * median) if median > 0 else np.array([], int)
    if gaps.size:
        names = [Path(files[i]).name for i in order]
        parts = [
            f"{steps[g]:.4g} mm between {names[g]} (at {z[g]:.4g} mm) and {names[g + 1]} (at {z[g + 1]:.4g} mm), "
            f"about {max(round(steps[g] / median) - 1, 1)} slice(s) missing"
            for g in gaps[:5]
        ]
        more = f" and {gaps.size - 5} more gaps" if gaps.size > 5 else ""
        problem = (
            f"DICOM series has {gaps.size} gap(s) in its slice positions, larger than {_GAP_FACTOR}x the median "
            f"step of {median:.4g} mm ({len(files)} slices): {'; '.join(parts)}{more}"
        )
        if policy == "error":
            raise VolumeReadError(
                p, f"{problem}; missing slices? (read with missing_slices='warn' to accept it)"
            )
    if steps.max() - steps.min() > _SPACING_TOLERANCE * max(abs(steps.mean()), 1e-3):
        message = (
            f"{p}: non-uniform DICOM slice spacing: slice steps range from {steps.min():.4g} to "
            f"{steps.max():.4g} mm ({len(files)} slices; missing or irregular slices?); the volume uses "
            f"an average step of {step:.4g} mm, so positions along the slice axis are approximate"
        )
        category: type[Warning] = NonUniformSpacingWarning
        if gaps.size:
            message += f"; {problem}"
            category = MissingSliceWarning
        warnings.warn(message, category, stacklevel=4)
        messages.append(message)
    return messages


# file names that are never slices of a series, whatever their content
_NOT_SLICES = {"dicomdir", "thumbs.db", "desktop.ini"}
_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ".dc3"}


def _damaged_files(folder: Path, listed: set[str]) -> list[tuple[Path, str]]:
    """Files of ``folder`` that look like DICOM slices but that GDCM left out of every series.

    A file counts when it is empty or does not decode, and its name or content says DICOM: a
    DICOM suffix, no suffix or a numeric one (``IM0001``, ``CT.1.2.840.113619``), or the ``DICM``
    preamble. Other files (``notes.txt``, ``seg.nii.gz``, a README) are not slices.
    """
    import SimpleITK as sitk

    found: list[tuple[Path, str]] = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or f.name.lower() in _NOT_SLICES or not f.is_file():
            continue
        if os.path.realpath(f) in listed:
            continue
        suffix = f.suffix.lower()
        slice_name = suffix in _DICOM_SUFFIXES or suffix == "" or suffix[1:].isdigit()
        size = f.stat().st_size
        if size == 0:
            if slice_name:
                found.append((f, "empty, 0 bytes"))
            continue
        with open(f, "rb") as fh:
            head = fh.read(1024)
        if head[128:132] != b"DICM" and (not slice_name or _is_text(head)):
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        try:
            _quiet_itk(reader.ReadImageInformation)
            why = f"{size} bytes, left out of the series by the DICOM reader"
        except RuntimeError as exc:
            why = f"{size} bytes, truncated or corrupt: {_reason(exc)}"
        found.append((f, why))
    return found


def _is_text(head: bytes) -> bool:
    """The bytes read as UTF-8 text without NULs (a README, not a DICOM file without preamble)."""
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample is fine
        return exc.start >= len(head) - 3
    return True


def _undecodable_slice(files: Sequence[str], exc: BaseException) -> str:
    """The problem of a series whose reading failed, naming the first slice that does not decode."""
    import SimpleITK as sitk

    for f in files:
        try:
            _quiet_itk(sitk.ReadImage, f)
        except RuntimeError as one:
            return f"DICOM slice {Path(f).name} cannot be decoded (truncated or corrupt): {_reason(one)}"
    return f"cannot read the DICOM series (corrupt or truncated): {_reason(exc)}"


def _check_series_size(p: Path, files: Sequence[str], max_voxels: int) -> None:
    """Refuse a series whose declared size is over budget, or whose files cannot hold their pixels."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    _quiet_itk(reader.ReadImageInformation)
    size = [int(s) for s in reader.GetSize()]
    per_slice = (
        math.prod(size[:2]) * max(int(reader.GetNumberOfComponents()), 1) * (size[2] if len(size) > 2 else 1)
    )
    dtype = _itk_voxel_dtype(reader)
    total = per_slice * len(files)
    if total > max_voxels:
        raise VolumeTooLargeError(
            p,
            f"the DICOM series declares {_shape_str([*size[:2], len(files)])} = {total} voxels "
            f"({_bytes_str(total * dtype.itemsize)} as {dtype}), more than the limit of {max_voxels} voxels "
            f"(max_voxels= or ${MAX_VOXELS_ENV}; raise it if the volume is real)",
        )
    need = per_slice * dtype.itemsize
    for f in files:
        encoding, available, _ = _itk_data_layout(Path(f), "dicom")
        if encoding == "raw" and available is not None and available < need:
            raise VolumeReadError(
                p,
                f"DICOM slice {Path(f).name} declares {_shape_str(size[:2])} {dtype} pixels ({_bytes_str(need)}) "
                f"but the file holds only {_bytes_str(available)}: truncated, or a header that lies",
            )


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


# ------------------------------------------------------------------------ declared size vs file size


def _bytes_str(n: int | float) -> str:
    """``1.5 GiB``-style size."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def _check_declared(
    p: Path,
    shape: Sequence[int],
    dtype: np.dtype,
    encoding: str,
    available: int | None,
    max_voxels: int,
    *,
    components: int = 1,
    data_file: Path | None = None,
) -> None:
    """Refuse a header whose declared voxels the file cannot hold, or that exceed the budget.

    Called before anything is allocated. ``encoding`` says how the voxel bytes are stored:
    ``"raw"`` (``available`` must hold them all), ``"deflate"`` (gzip/zlib: at most 1032:1),
    ``"text"`` (at least two characters per value), or ``"unknown"`` (only the budget applies).

    Raises:
        VolumeReadError: the file is too small for what its header declares (truncated, or lies).
        VolumeTooLargeError: more than ``max_voxels`` voxels.
    """
    voxels = math.prod(int(s) for s in shape)
    values = voxels * max(int(components), 1)
    declared = values * int(np.dtype(dtype).itemsize)
    what = f"{_shape_str(shape)} {np.dtype(dtype)} voxels ({_bytes_str(declared)})"
    where = f"the data file {data_file.name}" if data_file is not None else "the file"
    if available is not None:
        if encoding == "raw" and declared > available:
            raise VolumeReadError(
                p,
                f"header declares {what} but {where} holds only {_bytes_str(available)} of voxel data: "
                "truncated, or a header that lies",
            )
        if encoding == "deflate" and declared > available * _DEFLATE_MAX_RATIO + _DEFLATE_SLACK:
            raise VolumeReadError(
                p,
                f"header declares {what} but {where} is only {_bytes_str(available)} compressed, and gzip "
                f"cannot compress more than {_DEFLATE_MAX_RATIO}:1: truncated, or a header that lies",
            )
        if encoding == "text" and values > (available + 1) // 2:
            raise VolumeReadError(
                p,
                f"header declares {what} but {where} holds only {available} characters of text voxel data: "
                "truncated, or a header that lies",
            )
    if voxels > max_voxels:
        raise VolumeTooLargeError(
            p,
            f"header declares {what} = {voxels} voxels, more than the limit of {max_voxels} "
            f"(max_voxels= or ${MAX_VOXELS_ENV}; raise it if the volume is real)",
        )


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


_RAW_TRANSFER_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"


def _itk_data_layout(p: Path, fmt: str) -> tuple[str, int | None, Path | None]:
    """How a file stores its voxels: ``(encoding, bytes available, separate data file or None)``.

    Read from the header text (MetaImage, NRRD) or the DICOM file meta group; anything not
    understood gives ``("unknown", None, None)`` (only the voxel budget applies then).
    """
    try:
        if fmt == "mha":
            return _metaimage_layout(p)
        if fmt == "nrrd":
            return _nrrd_layout(p)
        if fmt == "dicom":
            syntax = _dicom_transfer_syntax(p)
            size = p.stat().st_size
            if syntax in _RAW_TRANSFER_SYNTAXES:
                return "raw", size, None
            if syntax == _DEFLATED_TRANSFER_SYNTAX:
                return "deflate", size, None
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    return "unknown", None, None


def _header_lines(p: Path, limit: int = 1 << 16) -> tuple[list[tuple[str, int]], bytes]:
    """The first ``limit`` bytes of a text header as (line, offset just after it) pairs."""
    with open(p, "rb") as fh:
        head = fh.read(limit)
    lines: list[tuple[str, int]] = []
    pos = 0
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            break
        lines.append((head[pos:end].decode("latin-1").rstrip("\r"), end + 1))
        pos = end + 1
    return lines, head


def _external(p: Path, name: str) -> tuple[str, int | None, Path | None] | None:
    """Layout of a separate data file named in a header (None: a list or pattern of files)."""
    if name.upper().startswith("LIST") or "%" in name or " " in name.strip():
        return None
    data = Path(name)
    data = data if data.is_absolute() else p.parent / data
    return "raw", data.stat().st_size if data.exists() else 0, data


def _metaimage_layout(p: Path) -> tuple[str, int | None, Path | None]:
    lines, _ = _header_lines(p)
    fields: dict[str, str] = {}
    for line, after in lines:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        fields[key] = value
        if key == "ElementDataFile":
            encoding = "deflate" if fields.get("CompressedData", "False").lower() == "true" else "raw"
            if value.upper() == "LOCAL":
                return encoding, p.stat().st_size - after, None
            found = _external(p, value)
            return (encoding, found[1], found[2]) if found is not None else ("unknown", None, None)
    return "unknown", None, None


_NRRD_ENCODINGS = {
    "raw": "raw",
    "gz": "deflate",
    "gzip": "deflate",
    "txt": "text",
    "text": "text",
    "ascii": "text",
}


def _nrrd_layout(p: Path) -> tuple[str, int | None, Path | None]:
    lines, _ = _header_lines(p)
    if not lines or not lines[0][0].startswith("NRRD"):
        return "unknown", None, None
    fields: dict[str, str] = {}
    end = None
    for line, after in lines[1:]:
        if line == "":
            end = after
            break
        if line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.lstrip("=").strip()
    encoding = _NRRD_ENCODINGS.get(fields.get("encoding", "").lower(), "unknown")
    data_name = fields.get("data file", fields.get("datafile"))
    if data_name is not None:
        found = _external(p, data_name)
        if found is None or encoding == "unknown":
            return "unknown", None, None
        return encoding, found[1], found[2]
    if end is None or encoding == "unknown":  # no blank line within the first 64 KiB: not understood
        return "unknown", None, None
    return encoding, p.stat().st_size - end, None


def _dicom_transfer_syntax(p: Path) -> str | None:
    """TransferSyntaxUID (0002,0010) from the file meta group (always explicit VR little endian)."""
    with open(p, "rb") as fh:
        head = fh.read(1 << 14)
    if head[128:132] != b"DICM":
        return None
    pos = 132
    while pos + 8 <= len(head):
        group, element = (
            int.from_bytes(head[pos : pos + 2], "little"),
            int.from_bytes(head[pos + 2 : pos + 4], "little"),
        )
        if group != 0x0002:
            return None
        vr = head[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length, value_at = int.from_bytes(head[pos + 8 : pos + 12], "little"), pos + 12
        else:
            length, value_at = int.from_bytes(head[pos + 6 : pos + 8], "little"), pos + 8
        if element == 0x0010:
            return head[value_at : value_at + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = value_at + length
    return None

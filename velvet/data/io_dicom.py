"""Read one DICOM series from a folder, and check that it is complete.

:func:`_read_dicom_folder` picks the series (``series_uid=`` when the folder holds several), checks
its declared size against the voxel budget and the files' sizes (:func:`_check_series_size`), and
reads it with SimpleITK/GDCM. A series is checked for completeness: files in the folder that do
not decode (empty, truncated, corrupt: GDCM leaves them out of the series without a word;
:func:`_damaged_files`) and gaps between slice positions (a step larger than 1.5x the median step:
missing slices; :func:`_check_slice_positions`) are errors or warnings, by policy, naming the
slices. Also here: the DICOM tags kept in ``Volume.meta`` (:func:`_dicom_meta`, for single DICOM
files too) and the warnings of this module.

Everything public here is re-exported by :mod:`velvet.data.io`; import it from there.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from velvet.data.errors import VolumeReadError, VolumeShapeError
from velvet.data.io_itk import _itk_to_array_affine, _itk_voxel_dtype, _quiet_itk, _reason
from velvet.data.io_limits import (
    MAX_VOXELS_ENV,
    VolumeTooLargeError,
    _bytes_str,
    _itk_data_layout,
    _shape_str,
)

__all__ = ["DamagedSliceWarning", "MissingSliceWarning", "NonUniformSpacingWarning", "SlicePolicy"]

# relative spread of DICOM slice steps above which the series is reported as non-uniform
_SPACING_TOLERANCE = 1e-2
# a DICOM slice step larger than this many median steps is a gap: one or more slices are missing
_GAP_FACTOR = 1.5

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

"""What a volume file's header may declare, checked before any voxel is allocated.

Headers are not trusted with memory. :func:`velvet.data.io.read_volume` reads a header first and,
before it loads anything, checks here that

- it declares one 3D volume (:func:`_check_shape`: no 2D image, single slice, channels or time
  points);
- the file holds the bytes the header declares (:func:`_check_declared`): uncompressed data
  exactly, gzip/zlib data within deflate's best ratio of 1032:1, text data at two characters a
  value. Where the voxels are and how they are encoded is read from the header text of MetaImage
  and NRRD files (also a separate data file) and from a DICOM file's transfer syntax
  (:func:`_itk_data_layout`);
- it stays within the voxel budget (:func:`max_voxels_limit`: ``max_voxels=``, else
  ``$VELVET_MAX_VOXELS``, else 2**31), else :class:`VolumeTooLargeError`.

Everything public here is re-exported by :mod:`velvet.data.io`; import it from there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from velvet.data.errors import VolumeReadError, VolumeShapeError

__all__ = ["DEFAULT_MAX_VOXELS", "MAX_VOXELS_ENV", "VolumeTooLargeError", "max_voxels_limit"]

# voxel budget of one volume when neither max_voxels= nor $VELVET_MAX_VOXELS says otherwise
DEFAULT_MAX_VOXELS = 2**31
MAX_VOXELS_ENV = "VELVET_MAX_VOXELS"
# deflate (gzip, zlib) cannot compress better than 1032:1: a smaller file cannot hold the voxels
_DEFLATE_MAX_RATIO = 1032
_DEFLATE_SLACK = 1024  # bytes: gzip/zlib framing, a NIfTI header and extensions


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

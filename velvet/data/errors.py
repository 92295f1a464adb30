"""Exceptions and warnings of the data layer.

Every error names the offending file (or manifest row) first, then the problem, so a message read
in a log of thousands of samples says where to look: ``"/data/ct/case7.nii.gz: contains 12 NaN voxels"``.
"""

from __future__ import annotations

import os

__all__ = [
    "DataError",
    "ManifestError",
    "NotCTWarning",
    "ReportError",
    "VolumeReadError",
    "VolumeShapeError",
    "VolumeValueError",
]


class DataError(ValueError):
    """Base class: a file or record that velvet cannot use.

    Args:
        path: the file (or ``manifest:row``) at fault.
        problem: what is wrong with it, in words.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keep (path, problem) through pickling (DataLoader workers re-raise)
        return (type(self), (self.path, self.problem))


class VolumeReadError(DataError):
    """The file is missing, unreadable, corrupt, truncated or in an unknown format."""


class VolumeShapeError(DataError):
    """The image has the wrong rank or size for a 3D CT volume (2D, 4D, one slice, empty)."""


class VolumeValueError(DataError):
    """The voxel values are unusable (NaN/inf) or contradict the declared intensity model."""


class ReportError(DataError):
    """A report is empty after cleaning, or too large to be a report."""


class ManifestError(DataError):
    """A manifest is malformed: missing columns, duplicate ids, unknown splits, missing files."""


class NotCTWarning(UserWarning):
    """The intensities do not look like CT (e.g. an MR volume or an already-windowed image)."""

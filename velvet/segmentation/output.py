"""Write a segmentation: the label map as NIfTI on the input's grid, and a sidecar JSON of classes.

For a NIfTI input the output keeps the input's header (qform/sform and their codes, units, voxel
order), with the data type set to an integer label type and no intensity scaling, so it overlays
the input in any viewer. For DICOM, NRRD and MetaImage inputs the output is a NIfTI with the input's
geometry (the same voxel centres in world coordinates). Both files appear atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from velvet.segmentation.inference import SegmentationResult

__all__ = ["sidecar_path", "write_segmentation"]


def sidecar_path(out: str | os.PathLike[str]) -> Path:
    """``seg.nii.gz`` -> ``seg.json`` (beside it)."""
    out = Path(out)
    name = out.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return out.with_name(name[: -len(suffix)] + ".json")
    return out.with_name(name + ".json")


def write_segmentation(
    result: SegmentationResult, out: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``out`` (``.nii.gz`` / ``.nii``) and its sidecar JSON.

    Args:
        result: from :func:`~velvet.segmentation.inference.segment_file`.
        out: the label map path.
        metadata: extra JSON-ready fields for the sidecar (the model, settings).

    Returns:
        ``(label map path, sidecar path)``.

    Raises:
        ValueError: ``out`` is not a NIfTI file name.
    """
    import nibabel as nib

    from velvet.utils.atomic import atomic_path, atomic_write

    out = Path(out)
    if not (out.name.endswith(".nii.gz") or out.name.endswith(".nii")):
        raise ValueError(f"{out}: the label map is written as NIfTI; use a .nii.gz or .nii name")
    dtype = np.uint8 if len(result.class_names) <= 256 else np.int16
    labels = np.ascontiguousarray(result.labels.astype(dtype))
    if result.source_format == "nifti":
        source = nib.load(result.source)
        header = source.header.copy()
        image = nib.Nifti1Image(labels, source.affine, header=header)
        image.set_data_dtype(dtype)
        image.header.set_slope_inter(1.0, 0.0)
        image.header["cal_min"], image.header["cal_max"] = 0, len(result.class_names) - 1
    else:
        image = nib.Nifti1Image(labels, result.affine)
        image.set_data_dtype(dtype)
        image.set_qform(result.affine, code=1)
        image.set_sform(result.affine, code=1)
        image.header.set_xyzt_units("mm")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # the temporary name keeps the ending nibabel reads the format from
        nib.save(image, tmp)
    sidecar = sidecar_path(out)
    info = {
        "label_map": out.name,
        "source": result.source,
        "classes": {str(i): n for i, n in enumerate(result.class_names)},
        "volumes_ml": result.volumes_ml,
        "grid": {"shape": list(result.labels.shape), "affine": np.asarray(result.affine).tolist()},
        "model_grid": result.model_grid,
        **dict(metadata or {}),
    }
    atomic_write(sidecar, json.dumps(info, indent=2) + "\n")
    return out, sidecar

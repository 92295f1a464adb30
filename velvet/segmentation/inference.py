"""Segment a scan with a trained model and put the label map back on the scan's own grid.

The scan goes through the model's preprocessing contract (reorientation, window, foreground crop,
resampling), the model predicts by sliding windows on that grid, and the predicted labels are
sampled back onto the **input's original voxel grid** by nearest neighbour in world coordinates
(voxels outside the predicted region, such as the cropped-away air, are background). The result
therefore overlays the input voxel for voxel in any viewer, whatever its orientation and spacing.

:func:`load_segmentation_model` accepts a pretrained directory (kind ``segmentation``), a Lightning
checkpoint of the segmentation task, or a run folder holding ``checkpoints/best.ckpt`` or
``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["SegmentationResult", "load_segmentation_model", "resample_labels", "segment_file"]

_RUN_CHECKPOINTS = ("checkpoints/best.ckpt", "checkpoints/last.ckpt")


@dataclass
class SegmentationResult:
    """A segmented scan.

    Attributes:
        labels: ``(H, W, D)`` class ids on the input's grid, in the input file's voxel order.
        affine: the input's voxel -> RAS mm matrix (``labels`` shares it).
        image: ``(H, W, D)`` the input's voxels (HU), for pictures.
        class_names: names of the ids, background first.
        source: the input path.
        source_format: ``nifti``, ``dicom``, ``nrrd`` or ``mha``.
        volumes_ml: class name -> volume in millilitres on the input's grid (background left out).
        model_grid: ``{"shape", "affine"}`` of the grid the model predicted on.
    """

    labels: np.ndarray
    affine: np.ndarray
    image: np.ndarray
    class_names: tuple[str, ...]
    source: str
    source_format: str
    volumes_ml: dict[str, float] = field(default_factory=dict)
    model_grid: dict[str, Any] = field(default_factory=dict)


def load_segmentation_model(source: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> Any:
    """A :class:`~velvet.models.segmentation.SegmentationModel` with its ``.preprocess`` contract, in eval mode.

    Args:
        source: a pretrained directory or registry name, a segmentation ``.ckpt``, or a run folder.
        map_location: device for the weights.

    Raises:
        FileNotFoundError: nothing usable at ``source``.
        ValueError: not a segmentation model, or one saved without its preprocessing contract.
    """
    path = Path(source)
    if path.is_dir() and not (path / "config.json").is_file():
        found = next((path / c for c in _RUN_CHECKPOINTS if (path / c).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path}: neither a pretrained directory nor a run folder with {' or '.join(_RUN_CHECKPOINTS)}")
        path = found
    if path.is_file() and path.suffix == ".ckpt":
        from velvet.models.segmentation import SegmentationModel

        model = SegmentationModel.from_checkpoint(path)
    else:
        from velvet.models.pretrained import from_pretrained

        model = from_pretrained(source, map_location=map_location)
        from velvet.models.segmentation import SegmentationModel

        if not isinstance(model, SegmentationModel):
            raise ValueError(f"{source} holds a {type(model).__name__}, not a segmentation model")
    if model.preprocess is None:
        raise ValueError(f"{source}: saved without its preprocessing contract; cannot prepare scans for it")
    return model.to(map_location).eval()


def resample_labels(
    labels: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, target_shape: Sequence[int]
) -> np.ndarray:
    """Labels on another grid by nearest neighbour in world mm; target voxels outside the source are 0.

    Args:
        labels: ``(h, w, d)`` ids on ``affine``'s grid.
        affine: the source grid's voxel -> world matrix.
        target_affine, target_shape: the grid to sample on.

    Returns:
        ``target_shape`` array of ``labels``' dtype.
    """
    # a 1-voxel border of background, so that everything outside the source samples background
    padded = np.pad(labels, 1)
    shift = np.eye(4)
    shift[:3, 3] = -1.0  # padded voxel (i, j, k) is source voxel (i - 1, j - 1, k - 1)
    from velvet.data.geometry import resample_nearest

    return resample_nearest(padded, np.asarray(affine, np.float64) @ shift, target_affine, target_shape)


def segment_file(
    model: Any,
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    progress: bool = False,
    autocast: bool = False,
) -> SegmentationResult:
    """Segment one scan (NIfTI, NRRD, MHA or a DICOM folder) with ``model``.

    Args:
        model: a :class:`~velvet.models.segmentation.SegmentationModel` with ``.preprocess``.
        path: the scan.
        device: where the model runs.
        overlap, sw_batch_size: override the model's sliding-window settings.
        progress: progress bar over the sliding windows.
        autocast: bfloat16 autocast on the device (CUDA).

    Returns:
        A :class:`SegmentationResult` on the input's grid.

    Raises:
        velvet.data.errors.DataError: the scan cannot be read or is not CT-like (names the file).
    """
    from velvet.data.ct_check import expected_input
    from velvet.data.transforms import IMAGE_KEY, LoadVolumed, create_transforms

    contract = model.preprocess
    loaded = LoadVolumed([IMAGE_KEY], expected=expected_input(contract))({IMAGE_KEY: os.fspath(path)})
    raw = loaded[IMAGE_KEY]
    original_affine = np.asarray(raw.affine, np.float64)
    original_shape = tuple(int(s) for s in raw.shape[1:])
    image = np.asarray(raw.as_tensor()[0])
    source_format = str(raw.meta.get("source_format", ""))
    prepared = create_transforms(contract, load=False)(loaded)[IMAGE_KEY]
    model_affine = np.asarray(prepared.affine, np.float64)
    x = prepared.as_tensor()[None].float().to(device)
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
        pred = model.predict_labels(x, overlap=overlap, sw_batch_size=sw_batch_size, progress=progress)
    pred_np = pred[0].cpu().numpy()
    labels = resample_labels(pred_np, model_affine, original_affine, original_shape)
    names = tuple(model.class_names)
    voxel_ml = float(abs(np.linalg.det(original_affine[:3, :3]))) / 1000.0
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=len(names))
    volumes = {names[i]: round(float(counts[i]) * voxel_ml, 3) for i in range(1, len(names))}
    return SegmentationResult(
        labels=labels,
        affine=original_affine,
        image=image,
        class_names=names,
        source=os.fspath(path),
        source_format=source_format,
        volumes_ml=volumes,
        model_grid={"shape": list(pred_np.shape), "affine": model_affine.tolist()},
    )

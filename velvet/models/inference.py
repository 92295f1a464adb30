"""Turning what a user has (file paths, volumes, tensors) into model input under a contract.

A model sees ``(B, 1, H, W, D)`` float tensors in [0, 1]: the output of its preprocessing contract.
File paths and :class:`~velvet.data.io.Volume` objects always go through the contract. A tensor is
taken as already preprocessed unless ``preprocess=True`` says it holds raw scanner values; in
either case its intensities are checked against what that reading implies, and a mismatch (raw HU
given as model input, or normalised values given as raw HU) is warned about, because the model
would otherwise return confident, meaningless embeddings.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["IntensityWarning", "check_intensity", "prepare_volumes"]

VolumeLike = str | os.PathLike[str] | torch.Tensor | np.ndarray | Any


class IntensityWarning(UserWarning):
    """Input intensities do not match what the preprocessing contract expects."""


def check_intensity(x: torch.Tensor, contract: Any, *, raw: bool, what: str = "tensor") -> str | None:
    """Warn when a tensor's value range does not fit the contract; returns the message (or None).

    Args:
        x: the values.
        contract: the :class:`~velvet.data.contract.PreprocessContract`.
        raw: True if ``x`` holds scanner values to be preprocessed, False if it is model input.
        what: how to name ``x`` in the message.
    """
    finite = x[torch.isfinite(x)]
    if finite.numel() == 0:
        raise ValueError(f"{what}: no finite values")
    low, high = float(finite.min()), float(finite.max())
    message = None
    if not raw:
        if low < -0.05 or high > 1.05:
            kind = "raw Hounsfield units" if low < -100 else "8-bit or unscaled intensities" if high > 2 else "values"
            message = (
                f"{what} ranges over [{low:.4g}, {high:.4g}], which looks like {kind}, but the model takes "
                "preprocessed input in [0, 1]; pass a file path or preprocess=True to apply the model's "
                f"contract ({contract.intensity})"
            )
    elif contract.intensity in ("hu_window", "scale_8bit") and low >= -0.05 and high <= 1.05:
        expected = "Hounsfield units" if contract.intensity == "hu_window" else "0..255 values"
        message = (
            f"{what} ranges over [{low:.4g}, {high:.4g}] (already normalised?), but the model's contract "
            f"expects raw {expected}; pass preprocess=False if it is already model input"
        )
    elif contract.intensity == "scale_8bit" and low < -100:
        message = (
            f"{what} has values down to {low:.4g} (Hounsfield units?), but the model's contract expects 8-bit "
            "0..255 slices; window and rescale the volume to 0..255 first"
        )
    if message:
        warnings.warn(message, IntensityWarning, stacklevel=3)
    return message


def _one(item: VolumeLike, contract: Any, preprocess: bool | None, transforms: dict[str, Any]) -> torch.Tensor:
    from monai.data import MetaTensor

    from velvet.data.io import Volume
    from velvet.data.transforms import create_transforms

    if isinstance(item, (str, os.PathLike)):
        if preprocess is False:
            raise ValueError(f"{item}: a file path is always preprocessed; preprocess=False applies to tensors")
        if "load" not in transforms:
            transforms["load"] = create_transforms(contract)
        return torch.as_tensor(transforms["load"]({"image": str(item)})["image"]).float()
    if "array" not in transforms:
        transforms["array"] = create_transforms(contract, load=False)
    if isinstance(item, Volume):
        from velvet.data.ct_check import enforce, expected_input, judge_intensities

        # NotCTWarning naming the file (a NotCTError under VELVET_CT_CHECK=strict); paths get
        # the same check from the contract's LoadVolumed
        enforce(judge_intensities(item.array, expected_input(contract)), item.path, stacklevel=3)
        values = torch.as_tensor(np.asarray(item.array, dtype=np.float32))
        check_intensity(values, contract, raw=True, what=item.path)
        image = MetaTensor(values[None], affine=torch.as_tensor(item.affine, dtype=torch.float64))
        return torch.as_tensor(transforms["array"]({"image": image})["image"]).float()
    tensor = torch.as_tensor(item).float()
    if preprocess:
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 3:
            raise ValueError(f"a raw volume must be (H, W, D) or (1, H, W, D), got {tuple(tensor.shape)}")
        check_intensity(tensor, contract, raw=True)
        if contract.spacing is not None:
            warnings.warn(
                "a plain tensor has no voxel spacing: assuming 1 mm voxels before resampling to "
                f"{contract.spacing} mm; pass a file path or a velvet.data.io.Volume to keep the geometry",
                IntensityWarning,
                stacklevel=3,
            )
        image = MetaTensor(tensor[None], affine=torch.eye(4, dtype=torch.float64))
        return torch.as_tensor(transforms["array"]({"image": image})["image"]).float()
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tensor.shape[0] != 1:
        raise ValueError(f"a preprocessed volume must be (1, H, W, D) or (H, W, D), got {tuple(tensor.shape)}")
    check_intensity(tensor, contract, raw=False)
    return tensor


def prepare_volumes(
    volumes: VolumeLike | Sequence[VolumeLike], contract: Any, *, preprocess: bool | None = None
) -> torch.Tensor:
    """Model input for one or more volumes.

    Args:
        volumes: a file path (NIfTI, DICOM folder, NRRD, MHA), a :class:`~velvet.data.io.Volume`,
            a tensor / array, a batch tensor ``(B, 1, H, W, D)``, or a list of these.
        contract: the :class:`~velvet.data.contract.PreprocessContract` to apply.
        preprocess: for tensors: True = raw scanner values (the contract is applied, assuming 1 mm
            voxels), False/None = already model input (checked to lie in [0, 1]).

    Returns:
        ``(B, 1, H, W, D)`` float32.

    Raises:
        velvet.data.errors.DataError: an unreadable file (the error names it).
        ValueError: wrong ranks, or volumes that end up with different sizes (set the contract's
            ``spatial_size``).
    """
    if isinstance(volumes, (torch.Tensor, np.ndarray)) and volumes.ndim == 5:
        items: list[Any] = list(torch.as_tensor(volumes))
    elif isinstance(volumes, (str, os.PathLike, torch.Tensor, np.ndarray)) or not isinstance(volumes, Sequence):
        items = [volumes]
    else:
        items = list(volumes)
    if not items:
        raise ValueError("no volumes given")
    transforms: dict[str, Any] = {}
    tensors = [_one(item, contract, preprocess, transforms) for item in items]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(
            f"the volumes have different sizes after preprocessing {sorted(shapes)}: the contract has no "
            "spatial_size; encode them one at a time or set one"
        )
    return torch.stack(tensors)

"""MONAI dictionary transforms built from a :class:`~velvet.data.contract.PreprocessContract`.

:func:`create_transforms` returns the deterministic pipeline (file path in, ``(1, H, W, D)``
tensor in [0, 1] out); its output is what :mod:`velvet.data.cache` stores. velvet's own
transforms follow MONAI's array/dictionary split where they have array logic worth reusing.

Data dictionaries use these keys:

- ``"image"``: volume path (str) in, ``MetaTensor (1, H, W, D)`` out;
- ``"label_map"``: optional label-map path in, ``MetaTensor (1, H, W, D)`` (integer values) out;
- ``"spacing"`` / ``"rescale"``: optional header overrides passed to :func:`velvet.data.io.read_volume`;
- ``"label_geometry"``: optional ``"check"`` (default) or ``"use_image"``, see :class:`LoadVolumed`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    MapTransform,
    Orientationd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
    Transform,
)

from velvet.data.contract import PreprocessContract
from velvet.data.errors import DataError, VolumeValueError

__all__ = [
    "AboveThreshold",
    "LoadVolumed",
    "Pipeline",
    "SampleDepth",
    "SampleDepthd",
    "create_transforms",
    "sample_depth_indices",
]

IMAGE_KEY = "image"
LABEL_KEY = "label_map"


class LoadVolumed(MapTransform):
    """Read volume files with :func:`velvet.data.io.read_volume` into channel-first MetaTensors.

    The image becomes float32 ``(1, H, W, D)`` with its RAS affine. A label map must lie on the
    image's grid in world coordinates (shape, orientation, spacing and origin within tolerance,
    see :mod:`velvet.data.geometry`); it is then resampled onto the image's grid by nearest
    neighbour and becomes an integer ``(1, H, W, D)`` tensor carrying the *image's* affine, so every
    later step (reorientation, resampling, cropping) treats both alike. The data key
    ``"label_geometry"`` (the manifest column) selects ``"check"`` (default) or ``"use_image"``
    (the label's header is ignored and its voxels are taken as they are on the image's grid).

    DICOM series with missing slices (a gap in the slice positions) or damaged files are refused
    here (``missing_slices="error"``): a volume with a hole must not be silently interpolated.

    Raises:
        velvet.data.errors.DataError: the reader's errors (missing, corrupt, wrong rank, NaN, a header
            declaring more than the file holds ...), or a label map off the image's grid
            (:class:`~velvet.data.geometry.GeometryMismatchError`, naming both files).
    """

    def __init__(
        self,
        keys: Sequence[str] = (IMAGE_KEY,),
        *,
        allow_missing_keys: bool = True,
        expected: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        # "hu" / "uint8" / "unit": judge the raw image (velvet.data.ct_check) and warn or refuse;
        # the data key "case_id" (if any) is named in the message
        self.expected = expected

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from velvet.data.geometry import align_to_image
        from velvet.data.io import read_volume

        d = dict(data)
        image: Any = None  # the image's Volume, once read
        for key in self.key_iterator(d):
            path = d[key]
            is_label = key != IMAGE_KEY
            if is_label:
                vol = read_volume(path, spacing=d.get("spacing"), missing_slices="error")
                array = np.asarray(vol.array)
                if np.issubdtype(array.dtype, np.floating):
                    # some datasets (CT-ORG, MSD) store labels as floats: integral values only
                    if not np.array_equal(array, np.round(array)):
                        raise VolumeValueError(path, "label map has non-integer values")
                    array = array.astype(np.int16)
                array = array.astype(np.int16, copy=False)
                affine = vol.affine
                if image is not None:
                    mode = d.get("label_geometry") or "check"
                    array = align_to_image(
                        array, vol.affine, path, image.affine, image.shape, image.path, mode=mode
                    )
                    affine = image.affine  # the label now lies on the image's grid
                tensor = torch.as_tensor(np.ascontiguousarray(array))
            else:
                vol = read_volume(
                    path, spacing=d.get("spacing"), rescale=d.get("rescale"), missing_slices="error"
                )
                if self.expected is not None:
                    from velvet.data.ct_check import enforce, judge_intensities

                    enforce(judge_intensities(vol.array, self.expected), path, case=d.get("case_id"))  # type: ignore[arg-type]
                tensor = torch.as_tensor(np.asarray(vol.array, dtype=np.float32))
                image, affine = vol, vol.affine
            meta = {"filename_or_obj": str(path), "source_format": vol.format}
            d[key] = MetaTensor(tensor[None], affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)
        return d


class AboveThreshold:
    """Picklable ``select_fn`` for foreground cropping: ``x > threshold``."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x > self.threshold


class _CheckForeground(MapTransform):
    """Fail clearly when nothing is above the foreground threshold (crop would give an empty box)."""

    def __init__(self, key: str, threshold: float) -> None:
        super().__init__([key])
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        image = data[IMAGE_KEY]
        if not bool((image > self.threshold).any()):
            source = getattr(image, "meta", {}).get("filename_or_obj", "<tensor>")
            raise VolumeValueError(
                source,
                f"no voxel above the foreground threshold {self.threshold} after intensity scaling "
                "(is the intensity model right, e.g. HU vs 8-bit?)",
            )
        return data


def sample_depth_indices(depth: int, num: int) -> np.ndarray:
    """Indices of ``num`` slices spread uniformly over ``depth`` (rounded; repeats when upsampling).

    >>> sample_depth_indices(10, 4).tolist()
    [0, 3, 6, 9]
    """
    if depth < 1 or num < 1:
        raise ValueError(f"depth and num must be positive, got {depth}, {num}")
    return np.round(np.linspace(0, depth - 1, num)).astype(np.int64)


class SampleDepth(Transform):
    """Pick ``num`` slices uniformly along the last (depth) axis of a ``(C, H, W, D)`` array.

    The affine's depth column is scaled by the mean slice step so the spacing stays truthful.
    """

    def __init__(self, num: int) -> None:
        self.num = int(num)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        depth = img.shape[-1]
        idx = sample_depth_indices(depth, self.num)
        out = img[..., torch.as_tensor(idx)]
        if isinstance(img, MetaTensor):
            affine = img.affine.clone()
            step = (depth - 1) / (self.num - 1) if self.num > 1 else 1.0
            affine[:3, 2] = affine[:3, 2] * step
            meta = {k: v for k, v in img.meta.items() if k != "affine"}  # the new affine replaces it
            out = MetaTensor(out.as_tensor(), affine=affine, meta=meta)
        return out


class SampleDepthd(MapTransform):
    """Dictionary version of :class:`SampleDepth`."""

    def __init__(self, keys: Sequence[str], num: int, *, allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        self.sampler = SampleDepth(num)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.sampler(d[key])
        return d


class Pipeline:
    """A MONAI ``Compose`` that lets velvet's data errors through unwrapped.

    MONAI wraps every exception raised inside a transform in ``RuntimeError("applying transform
    ...")``; callers of velvet expect the :class:`~velvet.data.errors.DataError` that names the file.
    Running out of memory becomes a :class:`~velvet.data.io.VolumeTooLargeError` naming the image,
    so ``on_error: skip`` skips the case instead of the run dying.
    """

    def __init__(self, compose: Compose) -> None:
        self.compose = compose

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        try:
            return self.compose(data)
        except (RuntimeError, MemoryError) as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, (DataError, MemoryError)):
                cause = cause.__cause__
            if cause is None:
                raise
            if isinstance(cause, MemoryError):  # a volume too large for this machine's free memory
                from velvet.data.io import VolumeTooLargeError

                source = data.get(IMAGE_KEY)
                source = getattr(source, "meta", {}).get("filename_or_obj", source)
                raise VolumeTooLargeError(
                    str(source),
                    "ran out of memory while preprocessing it; free memory or lower the contract's size",
                ) from None
            raise cause from None

    @property
    def transforms(self) -> tuple[Any, ...]:
        """The individual transforms, in order."""
        return tuple(self.compose.transforms)


def create_transforms(
    contract: PreprocessContract, *, label_map: bool = False, load: bool = True
) -> Pipeline:
    """The deterministic preprocessing pipeline of a contract.

    Args:
        contract: the preprocessing contract.
        label_map: also carry a ``"label_map"`` key (nearest-neighbour interpolation, never windowed).
        load: start with :class:`LoadVolumed` (paths in); False expects MetaTensors already loaded.

    Returns:
        A :class:`Pipeline` (MONAI ``Compose``): ``{"image": path[, "label_map": path]}`` ->
        ``{"image": (1, H, W, D) float32 in [0, 1][, "label_map": (1, H, W, D) int]}``.
    """
    keys = [IMAGE_KEY, LABEL_KEY] if label_map else [IMAGE_KEY]
    modes_interp = ["bilinear", "nearest"][: len(keys)]
    modes_resize = ["area", "nearest-exact"][: len(keys)]
    steps: list[Any] = []
    if load:
        from velvet.data.ct_check import expected_input

        steps.append(LoadVolumed(keys, expected=expected_input(contract)))
    # explicit RAS labels: the affines from velvet.data.io are RAS (MONAI's default is changing)
    steps.append(
        Orientationd(keys=keys, axcodes=contract.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))
    )
    if contract.intensity == "hu_window":
        low, high = contract.hu_window
        steps.append(
            ScaleIntensityRanged(keys=IMAGE_KEY, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
        )
    elif contract.intensity == "scale_8bit":
        steps.append(
            ScaleIntensityRanged(keys=IMAGE_KEY, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True)
        )
    if contract.crop_foreground:
        steps.append(_CheckForeground(IMAGE_KEY, contract.foreground_threshold))
        steps.append(
            CropForegroundd(
                keys=keys,
                source_key=IMAGE_KEY,
                select_fn=AboveThreshold(contract.foreground_threshold),
                margin=contract.foreground_margin,
                allow_smaller=True,
            )
        )
    if contract.spacing is not None:
        steps.append(
            Spacingd(
                keys=keys,
                pixdim=contract.spacing,
                min_pixdim=contract.min_spacing,
                max_pixdim=contract.max_spacing,
                mode=modes_interp,
            )
        )
    if contract.pad_to is not None:
        steps.append(SpatialPadd(keys=keys, spatial_size=contract.pad_to, mode="constant"))
    if contract.depth_samples is not None:
        steps.append(SampleDepthd(keys, contract.depth_samples))
    if contract.spatial_size is not None:
        if contract.size_mode == "resize":
            steps.append(Resized(keys=keys, spatial_size=contract.spatial_size, mode=modes_resize))
        else:
            steps.append(ResizeWithPadOrCropd(keys=keys, spatial_size=contract.spatial_size, mode="constant"))
    return Pipeline(Compose(steps))

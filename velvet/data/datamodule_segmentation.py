"""The segmentation DataModule: image + label map pairs of a manifest, patches for training.

Same manifest format and volume cache as pretraining (the ``label_map`` column, no report needed):
image and label map are preprocessed together by the contract (the label by nearest neighbour, on
the image's grid after the geometry check of :mod:`velvet.data.geometry`) and cached together.

- **train**: each volume gives ``samples_per_volume`` random patches of ``roi_size``
  (MONAI ``RandCropByPosNegLabeld``: centres on foreground / background at ``pos : neg``), each then
  augmented by the recipe's ``augment`` list; a batch of B volumes holds ``B * samples_per_volume``
  patches.
- **val / test**: whole volumes, one per batch, with their grid's spacing in mm (for the
  sliding-window evaluation and the millimetre metrics of the task).

Classes come from ``classes.json`` beside the manifest (the converters and the phantom generator
write it), or from the recipe; ``select_classes`` learns a subset (ids 1..K in the order given; the
others become background). A label id outside the class map fails, naming the file and the case.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from velvet.data.classes import CLASSES_FILE, ClassMap, read_class_names
from velvet.data.datamodule_base import ManifestDataModule
from velvet.data.dataset import ErrorPolicy, VolumeReportDataset
from velvet.data.errors import DataError
from velvet.data.manifest import Manifest, ManifestRecord

__all__ = ["PatchSampler", "SegmentationCollator", "SegmentationDataModule", "SegmentationDataset"]

logger = logging.getLogger(__name__)


class PatchSampler:
    """Random training patches of one cached volume, augmented.

    Args:
        roi_size: the patch size ``(h, w, d)``; smaller volumes are zero-padded first.
        num_samples: patches per volume.
        pos, neg: weights of foreground / background patch centres.
        augmentation: the recipe's :class:`~velvet.data.augment.Augmentation`, applied to each patch.
    """

    def __init__(
        self, roi_size: Sequence[int], num_samples: int, pos: float = 1.0, neg: float = 1.0, augmentation: Any = None
    ) -> None:
        from monai.transforms import RandCropByPosNegLabeld, SpatialPadd

        keys = ["image", "label_map"]
        self.roi_size = tuple(int(s) for s in roi_size)
        self.pad = SpatialPadd(keys=keys, spatial_size=self.roi_size, mode="constant")
        # centres only inside the body (image > 0 after windowing), as the reference does
        self.crop = RandCropByPosNegLabeld(
            keys=keys, label_key="label_map", spatial_size=self.roi_size, pos=pos, neg=neg,
            num_samples=num_samples, image_key="image", image_threshold=0.0,
        )
        self.augmentation = augmentation

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        # a seed per volume from this process's torch RNG (workers are seeded by seed_everything)
        self.crop.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (1,)).item()))
        padded = self.pad({"image": sample["image"], "label_map": sample["label_map"]})
        patches = self.crop(padded)
        if self.augmentation is not None:
            patches = [self.augmentation(p) for p in patches]
        out = dict(sample)
        out["image"] = torch.stack([_plain(p["image"]).float() for p in patches])
        out["label_map"] = torch.stack([_plain(p["label_map"]).long() for p in patches])
        return out


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_tensor() if hasattr(t, "as_tensor") else t


class SegmentationDataset(VolumeReportDataset):
    """Cached image + label map pairs, label ids checked and mapped to the learned classes.

    Args:
        records, volumes, on_error: as :class:`~velvet.data.dataset.VolumeReportDataset`.
        class_map: the :class:`~velvet.data.classes.ClassMap`.
        patches: a :class:`PatchSampler` (training) or None (whole volumes).
    """

    def __init__(
        self,
        records: Sequence[ManifestRecord],
        volumes: Any,
        *,
        class_map: ClassMap,
        on_error: ErrorPolicy = "raise",
        patches: PatchSampler | None = None,
    ) -> None:
        super().__init__(records, volumes, require_report=False, on_error=on_error)
        self.class_map = class_map
        self.patches = patches

    def _load(self, record: ManifestRecord) -> dict[str, Any]:
        if record.label_map is None:
            raise DataError(record.volume, f"case {record.id!r} has no label map (segmentation needs one)")
        sample = super()._load(record)
        if "label_map" not in sample:
            raise DataError(record.label_map, f"case {record.id!r}: the cache holds no label map for it")
        try:
            sample["label_map"] = self.class_map.apply(sample["label_map"], where=f"case {record.id!r}")
        except ValueError as err:
            raise DataError(record.label_map, str(err)) from None
        affine = sample["affine"].double()
        sample["spacing"] = torch.linalg.vector_norm(affine[:3, :3], dim=0)
        if self.patches is not None:
            sample = self.patches(sample)
        return sample


class SegmentationCollator:
    """Batches of patches (training: ``(B * n, 1, h, w, d)``) or whole volumes (evaluation).

    Returns (from ``__call__``):
        ``{"image", "label_map", "spacing" (V, 3) mm, "affine" (V, 4, 4), "ids", "index" (V,),
        "num_skipped"}`` with V volumes, or None when every sample was skipped.
    """

    def __call__(self, samples: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
        kept = [s for s in samples if s is not None]
        if not kept:
            logger.warning("a whole batch of %d samples was skipped", len(samples))
            return None
        patches = kept[0]["image"].ndim == 5
        join = torch.cat if patches else torch.stack
        if not patches and len({tuple(s["image"].shape) for s in kept}) > 1:
            raise ValueError("whole volumes of different sizes cannot share a batch: use eval_batch_size 1")
        return {
            "image": join([s["image"] for s in kept]),
            "label_map": join([s["label_map"] for s in kept]),
            "spacing": torch.stack([s["spacing"] for s in kept]),
            "affine": torch.stack([s["affine"] for s in kept]),
            "ids": [s["id"] for s in kept],
            "index": torch.tensor([int(s["index"]) for s in kept], dtype=torch.int64),
            "num_skipped": len(samples) - len(kept),
        }


class SegmentationDataModule(ManifestDataModule):
    """Image + label map pairs of a manifest (see the module docstring).

    Args:
        manifest, phantoms, data_dir, cache_dir, warm_cache, num_workers, on_error, augment, seed:
            as :class:`~velvet.data.datamodule_base.ManifestDataModule`.
        classes: the class map: a ``classes.json`` path, an ``{id: name}`` dict or a list of names;
            None reads ``classes.json`` beside the manifest.
        select_classes: learn only these classes (by name; ids 1..K in this order), None: all.
        preprocess: the preprocessing contract (default preset ``segmentation``: HU [-175, 250],
            1.5 x 1.5 x 2 mm, foreground crop, padded to 96^3).
        roi_size: training patch size (also the model's sliding-window size).
        samples_per_volume: training patches per volume.
        pos_neg: weights of foreground / background patch centres.
        batch_size: training volumes per batch (each gives ``samples_per_volume`` patches).
        eval_batch_size: must be 1 (whole volumes differ in size).
    """

    def __init__(
        self,
        manifest: str | None = None,
        *,
        classes: str | dict[str, str] | list[str] | None = None,
        select_classes: list[str] | None = None,
        phantoms: dict[str, Any] | None = None,
        data_dir: str = "runs/data",
        preprocess: str | dict[str, Any] = "segmentation",
        roi_size: tuple[int, int, int] = (96, 96, 96),
        samples_per_volume: int = 2,
        pos_neg: tuple[float, float] = (1.0, 1.0),
        batch_size: int = 2,
        eval_batch_size: int = 1,
        num_workers: int = 2,
        cache_dir: str | None = None,
        warm_cache: bool = True,
        on_error: ErrorPolicy = "raise",
        augment: list[dict[str, Any]] | None = None,
        seed: int = 0,
    ) -> None:
        if eval_batch_size != 1:
            raise ValueError("eval_batch_size must be 1: validation and test run on whole volumes of different sizes")
        if samples_per_volume < 1:
            raise ValueError(f"samples_per_volume must be >= 1, got {samples_per_volume}")
        super().__init__(
            manifest,
            phantoms=phantoms,
            data_dir=data_dir,
            preprocess=preprocess,
            batch_size=batch_size,
            eval_batch_size=1,
            num_workers=num_workers,
            cache_dir=cache_dir,
            warm_cache=warm_cache,
            on_error=on_error,
            label_maps=True,
            augment=augment,
            require_report=False,
            seed=seed,
        )
        self.roi_size = tuple(int(s) for s in roi_size)
        self.samples_per_volume = int(samples_per_volume)
        self.pos_neg = (float(pos_neg[0]), float(pos_neg[1]))
        self.classes_spec = classes
        self.select_classes = list(select_classes) if select_classes else None
        self.class_map: ClassMap | None = None

    def setup_task(self, manifest: Manifest) -> None:
        """Read the class map and check the manifest: every case needs a label map."""
        spec = self.classes_spec if self.classes_spec is not None else self.manifest_path.parent / CLASSES_FILE
        self.class_map = ClassMap.create(read_class_names(spec), self.select_classes)
        missing = [r.id for r in manifest.records if r.label_map is None]
        if missing:
            raise DataError(
                self.manifest_path,
                f"{len(missing)} case(s) have no label_map (segmentation needs one), e.g. {missing[:5]}",
            )

    @property
    def class_names(self) -> list[str]:
        """The learned classes, background first (after :meth:`setup`)."""
        if self.class_map is None:
            raise RuntimeError("call setup() before asking for the class names")
        return list(self.class_map.names)

    def build_dataset(self, split: str, records: list[ManifestRecord]) -> VolumeReportDataset:
        assert self.class_map is not None
        patches = None
        if split == "train":
            patches = PatchSampler(self.roi_size, self.samples_per_volume, *self.pos_neg, augmentation=self.augmentation)
        return SegmentationDataset(records, self.cache, class_map=self.class_map, on_error=self.on_error, patches=patches)

    def collate_fn(self) -> Any:
        return SegmentationCollator()

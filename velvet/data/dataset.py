"""Manifest-driven datasets of (preprocessed volume, cleaned report, finding labels)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import torch
from torch.utils.data import Dataset

from velvet.data.errors import DataError
from velvet.data.manifest import ManifestRecord

__all__ = ["ErrorPolicy", "VolumeReportDataset", "VolumeSource"]

logger = logging.getLogger(__name__)

ErrorPolicy = Literal["raise", "skip"]


class VolumeSource(Protocol):
    """Anything that turns a record into preprocessed tensors (:class:`~velvet.data.cache.VolumeCache`,
    :class:`~velvet.data.cache.UncachedVolumes`)."""

    def get_or_create(self, record: ManifestRecord) -> dict[str, Any]: ...


class VolumeReportDataset(Dataset):
    """Samples of a manifest split, each ``{"image", "report", "id", "index", "labels"[, "label_map"]}``.

    Args:
        records: the manifest rows of one split.
        volumes: where preprocessed volumes come from (usually a :class:`VolumeCache`).
        label_names: finding labels to return, in order (``labels`` is ``(K,)`` float32, NaN = unknown).
        require_report: load and clean the report (False for image-only tasks such as segmentation).
        on_error: ``"raise"`` a data error, or ``"skip"`` the sample: it is logged with the file and the
            problem and returned as None, which :class:`~velvet.data.collate.VolumeReportCollator` drops
            and counts in ``batch["num_skipped"]``.
        transform: optional random augmentation applied to each sample dict after loading.

    Sample:
        ``image``: ``(1, H, W, D)`` float32 in [0, 1]; ``report``: str; ``id``: str; ``index``: int, the
        position of the record in ``records``; ``labels``: ``(K,)``; ``label_map``: ``(1, H, W, D)``
        int64 when the volume source provides it.
    """

    def __init__(
        self,
        records: Sequence[ManifestRecord],
        volumes: VolumeSource,
        *,
        label_names: Sequence[str] = (),
        require_report: bool = True,
        on_error: ErrorPolicy = "raise",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.records = list(records)
        self.volumes = volumes
        self.label_names = list(label_names)
        self.require_report = require_report
        self.on_error = on_error
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        record = self.records[index]
        try:
            sample = self._load(record)
        except DataError as exc:
            if self.on_error == "raise":
                raise
            logger.warning("skipping case %s: %s", record.id, exc)
            return None
        # set after the transform so it cannot be lost; DDP validation drops the sampler's padded
        # repeats by this index (velvet.metrics.retrieval.deduplicate_by_index)
        sample["index"] = range(len(self.records))[index]  # a negative index names its position
        return sample

    def _load(self, record: ManifestRecord) -> dict[str, Any]:
        from velvet.data.reports import clean_report

        report = ""
        if self.require_report:
            text = record.load_report()
            if text is None:
                from velvet.data.errors import ReportError

                raise ReportError(record.volume, f"case {record.id!r} has no report")
            report = clean_report(text, source=f"report of case {record.id!r}")
        entry = self.volumes.get_or_create(record)
        sample: dict[str, Any] = {
            "image": entry["image"].float(),
            "report": report,
            "id": record.id,
            "labels": torch.tensor(
                [record.labels.get(n, math.nan) for n in self.label_names], dtype=torch.float32
            ),
        }
        if "label_map" in entry:
            sample["label_map"] = entry["label_map"].long()
            sample["affine"] = entry["affine"]  # the grid of both: segmentation metrics need its spacing
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

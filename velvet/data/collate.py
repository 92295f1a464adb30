"""Batch assembly: stack volumes, tokenise the reports of the whole batch in one call."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["VolumeReportCollator"]

logger = logging.getLogger(__name__)


class VolumeReportCollator:
    """Collate samples of :class:`~velvet.data.dataset.VolumeReportDataset` into a batch.

    Tokenisation happens here, batch-wise (vectorised, in the DataLoader workers), rather than per
    sample. Skipped samples (None) are dropped and counted.

    Args:
        tokenizer: a :class:`~velvet.data.tokenization.TriBertTokenizer` (None: keep raw reports only).
        seed: sentence-dropping seed passed to the tokenizer (None: the tokenizer's own).

    Returns (from ``__call__``):
        A :class:`~velvet.types.VolumeTextBatch` dict, plus ``num_skipped`` (int), or None when every
        sample of the batch was skipped.
    """

    def __init__(self, tokenizer: Any | None = None, *, seed: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.seed = seed

    def __call__(self, samples: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
        kept = [s for s in samples if s is not None]
        skipped = len(samples) - len(kept)
        if not kept:
            logger.warning("a whole batch of %d samples was skipped", skipped)
            return None
        batch: dict[str, Any] = {
            "image": torch.stack([s["image"] for s in kept]),
            "ids": [s["id"] for s in kept],
            "reports": [s["report"] for s in kept],
            "num_skipped": skipped,
        }
        if all("index" in s for s in kept):  # hand-built samples may lack it
            batch["index"] = torch.tensor([int(s["index"]) for s in kept], dtype=torch.int64)
        if kept[0]["labels"].numel():
            batch["labels"] = torch.stack([s["labels"] for s in kept])
        for key in ("label_map", "image_local"):
            if key in kept[0]:
                batch[key] = torch.stack([s[key] for s in kept])
        if self.tokenizer is not None and any(batch["reports"]):
            batch.update(self.tokenizer(batch["reports"], seed=self.seed))
        return batch

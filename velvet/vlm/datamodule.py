"""The volume-language DataModule: VQA items or reports, each with its cached volume.

- ``task: vqa``: the items of a ``vqa.jsonl`` (:mod:`velvet.data.vqa`; the phantom generator writes
  one beside its manifest) whose case is in the manifest; an item's split is its case's, so no
  volume is in two splits. ``kinds`` / ``question_types`` select items.
- ``task: report``: one sample per case, the target being its cleaned report.
- ``expert``: an ``expert.jsonl`` (``velvet expert``, :mod:`velvet.vlm.expert_file`) whose line
  for each case goes first in the LM prompt; every case of the manifest needs one.

Volumes come from the same cache and preprocessing contract as pretraining; the contract must be
the encoder's (the task checks). Text is tokenised batch-wise in the collator, for the LM (prompt +
target, answer-only labels, :mod:`velvet.vlm.lm_batch`) and, for the fusion bridges, the question
for TriBERT. The task hands the tokenizers over in ``configure_model``
(:meth:`VLMDataModule.set_collator`), before Lightning asks for a loader.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from velvet.data.datamodule_base import ManifestDataModule
from velvet.data.errors import DataError
from velvet.data.manifest import Manifest, ManifestRecord
from velvet.vlm.collate import VLMCollator, sample_texts

__all__ = ["VLMDataModule", "VLMDataset"]

logger = logging.getLogger(__name__)

TASKS = ("vqa", "report")


class VLMDataset(Dataset):
    """Samples ``{"image", "id", "case_id", "question", "choices", "answer_index", "target", "kind",
    "question_type"}``; ``image`` is ``(1, H, W, D)`` from the volume cache.

    Args:
        entries: one dict per sample: ``record`` (the case's :class:`ManifestRecord`) and the text
            fields above (``question`` None for a report).
        volumes: the volume source (a :class:`~velvet.data.cache.VolumeCache`).
    """

    def __init__(self, entries: Sequence[dict[str, Any]], volumes: Any) -> None:
        self.entries = list(entries)
        self.volumes = volumes

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        record: ManifestRecord = entry["record"]
        image = self.volumes.get_or_create(record)["image"].float()
        sample = {k: v for k, v in entry.items() if k != "record"}
        sample["image"] = image
        sample["case_id"] = record.id
        return sample


class VLMDataModule(ManifestDataModule):
    """Manifest + VQA items (or reports) -> cached volumes -> VQA / report-generation batches.

    Args:
        task: ``vqa`` or ``report``.
        vqa_items: the ``vqa.jsonl`` file (default: ``vqa.jsonl`` beside the manifest, which the
            phantom generator writes).
        kinds: item kinds kept (``closed``, ``open``).
        question_types: question types kept (None: all).
        max_eval_items: keep at most this many val / test samples, a seeded random subset
            (declared in results); None: all.
        expert: an ``expert.jsonl`` with the expert line of every case (for a model whose
            ``VLMConfig.expert_prompt`` is on; the task checks the two agree).
        **kwargs: :class:`~velvet.data.datamodule_base.ManifestDataModule` arguments
            (``manifest`` or ``phantoms``, ``data_dir``, ``preprocess``, ``batch_size``, ...).
    """

    def __init__(
        self,
        manifest: str | None = None,
        *,
        task: str = "vqa",
        vqa_items: str | None = None,
        kinds: list[str] | None = None,
        question_types: list[str] | None = None,
        max_eval_items: int | None = None,
        expert: str | None = None,
        phantoms: dict[str, Any] | None = None,
        data_dir: str = "runs/data",
        preprocess: str | dict[str, Any] = "ct_rate",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        cache_dir: str | None = None,
        warm_cache: bool = True,
        seed: int = 0,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        super().__init__(
            manifest,
            phantoms=phantoms,
            data_dir=data_dir,
            preprocess=preprocess,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            cache_dir=cache_dir,
            warm_cache=warm_cache,
            require_report=task == "report",
            seed=seed,
        )
        self.task = task
        self.vqa_items = Path(vqa_items) if vqa_items else None
        self.kinds = list(kinds) if kinds else ["closed", "open"]
        self.question_types = list(question_types) if question_types else None
        self.max_eval_items = max_eval_items
        self.expert = Path(expert) if expert else None
        self.expert_lines: dict[str, str] = {}
        self.items: list[Any] = []
        self.collator: VLMCollator | None = None

    @property
    def items_path(self) -> Path:
        """The VQA items file."""
        return self.vqa_items or self.manifest_path.parent / "vqa.jsonl"

    def setup_task(self, manifest: Manifest) -> None:
        if self.expert is not None:
            from velvet.vlm.expert_file import read_expert

            self.expert_lines = read_expert(self.expert, [r.id for r in manifest.records])
        if self.task != "vqa":
            return
        from velvet.data.vqa import read_vqa

        items = read_vqa(self.items_path, self.manifest_path)
        kept = [
            it
            for it in items
            if it.kind in self.kinds
            and (self.question_types is None or it.question_type in self.question_types)
        ]
        if not kept:
            raise DataError(
                self.items_path, f"no item of kinds {self.kinds} and question types {self.question_types}"
            )
        self.items = kept

    def build_dataset(self, split: str, records: list[ManifestRecord]) -> VLMDataset:  # type: ignore[override]
        by_id = {r.id: r for r in records}
        entries: list[dict[str, Any]] = []
        if self.task == "report":
            from velvet.data.reports import clean_report

            for r in records:
                text = clean_report(r.load_report() or "", source=f"report of case {r.id!r}")
                entries.append(
                    {"record": r, "id": r.id, "question": None, "choices": [], "answer_index": None,
                     "target": text, "kind": "report", "question_type": "report"}
                )  # fmt: skip
        else:
            for it in self.items:
                record = by_id.get(it.case_id)
                if record is None:
                    continue  # the item's case is in another split
                entries.append(
                    {"record": record, "id": it.id, "question": it.question, "choices": list(it.choices),
                     "answer_index": it.answer_index, "target": it.answer, "kind": it.kind,
                     "question_type": it.question_type}
                )  # fmt: skip
        if split != "train" and self.max_eval_items is not None and len(entries) > self.max_eval_items:
            rng = random.Random(f"{self.seed}-{split}")
            keep = sorted(rng.sample(range(len(entries)), self.max_eval_items))
            entries = [entries[i] for i in keep]
        if self.expert is not None:
            for e in entries:
                e["expert"] = self.expert_lines[e["record"].id]
        return VLMDataset(entries, self.cache)

    def set_collator(self, collator: VLMCollator) -> None:
        """Give the loaders their collator (the task builds it, with its tokenizers, in ``configure_model``)."""
        self.collator = collator

    def training_texts(self) -> list[str]:
        """The texts of the training split (a config-built LM's vocabulary is trained on them)."""
        texts = []
        for e in self.datasets["train"].entries:
            prompt, target = sample_texts(e, expert=self.expert is not None)
            texts += [prompt, target]
        return texts

    def collate_fn(self) -> Any:
        if self.collator is None:
            raise RuntimeError("VLMDataModule needs its collator: the task sets it in configure_model")
        return self.collator

"""The Lightning DataModule: manifest (or generated phantoms) -> cached volumes + tokenised reports.

``prepare_data`` (local rank 0 only) does the slow, shareable work once per machine: generate the
phantom set if asked, train the WordPiece vocabulary if no tokenizer is given, and warm the volume
cache. ``setup`` (every rank) only reads: the manifest, the tokenizer, and which cases failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, RandomSampler

from velvet.data.cache import VolumeCache
from velvet.data.collate import VolumeReportCollator
from velvet.data.contract import PreprocessContract
from velvet.data.dataset import ErrorPolicy, VolumeReportDataset
from velvet.data.errors import DataError
from velvet.data.manifest import Manifest, ManifestRecord, read_manifest

__all__ = ["VelvetDataModule"]

logger = logging.getLogger(__name__)


class VelvetDataModule(pl.LightningDataModule):
    """Volumes and reports from a manifest, for pretraining and evaluation.

    Args:
        manifest: a manifest file (``.csv``/``.jsonl``, see :mod:`velvet.data.manifest`). When None,
            ``phantoms`` must be given and the phantom set is generated into ``data_dir``.
        phantoms: :class:`velvet.data.phantoms.PhantomConfig` fields (e.g. ``{"n_cases": 400}``).
        data_dir: where generated phantoms and a trained tokenizer are written.
        preprocess: preprocessing contract: a preset name, a JSON file, or a dict of fields
            (``{"preset": "ct_rate", "spatial_size": [64, 64, 64]}``).
        tokenizer: a local tokenizer folder. None trains a WordPiece vocabulary on the train
            reports (once; kept in ``data_dir``).
        tokenizer_options: extra :class:`~velvet.data.tokenization.TriBertTokenizer` options
            (``max_length``, ``max_sentences``, ``sentence_modeling`` ...).
        vocab_size: size of a vocabulary trained here.
        batch_size: training batch size (per process).
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        cache_dir: the volume cache folder (default ``$VELVET_CACHE/volumes`` or ``~/.cache/velvet/volumes``).
        warm_cache: fill the cache in ``prepare_data`` with a progress bar.
        on_error: ``"raise"`` on a bad case, or ``"skip"`` it (logged and counted).
        label_maps: also load segmentation label maps.
        seed: seed for sentence dropping in the tokenizer.
    """

    def __init__(
        self,
        manifest: str | None = None,
        *,
        phantoms: dict[str, Any] | None = None,
        data_dir: str = "runs/data",
        preprocess: str | dict[str, Any] = "ct_rate",
        tokenizer: str | None = None,
        tokenizer_options: dict[str, Any] | None = None,
        vocab_size: int = 4000,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        cache_dir: str | None = None,
        warm_cache: bool = True,
        on_error: ErrorPolicy = "raise",
        label_maps: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if manifest is None and phantoms is None:
            raise ValueError("give a manifest, or phantoms=... to generate the built-in phantom data set")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.save_hyperparameters()
        self.contract = PreprocessContract.resolve(preprocess)
        self.data_dir = Path(data_dir)
        self.manifest_path = (
            Path(manifest) if manifest is not None else self.data_dir / "phantoms" / "manifest.csv"
        )
        self.phantoms = phantoms
        self.tokenizer_path = tokenizer
        self.tokenizer_options = dict(tokenizer_options or {})
        self.vocab_size = vocab_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.cache = VolumeCache(cache_dir, self.contract, label_map=label_maps)
        self.warm_cache = warm_cache
        self.on_error: ErrorPolicy = on_error
        self.seed = seed
        self.manifest: Manifest | None = None
        self.tokenizer: Any = None
        self.tokenizer_dir: str | None = None
        self.datasets: dict[str, VolumeReportDataset] = {}

    # ------------------------------------------------------------------ once per machine

    def prepare_data(self) -> None:
        """Generate phantoms, train the tokenizer and warm the cache (local rank 0 only)."""
        if self.phantoms is not None and not self.manifest_path.exists():
            from velvet.data.phantoms import PhantomConfig, generate_phantoms

            config = PhantomConfig(**self.phantoms)
            generate_phantoms(self.manifest_path.parent, config, workers=max(1, self.num_workers))
        manifest = read_manifest(self.manifest_path)
        if self.tokenizer_path is None:
            self._train_tokenizer(manifest)
        if self.warm_cache:
            report = self.cache.warm(manifest.records, workers=self.num_workers)
            logger.info(
                "volume cache %s: %d created, %d already cached, %d failed",
                self.cache.root,
                report.created,
                report.cached,
                len(report.failures),
            )
            if report.failures and self.on_error == "raise":
                shown = "\n  ".join(msg for _, msg in report.failures[:5])
                raise DataError(
                    self.manifest_path,
                    f"{len(report.failures)} case(s) cannot be used (set on_error='skip' to leave them out):\n  {shown}",
                )

    def _tokenizer_dir(self, manifest: Manifest) -> Path:
        # keyed by the training corpus and size, so a changed manifest never reuses a stale vocab
        h = hashlib.sha256(f"{self.vocab_size}".encode())
        for r in manifest.split("train"):
            h.update((r.load_report() or "").encode() + b"\0")
        return self.data_dir / f"tokenizer-{h.hexdigest()[:12]}"

    def _train_tokenizer(self, manifest: Manifest) -> Path:
        from velvet.data.tokenizer_training import train_wordpiece

        out = self._tokenizer_dir(manifest)
        if not out.exists():
            texts = (r.load_report() or "" for r in manifest.split("train"))
            train_wordpiece(texts, out, vocab_size=self.vocab_size)
        return out

    # ------------------------------------------------------------------ every process

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest, load the tokenizer, build the split datasets."""
        from velvet.data.tokenization import TriBertTokenizer

        if self.manifest is not None:
            return
        self.manifest = read_manifest(self.manifest_path)
        self.tokenizer_dir = self.tokenizer_path or str(self._tokenizer_dir(self.manifest))
        self.tokenizer = TriBertTokenizer.from_pretrained(self.tokenizer_dir, seed=self.seed, **self.tokenizer_options)
        for split in ("train", "val", "test"):
            records = self._usable(self.manifest.split(split))
            self.datasets[split] = VolumeReportDataset(
                records,
                self.cache,
                label_names=self.manifest.label_names,
                on_error=self.on_error,
            )

    def _usable(self, records: list[ManifestRecord]) -> list[ManifestRecord]:
        """Leave out cases whose preprocessing already failed, when skipping is the policy."""
        if self.on_error == "raise":
            return records
        kept = []
        for r in records:
            try:
                failed = self.cache.path(self.cache.key(r)).with_suffix(".error.json").exists()
            except DataError as exc:  # the file vanished since the manifest was written
                logger.warning("skipping case %s: %s", r.id, exc)
                continue
            if failed:
                logger.warning("skipping case %s: its preprocessing failed (see the cache warm-up log)", r.id)
            else:
                kept.append(r)
        if len(kept) < len(records):
            logger.warning(
                "left out %d of %d cases that cannot be used", len(records) - len(kept), len(records)
            )
        return kept

    @property
    def label_names(self) -> list[str]:
        """Finding label names of the manifest (after :meth:`setup`)."""
        return list(self.manifest.label_names) if self.manifest is not None else []

    # ------------------------------------------------------------------ loaders

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError("call setup() before asking for a dataloader")
        dataset = self.datasets[split]
        if train and len(dataset) < self.batch_size:
            raise ValueError(
                f"the train split has {len(dataset)} cases, fewer than batch_size={self.batch_size}"
            )
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochSeededSampler(dataset, seed=self.seed) if train else None,
            # contrastive losses need the same number of negatives every step: no ragged last batch
            drop_last=train,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=VolumeReportCollator(self.tokenizer, seed=self.seed),
            worker_init_fn=_single_thread_worker,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


class EpochSeededSampler(RandomSampler):
    """A random order that depends only on ``(seed, epoch)``.

    Lightning calls ``set_epoch`` every epoch, so a run resumed from a checkpoint sees the same
    order as the uninterrupted run (a plain RandomSampler draws from the global RNG, whose state a
    restart does not restore). Under DDP, Lightning replaces it with a seeded DistributedSampler
    (it is a RandomSampler, so shuffling is kept).
    """

    def __init__(self, data_source: Any, seed: int = 0) -> None:
        self.seed = seed
        self.epoch = 0
        super().__init__(data_source, generator=torch.Generator().manual_seed(seed))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):  # type: ignore[override]
        self.generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return super().__iter__()


def _single_thread_worker(_: int) -> None:
    # workers only read cached tensors and tokenise: one intra-op thread each avoids oversubscribing
    # the cores that the training process needs
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

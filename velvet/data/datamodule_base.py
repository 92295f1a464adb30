"""The DataModule base: manifest (or generated phantoms) -> volume cache -> splits -> loaders.

What every velvet task's data shares: ``prepare_data`` (local rank 0 only) generates the phantom set
if asked and warms the volume cache; ``setup`` (every rank) reads the manifest and builds one dataset
per split, leaving out failed cases under ``on_error: skip``; the loaders batch with an epoch-seeded
order and apply the recipe's train-time augmentation (:mod:`velvet.data.augment`) to the training
split only. Subclasses add what their task needs (the pretraining DataModule adds the tokenizer) by
overriding :meth:`prepare_task_data`, :meth:`setup_task` and :meth:`collate_fn`.

The training loader is a :class:`ResumableDataLoader`: Lightning stores its position inside the epoch
in every checkpoint, so a run resumed from a mid-epoch checkpoint continues with the batch after the
last one it trained on, in the same order, instead of restarting the epoch.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, RandomSampler

from velvet.data.cache import VolumeCache
from velvet.data.contract import PreprocessContract
from velvet.data.dataset import ErrorPolicy, VolumeReportDataset
from velvet.data.errors import DataError
from velvet.data.manifest import Manifest, ManifestRecord, read_manifest

__all__ = ["EpochSeededSampler", "ManifestDataModule", "ResumableDataLoader"]

logger = logging.getLogger(__name__)


class ManifestDataModule(pl.LightningDataModule):
    """Cached volumes of a manifest, split into train / val / test loaders.

    Args:
        manifest: a manifest file (``.csv``/``.jsonl``, see :mod:`velvet.data.manifest`). When None,
            ``phantoms`` must be given and the phantom set is generated into ``data_dir``.
        phantoms: :class:`velvet.data.phantoms.PhantomConfig` fields (e.g. ``{"n_cases": 400}``).
        data_dir: where generated phantoms (and task files such as a trained tokenizer) are written.
        preprocess: preprocessing contract: a preset name, a JSON file, or a dict of fields
            (``{"preset": "ct_rate", "spatial_size": [64, 64, 64]}``).
        batch_size: training batch size (per process).
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        cache_dir: the volume cache folder (default ``velvet_cache_root()/volumes``).
        warm_cache: fill the cache in ``prepare_data`` with a progress bar.
        on_error: ``"raise"`` on a bad case, or ``"skip"`` it (logged and counted).
        label_maps: also load segmentation label maps.
        augment: train-time MONAI dictionary transforms, ``[{class_path: RandFlipd, init_args: {...}}]``
            (:class:`~velvet.data.augment.Augmentation`); None: no augmentation.
        require_report: every case needs a report (False for image-only tasks).
        seed: seed of the training order (and of the task's random choices in the data).
    """

    def __init__(
        self,
        manifest: str | None = None,
        *,
        phantoms: dict[str, Any] | None = None,
        data_dir: str = "runs/data",
        preprocess: str | dict[str, Any] = "ct_rate",
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        cache_dir: str | None = None,
        warm_cache: bool = True,
        on_error: ErrorPolicy = "raise",
        label_maps: bool = False,
        augment: list[dict[str, Any]] | None = None,
        require_report: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if manifest is None and phantoms is None:
            raise ValueError("give a manifest, or phantoms=... to generate the built-in phantom data set")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.contract = PreprocessContract.resolve(preprocess)
        self.data_dir = Path(data_dir)
        self.manifest_path = (
            Path(manifest) if manifest is not None else self.data_dir / "phantoms" / "manifest.csv"
        )
        self.phantoms = phantoms
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.cache = VolumeCache(cache_dir, self.contract, label_map=label_maps)
        self.warm_cache = warm_cache
        self.on_error: ErrorPolicy = on_error
        self.require_report = require_report
        self.seed = seed
        self.augmentation: Any = None
        if augment:
            from velvet.data.augment import Augmentation

            self.augmentation = Augmentation(augment)  # built now: a bad transform fails before any work
        self.manifest: Manifest | None = None
        self.datasets: dict[str, VolumeReportDataset] = {}
        # case id -> why its report cannot be used (filled by check_reports, under on_error="skip")
        self.bad_reports: dict[str, str] = {}

    # ------------------------------------------------------------------ once per machine

    def prepare_data(self) -> None:
        """Generate phantoms, do the task's one-off work and warm the cache (local rank 0 only)."""
        if self.phantoms is not None and not self.manifest_path.exists():
            from velvet.data.phantoms import PhantomConfig, generate_phantoms

            config = PhantomConfig(**self.phantoms)
            generate_phantoms(self.manifest_path.parent, config, workers=max(1, self.num_workers))
        manifest = read_manifest(self.manifest_path, require_report=self.require_report)
        self.check_reports(manifest)  # before any one-off work: a bad report fails (or is left out) now
        self.prepare_task_data(manifest)
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

    def prepare_task_data(self, manifest: Manifest) -> None:
        """One-off work of the task on the manifest (e.g. training a vocabulary); nothing by default."""

    # ------------------------------------------------------------------ every process

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest, let the task load its parts, build the split datasets."""
        if self.manifest is not None:
            return
        self.manifest = read_manifest(self.manifest_path, require_report=self.require_report)
        self.check_reports(self.manifest)
        self.setup_task(self.manifest)
        for split in ("train", "val", "test"):
            self.datasets[split] = self.build_dataset(split, self._usable(self.manifest.split(split)))

    def build_dataset(self, split: str, records: list[ManifestRecord]) -> VolumeReportDataset:
        """The dataset of one split (the training split gets the recipe's augmentation)."""
        assert self.manifest is not None
        return VolumeReportDataset(
            records,
            self.cache,
            label_names=self.manifest.label_names,
            require_report=self.require_report,
            on_error=self.on_error,
            transform=self.augmentation if split == "train" else None,
        )

    def setup_task(self, manifest: Manifest) -> None:
        """Load what the task needs on every process (e.g. the tokenizer); nothing by default."""

    def check_reports(self, manifest: Manifest) -> dict[str, str]:
        """Read and clean every report once, before training (tasks with ``require_report`` only).

        A report that cannot be read (missing, not UTF-8, too large) or is unusable after cleaning
        (empty, no letter or digit) fails here, not at the step that reaches it: under
        ``on_error="raise"`` with a :class:`DataError` naming the case and the file; under ``"skip"``
        it is logged and recorded in :attr:`bad_reports` (case id -> reason), and the case is left
        out of its split.

        Args:
            manifest: the manifest whose reports are checked.

        Returns:
            :attr:`bad_reports`.

        Raises:
            DataError: a report cannot be used and the policy is ``"raise"``.
        """
        from velvet.data.reports import clean_report

        bad: dict[str, str] = {}
        if self.require_report:
            for r in manifest.records:
                where = r.report_file or f"{self.manifest_path} (inline report)"
                try:
                    text = r.load_report()
                    if text is None:
                        raise DataError(where, "no report")
                    clean_report(text, source=where)
                except DataError as exc:
                    bad[r.id] = f"case {r.id!r}: {where}: {exc.problem}"
        self.bad_reports = bad
        if not bad:
            return bad
        if self.on_error == "raise":
            shown = "\n  ".join(list(bad.values())[:5])
            raise DataError(
                self.manifest_path,
                f"{len(bad)} report(s) cannot be used (set on_error='skip' to leave them out):\n  {shown}",
            )
        for msg in bad.values():
            logger.warning("skipping %s", msg)
        logger.warning("left out %d of %d cases whose report cannot be used", len(bad), len(manifest.records))
        return bad

    def _usable(self, records: list[ManifestRecord]) -> list[ManifestRecord]:
        """Leave out cases whose report or preprocessing already failed, when skipping is the policy."""
        if self.on_error == "raise":
            return records
        kept = []
        for r in records:
            if r.id in self.bad_reports:  # logged by check_reports
                continue
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

    def collate_fn(self) -> Any:
        """The batch collator (default: volumes and labels, reports kept as strings)."""
        from velvet.data.collate import VolumeReportCollator

        return VolumeReportCollator(None)

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError("call setup() before asking for a dataloader")
        dataset = self.datasets[split]
        if train and len(dataset) < self.batch_size:
            raise ValueError(
                f"the train split has {len(dataset)} cases, fewer than batch_size={self.batch_size}"
            )
        workers = self.num_workers
        # the training loader is checkpointed mid-epoch (see ResumableDataLoader); evaluation restarts
        loader_class = ResumableDataLoader if train else DataLoader
        return loader_class(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochSeededSampler(dataset, seed=self.seed) if train else None,
            # contrastive losses need the same number of negatives every step: no ragged last batch
            drop_last=train,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=self.collate_fn(),
            worker_init_fn=_single_thread_worker,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


class EpochSeededSampler(RandomSampler):
    """A random order that depends only on ``(seed, epoch)``.

    Lightning calls ``set_epoch`` every epoch, so a run resumed from a checkpoint sees the same
    order as the uninterrupted run (a plain RandomSampler draws from the global RNG, whose state a
    restart does not restore). Under DDP, Lightning replaces it with a seeded DistributedSampler
    (it is a RandomSampler, so shuffling is kept). Where a resumed epoch continues is the
    :class:`ResumableDataLoader`'s part.
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


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position inside the epoch is saved in Lightning checkpoints.

    Lightning checkpoints the ``state_dict`` of every training loader that has ``state_dict`` /
    ``load_state_dict`` (its ``_Stateful`` protocol) and hands it back on a resumed run, before the
    first batch (velvet's tasks make sure of that:
    :func:`velvet.tasks.checkpointing.restore_training_loader_state`). The state is the sampler's
    epoch and the number of batches this loader has handed
    out in that epoch. When the resumed pass belongs to the same epoch (the sampler's ``epoch``,
    which Lightning sets before the first batch, is the saved one), the first ``batches`` batches
    of the epoch's order are skipped at the index level (no sample is loaded for them); a state
    saved at or after the end of an epoch resumes the next epoch from its start.

    Two details make this exact for any sampler with ``set_epoch`` (the
    :class:`EpochSeededSampler`, or the DistributedSampler that Lightning puts in its place under
    DDP):

    - the iterator is created lazily, at the first ``next``: Lightning calls ``iter()`` on the
      loader before it calls ``set_epoch`` on a resumed run, and worker processes would otherwise
      draw indices of the wrong epoch ahead of time;
    - batches are counted as they reach the training loop, not as workers prefetch them.

    The skipping wraps DataLoader's ``_index_sampler`` (the attribute its iterators draw indices
    from), so the loader's ``sampler`` / ``batch_sampler`` stay what Lightning expects to replace.

    Args:
        *args: :class:`torch.utils.data.DataLoader` arguments.
        **kwargs: :class:`torch.utils.data.DataLoader` keyword arguments.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pass_epoch: int | None = None  # the sampler epoch of the pass in progress
        self._batches = 0  # batches of that epoch handed out (skipped ones included)
        self._skip = 0  # batches the pass in progress skips (read by _SkipBatches)
        self._resume_from: tuple[int | None, int] | None = None  # a loaded, not yet applied state

    # ------------------------------------------------------------------ Lightning's _Stateful protocol

    def state_dict(self) -> dict[str, Any]:
        """The position in the epoch: ``{"epoch", "batches", "batch_size", "num_batches"}``.

        Returns:
            A dict of plain ints (``epoch`` may be None for a sampler without epochs).
        """
        pending = self._resume_from  # loaded, and no batch drawn since: the position is still that one
        epoch, batches = pending if pending is not None else (self._pass_epoch, self._batches)
        return {"epoch": epoch, "batches": batches, "batch_size": self.batch_size, "num_batches": len(self)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the next pass from a :meth:`state_dict` (applied at the pass's first batch).

        Args:
            state_dict: what :meth:`state_dict` returned in the run being resumed.
        """
        batch_size, num_batches = state_dict.get("batch_size"), state_dict.get("num_batches")
        if (batch_size, num_batches) != (self.batch_size, len(self)):
            logger.warning(
                "resuming a training loader saved with batch_size=%s and %s batches per epoch into one "
                "with batch_size=%s and %d: the rest of the epoch will not repeat the interrupted run",
                batch_size, num_batches, self.batch_size, len(self),
            )
        epoch = state_dict.get("epoch")
        self._resume_from = (None if epoch is None else int(epoch), int(state_dict.get("batches", 0)))

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _PassIterator(self)

    @property
    def _index_sampler(self) -> Any:
        # the (batch) sampler the DataLoader iterators draw indices from; wrapped so that a resumed
        # pass drops the batches already trained on before any sample is read
        return _SkipBatches(super()._index_sampler, self)

    def _start_pass(self) -> Iterator[Any]:
        """Begin a pass over the data: apply a loaded state, then DataLoader's own iterator."""
        epoch = getattr(self.sampler, "epoch", None)
        skip = 0
        if self._resume_from is not None:
            saved_epoch, batches = self._resume_from
            self._resume_from = None
            if saved_epoch == epoch and 0 < batches < len(self):
                skip = batches
                logger.info("resuming epoch %s of the training data after batch %d of %d", epoch, batches, len(self))
        self._pass_epoch, self._skip, self._batches = epoch, skip, skip
        return DataLoader.__iter__(self)


class _PassIterator:
    """One pass of a :class:`ResumableDataLoader`, started at its first ``next`` and counted."""

    def __init__(self, loader: ResumableDataLoader) -> None:
        self._loader = loader
        self._inner: Iterator[Any] | None = None

    def __iter__(self) -> _PassIterator:
        return self

    def __next__(self) -> Any:
        if self._inner is None:
            self._inner = self._loader._start_pass()
        batch = next(self._inner)
        self._loader._batches += 1
        return batch


class _SkipBatches:
    """A (batch) sampler without the first ``loader._skip`` entries; its length is the full one."""

    def __init__(self, base: Any, loader: ResumableDataLoader) -> None:
        self.base = base
        self._loader = loader

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[Any]:
        # `_skip` is read now, when a pass starts (DataLoader iterators call iter() on creation and
        # on every reset of persistent workers), not when the first index is drawn
        return itertools.islice(iter(self.base), getattr(self._loader, "_skip", 0), None)


def _single_thread_worker(_: int) -> None:
    # workers only read cached tensors and tokenise: one intra-op thread each avoids oversubscribing
    # the cores that the training process needs
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

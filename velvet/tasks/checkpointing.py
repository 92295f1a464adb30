"""Checkpoints a crash cannot lose or corrupt: periodic ``last.ckpt`` and atomic writes.

- :class:`LastCheckpoint` keeps ``last.ckpt`` fresh: every ``every_n_train_steps`` optimiser steps
  and at the end of every epoch (after that epoch's validation). Lightning's ``ModelCheckpoint``
  with ``save_last: true`` does not do both: with ``save_top_k: 0`` it writes ``last.ckpt`` only
  when training ends, and ``every_n_train_steps`` excludes ``every_n_epochs``.
- :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file beside the target, fsyncs
  it and renames it into place (:func:`velvet.utils.atomic.atomic_path`): a full disk or a killed
  process leaves the previous checkpoint intact instead of a truncated one under the final name.
  :class:`~velvet.tasks.base.VelvetTask` installs it on the trainer (:func:`use_atomic_checkpoints`)
  unless the trainer was given a CheckpointIO of its own.

Resuming from a mid-epoch ``last.ckpt`` is exact: the training loader stores its position in the
epoch (:class:`~velvet.data.datamodule_base.ResumableDataLoader`) and
:func:`restore_training_loader_state` hands it back (:class:`~velvet.tasks.base.VelvetTask` calls it
when training starts).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint

from velvet.utils.atomic import atomic_path

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "restore_training_loader_state", "use_atomic_checkpoints"]

logger = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`~lightning.fabric.plugins.io.torch_io.TorchCheckpointIO` that never leaves a partial file.

    Local checkpoints are written with :func:`torch.save` straight into a temporary file in the
    target's folder (``.tmp-<random>-<name>``), fsynced and renamed over the target; on any error
    the temporary is removed and the previous file is untouched. (Lightning's own writer serialises
    into memory, then copies through a temporary file of the system temp folder, which is not
    atomic when that folder is on another filesystem, and needs the checkpoint twice in memory.)
    Remote paths (``s3://`` ...) go to Lightning's writer unchanged.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically.

        Args:
            checkpoint: the state Lightning dumps.
            path: the target file.
            storage_options: not supported (as in Lightning's TorchCheckpointIO).

        Raises:
            TypeError: ``storage_options`` was given.
            OSError: the write failed (e.g. ``ENOSPC``); ``path`` keeps its previous content.
        """
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def use_atomic_checkpoints(trainer: pl.Trainer) -> bool:
    """Give ``trainer`` an :class:`AtomicCheckpointIO` if it uses Lightning's default one.

    A CheckpointIO chosen by the user (``Trainer(plugins=[...])``, or a strategy's own) is kept.

    Args:
        trainer: the trainer whose strategy writes the checkpoints.

    Returns:
        Whether the trainer writes atomic checkpoints now.
    """
    strategy = trainer.strategy
    current = strategy.checkpoint_io
    if type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
        return True
    return isinstance(current, AtomicCheckpointIO)


def restore_training_loader_state(trainer: pl.Trainer) -> bool:
    """Give the training loaders the state saved in the checkpoint being resumed, if not done yet.

    Lightning saves the ``state_dict`` of stateful training loaders in the fit loop and loads it
    when it builds the loaders after restoring the checkpoint. A task whose ``configure_optimizers``
    reads ``trainer.estimated_stepping_batches`` (velvet's warm-up + cosine schedule) makes Lightning
    build them earlier, before the checkpoint is restored, and the saved state is then never loaded:
    the resumed run would start the interrupted epoch over. Called when training starts (after the
    restore, before the first batch is drawn: the
    :class:`~velvet.data.datamodule_base.ResumableDataLoader` starts its pass at its first batch),
    this loads it; when Lightning has loaded it already, nothing is left to load.

    Args:
        trainer: the trainer, at ``on_train_start``.

    Returns:
        Whether a saved state was loaded now.
    """
    loop = trainer.fit_loop
    pending = getattr(loop, "_combined_loader_states_to_load", None)
    load = getattr(loop, "_load_combined_loader_states", None)
    if not pending or not callable(load):
        return False
    load()
    return True


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimiser steps and at every epoch end.

    A save that would fall on an epoch's last batch waits for the end of that epoch (after its
    validation), so the checkpoint holds the validated state and a resumed run starts the next
    epoch. The file is replaced each time, also by a new run into the same folder (Lightning's
    version counter would write ``last-v1.ckpt`` beside the old file, and the documented
    ``last.ckpt`` would silently keep the previous run's model); use a second
    ``ModelCheckpoint`` (without ``save_last``) for best-k copies.

    Args:
        dirpath: the checkpoint folder (default: Lightning's, under the logger's folder).
        every_n_train_steps: optimiser steps between saves; 0: at epoch ends only.
        save_weights_only: store the weights alone (no optimiser state: such a file cannot resume).
        verbose: log every save.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        every_n_train_steps: int = 1000,
        save_weights_only: bool = False,
        verbose: bool = False,
    ) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0, got {every_n_train_steps}")
        super().__init__(
            dirpath=Path(dirpath) if dirpath is not None else None,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps or None,
            save_weights_only=save_weights_only,
            verbose=verbose,
            enable_version_counter=False,
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Save every ``every_n_train_steps`` steps, except on an epoch's last batch (see the class)."""
        # (ModelCheckpoint's own version warns on every save under manual optimisation, where the
        # state after the step is exactly what a resumed run needs)
        every = self._every_n_train_steps
        if every < 1 or trainer.global_step % every != 0:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or self._should_skip_saving_checkpoint(trainer):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save at the end of every epoch (unless this step is saved already)."""
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

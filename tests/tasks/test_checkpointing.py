"""Checkpoints: atomic writes (a full disk keeps the previous file) and the recipes' periodic last.ckpt."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from velvet.cli.lightning import read_recipe
from velvet.tasks.base import OPTIM_DEFAULTS, VelvetTask
from velvet.tasks.checkpointing import AtomicCheckpointIO, LastCheckpoint

RECIPES = sorted((Path(__file__).parents[2] / "recipes" / "pretrain").glob("*.yaml"))


class _Linear(VelvetTask):
    """The smallest VelvetTask: a linear regression on random data."""

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters({**OPTIM_DEFAULTS, "lr": 1e-2})
        self.model = nn.Linear(4, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.model(x), y)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)), batch_size=4)


def _trainer(tmp_path, **kw) -> pl.Trainer:
    args = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_progress_bar=False,
                enable_model_summary=False, callbacks=[LastCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2)])
    return pl.Trainer(**{**args, **kw})


def _disk_full_after_half(real_save):
    """A ``torch.save`` that writes half of the checkpoint to its destination, then fails with ENOSPC."""

    def save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if isinstance(f, (str, Path)):
            Path(f).write_bytes(half)
        else:
            f.write(half)
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)
    trainer.fit(_Linear())
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO  # installed by VelvetTask.setup
    last = tmp_path / "ckpt" / "last.ckpt"
    before = last.read_bytes()
    assert torch.load(last, weights_only=False)["global_step"] == 4

    monkeypatch.setattr(torch, "save", _disk_full_after_half(torch.save))
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint(last)
    monkeypatch.undo()
    assert last.read_bytes() == before  # the previous checkpoint, whole
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # and no temporary left
    assert torch.load(last, weights_only=False)["global_step"] == 4


def test_atomic_io_replaces_and_creates_folders(tmp_path):
    io_ = AtomicCheckpointIO()
    target = tmp_path / "new" / "dir" / "x.ckpt"
    io_.save_checkpoint({"a": torch.ones(2)}, target)
    io_.save_checkpoint({"a": torch.zeros(2)}, target)
    assert torch.equal(io_.load_checkpoint(target)["a"], torch.zeros(2))
    assert [p.name for p in target.parent.iterdir()] == ["x.ckpt"]
    with pytest.raises(TypeError, match="storage_options"):
        io_.save_checkpoint({}, target, storage_options={"x": 1})


def test_a_checkpoint_io_of_the_users_own_is_kept(tmp_path):
    class Mine(TorchCheckpointIO):
        pass

    mine = Mine()
    trainer = _trainer(tmp_path, plugins=[mine], max_steps=1)
    trainer.fit(_Linear())
    assert trainer.strategy.checkpoint_io is mine


def test_last_checkpoint_every_n_steps_and_at_epoch_ends(tmp_path):
    steps: list[int] = []

    class Saved(pl.Callback):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            steps.append(checkpoint["global_step"])

    # 4 steps per epoch, 2 epochs, every 3 steps: 3, end of epoch 0 (4), 6, end of epoch 1 (8)
    every = LastCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3)
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[every, Saved()])
    trainer.fit(_Linear())
    assert steps == [3, 4, 6, 8]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt"]

    # a save due on an epoch's last batch waits for the epoch end: saved once, not twice
    steps.clear()
    every = LastCheckpoint(dirpath=tmp_path / "b", every_n_train_steps=2)
    trainer = _trainer(tmp_path / "b", max_epochs=2, callbacks=[every, Saved()])
    trainer.fit(_Linear())
    assert steps == [2, 4, 6, 8]

    # epoch ends only
    steps.clear()
    every = LastCheckpoint(dirpath=tmp_path / "c", every_n_train_steps=0)
    trainer = _trainer(tmp_path / "c", max_epochs=2, callbacks=[every, Saved()])
    trainer.fit(_Linear())
    assert steps == [4, 8]
    with pytest.raises(ValueError, match="every_n_train_steps"):
        LastCheckpoint(every_n_train_steps=-1)


def test_a_new_run_into_the_same_folder_replaces_last_ckpt(tmp_path):
    """Recipes and README point at last.ckpt: a second run must not leave it holding the first run."""
    _trainer(tmp_path, max_epochs=1).fit(_Linear())
    _trainer(tmp_path, max_epochs=2).fit(_Linear())
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt"]
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 8


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_writes_last_ckpt_periodically(recipe):
    callbacks = read_recipe(recipe).trainer.callbacks or []
    last = [c for c in callbacks if c.class_path == "velvet.tasks.checkpointing.LastCheckpoint"]
    assert len(last) == 1, recipe
    assert 1 <= last[0].init_args.every_n_train_steps <= 1000
    # no second writer of last.ckpt (two would write last.ckpt and last-v1.ckpt)
    others = [c for c in callbacks if c not in last and getattr(c.init_args, "save_last", None)]
    assert others == [], recipe

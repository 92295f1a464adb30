"""A run resumed from a mid-epoch checkpoint repeats the uninterrupted run step for step.

The training loader stores its position in the epoch in every checkpoint
(:class:`velvet.data.datamodule_base.ResumableDataLoader`), :class:`velvet.tasks.checkpointing.LastCheckpoint`
writes ``last.ckpt`` every N steps and at epoch ends.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from velvet.data.datamodule import VelvetDataModule
from velvet.data.datamodule_base import EpochSeededSampler, ResumableDataLoader
from velvet.tasks.checkpointing import AtomicCheckpointIO, LastCheckpoint
from velvet.tasks.pretrain import PretrainTask

# 12 training cases, batch 4: 3 steps per epoch, 6 steps in 2 epochs
PHANTOMS = {"n_cases": 20, "n_val": 6, "n_test": 2, "shape": [40, 40, 32], "spacing": [10, 10, 10]}
PREPROCESS = {"preset": "ct_rate", "spacing": [12, 12, 12], "spatial_size": [32, 32, 32]}
# MLM masks come from the step generator, dropout from the reseeded global RNG: both must replay
OBJECTIVES = ["itc_report", "txt_mlm"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: multi-threaded CPU reductions differ in the last bits between any two
    runs (uninterrupted ones too), which Adam then spreads; single-threaded, runs are bit-identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    _datamodule(root).prepare_data()  # phantoms, vocabulary and cache, shared by the runs
    return root


def _datamodule(root, num_workers=0):
    return VelvetDataModule(
        phantoms=PHANTOMS, data_dir=str(root / "data"), cache_dir=str(root / "cache"), preprocess=PREPROCESS,
        batch_size=4, num_workers=num_workers, vocab_size=300, tokenizer_options={"max_length": 256},
    )


class _Record(pl.Callback):
    """Each step's loss and the step of each saved checkpoint."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}
        self.saved_at: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.saved_at.append(checkpoint["global_step"])


class _Crash(pl.Callback):
    """Raises before the step after ``at``, like a killed job (the checkpoint at ``at`` is written)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("simulated crash")


def _fit(root, data_root, *callbacks, ckpt_path=None, num_workers=0):
    record = _Record()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[LastCheckpoint(dirpath=root / "ckpt", every_n_train_steps=2), record, *callbacks],
    )
    task = PretrainTask(model="velvet-tiny", objectives=OBJECTIVES, lr=1e-3, warmup_steps=2)
    trainer.fit(task, datamodule=_datamodule(data_root, num_workers), ckpt_path=ckpt_path)
    return trainer, task, record


@pytest.mark.parametrize("num_workers", [0, 2])
def test_mid_epoch_resume_repeats_the_uninterrupted_run(data_root, tmp_path, num_workers):
    torch.manual_seed(0)
    trainer, full, record = _fit(tmp_path / "full", data_root, num_workers=num_workers)
    assert sorted(record.losses) == [1, 2, 3, 4, 5, 6]
    # last.ckpt every 2 steps and at each epoch end (step 6 is both: saved once, after validation)
    assert record.saved_at == [2, 3, 4, 6]
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)

    # crash after step 4: the second batch of epoch 1 is next
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(tmp_path / "stopped", data_root, _Crash(at=4), num_workers=num_workers)
    last = tmp_path / "stopped" / "ckpt" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4 and state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": 1, "batch_size": 4, "num_batches": 3}
    ]

    torch.manual_seed(123)  # another global RNG state: the resumed run must not depend on it
    _, resumed, after = _fit(tmp_path / "resumed", data_root, ckpt_path=str(last), num_workers=num_workers)
    assert sorted(after.losses) == [5, 6]
    assert [after.losses[s] for s in (5, 6)] == [record.losses[s] for s in (5, 6)]  # bit-identical
    final, again = full.state_dict(), resumed.state_dict()
    assert final.keys() == again.keys()
    assert all(torch.equal(final[k], again[k]) for k in final), [k for k in final if not torch.equal(final[k], again[k])]


def _loader(dataset, num_workers=0):
    return ResumableDataLoader(
        dataset, batch_size=4, sampler=EpochSeededSampler(dataset, seed=3), drop_last=True,
        num_workers=num_workers, persistent_workers=num_workers > 0,
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_state_skips_the_batches_already_seen(num_workers):
    data = TensorDataset(torch.arange(22))  # 5 batches of 4, the last 2 cases dropped
    whole = _loader(data, num_workers)
    whole.sampler.set_epoch(1)
    order = [b[0].tolist() for b in whole]

    first = _loader(data, num_workers)
    first.sampler.set_epoch(1)
    batches = iter(first)
    seen = [next(batches)[0].tolist() for _ in range(2)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 2, "batch_size": 4, "num_batches": 5}

    # Lightning calls iter() before set_epoch on a resumed run: the pass must start at the first batch
    second = _loader(data, num_workers)
    second.load_state_dict(state)
    rest = iter(second)
    assert second.state_dict() == state  # a checkpoint before the first batch keeps the position
    second.sampler.set_epoch(1)
    assert seen + [b[0].tolist() for b in rest] == order
    assert second.state_dict()["batches"] == 5
    second.sampler.set_epoch(2)  # the following epoch is whole again
    assert len(list(second)) == 5

    # a state of another epoch (saved at an epoch end) does not skip anything
    third = _loader(data, num_workers)
    third.load_state_dict(state)
    third.sampler.set_epoch(2)
    assert len(list(third)) == 5
    assert len(third) == 5


def test_loader_still_fits_lightning_distributed_sampler_injection():
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DistributedSampler

    data = TensorDataset(torch.arange(40))
    with _replace_dunder_methods(DataLoader, "dataset"):  # as Lightning requests loaders
        loader = _loader(data)
    sampler = DistributedSampler(data, num_replicas=2, rank=0, shuffle=True, seed=0)
    shard = _update_dataloader(loader, sampler)
    assert isinstance(shard, ResumableDataLoader) and shard.sampler is sampler and len(shard) == 5
    order = [b[0].tolist() for b in shard]
    shard.load_state_dict({"epoch": 0, "batches": 2, "batch_size": 4, "num_batches": 5})
    assert [b[0].tolist() for b in shard] == order[2:]

"""The pretraining LightningModule: a short fit, logged metrics, exact resume, negative caching."""

from __future__ import annotations

import csv
import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from velvet.data.datamodule import VelvetDataModule
from velvet.tasks.pretrain import PretrainTask

PHANTOMS = {"n_cases": 20, "n_val": 6, "n_test": 2, "shape": [40, 40, 32], "spacing": [10, 10, 10]}
PREPROCESS = {"preset": "ct_rate", "spacing": [12, 12, 12], "spatial_size": [32, 32, 32]}
SMALL = "velvet-tiny"
SMALL_OBJECTIVES = ["itc_report", "itc_sentence", "txt_mlm"]


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    dm = _datamodule(root)
    dm.prepare_data()  # phantoms, vocabulary and cache, shared by the tests of this module
    return root


def _datamodule(root, **kw):
    args = dict(
        phantoms=PHANTOMS,
        data_dir=str(root / "data"),
        cache_dir=str(root / "cache"),
        preprocess=PREPROCESS,
        batch_size=4,
        num_workers=0,
        vocab_size=300,
        tokenizer_options={"max_length": 256},
    )
    return VelvetDataModule(**{**args, **kw})


def _trainer(root, **kw):
    args = dict(
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(root / "logs", name="run"),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    return pl.Trainer(**{**args, **kw})


class _Interrupt(pl.Callback):
    """Stops training after the first epoch, like a killed job (the config is unchanged)."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def _metrics(trainer):
    with open(trainer.logger.experiment.metrics_file_path) as fh:
        return list(csv.DictReader(fh))


def test_fit_logs_every_term_and_retrieval_metrics(data_dirs, tmp_path):
    task = PretrainTask(model=SMALL, objectives=SMALL_OBJECTIVES, lr=1e-3, warmup_steps=2)
    trainer = _trainer(tmp_path, max_epochs=2)
    trainer.fit(task, datamodule=_datamodule(data_dirs))
    rows = _metrics(trainer)
    columns = set(rows[0])
    for key in ("train/itc_report_loss", "train/itc_sentence_loss", "train/txt_mlm_loss", "train/loss",
                "train/temperature", "val/loss", "val/recall@5_i2t", "val/recall@5_t2i", "val/recall@1_t2i",
                "val/median_rank_i2t", "val/gallery_size"):
        assert key in columns, key
    val = [r for r in rows if r.get("val/recall@5_i2t")]
    assert len(val) == 2 and float(val[-1]["val/gallery_size"]) == 6
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)  # 12 train cases, batch 4, 2 epochs


def test_resume_gives_the_same_next_step_loss(data_dirs, tmp_path):
    torch.manual_seed(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    first = _trainer(tmp_path / "a", max_epochs=2, callbacks=[ckpt])
    first.fit(PretrainTask(model=SMALL, objectives=SMALL_OBJECTIVES, lr=1e-3), datamodule=_datamodule(data_dirs))
    uninterrupted = [float(r["train/loss"]) for r in _metrics(first) if r.get("train/loss")]

    # the same run interrupted after epoch 1, then resumed from its last checkpoint
    ckpt_1 = ModelCheckpoint(dirpath=tmp_path / "ckpt1", save_last=True, every_n_epochs=1)
    stopped = _trainer(tmp_path / "b", max_epochs=2, callbacks=[ckpt_1, _Interrupt()])
    stopped.fit(PretrainTask(model=SMALL, objectives=SMALL_OBJECTIVES, lr=1e-3), datamodule=_datamodule(data_dirs))
    torch.manual_seed(123)  # a different global RNG state: the resumed run must not depend on it
    resumed = _trainer(tmp_path / "c", max_epochs=2)
    resumed.fit(PretrainTask(model=SMALL, objectives=SMALL_OBJECTIVES, lr=1e-3), datamodule=_datamodule(data_dirs), ckpt_path=str(tmp_path / "ckpt1" / "last.ckpt"))
    after = [float(r["train/loss"]) for r in _metrics(resumed) if r.get("train/loss")]
    assert len(uninterrupted) == 6 and len(after) == 3
    # float32 kernels may pick different reduction orders across runs (thread scheduling), so
    # allow a few ulps; a wrong batch order or RNG state changes the loss by orders of magnitude more
    assert after == pytest.approx(uninterrupted[3:], rel=1e-5)


def test_negative_cache_mode_trains(data_dirs, tmp_path):
    task = PretrainTask(model=SMALL, objectives=SMALL_OBJECTIVES, lr=1e-3, negative_cache_micro_batch=2, gradient_clip_val=1.0)
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=1)
    trainer.fit(task, datamodule=_datamodule(data_dirs))
    losses = [float(r["train/loss"]) for r in _metrics(trainer) if r.get("train/loss")]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert trainer.global_step == 2


def test_checkpoint_rebuilds_without_the_datamodule(data_dirs, tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=1, callbacks=[ckpt])
    task = PretrainTask(model=SMALL, objectives=SMALL_OBJECTIVES)
    dm = _datamodule(data_dirs)
    trainer.fit(task, datamodule=dm)
    loaded = PretrainTask.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    batch = next(iter(dm.val_dataloader()))
    task.eval()
    loaded.eval()
    with torch.no_grad():
        a = task.model.encode_image(batch["image"])["embedding"]
        b = loaded.model.encode_image(batch["image"])["embedding"]
    assert torch.equal(a, b)


def test_bad_loss_weight_names():
    with pytest.raises(ValueError, match="unknown objective"):
        PretrainTask(model="velvet-tiny", loss_weights={"itc_global": 1.0})


def test_batch_norm_projections_are_recalibrated_before_validation(data_dirs, tmp_path):
    model = {"preset": SMALL, "projection_norm": "batch"}
    task = PretrainTask(model=model, objectives=SMALL_OBJECTIVES, lr=1e-3, bn_recalibration_batches=2)
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(task, datamodule=_datamodule(data_dirs))
    norms = [m for m in task.model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 4  # image/text heads at report and sentence level
    # 3 training steps would leave a count of 3; the recalibration restarted it on 2 batches
    assert all(int(m.num_batches_tracked) == 2 for m in norms)
    assert all(m.momentum == 0.1 for m in norms)


def test_v1_recipe_objectives_inside_the_model_still_work_with_a_warning():
    with pytest.warns(DeprecationWarning, match="objectives"):
        task = PretrainTask(model={"preset": "velvet-tiny", "objectives": ["itc_report", "txt_mlm"]})
    assert task.objectives == ("itc_report", "txt_mlm")
    assert task.model_config.levels == ("report",)


def test_model_levels_follow_the_objectives():
    task = PretrainTask(model="velvet-tiny", objectives=["txt_mlm", "itc_word", "itc_report"])
    assert task.objectives == ("itc_report", "itc_word", "txt_mlm")  # canonical order
    assert task.model_config.levels == ("report", "word")
    with pytest.raises(ValueError, match="not trained"):
        PretrainTask(model="velvet-tiny", objectives=["itc_report"], loss_weights={"txt_mlm": 2.0})


def test_negative_cache_with_batch_norm_projections_is_refused_at_construction():
    with pytest.raises(ValueError, match="projection_norm: 'batch'"):
        PretrainTask(model={"preset": "velvet-tiny", "projection_norm": "batch"}, objectives=["itc_report"],
                     negative_cache_micro_batch=2)

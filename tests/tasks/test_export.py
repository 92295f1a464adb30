"""``velvet export``: a fit checkpoint becomes a pretrained directory with identical embeddings."""

from __future__ import annotations

import shutil

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from velvet.cli.main import main
from velvet.data.datamodule import VelvetDataModule
from velvet.models.velvet import VelvetModel
from velvet.tasks.pretrain import PretrainTask

PHANTOMS = {"n_cases": 12, "n_val": 4, "n_test": 0, "shape": [40, 40, 32], "spacing": [10, 10, 10]}


def test_exported_checkpoint_gives_identical_embeddings(tmp_path, capsys):
    dm = VelvetDataModule(
        phantoms=PHANTOMS, data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"),
        preprocess={"preset": "ct_rate", "spacing": [12, 12, 12], "spatial_size": [32, 32, 32]},
        batch_size=4, num_workers=0, vocab_size=300, tokenizer_options={"max_length": 256},
    )
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, limit_val_batches=1, callbacks=[ckpt],
                         logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    task = PretrainTask(model="velvet-tiny", objectives=["itc_report", "txt_mlm"], lr=1e-3)
    trainer.fit(task, datamodule=dm)
    shutil.rmtree(dm.tokenizer_dir)  # the vocabulary must travel inside the checkpoint

    assert main(["export", str(tmp_path / "ckpt" / "last.ckpt"), str(tmp_path / "model")]) == 0
    assert "exported" in capsys.readouterr().out
    model = VelvetModel.from_pretrained(tmp_path / "model")
    assert model.preprocess == dm.contract
    batch = next(iter(dm.val_dataloader()))
    task.model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_image(batch["image"])["embedding"], task.model.encode_image(batch["image"])["embedding"])
        assert torch.equal(model.encode_text(batch)["embedding"], task.model.encode_text(batch)["embedding"])
    # the reloaded tokenizer encodes reports exactly like the training one
    reports = ["No pleural effusion. A 12 mm nodule in the right upper lobe."]
    assert torch.equal(model.tokenizer(reports)["input_ids"], dm.tokenizer(reports)["input_ids"])


def test_export_refuses_other_files(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.ones(1)}}, tmp_path / "other.ckpt")
    assert main(["export", str(tmp_path / "other.ckpt"), str(tmp_path / "out")]) == 1
    assert "not a velvet pretraining checkpoint" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        from velvet.models.export import export_checkpoint

        export_checkpoint(tmp_path / "missing.ckpt", tmp_path / "out")

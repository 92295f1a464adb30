"""A real 2-process gloo validation: the gathered retrieval gallery counts every case once.

``DistributedSampler`` pads the 5 validation cases to 6 on 2 ranks (rank 0 gets cases 0, 2, 4 and
rank 1 gets 1, 3 and case 0 again). Without deduplication the gathered gallery has 6 rows, a pair
tied with its own copy, and different recall than a single-process run on the same weights.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from velvet.data.datamodule import VelvetDataModule
from velvet.tasks.pretrain import PretrainTask

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

N_VAL = 5
PHANTOMS = {"n_cases": 9, "n_val": N_VAL, "n_test": 2, "shape": [40, 40, 32], "spacing": [10, 10, 10]}
PREPROCESS = {"preset": "ct_rate", "spacing": [12, 12, 12], "spatial_size": [32, 32, 32]}
KS = (1, 2, 3)


def _datamodule(root) -> VelvetDataModule:
    return VelvetDataModule(
        phantoms=PHANTOMS,
        data_dir=str(root / "data"),
        cache_dir=str(root / "cache"),
        preprocess=PREPROCESS,
        batch_size=2,  # 2 batches per rank (2 + 1 cases): the per-rank embeddings are concatenated
        num_workers=0,
        vocab_size=300,
        tokenizer_options={"max_length": 256},
    )


def _validate(root, **trainer_args) -> dict[str, float]:
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_args,
    )
    # the same seed on both runs: identical initial weights (PretrainTask seeds its construction)
    task = PretrainTask(model="velvet-tiny", objectives=["itc_report"], retrieval_ks=KS, seed=0)
    (results,) = trainer.validate(task, datamodule=_datamodule(root))
    return {k: float(v) for k, v in results.items()}


def test_two_rank_gallery_has_each_case_once_and_single_process_recall(tmp_path):
    _datamodule(tmp_path).prepare_data()  # phantoms, vocabulary and cache once, before any rank starts

    single = _validate(tmp_path, devices=1)
    ddp = _validate(tmp_path, devices=2, strategy="ddp_spawn")

    assert single["val/gallery_size"] == N_VAL
    assert ddp["val/gallery_size"] == N_VAL  # 6 without deduplication
    for direction in ("i2t", "t2i"):
        for k in KS:
            key = f"val/recall@{k}_{direction}"
            assert ddp[key] == pytest.approx(single[key]), key
        for stat in ("mean_rank", "median_rank"):
            key = f"val/{stat}_{direction}"
            assert ddp[key] == pytest.approx(single[key]), key

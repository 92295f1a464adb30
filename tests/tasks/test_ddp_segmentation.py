"""A real 2-process gloo validation of the segmentation task: every case scored once, as in one process.

``DistributedSampler`` pads the 3 validation volumes to 4 on 2 ranks (one case is seen twice).
The gathered rows must hold each case once and give the single-process Dice, NSD and HD95.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from velvet.data.datamodule_segmentation import SegmentationDataModule
from velvet.tasks.segmentation import SegmentationTask

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

N_VAL = 3
PHANTOMS = {"n_cases": 6, "n_val": N_VAL, "n_test": 1, "shape": [40, 40, 32], "spacing": [9.0, 10.0, 11.0], "seed": 5}
PREPROCESS = {"preset": "segmentation", "hu_window": [-200, 300], "spacing": None, "pad_to": [64, 64, 64]}
VISION = {"preset": "swin-tiny", "window_size": 4, "depths": [1, 1, 1, 1]}


def _datamodule(root) -> SegmentationDataModule:
    return SegmentationDataModule(
        phantoms=PHANTOMS, data_dir=str(root / "data"), cache_dir=str(root / "cache"), preprocess=PREPROCESS,
        roi_size=(64, 64, 64), batch_size=1, num_workers=0,
    )


def _validate(root, **trainer_args) -> dict[str, float]:
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **trainer_args,
    )
    task = SegmentationTask(vision=VISION, seed=0)  # the same seed: identical weights in both runs
    (results,) = trainer.validate(task, datamodule=_datamodule(root))
    return {k: float(v) for k, v in results.items()}


def test_two_rank_validation_scores_each_case_once(tmp_path):
    _datamodule(tmp_path).prepare_data()  # phantoms and cache once, before any rank starts
    single = _validate(tmp_path, devices=1)
    ddp = _validate(tmp_path, devices=2, strategy="ddp_spawn")
    assert single["val/cases"] == N_VAL
    assert ddp["val/cases"] == N_VAL  # 4 without deduplication
    for key in ("val/dice", "val/nsd", "val/hd95"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-5), key

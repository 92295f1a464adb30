"""The segmentation task: encoder freezing as the recipe says, test tables equal an independent count."""

from __future__ import annotations

import csv
import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from velvet.data.datamodule_segmentation import SegmentationDataModule
from velvet.tasks.segmentation import SegmentationTask

PHANTOMS = {"n_cases": 6, "n_val": 1, "n_test": 1, "shape": [48, 48, 40], "spacing": [7.0, 8.0, 10.0], "seed": 3}
PREPROCESS = {"preset": "segmentation", "hu_window": [-200, 300], "spacing": None, "pad_to": [64, 64, 64]}
VISION = {"preset": "swin-tiny", "window_size": 4, "depths": [1, 1, 1, 1]}
ENCODER = "net.swinViT."


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    _datamodule(root).prepare_data()  # phantoms and cache, shared by the tests of this module
    return root


def _datamodule(root):
    return SegmentationDataModule(
        phantoms=PHANTOMS, data_dir=str(root / "data"), cache_dir=str(root / "cache"), preprocess=PREPROCESS,
        roi_size=(64, 64, 64), samples_per_volume=1, batch_size=2, num_workers=0,
    )


def _fit(root, steps, **task_args):
    task = SegmentationTask(vision=VISION, lr=1e-2, **task_args)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )
    dm = _datamodule(root)
    trainer.fit(task, datamodule=dm)
    return task, trainer, dm


def _initial(task_args) -> dict[str, torch.Tensor]:
    from velvet.models.segmentation import SegmentationConfig, SegmentationModel

    torch.manual_seed(task_args.get("seed", 0))
    return SegmentationModel(SegmentationConfig(task_args["names"], vision=VISION, roi_size=(64, 64, 64))).state_dict()


def _changed(task, initial, prefix_in: bool) -> bool:
    state = task.segmenter.state_dict()
    return any(
        not torch.equal(state[k], v) for k, v in initial.items() if k.startswith(ENCODER) == prefix_in and v.is_floating_point()
    )


@pytest.fixture(scope="module")
def frozen_run(root):
    return _fit(root, 2, freeze_encoder=True)


def test_frozen_encoder_stays_put_and_unfreezes_on_schedule(root, frozen_run):
    task, _, dm = frozen_run
    initial = _initial({"names": tuple(dm.class_names)})
    assert not _changed(task, initial, True), "a frozen encoder moved"
    assert _changed(task, initial, False), "the decoder did not train"
    task, _, _ = _fit(root, 2, freeze_encoder=True, unfreeze_after_steps=1, encoder_lr=1e-3)
    assert _changed(task, initial, True), "the encoder did not train after unfreeze_after_steps"
    groups = task.trainer.optimizers[0].param_groups
    encoder_params = {id(p) for p in task.segmenter.encoder.parameters()}
    assert all(g["initial_lr"] == 1e-3 for g in groups if any(id(p) in encoder_params for p in g["params"]))


def test_recipe_contradictions_are_refused():
    with pytest.raises(ValueError, match="needs freeze_encoder"):
        SegmentationTask(vision=VISION, unfreeze_after_steps=3)
    with pytest.raises(ValueError, match="stays frozen"):
        SegmentationTask(vision=VISION, freeze_encoder=True, encoder_lr=1e-5)


def test_test_tables_equal_an_independent_computation(frozen_run, tmp_path):
    task, trainer, dm = frozen_run
    task.hparams.results_dir = str(tmp_path / "results")
    trainer.test(task, datamodule=dm)
    result = json.loads((tmp_path / "results" / "results.json").read_text(encoding="utf-8"))
    (case,) = result["cases"]
    # independently: the cached test volume, the model's sliding-window argmax, naive Dice on it
    sample = dm.datasets["test"][0]
    with torch.no_grad():
        logits = task.segmenter.predict_logits(sample["image"][None])
    pred = logits.argmax(1)[0].numpy()
    ref = sample["label_map"][0].numpy()
    names = dm.class_names
    for c in range(1, len(names)):
        p, t = pred == c, ref == c
        expected = None if p.sum() + t.sum() == 0 else 2 * (p & t).sum() / (p.sum() + t.sum())
        got = case["dice"][c - 1]
        assert (got is None) == (expected is None) and (expected is None or got == pytest.approx(expected, abs=1e-6)), names[c]
    spacing = np.linalg.norm(sample["affine"].numpy()[:3, :3], axis=0)
    assert case["spacing_mm"] == pytest.approx(spacing.tolist())
    with open(tmp_path / "results" / "per_class.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == names[1:]
    assert result["settings"]["nsd_tolerance_mm"] == 2.0 and result["settings"]["roi_size"] == [64, 64, 64]
    assert "dice" in result["metric_definitions"] and result["settings"]["preprocess_fingerprint"]


def test_test_from_a_checkpoint_rebuilds_the_saved_model(frozen_run, tmp_path):
    task, trainer, dm = frozen_run
    ckpt = tmp_path / "seg.ckpt"
    trainer.save_checkpoint(ckpt)
    # no architecture in the "recipe": velvet test --ckpt_path builds the model the checkpoint holds
    fresh = SegmentationTask(results_dir=str(tmp_path / "again"))
    tester = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    tester.test(fresh, datamodule=_datamodule(trainer.datamodule.data_dir.parent), ckpt_path=str(ckpt))
    for key, value in task.segmenter.state_dict().items():
        assert torch.equal(fresh.segmenter.state_dict()[key], value), key
    # data prepared with another contract than the checkpoint's is refused, not silently scored
    other = SegmentationDataModule(
        phantoms=PHANTOMS, data_dir=str(trainer.datamodule.data_dir), cache_dir=str(tmp_path / "cache"),
        preprocess={**PREPROCESS, "hu_window": [-100, 200]}, roi_size=(64, 64, 64), num_workers=0, warm_cache=False,
    )
    with pytest.raises(ValueError, match="preprocessing contract differs"):
        pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False).test(
            SegmentationTask(), datamodule=other, ckpt_path=str(ckpt)
        )


def test_segmentation_checkpoint_exports_to_a_pretrained_model(frozen_run, tmp_path):
    import velvet
    from velvet.models.export import export_checkpoint

    task, trainer, _ = frozen_run
    trainer.save_checkpoint(tmp_path / "seg.ckpt")
    out = export_checkpoint(tmp_path / "seg.ckpt", tmp_path / "model")
    model = velvet.from_pretrained(out)
    assert model.class_names == task.segmenter.class_names and model.preprocess == task.preprocess
    for key, value in task.segmenter.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


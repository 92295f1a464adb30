"""Every segmentation recipe parses through the real CLI and runs one fast dev step.

The tiny variant of a recipe swaps its data for a small phantom set (the real datasets are not
here), its encoder for the demo-sized Swin and its patch for 64^3; everything else (augmentations,
loss, sliding window, metrics, optimiser, callbacks) is the recipe's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from velvet.cli.lightning import run_lightning_cli

RECIPES = sorted((Path(__file__).parents[2] / "recipes" / "segmentation").glob("*.yaml"))
PHANTOMS = {"n_cases": 5, "n_val": 1, "n_test": 1, "shape": [48, 48, 40], "spacing": [8, 8, 10]}
VISION = {"preset": "swin-tiny", "window_size": 4, "depths": [1, 1, 1, 1]}


def test_every_dataset_has_a_recipe():
    assert {p.stem for p in RECIPES} >= {"phantoms", "btcv", "abdomenct1k", "ct_org", "totalsegmentator", "msd_spleen"}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs_one_step(recipe, tmp_path_factory, monkeypatch):
    workdir = tmp_path_factory.getbasetemp() / "seg_recipes"
    workdir.mkdir(exist_ok=True)
    monkeypatch.chdir(workdir)  # recipes write runs/ relative to the working directory
    monkeypatch.setattr(sys, "argv", ["velvet"])
    args = [
        "fit",
        "--config", str(recipe),
        "--trainer.fast_dev_run=1",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
        "--trainer.enable_progress_bar=false",
        "--model.init_args.init_from=null",
        f"--model.init_args.vision={json.dumps(VISION)}",
        "--data.init_args.manifest=null",
        "--data.init_args.select_classes=null",
        f"--data.init_args.phantoms={json.dumps(PHANTOMS)}",
        f"--data.init_args.data_dir={workdir / 'data'}",
        f"--data.init_args.cache_dir={workdir / 'cache'}",
        '--data.init_args.preprocess={"preset": "segmentation", "spacing": null, "pad_to": [64, 64, 64]}',
        "--data.init_args.roi_size=[64, 64, 64]",
        "--data.init_args.batch_size=1",
        "--data.init_args.samples_per_volume=1",
        "--data.init_args.num_workers=0",
    ]
    cli = run_lightning_cli(args)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert cli.model.model_config.class_names == tuple(cli.datamodule.class_names)
    assert cli.trainer.callback_metrics["val/dice"] >= 0

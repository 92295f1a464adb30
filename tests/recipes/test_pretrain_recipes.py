"""Every pretraining recipe parses through the real CLI and runs one fast dev step.

The paper-size architectures are swapped for tiny ones that keep each recipe's objectives and
text layout, and the M3D-Cap data for a small phantom set; everything else is the recipe's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from velvet.cli.lightning import run_lightning_cli
from velvet.models.config import VelvetConfig, get_model_config
from velvet.pretraining.registry import OBJECTIVES, levels_for, needs_fusion

RECIPES = sorted(p for p in (Path(__file__).parents[2] / "recipes" / "pretrain").glob("*.yaml"))
PHANTOMS = {"n_cases": 12, "n_val": 4, "n_test": 2, "shape": [48, 48, 32], "spacing": [8, 8, 10]}


def _tiny_equivalent(spec, objectives) -> tuple[dict, list[int]]:
    """A tiny model with the recipe model's encoder kinds (fusion as its objectives need), and its input size."""
    config = get_model_config(spec) if isinstance(spec, str) else VelvetConfig.from_dict(spec)
    vit = "vit" in json.dumps(config.vision)
    text = {"preset": "text-tiny", "max_position_embeddings": 512, "num_fusion_layers": 1 if needs_fusion(objectives) else 0}
    model = {"preset": "velvet-tiny", "text": text, "vision": {"preset": "vit3d-tiny" if vit else "swin-tiny"}}
    return model, [64, 64, 16] if vit else [32, 32, 32]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("recipes")


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs_one_step(recipe, workdir, monkeypatch):
    monkeypatch.chdir(workdir)  # recipes write runs/ relative to the working directory
    monkeypatch.setattr(sys, "argv", ["velvet"])  # the CLI must see only `args`, not pytest's flags
    init_args = yaml.safe_load(recipe.read_text())["model"]["init_args"]
    spec, objectives = init_args["model"], init_args.get("objectives") or list(OBJECTIVES)
    # the demo's own model is already CPU-sized: run it unchanged
    model, size = (spec, [32, 32, 32]) if recipe.stem == "demo" else _tiny_equivalent(spec, objectives)
    args = [
        "fit",
        "--config", str(recipe),
        "--trainer.fast_dev_run=1",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
        "--trainer.enable_progress_bar=false",
        f"--model.init_args.model={json.dumps(model)}",
        "--data.init_args.manifest=null",
        f"--data.init_args.phantoms={json.dumps(PHANTOMS)}",
        f"--data.init_args.data_dir={workdir / 'data'}",
        f"--data.init_args.cache_dir={workdir / 'cache'}",
        f'--data.init_args.preprocess={{"preset": "ct_rate", "spacing": [8, 8, 8], "spatial_size": {size}}}',
        "--data.init_args.batch_size=2",
        "--data.init_args.eval_batch_size=2",
        "--data.init_args.num_workers=0",
        "--data.init_args.vocab_size=300",
    ]
    cli = run_lightning_cli(args)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert set(cli.model.objectives) == set(objectives)
    # the model carries the projections its objectives train, and no objective head
    assert set(cli.model.model_config.levels) == set(levels_for(objectives))
    assert not any(k.startswith(("ssl_", "txt_mlm", "itm", "mm_mlm")) for k in cli.model.model.heads)

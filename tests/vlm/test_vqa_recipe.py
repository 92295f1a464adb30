"""recipes/vqa/phantoms.yaml trains a real Llama-architecture LM with LoRA, one step, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

RECIPE = Path(__file__).parents[2] / "recipes/vqa/phantoms.yaml"


@pytest.mark.slow
def test_vqa_recipe_trains_one_step_with_lora(tmp_path, monkeypatch):
    from velvet.cli.main import main
    from velvet.tasks.vlm import build_from_meta

    monkeypatch.chdir(tmp_path)
    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    data = recipe["data"]["init_args"]
    data["phantoms"].update(n_cases=12, n_val=2, n_test=2)
    data.update(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), batch_size=4, eval_batch_size=8)
    recipe["trainer"].update(max_epochs=1, max_steps=1, limit_val_batches=1)
    recipe["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "logs")
    recipe["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    recipe["model"]["init_args"]["lm_vocab_size"] = 400
    path = tmp_path / "vqa.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert main(["fit", "--config", str(path)]) == 0

    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    meta, state = ckpt["velvet"], ckpt["state_dict"]
    assert meta["kind"] == "vlm" and meta["lm_config"]["model_type"] == "llama"
    lora_b = {k: v for k, v in state.items() if "lora_B" in k}
    # LoRA B starts at zero: after one step every adapted projection has moved
    assert len(lora_b) == 4 * recipe["model"]["init_args"]["vlm"]["lm"]["config"]["num_hidden_layers"]
    assert all(float(v.abs().sum()) > 0 for v in lora_b.values())
    # the checkpoint alone rebuilds the model (encoder, LM, tokenizers, LoRA) with the same weights
    model = build_from_meta(meta)
    missing, unexpected = model.load_state_dict({k.removeprefix("vlm."): v for k, v in state.items()}, strict=True)
    assert not missing and not unexpected
    frozen = [k for k, p in model.named_parameters() if k.startswith("encoder.vision") and p.requires_grad]
    assert frozen == []

"""Run a volume-language recipe in miniature (a dozen phantoms, one step) inside a test folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RECIPES = Path(__file__).parents[2] / "recipes"


def fit_small(recipe_file: str, root: Path, *, n_test: int = 2) -> dict[str, Any]:
    """``velvet fit`` of ``recipes/<recipe_file>`` on 12 phantoms for one step; returns the recipe run.

    Data, cache, logs and the checkpoint (``root/ckpt/last.ckpt``) all go under ``root``. A recipe
    with an expert file gets one written from the phantoms' label maps (``root/expert.jsonl``).
    """
    from velvet.cli.main import main

    recipe = yaml.safe_load((RECIPES / recipe_file).read_text(encoding="utf-8"))
    data = recipe["data"]["init_args"]
    data["phantoms"].update(n_cases=12, n_val=2, n_test=n_test)
    data.update(data_dir=str(root / "data"), cache_dir=str(root / "cache"), batch_size=4, eval_batch_size=8)
    if data.get("expert"):
        from velvet.data.phantoms import PhantomConfig, generate_phantoms

        manifest = generate_phantoms(
            root / "data" / "phantoms", PhantomConfig(**data["phantoms"]), progress=False
        )
        assert (
            main(
                ["expert", "--manifest", str(manifest), "--from-labels", "--out", str(root / "expert.jsonl")]
            )
            == 0
        )
        data["expert"] = str(root / "expert.jsonl")
    recipe["trainer"].update(max_epochs=1, max_steps=1, limit_val_batches=1)
    recipe["trainer"]["logger"]["init_args"]["save_dir"] = str(root / "logs")
    recipe["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(root / "ckpt")
    recipe["model"]["init_args"]["lm_vocab_size"] = 400
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert main(["fit", "--config", str(path)]) == 0
    return recipe

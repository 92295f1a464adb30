"""recipes/report_gen/phantoms.yaml trains one step; `velvet evaluate report` scores what it generated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

RECIPE = Path(__file__).parents[2] / "recipes/report_gen/phantoms.yaml"

pytestmark = pytest.mark.slow


def test_report_recipe_and_protocol(tmp_path, monkeypatch):
    import velvet.evaluation.generation as gen
    from velvet.cli.main import main
    from velvet.data.manifest import read_manifest
    from velvet.data.phantoms.finding_f1 import finding_f1
    from velvet.data.reports import clean_report
    from velvet.evaluation.protocols import evaluate
    from velvet.metrics.nlg import nlg_metrics

    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    data = recipe["data"]["init_args"]
    data["phantoms"].update(n_cases=12, n_val=2, n_test=3)
    data.update(
        data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), batch_size=4, eval_batch_size=8
    )
    recipe["trainer"].update(max_epochs=1, max_steps=1, limit_val_batches=1)
    recipe["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "logs")
    recipe["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    recipe["model"]["init_args"]["lm_vocab_size"] = 400
    path = tmp_path / "report.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert main(["fit", "--config", str(path)]) == 0

    manifest = tmp_path / "data" / "phantoms" / "manifest.csv"
    records = read_manifest(manifest)
    refs = {r.id: clean_report(r.load_report(), source=r.id) for r in records.split("test")}
    others = [clean_report(r.load_report(), source=r.id) for r in records.split("train")]
    # "generate" another case's report for every test case: scores are far from perfect and known
    fake = {ident: others[i] for i, ident in enumerate(refs)}
    monkeypatch.setattr(gen, "_generate", lambda model, batch, g: [fake[i] for i in batch["ids"]])
    result = evaluate(
        "report", tmp_path / "ckpt" / "last.ckpt", manifest, out=tmp_path / "r.json", model_name="t"
    )
    want = nlg_metrics([fake[i] for i in refs], list(refs.values()))
    f1 = finding_f1([fake[i] for i in refs], list(refs.values()))
    assert result["n"] == len(refs)
    for key in ("bleu1", "bleu4", "rouge_l", "meteor", "cider"):
        assert result["metrics"][key] == pytest.approx(want[key])
    assert result["metrics"]["finding_micro_f1"] == pytest.approx(f1["micro_f1"], nan_ok=True)
    base = result["baseline_most_common_report"]["metrics"]
    assert 0 <= base["bleu1"] <= 1 and "finding_micro_f1" in base
    assert {"finding_f1", "bleu1", "rouge_l", "baseline_most_common_report"} <= set(
        result["metric_definitions"]
    )

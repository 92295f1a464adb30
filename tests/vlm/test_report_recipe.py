"""recipes/report_gen/phantoms.yaml trains one step; `velvet evaluate report` scores what it generated."""

from __future__ import annotations

import pytest

from .recipes import fit_small

pytestmark = pytest.mark.slow


def test_report_recipe_and_protocol(tmp_path, monkeypatch):
    import velvet.evaluation.generation as gen
    from velvet.data.manifest import read_manifest
    from velvet.data.phantoms.finding_f1 import finding_f1
    from velvet.data.reports import clean_report
    from velvet.evaluation.protocols import evaluate
    from velvet.metrics.nlg import nlg_metrics

    fit_small("report_gen/phantoms.yaml", tmp_path, n_test=3)

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

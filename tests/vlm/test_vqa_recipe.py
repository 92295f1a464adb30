"""recipes/vqa/phantoms.yaml trains a real Llama-architecture LM with LoRA (one step, through the CLI);
the checkpoint then runs `velvet evaluate vqa` and `velvet generate`, whose scores are recomputed here."""

from __future__ import annotations

import json

import pytest
import torch

from .recipes import fit_small

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa")
    return root, fit_small("vqa/phantoms.yaml", root)


def test_the_recipe_trains_lora_and_the_checkpoint_rebuilds(trained):
    from velvet.vlm.load import load_vlm

    root, recipe = trained
    ckpt = torch.load(root / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    meta, state = ckpt["velvet"], ckpt["state_dict"]
    assert meta["kind"] == "vlm" and meta["lm_config"]["model_type"] == "llama"
    lora_b = {k: v for k, v in state.items() if "lora_B" in k}
    # LoRA B starts at zero: after one step every adapted projection (q, k, v, o per layer) has moved
    assert len(lora_b) == 4 * recipe["model"]["init_args"]["vlm"]["lm"]["config"]["num_hidden_layers"]
    assert all(float(v.abs().sum()) > 0 for v in lora_b.values())
    model = load_vlm(root / "ckpt" / "last.ckpt")  # the checkpoint alone rebuilds the model
    own = model.state_dict()
    assert all(torch.equal(own[k.removeprefix("vlm.")], v) for k, v in state.items())
    assert not any(p.requires_grad for p in model.encoder.vision.parameters())


def test_evaluate_vqa_scores_what_it_generated(trained, monkeypatch):
    """Generation is replaced by the right answer for every other item: the accuracies, the
    per-type table and the NLG scores must equal values recomputed from the items."""
    import velvet.evaluation.generation as gen
    from velvet.data.vqa import read_vqa
    from velvet.evaluation.protocols import evaluate
    from velvet.metrics.nlg import nlg_metrics
    from velvet.vlm.prompts import closed_target

    root, _ = trained
    manifest = root / "data" / "phantoms" / "manifest.csv"
    items = {it.id: it for it in read_vqa(manifest.parent / "vqa.jsonl", manifest, split="test")}
    answers: dict[str, str] = {}

    def fake_generate(model, batch, generation):
        out = []
        for ident in batch["ids"]:
            it = items[ident]
            right = closed_target(it.choices, it.answer_index) if it.choices else it.answer
            answers[ident] = right if len(answers) % 2 == 0 else "unrelated words"
            out.append(answers[ident])
        return out

    monkeypatch.setattr(gen, "_generate", fake_generate)
    result = evaluate("vqa", root / "ckpt" / "last.ckpt", manifest, out=root / "vqa.json", model_name="tiny")
    closed = [i for i in items.values() if i.kind == "closed"]
    right = [answers[i.id] != "unrelated words" for i in closed]
    assert result["n"] == len(items) and result["metrics"]["n_closed"] == len(closed)
    assert result["metrics"]["accuracy_generated"] == pytest.approx(sum(right) / len(closed))
    assert result["metrics"]["unparsed_rate"] == pytest.approx(1 - sum(right) / len(closed))
    opened = [i for i in items.values() if i.kind == "open"]
    want = nlg_metrics([answers[i.id] for i in opened], [i.answer for i in opened])
    assert result["metrics"]["bleu1"] == pytest.approx(want["bleu1"]) and result["metrics"][
        "rouge_l"
    ] == pytest.approx(want["rouge_l"])
    for qt, row in result["per_question_type"].items():
        sel = [i for i in closed if i.question_type == qt]
        if sel:
            assert row["accuracy_generated"] == pytest.approx(
                sum(answers[i.id] != "unrelated words" for i in sel) / len(sel)
            )
    lines = (root / "vqa_predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(items) and {json.loads(x)["id"] for x in lines} == set(items)
    assert result["provenance"]["contract_fingerprint"] and result["metric_definitions"]["accuracy_loglik"]


def test_generate_cli_answers_and_writes_reports(trained, capsys):
    from velvet.cli.main import main
    from velvet.data.manifest import read_manifest

    root, _ = trained
    record = read_manifest(root / "data" / "phantoms" / "manifest.csv").records[0]
    ckpt = str(root / "ckpt" / "last.ckpt")
    args = ["generate", str(record.volume), "--model", ckpt, "--question", "Is the spleen enlarged?"]
    assert main([*args, "--choices", "Yes,No", "--json", "--max-new-tokens", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["option_loglik"]) == {"Yes", "No"} and all(v < 0 for v in out["option_loglik"].values())
    assert (
        main(["generate", str(record.volume), "--model", ckpt, "--max-new-tokens", "5", "--beams", "2"]) == 0
    )
    assert main(["generate", str(record.volume), "--model", ckpt, "--choices", "Yes,No"]) == 2


@pytest.mark.parametrize("merge", [False, True])
def test_export_folder_gives_the_same_outputs(trained, merge):
    """`velvet export` of a VLM checkpoint: adapters separate or merged, the same loss and generation."""
    from velvet.cli.main import main
    from velvet.vlm.load import load_vlm

    from .test_vlm_model import _batch

    root, _ = trained
    ckpt = root / "ckpt" / "last.ckpt"
    out = root / f"export_{merge}"
    assert main(["export", str(ckpt), str(out), *(["--merge-lora"] if merge else [])]) == 0
    meta = json.loads((out / "vlm.json").read_text(encoding="utf-8"))
    assert meta["lora"] == ("merged" if merge else "separate")
    a, b = load_vlm(ckpt), load_vlm(out)
    assert (meta["vlm_config"]["lora"] is None) == merge
    assert any("lora_" in k for k in b.state_dict()) != merge
    batch, _, _ = _batch(a)
    with torch.no_grad():
        torch.testing.assert_close(a(batch)["loss"], b(batch)["loss"], atol=1e-5, rtol=1e-5)

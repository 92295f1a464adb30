"""recipes/report_gen/phantoms_expert.yaml: the expert line of each case goes first in its prompt, in
training, `velvet evaluate report` and `velvet generate`; a model and data that disagree are refused."""

from __future__ import annotations

import json

import pytest

from .recipes import fit_small

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_expert")
    return root, fit_small("report_gen/phantoms_expert.yaml", root)


def _lines(root):
    return {
        r["case_id"]: r["text"]
        for r in map(json.loads, (root / "expert.jsonl").read_text(encoding="utf-8").splitlines())
    }


def test_training_batches_carry_each_case_s_line(trained):
    """The recipe's DataModule: every training prompt starts with its own case's line, and the saved
    model records that it reads one."""
    from velvet.vlm.collate import VLMCollator
    from velvet.vlm.datamodule import VLMDataModule
    from velvet.vlm.load import load_vlm

    root, recipe = trained
    model = load_vlm(root / "ckpt" / "last.ckpt")
    assert model.config.expert_prompt is True
    args = {k: v for k, v in recipe["data"]["init_args"].items() if k != "phantoms"}
    dm = VLMDataModule(str(root / "data" / "phantoms" / "manifest.csv"), **args)
    dm.prepare_data()
    dm.setup("fit")
    dm.set_collator(VLMCollator.for_model(model))
    lines = _lines(root)
    batch = next(iter(dm.train_dataloader()))
    assert batch["prompts"] and all(
        p.startswith(lines[c] + "\n") for p, c in zip(batch["prompts"], batch["case_ids"], strict=True)
    )


def test_evaluate_report_prompts_each_case_with_its_own_line(trained, monkeypatch, tmp_path):
    """Which line goes with which case: every prompt the protocol generates from starts with the
    expert line of the case it reports on (recomputed from the file), and the result names the file."""
    import velvet.evaluation.generation as gen
    from velvet.evaluation.protocols import evaluate
    from velvet.vlm.prompts import REPORT_INSTRUCTION

    root, _ = trained
    lines = _lines(root)
    seen: dict[str, str] = {}

    def fake_generate(model, batch, generation):
        seen.update(zip(batch["ids"], batch["prompts"], strict=True))
        return ["The liver is normal."] * len(batch["ids"])

    monkeypatch.setattr(gen, "_generate", fake_generate)
    manifest = root / "data" / "phantoms" / "manifest.csv"
    result = evaluate(
        "report", root / "ckpt" / "last.ckpt", manifest, settings={"expert": str(root / "expert.jsonl")}
    )
    assert len(seen) == result["n"] == 2
    for case, prompt in seen.items():
        assert prompt == f"{lines[case]}\n{REPORT_INSTRUCTION}\nReport:"
    assert len(set(seen.values())) == 2  # two cases, two different lines
    from velvet.utils.hashing import sha256_file

    want = {"file": "expert.jsonl", "source": "labels", "sha256": sha256_file(root / "expert.jsonl")}
    assert result["expert"] == want
    # the default is expert.jsonl beside the manifest: absent here, so a clear error
    with pytest.raises(Exception, match="expert file not found"):
        evaluate("report", root / "ckpt" / "last.ckpt", manifest)


def test_generate_needs_and_uses_the_expert_line(trained, capsys, monkeypatch):
    from velvet.cli.main import main
    from velvet.data.manifest import read_manifest

    root, _ = trained
    record = read_manifest(root / "data" / "phantoms" / "manifest.csv").records[0]
    args = [
        "generate",
        str(record.volume),
        "--model",
        str(root / "ckpt" / "last.ckpt"),
        "--max-new-tokens",
        "3",
    ]
    assert main(args) == 1
    assert "trained with expert lines" in capsys.readouterr().err
    line = _lines(root)[record.id]
    assert main([*args, "--expert", line, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["expert"] == line
    # --seg-model: the line the segmentation model gives this scan, as `velvet expert` writes it
    import torch

    from velvet.data.contract import PreprocessContract
    from velvet.models.segmentation import SegmentationConfig, SegmentationModel
    from velvet.vlm.expert import expert_text
    from velvet.vlm.expert_file import DEFAULT_ORGANS, expert_for_scan

    torch.manual_seed(0)
    vision = {"preset": "swin-tiny", "window_size": 4, "depths": [1, 1, 1, 1]}
    names = ("background", "liver", "kidney_left", "lesion")
    seg = SegmentationModel(
        SegmentationConfig(names, vision=vision, roi_size=(32, 32, 32), norm_name="batch")
    )
    contract = PreprocessContract(
        name="t", hu_window=(-200.0, 300.0), spacing=None, spatial_size=(32, 32, 32)
    )
    seg.save_pretrained(root / "seg", preprocess=contract)
    import velvet.segmentation.inference as inference

    real, overlaps = inference.segment_file, []
    monkeypatch.setattr(
        inference, "segment_file", lambda *a, **kw: overlaps.append(kw.get("overlap")) or real(*a, **kw)
    )
    assert main([*args, "--seg-model", str(root / "seg"), "--seg-overlap", "0", "--json"]) == 0
    assert overlaps == [0.0]  # the segmentation ran once, with the overlap asked for
    seg.preprocess = contract
    want = expert_text(
        expert_for_scan(seg.eval(), record.volume, overlap=0.0), DEFAULT_ORGANS
    )  # not patched: same
    assert json.loads(capsys.readouterr().out)["expert"] == want
    assert main([*args, "--seg-model", str(root / "seg"), "--expert", line]) == 2


def test_data_and_model_must_agree_on_the_expert_line(tmp_path):
    """Data with an expert file and a model without expert_prompt (or the reverse) stop before training."""
    from velvet.tasks.vlm import VLMTask

    class Data:
        expert = tmp_path / "expert.jsonl"

        def set_collator(self, collator):  # a VLMDataModule's hook
            pass

    class Trainer:
        datamodule = Data()

    for data_expert, prompt in ((tmp_path / "expert.jsonl", False), (None, True)):
        Data.expert = data_expert
        task = VLMTask(vlm={"expert_prompt": prompt})
        task._trainer = Trainer()
        with pytest.raises(ValueError, match="expert_prompt is"):
            task.configure_model()


@pytest.mark.parametrize("folder", ["vqa", "report_gen"])
def test_expert_recipes_differ_from_their_baselines_only_in_the_expert_line(folder):
    """The with / without comparison is fair: same data, encoder, LM, LoRA, optimiser and epochs."""
    import yaml

    from .recipes import RECIPES

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    base, expert = (
        flat(yaml.safe_load((RECIPES / folder / f"{name}.yaml").read_text(encoding="utf-8")))
        for name in ("phantoms", "phantoms_expert")
    )
    differ = {k for k in base.keys() | expert.keys() if base.get(k) != expert.get(k)}
    allowed = {
        "data.init_args.expert",
        "model.init_args.vlm.expert_prompt",
        "model.init_args.vlm.max_prompt_tokens",  # room for the line
        "model.init_args.vlm.lm.config.max_position_embeddings",  # rotary table length, no weights
        "trainer.logger.init_args.save_dir",
        "trainer.callbacks",  # the checkpoint folder
    }
    assert differ <= allowed, differ - allowed
    assert expert["model.init_args.vlm.expert_prompt"] is True and expert["data.init_args.expert"]

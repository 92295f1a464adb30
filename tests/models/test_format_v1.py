"""Format v1 (velvet 0.1, objective heads inside the model) still loads, with identical embeddings.

``tests/fixtures/velvet_v1_tiny`` was written by velvet 0.1 before the model/objective split, with
reference outputs computed then (``velvet_v1_tiny_reference.safetensors``). "Identical" means equal
to float32 round-off: the outputs are bit-equal on the CPU that wrote the references, while another
CPU's kernels sum in another order (measured up to 2e-6 on values up to 3); a weight loaded into
the wrong place or dropped changes them by orders of magnitude more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import velvet
from velvet.models.legacy import V1_OBJECTIVE_HEADS
from velvet.models.pretrained import FORMAT_VERSION, from_pretrained

FIXTURES = Path(__file__).parents[1] / "fixtures"
V1 = FIXTURES / "velvet_v1_tiny"


def _same(value: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"{what}: {m}")


@pytest.fixture(scope="module")
def reference():
    return load_file(str(FIXTURES / "velvet_v1_tiny_reference.safetensors"))


@pytest.fixture(scope="module")
def reports():
    return json.loads((FIXTURES / "velvet_v1_tiny_reports.json").read_text(encoding="utf-8"))


def _outputs(model, image, reports):
    with torch.no_grad():
        img = model.encode_image(image)
        txt = model.encode_text(model.tokenizer(reports))
        return {
            "image_embedding": img["embedding"],
            "text_embedding": txt["embedding"],
            "image_map_0": img["maps"][0],
            "text_hidden": txt["hidden"],
            "image_sentence": model.image_regions(img["maps"], "sentence"),
            "image_word": model.image_regions(img["maps"], "word"),
            "visual_tokens": model.visual_tokens(img["maps"]),
        }


def test_the_fixture_is_format_v1_with_objective_heads():
    config = json.loads((V1 / "config.json").read_text())
    assert config["format_version"] == 1 and "objectives" in config["model"]
    from safetensors import safe_open

    with safe_open(str(V1 / "model.safetensors"), "pt") as f:
        heads = {k.split(".")[1] for k in f.keys() if k.startswith("heads.")}  # noqa: SIM118 (not a dict)
    assert set(V1_OBJECTIVE_HEADS) <= heads  # the file really holds what v2 must drop


def test_v1_directory_loads_with_identical_outputs(reference, reports):
    model = from_pretrained(V1)
    assert not set(V1_OBJECTIVE_HEADS) & set(model.heads)
    assert set(model.config.levels) == {"report", "sentence", "word"} and model.has_fusion
    out = _outputs(model, reference["image"], reports)
    for key, value in out.items():
        _same(value, reference[key], key)


def test_v1_encoders_load_alone(reference):
    vision = from_pretrained(V1, kind="vision")
    with torch.no_grad():
        _same(vision(reference["image"])["maps"][0], reference["image_map_0"], "image_map_0")


def test_resaved_as_v2_loads_with_identical_outputs(tmp_path, reference, reports):
    model = from_pretrained(V1)
    model.save_pretrained(tmp_path / "v2")
    config = json.loads((tmp_path / "v2" / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION == 2
    assert "objectives" not in config["model"] and config["model"]["levels"] == ["report", "sentence", "word"]
    again = velvet.from_pretrained(tmp_path / "v2")
    out = _outputs(again, reference["image"], reports)
    for key, value in out.items():
        _same(value, reference[key], key)


def test_create_model_builds_encoders_only():
    model = velvet.create_model("velvet-tiny")
    assert isinstance(model, velvet.VelvetModel)
    assert set(model.heads) == {
        "image_report",
        "text_report",
        "image_sentence",
        "text_sentence",
        "image_word",
        "text_word",
        "visual_adapter",
    }
    small = velvet.create_model("velvet-tiny", levels=["report"], text={"num_fusion_layers": 0})
    assert set(small.heads) == {"image_report", "text_report"} and not small.has_fusion
    assert "velvet-tiny" in velvet.list_models()


def test_v1_fields_in_a_new_config_get_a_clear_error():
    from velvet.models.config import VelvetConfig

    with pytest.raises(ValueError, match="moved out of the architecture"):
        VelvetConfig.from_dict({"preset": "velvet-tiny", "objectives": ["itc_report"]})

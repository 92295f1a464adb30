"""save_pretrained / from_pretrained: round trips, encoders alone, strict diffs, safe files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from velvet.models.pretrained import from_pretrained, read_pretrained_config, save_pretrained
from velvet.models.velvet import VelvetModel
from velvet.models.weights import WeightsMismatchError, read_weights


def _batch(model, reports, n=3):
    batch = dict(model.tokenizer(reports[:n]))
    batch["image"] = torch.rand(n, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    return batch


def test_round_trip_gives_identical_embeddings(tiny_model, reports, tmp_path):
    out = tiny_model.save_pretrained(tmp_path / "m", metadata={"run": "test"})
    loaded = VelvetModel.from_pretrained(out)
    assert not loaded.training
    batch = _batch(tiny_model, reports)
    with torch.no_grad():
        a, b = tiny_model, loaded
        assert torch.equal(a.encode_image(batch["image"])["embedding"], b.encode_image(batch["image"])["embedding"])
        assert torch.equal(a.encode_text(batch)["embedding"], b.encode_text(batch)["embedding"])
    assert loaded.preprocess == tiny_model.preprocess
    assert loaded.tokenizer.config() == tiny_model.tokenizer.config()
    assert loaded.tokenizer.vocab_size == tiny_model.tokenizer.vocab_size
    config = read_pretrained_config(out)
    assert config["kind"] == "velvet" and config["metadata"] == {"run": "test"}
    assert config["model"]["vision"]["arch"] == "swin"  # resolved, not a preset reference


def test_encoders_alone_and_out_of_a_whole_model(tiny_model, reports, tmp_path):
    whole = tiny_model.save_pretrained(tmp_path / "whole")
    x = torch.rand(2, 1, 32, 32, 32)
    batch = _batch(tiny_model, reports, 2)
    inputs = [batch[k] for k in ("input_ids", "token_type_ids", "attention_mask", "sentence_ids", "sentence_token_mask")]
    with torch.no_grad():
        ref_pooled = tiny_model.vision(x)["pooled"]
        ref_text = tiny_model.text.forward_text(*inputs, output_all=True)["last_hidden_state"]
        vision = from_pretrained(whole, kind="vision")
        torch.testing.assert_close(vision(x)["pooled"], ref_pooled, rtol=0, atol=0)
        text = from_pretrained(whole, kind="text")
        torch.testing.assert_close(text.forward_text(*inputs, output_all=True)["last_hidden_state"], ref_text, rtol=0, atol=0)
        # and each encoder saved on its own
        alone = from_pretrained(save_pretrained(tiny_model.vision, tmp_path / "vision", preprocess=tiny_model.preprocess))
        torch.testing.assert_close(alone(x)["pooled"], ref_pooled, rtol=0, atol=0)
        assert alone.preprocess == tiny_model.preprocess
        text_alone = from_pretrained(save_pretrained(tiny_model.text, tmp_path / "text", tokenizer=tiny_model.tokenizer))
        torch.testing.assert_close(text_alone.forward_text(*inputs, output_all=True)["last_hidden_state"], ref_text, rtol=0, atol=0)
        assert text_alone.tokenizer.vocab_size == tiny_model.tokenizer.vocab_size
    with pytest.raises(ValueError, match="holds a vision model"):
        from_pretrained(tmp_path / "vision", kind="text")
    with pytest.raises(TypeError, match="not a VelvetModel"):
        VelvetModel.from_pretrained(tmp_path / "vision")


def test_strict_loading_reports_a_readable_diff(tiny_model, tmp_path):
    out = tiny_model.save_pretrained(tmp_path / "m")
    weights = load_file(str(out / "model.safetensors"))
    weights.pop(next(k for k in weights if k.startswith("heads.")))
    key = "text.embeddings.word_embeddings.weight"
    weights[key] = torch.zeros(7, weights[key].shape[1])
    weights["extra.weight"] = torch.zeros(1)
    save_file(weights, str(out / "model.safetensors"))
    with pytest.raises(WeightsMismatchError) as err:
        from_pretrained(out, verify=False)  # the weights were rewritten on purpose
    message = str(err.value)
    assert "missing from the weights (1)" in message and "unexpected in the weights (1):" in message
    assert "extra.weight" in message and f"{key}: (7, " in message
    assert err.value.diff.mismatched[key][0][0] == 7
    loose = from_pretrained(out, strict=False, verify=False)  # loads what fits, skips the rest
    for name, value in tiny_model.vision.state_dict().items():
        assert torch.equal(loose.vision.state_dict()[name], value), name
    assert loose.text.embeddings.word_embeddings.weight.shape[0] == tiny_model.tokenizer.vocab_size


def test_refuses_to_replace_an_unrelated_folder(tiny_model, tmp_path):
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to replace"):
        tiny_model.save_pretrained(folder)
    assert (folder / "notes.txt").read_text() == "keep me"
    out = tiny_model.save_pretrained(tmp_path / "m")
    tiny_model.save_pretrained(out)  # a previous export is replaced


def test_bad_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such pretrained directory"):
        from_pretrained(tmp_path / "missing")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a velvet pretrained config"):
        from_pretrained(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text(json.dumps({"format": "velvet-pretrained", "format_version": 99, "kind": "velvet"}))
    with pytest.raises(ValueError, match="newer"):
        from_pretrained(tmp_path / "d")


class _Payload:
    """An object whose unpickling would need code (a class from this module)."""


def test_pickles_load_weights_only(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, good)
    assert torch.equal(read_weights(good)["state_dict"]["w"], torch.ones(2))
    bad = tmp_path / "bad.bin"
    torch.save({"w": torch.ones(2), "obj": _Payload()}, bad)
    with pytest.raises(ValueError, match="refused to load"):
        read_weights(bad)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_weights(broken)
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown weight format"):
        read_weights(tmp_path / "w.h5")
    trunc = tmp_path / "t.safetensors"
    save_file({"w": torch.ones(4)}, str(trunc))
    trunc.write_bytes(trunc.read_bytes()[:-3])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_weights(trunc)

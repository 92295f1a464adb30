"""Pretrained directories record the sha256 of their weights; from_pretrained checks it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from velvet.models.pretrained import (
    PretrainedIntegrityError,
    from_pretrained,
    read_pretrained_config,
    verify_pretrained_files,
)
from velvet.models.velvet import VelvetModel
from velvet.utils.hashing import sha256_file

V1 = Path(__file__).parents[1] / "fixtures" / "velvet_v1_tiny"


def _flip_a_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_saved_directory_records_the_weights_digest(tiny_model, tmp_path):
    out = tiny_model.save_pretrained(tmp_path / "m")
    files = read_pretrained_config(out)["files"]
    weights = out / "model.safetensors"
    assert files == {"model.safetensors": {"sha256": sha256_file(weights), "size": weights.stat().st_size}}
    assert verify_pretrained_files(out, read_pretrained_config(out)) == 1


def test_a_flipped_weight_byte_is_a_clear_error(tiny_model, tmp_path):
    out = tiny_model.save_pretrained(tmp_path / "m")
    weights = out / "model.safetensors"
    _flip_a_byte(weights, weights.stat().st_size - 3)  # inside the last tensor's data: still loads
    with pytest.raises(PretrainedIntegrityError, match=r"model\.safetensors: sha256 [0-9a-f]{64} does not match"):
        from_pretrained(out)
    with pytest.raises(ValueError, match="model.safetensors"):  # a ValueError for callers that catch those
        VelvetModel.from_pretrained(out)
    # verify=False trusts the files: the damaged model loads (and differs from the saved one)
    loaded = from_pretrained(out, verify=False)
    assert any(not torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), tiny_model.state_dict().values(), strict=True))


def test_a_truncated_or_missing_weights_file_is_named(tiny_model, tmp_path):
    out = tiny_model.save_pretrained(tmp_path / "m")
    config = read_pretrained_config(out)
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(PretrainedIntegrityError, match=r"model\.safetensors: \d+ bytes, config\.json records \d+"):
        verify_pretrained_files(out, config)
    weights.unlink()
    with pytest.raises(PretrainedIntegrityError, match=r"model\.safetensors: missing"):
        verify_pretrained_files(out, config)


def test_a_bad_files_entry_cannot_point_outside(tiny_model, tmp_path):
    out = tiny_model.save_pretrained(tmp_path / "m")
    config = read_pretrained_config(out)
    config["files"] = {"../elsewhere.bin": {"sha256": "0" * 64}}
    with pytest.raises(ValueError, match="bad 'files' entry"):
        verify_pretrained_files(out, config)


def test_directories_without_digests_still_load(tiny_model, tmp_path, caplog):
    # the v1 fixture (velvet 0.1) has no digests
    assert "files" not in json.loads((V1 / "config.json").read_text())
    with caplog.at_level(logging.DEBUG, logger="velvet.models.pretrained"):
        from_pretrained(V1)
    assert "no file digests" in caplog.text
    # nor a v2 directory written before the field existed
    out = tiny_model.save_pretrained(tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    del config["files"]
    (out / "config.json").write_text(json.dumps(config))
    older = tmp_path / "older"
    shutil.copytree(out, older)
    assert isinstance(from_pretrained(older), VelvetModel)

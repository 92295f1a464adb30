"""The model that ships inside the package: loads offline, verified, and says what it is."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

import velvet
from velvet.data.contract import PreprocessContract
from velvet.hub import download as download_module
from velvet.hub.download import ChecksumError, packaged_folder
from velvet.hub.registry import get_pretrained


def test_loads_offline_with_every_alignment_level(monkeypatch):
    monkeypatch.setenv("VELVET_OFFLINE", "1")
    model = velvet.load_pretrained("velvet-tiny.phantoms")
    assert set(model.config.levels) == {"report", "sentence", "word"}
    assert model.tokenizer is not None
    entry = get_pretrained("velvet-tiny.phantoms")
    assert entry.available and entry.packaged and entry.source.startswith("package://")
    assert "SYNTHETIC" in entry.description and "clinical" in entry.description
    # the registry's contract is the one saved with the weights
    registered = PreprocessContract.resolve(dict(entry.preprocess))
    assert registered.fingerprint() == model.preprocess.fingerprint()


def test_a_changed_packaged_file_is_refused_and_kept(tmp_path, monkeypatch):
    entry = get_pretrained("velvet-tiny.phantoms")
    copy = tmp_path / "weights" / entry.name
    shutil.copytree(packaged_folder(entry), copy)
    monkeypatch.setattr(download_module, "__file__", str(tmp_path / "download.py"))
    assert packaged_folder(entry) == copy
    (copy / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(ChecksumError, match="reinstall velvet") as info:
        packaged_folder(entry)
    assert "was deleted" not in str(info.value) and (copy / "model.safetensors").exists()
    (copy / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        packaged_folder(entry)


def test_one_source_only():
    entry = get_pretrained("velvet-tiny.phantoms")
    with pytest.raises(ValueError, match="one source"):
        dataclasses.replace(entry, base_url="https://example.org")

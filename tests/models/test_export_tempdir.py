"""``velvet export`` leaves no temporary tokenizer folder behind, whether it succeeds or fails."""

from __future__ import annotations

import tempfile

import pytest
import torch

from velvet.cli.main import main
from velvet.models.velvet import VelvetModel


@pytest.fixture
def checkpoint(tiny_model, tmp_path):
    """A ``velvet fit``-like checkpoint of the tiny model that carries its vocabulary."""
    from velvet.tasks.pretrain import _tokenizer_files

    tokenizer = tiny_model.tokenizer
    path = tmp_path / "run.ckpt"
    torch.save(
        {
            "epoch": 1,
            "global_step": 10,
            "state_dict": {f"pretrainer.model.{k}": v for k, v in tiny_model.state_dict().items()},
            "velvet": {
                "format_version": 2,
                "model_config": tiny_model.config.to_dict(),
                "tokenizer": {"config": tokenizer.config()},
                "tokenizer_files": _tokenizer_files(tokenizer),
                "tokenizer_dir": str(tmp_path / "gone"),
                "preprocess": tiny_model.preprocess.to_dict(),
            },
        },
        path,
    )
    return path


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The process temp folder, for this test alone (other tests may export at the same time)."""
    folder = tmp_path / "systmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _leftovers(folder):
    return sorted(p.name for p in folder.glob("velvet-tokenizer-*"))


def test_export_removes_its_tokenizer_folder(checkpoint, tiny_model, private_tmp, tmp_path, capsys, monkeypatch):
    from velvet.data.tokenization import TriBertTokenizer

    used = []
    load = TriBertTokenizer.from_pretrained.__func__

    def spy(cls, path, **options):
        used.append(str(path))
        return load(cls, path, **options)

    monkeypatch.setattr(TriBertTokenizer, "from_pretrained", classmethod(spy))
    assert _leftovers(private_tmp) == []
    for i in range(2):
        assert main(["export", str(checkpoint), str(tmp_path / f"model{i}")]) == 0
    assert "exported" in capsys.readouterr().out
    # the vocabulary really went through a temporary folder there, which is gone again
    assert len(used) == 2 and all(p.startswith(str(private_tmp / "velvet-tokenizer-")) for p in used)
    assert _leftovers(private_tmp) == []
    # and the exported model still has the run's tokenizer
    monkeypatch.undo()
    model = VelvetModel.from_pretrained(tmp_path / "model1")
    reports = ["No pleural effusion. A 12 mm nodule in the right upper lobe."]
    assert torch.equal(model.tokenizer(reports)["input_ids"], tiny_model.tokenizer(reports)["input_ids"])


def test_failed_export_removes_its_tokenizer_folder(checkpoint, private_tmp, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("not a model")  # export refuses to replace this folder
    assert main(["export", str(checkpoint), str(taken)]) == 1
    assert "refusing to replace" in capsys.readouterr().err
    assert _leftovers(private_tmp) == []

"""The DataModule end to end on a small generated phantom set."""

from __future__ import annotations

import pytest
import torch

from velvet.cli.main import main
from velvet.data.datamodule import VelvetDataModule
from velvet.data.errors import DataError
from velvet.data.manifest import read_manifest

PHANTOMS = {"n_cases": 16, "n_val": 4, "n_test": 4, "shape": [40, 40, 24], "spacing": [10, 10, 12]}
PREPROCESS = {"preset": "ct_rate", "spacing": [12, 12, 12], "spatial_size": [16, 16, 16]}


def _dm(tmp_path, **kw):
    args = dict(
        phantoms=PHANTOMS,
        data_dir=str(tmp_path / "data"),
        cache_dir=str(tmp_path / "cache"),
        preprocess=PREPROCESS,
        batch_size=4,
        num_workers=0,
        vocab_size=300,
    )
    args.update(kw)
    return VelvetDataModule(**args)


def test_prepare_setup_and_batches(tmp_path):
    dm = _dm(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 8, "val": 4, "test": 4}
    assert len(dm.label_names) > 5
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 16, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["labels"].shape == (4, len(dm.label_names))
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"][:, 0].eq(dm.tokenizer.cls_token_id).all()
    assert batch["num_sentences"].min() >= 1
    val = list(dm.val_dataloader())
    assert sum(len(b["ids"]) for b in val) == 4  # no drop_last at evaluation
    assert len(list(dm.train_dataloader())) == 2  # 8 train cases, batch 4, drop_last

    # a second run reuses everything: same tokenizer folder, nothing re-created in the cache
    tokenizer_dirs = sorted(p.name for p in (tmp_path / "data").glob("tokenizer-*"))
    again = _dm(tmp_path)
    again.prepare_data()
    assert sorted(p.name for p in (tmp_path / "data").glob("tokenizer-*")) == tokenizer_dirs
    assert again.cache.warm(read_manifest(dm.manifest_path).records, progress=False).created == 0


def test_bad_case_raises_or_is_skipped(tmp_path):
    dm = _dm(tmp_path)
    dm.prepare_data()  # generate the phantoms, then break one training volume
    record = read_manifest(dm.manifest_path).split("train")[0]
    with open(record.volume, "wb") as fh:
        fh.write(b"\x1f\x8b truncated")
    with pytest.raises(DataError, match="1 case\\(s\\) cannot be used") as info:
        _dm(tmp_path).prepare_data()
    assert record.volume in str(info.value)
    skipping = _dm(tmp_path, on_error="skip")
    skipping.prepare_data()
    skipping.setup("fit")
    assert len(skipping.datasets["train"]) == 7
    assert record.id not in [r.id for r in skipping.datasets["train"].records]


def test_needs_manifest_or_phantoms():
    with pytest.raises(ValueError, match="give a manifest"):
        VelvetDataModule()


def test_data_check_command(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "data:\n  class_path: velvet.data.datamodule.VelvetDataModule\n  init_args:\n"
        f"    phantoms: {PHANTOMS}\n    data_dir: {tmp_path / 'data'}\n    cache_dir: {tmp_path / 'cache'}\n"
        f"    preprocess: {PREPROCESS}\n    batch_size: 4\n    num_workers: 0\n    vocab_size: 300\n"
    )
    assert main(["data", "check", "--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "image                (4, 1, 16, 16, 16) float32" in out
    assert "train: 2 batches, 8 samples" in out


def test_augmentation_applies_to_the_training_split_only(tmp_path):
    flip = [{"class_path": "RandFlipd", "init_args": {"spatial_axis": [0], "prob": 1.0}}]
    plain, augmented = _dm(tmp_path), _dm(tmp_path, augment=flip)
    for dm in (plain, augmented):
        dm.prepare_data()
        dm.setup("fit")
    for split, flipped in (("train", True), ("val", False), ("test", False)):
        a, b = plain.datasets[split][0], augmented.datasets[split][0]
        expected = a["image"].flip(1) if flipped else a["image"]
        assert torch.equal(b["image"], expected), split


def test_bad_augmentation_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="no such transform"):
        _dm(tmp_path, augment=[{"class_path": "RandFlop"}])
    assert not (tmp_path / "data").exists()


def _break_reports(tmp_path, dm):
    """Give three training cases a bad report: punctuation only, a non-UTF-8 file, an empty file."""
    import csv

    with open(dm.manifest_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    train = [row for row in rows if row["split"] == "train"]
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "latin1.txt").write_bytes("Kein Befund, Lungenrundherd 4 mm, \xe4\xf6\xfc.".encode("latin-1"))
    (reports / "empty.txt").write_bytes(b"")
    train[0]["report"] = "... -- !!"
    train[1]["report"], train[1]["report_file"] = "", str(reports / "latin1.txt")
    train[2]["report"], train[2]["report_file"] = "", str(reports / "empty.txt")
    for row in rows:
        row.setdefault("report_file", "")
    with open(dm.manifest_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return [row["id"] for row in train[:3]], reports


def test_bad_reports_fail_before_training(tmp_path):
    dm = _dm(tmp_path, warm_cache=False)
    dm.prepare_data()  # generates the phantoms
    bad_ids, reports = _break_reports(tmp_path, dm)
    with pytest.raises(DataError, match="3 report\\(s\\) cannot be used") as info:
        _dm(tmp_path).prepare_data()
    message = str(info.value)
    for case_id in bad_ids:
        assert repr(case_id) in message
    assert str(reports / "latin1.txt") in message and "not UTF-8" in message
    assert str(reports / "empty.txt") in message and "empty" in message
    assert "no letter or digit" in message
    with pytest.raises(DataError, match="3 report\\(s\\)"):
        _dm(tmp_path).setup("fit")  # every rank checks too, not only the one that prepares


def test_bad_reports_are_skipped_and_counted(tmp_path, caplog):
    dm = _dm(tmp_path, warm_cache=False)
    dm.prepare_data()
    bad_ids, _ = _break_reports(tmp_path, dm)
    skipping = _dm(tmp_path, on_error="skip")
    with caplog.at_level("WARNING"):
        skipping.prepare_data()  # trains the vocabulary on the valid reports only: no decode error
    skipping.setup("fit")
    assert sorted(skipping.bad_reports) == sorted(bad_ids)
    assert len(skipping.datasets["train"]) == 5
    assert not set(bad_ids) & {r.id for r in skipping.datasets["train"].records}
    assert "latin1.txt" in caplog.text and repr(bad_ids[0]) in caplog.text
    batches = list(skipping.train_dataloader())
    assert len(batches) == 1 and not set(bad_ids) & set(batches[0]["ids"])


def test_data_check_counts_bad_reports(tmp_path, capsys):
    dm = _dm(tmp_path, warm_cache=False)
    dm.prepare_data()
    _break_reports(tmp_path, dm)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "data:\n  class_path: velvet.data.datamodule.VelvetDataModule\n  init_args:\n"
        f"    phantoms: {PHANTOMS}\n    data_dir: {tmp_path / 'data'}\n    cache_dir: {tmp_path / 'cache'}\n"
        f"    preprocess: {PREPROCESS}\n    batch_size: 4\n    num_workers: 0\n    vocab_size: 300\n"
        "    on_error: skip\n"
    )
    assert main(["data", "check", "--config", str(recipe)]) == 0
    assert "reports: 3 bad" in capsys.readouterr().out

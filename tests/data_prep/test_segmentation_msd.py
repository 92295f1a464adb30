"""MSD converter on fabricated decathlon tasks: Task09-style, MONAI's BTCV dataset_0.json, a 4-D task."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from data_prep import msd
from tests.data_prep.seg_helpers import classes, ct, junk, pair, skipped, splits, write_nifti
from velvet.data.errors import DataError
from velvet.data.manifest import read_manifest


def _spleen_task(root: Path) -> Path:
    """Task09_Spleen in miniature: 5 listed training cases (one float32 label), 1 test image, junk."""
    task = root / "Task09_Spleen"
    training = []
    for n in (1, 2, 3, 6, 8):
        pair(task / f"imagesTr/spleen_{n}.nii.gz", task / f"labelsTr/spleen_{n}.nii.gz", 1, seed=n,
             dtype=np.float32 if n == 2 else np.uint8)  # fmt: skip
        training.append({"image": f"./imagesTr/spleen_{n}.nii.gz", "label": f"./labelsTr/spleen_{n}.nii.gz"})
    training.append({"image": "./imagesTr/spleen_9.nii.gz", "label": "./labelsTr/spleen_9.nii.gz"})  # absent
    training.append({"image": "./imagesTr/._spleen_1.nii.gz", "label": "./labelsTr/._spleen_1.nii.gz"})
    write_nifti(task / "imagesTs/spleen_15.nii.gz", ct(15))
    junk(task / "imagesTr/._spleen_1.nii.gz")
    junk(task / "labelsTr/._spleen_1.nii.gz")
    junk(task / "._dataset.json")
    write_nifti(task / "imagesTr/spleen_44.nii.gz", ct(44))  # on disk, not listed
    meta = {
        "name": "Spleen",
        "description": "Spleen Segmentation",
        "licence": "CC-BY-SA 4.0",
        "relase": "1.0 06/08/2018",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": 41,
        "numTest": 20,
        "training": training,
        "test": ["./imagesTs/spleen_15.nii.gz"],
    }
    (task / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return task


def test_spleen_task_seeded_split_skips_and_classes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    task = _spleen_task(tmp_path)
    with caplog.at_level(logging.INFO, logger="data_prep"):
        manifest = msd.convert_msd(task, tmp_path / "out", val_fraction=0.2, seed=3)
    out = tmp_path / "out"
    got = splits(manifest)
    assert set(got) == {"spleen_1", "spleen_2", "spleen_3", "spleen_6", "spleen_8"}
    assert sorted(got.values()) == ["train"] * 4 + ["val"]  # round(5 * 0.2) = 1 case held out
    records = {r.id: r for r in read_manifest(manifest, require_report=False)}
    assert Path(records["spleen_2"].label_map).resolve() == (task / "labelsTr/spleen_2.nii.gz").resolve()
    assert Path(records["spleen_2"].volume).resolve() == (task / "imagesTr/spleen_2.nii.gz").resolve()
    assert classes(out) == {"0": "background", "1": "spleen"}
    rows = skipped(out)
    by_item = {Path(r["item"]).name: r["reason"] for r in rows}
    assert set(by_item) == {"spleen_15.nii.gz", "spleen_9.nii.gz"}  # no ._ junk anywhere
    assert "unlabelled test image" in by_item["spleen_15.nii.gz"]
    assert by_item["spleen_9.nii.gz"] == "image file missing"
    assert re.search(r"note\s+1: NIfTI files beside the listed images but not in the JSON", caplog.text)
    assert re.search(r"note\s+1: macOS \._\* junk entries in the JSON \(ignored\)", caplog.text)
    # the same seed gives the same split; the manifest header has no report column
    again = msd.convert_msd(task, tmp_path / "again", val_fraction=0.2, seed=3)
    assert splits(again) == got
    assert manifest.read_text(encoding="utf-8").splitlines()[0] == "id,volume,split,label_map"


def test_monai_btcv_datalist_uses_its_validation_list(tmp_path: Path) -> None:
    folder = tmp_path / "btcv"
    train_ids = ["0001", "0002", "0003", "0021"]
    val_ids = ["0035", "0036"]
    for i in train_ids + val_ids:
        pair(folder / f"imagesTr/img{i}.nii.gz", folder / f"labelsTr/label{i}.nii.gz", 13, seed=int(i))
    write_nifti(folder / "imagesTs/img0061.nii.gz", ct(61))
    datalist = {
        "description": "btcv yucheng",
        "labels": {
            "0": "background",
            "1": "spleen",
            "2": "rkid",
            "3": "lkid",
            "4": "gall",
            "5": "eso",
            "6": "liver",
            "7": "sto",
            "8": "aorta",
            "9": "IVC",
            "10": "veins",
            "11": "pancreas",
            "12": "rad",
            "13": "lad",
        },  # fmt: skip
        "licence": "yt",
        "modality": {"0": "CT"},
        "name": "btcv",
        "numTest": 20,
        "numTraining": 80,
        "reference": "Vanderbilt University",
        "release": "1.0 06/08/2015",
        "tensorImageSize": "3D",
        "training": [
            {"image": f"imagesTr/img{i}.nii.gz", "label": f"labelsTr/label{i}.nii.gz"} for i in train_ids
        ],
        "validation": [
            {"image": f"imagesTr/img{i}.nii.gz", "label": f"labelsTr/label{i}.nii.gz"} for i in val_ids
        ],
        "test": ["imagesTs/img0061.nii.gz"],
    }
    json_path = folder / "dataset_0.json"
    json_path.write_text(json.dumps(datalist), encoding="utf-8")
    for root in (json_path, folder):  # the file itself, or the folder with its only JSON
        out = tmp_path / f"out_{root.name}"
        manifest = msd.convert_msd(root, out, val_fraction=0.5)
        assert splits(manifest) == {
            **{f"img{i}": "train" for i in train_ids},
            **{f"img{i}": "val" for i in val_ids},
        }
        assert classes(out)["3"] == "lkid" and len(classes(out)) == 14
        assert [Path(r["item"]).name for r in skipped(out)] == ["img0061.nii.gz"]


def test_four_d_image_skipped_and_non_ct_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    task = tmp_path / "Task01_BrainTumour"
    write_nifti(task / "imagesTr/BRATS_001.nii.gz", np.zeros((8, 8, 6, 4), np.float32))
    write_nifti(task / "labelsTr/BRATS_001.nii.gz", np.zeros((8, 8, 6), np.uint8))
    pair(task / "imagesTr/BRATS_002.nii.gz", task / "labelsTr/BRATS_002.nii.gz", 3)
    meta = {
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "training": [
            {"image": f"./imagesTr/BRATS_00{n}.nii.gz", "label": f"./labelsTr/BRATS_00{n}.nii.gz"}
            for n in (1, 2)
        ],
        "test": [],
    }
    (task / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="data_prep"):
        manifest = msd.convert_msd(task, tmp_path / "out")
    assert "is not CT" in caplog.text and "FLAIR" in caplog.text
    assert splits(manifest).keys() == {"BRATS_002"}
    (row,) = skipped(tmp_path / "out")
    assert row["item"].endswith("BRATS_001.nii.gz")
    assert "4-D multi-channel" in row["reason"] and "(8, 8, 6, 4)" in row["detail"]


def test_label_off_grid_and_bad_labels(tmp_path: Path) -> None:
    task = tmp_path / "Task09_Spleen"
    pair(task / "imagesTr/spleen_1.nii.gz", task / "labelsTr/spleen_1.nii.gz", 1)
    write_nifti(task / "imagesTr/spleen_2.nii.gz", ct(2))
    shifted = np.diag([0.8, 0.8, 2.5, 1.0])  # origin 0 instead of (-20, 10, -100)
    write_nifti(task / "labelsTr/spleen_2.nii.gz", np.zeros((8, 8, 6), np.uint8), shifted)
    entries = [
        {"image": f"imagesTr/spleen_{n}.nii.gz", "label": f"labelsTr/spleen_{n}.nii.gz"} for n in (1, 2)
    ]
    meta = {"labels": {"0": "background", "1": "spleen"}, "training": entries}
    (task / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    manifest = msd.convert_msd(task, tmp_path / "out")
    assert splits(manifest).keys() == {"spleen_1"}
    (row,) = skipped(tmp_path / "out")
    assert row["reason"] == "label map does not lie on the image's grid"
    assert "origin differs by 20.0 mm in x" in row["detail"]

    meta["labels"] = {"0": "background", "2": "spleen"}
    (task / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DataError, match="0..K-1"):
        msd.convert_msd(task, tmp_path / "out2")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = _spleen_task(tmp_path)
    out = tmp_path / "out"
    (out / "manifest.csv").parent.mkdir()
    (out / "manifest.csv").write_text("stale", encoding="utf-8")
    assert msd.main([str(task), "--out", str(out), "--val-fraction", "0.4", "--test-fraction", "0.2"]) == 0
    assert sorted(splits(out / "manifest.csv").values()) == ["test", "train", "train", "val", "val"]
    assert msd.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err

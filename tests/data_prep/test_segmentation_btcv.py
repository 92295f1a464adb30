"""BTCV converter on a fabricated RawData tree (datasets.md sections 3 and 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_prep import btcv
from tests.data_prep.seg_helpers import classes, ct, junk, pair, skipped, splits, write_nifti

EXPECTED_CLASSES = {
    "0": "background",
    "1": "spleen",
    "2": "kidney_right",
    "3": "kidney_left",
    "4": "gallbladder",
    "5": "esophagus",
    "6": "liver",
    "7": "stomach",
    "8": "aorta",
    "9": "inferior_vena_cava",
    "10": "portal_and_splenic_veins",
    "11": "pancreas",
    "12": "adrenal_gland_right",
    "13": "adrenal_gland_left",
}
LABELLED = ["0001", "0002", "0010", "0021", "0034", "0035", "0037", "0040"]


def _raw(root: Path, test_dir: str = "Testing") -> Path:
    """RawData with 8 labelled cases, an image without label, a label without image, 2 test images."""
    raw = root / "RawData"
    for i in LABELLED:
        pair(raw / f"Training/img/img{i}.nii.gz", raw / f"Training/label/label{i}.nii.gz", 13, seed=int(i))
    write_nifti(raw / "Training/img/img0022.nii.gz", ct(22))  # no label
    write_nifti(raw / "Training/label/label0023.nii.gz", np.zeros((8, 8, 6), np.uint8))  # no image
    write_nifti(raw / f"{test_dir}/img/img0061.nii.gz", ct(61))
    write_nifti(raw / f"{test_dir}/img/img0062.nii.gz", ct(62))
    junk(raw / "Training/img/._img0001.nii.gz")
    junk(raw / "Training/label/._label0001.nii.gz")
    junk(raw / f"{test_dir}/img/._img0061.nii.gz")
    return raw


def test_standard_split_classes_and_skips(tmp_path: Path) -> None:
    _raw(tmp_path / "Abdomen")
    out = tmp_path / "out"
    manifest = btcv.convert_btcv(tmp_path / "Abdomen", out)
    got = splits(manifest)
    assert got == {
        "img0001": "train",
        "img0002": "train",
        "img0010": "train",
        "img0021": "train",
        "img0034": "train",
        "img0035": "val",
        "img0037": "val",
        "img0040": "val",
    }
    assert classes(out) == EXPECTED_CLASSES
    reasons = {Path(r["item"]).name: r["reason"] for r in skipped(out)}
    assert reasons == {
        "img0022.nii.gz": "training image without a label map",
        "label0023.nii.gz": "label map without an image",
        "img0061.nii.gz": "no label map (unlabelled test image; segmentation needs labels)",
        "img0062.nii.gz": "no label map (unlabelled test image; segmentation needs labels)",
    }


def test_rawdata_root_test_folder_and_seeded_split(tmp_path: Path) -> None:
    raw = _raw(tmp_path, test_dir="Test")
    out = tmp_path / "out"
    manifest = btcv.convert_btcv(raw, out, split="seeded", val_fraction=0.25, test_fraction=0.25, seed=7)
    got = splits(manifest)
    assert set(got) == {f"img{i}" for i in LABELLED}
    assert sorted(got.values()) == ["test"] * 2 + ["train"] * 4 + ["val"] * 2
    assert sum("unlabelled test image" in r["reason"] for r in skipped(out)) == 2
    other = btcv.convert_btcv(
        raw, tmp_path / "other", split="seeded", val_fraction=0.25, test_fraction=0.25, seed=8
    )
    assert splits(other) != got  # the seed matters (8 cases: these two seeds differ)
    with pytest.raises(ValueError, match="standard"):
        btcv.convert_btcv(raw, tmp_path / "x", split="official")  # type: ignore[arg-type]


def test_label_on_another_grid_is_skipped(tmp_path: Path) -> None:
    raw = tmp_path / "RawData"
    pair(raw / "Training/img/img0001.nii.gz", raw / "Training/label/label0001.nii.gz", 13)
    write_nifti(raw / "Training/img/img0002.nii.gz", ct(2))
    write_nifti(raw / "Training/label/label0002.nii.gz", np.zeros((8, 8, 5), np.uint8))
    manifest = btcv.convert_btcv(tmp_path, tmp_path / "out")
    assert splits(manifest) == {"img0001": "train"}
    (row,) = skipped(tmp_path / "out")
    assert row["reason"] == "label map does not lie on the image's grid"
    assert "shape (8, 8, 5) does not match the volume's (8, 8, 6)" in row["detail"]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _raw(tmp_path)
    out = tmp_path / "out"
    assert btcv.main([str(tmp_path), "--out", str(out), "--split", "seeded", "--seed", "2"]) == 0
    assert sorted(splits(out / "manifest.csv").values()) == ["train"] * 6 + ["val"] * 2
    assert btcv.main([str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert btcv.main([str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no RawData/Training folder" in capsys.readouterr().err

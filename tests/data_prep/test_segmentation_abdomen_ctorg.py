"""AbdomenCT-1K and CT-ORG converters on fabricated downloads (datasets.md sections 3 and 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_prep import abdomenct1k, ct_org
from tests.data_prep.seg_helpers import classes, ct, junk, pair, skipped, splits, write_nifti
from velvet.data.manifest import read_manifest

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------ AbdomenCT-1K


def _abdomen(root: Path) -> Path:
    """Two nested image parts, masks (one without image), an image without mask, junk files."""
    part1 = root / "AbdomenCT-1K-ImagePart1" / "AbdomenCT-1K-ImagePart1"  # unzipped into itself
    part2 = root / "AbdomenCT-1K-ImagePart2"
    pair(part1 / "Case_00001_0000.nii.gz", root / "Mask/Case_00001.nii.gz", 4, seed=1)
    pair(part1 / "Case_00002_0000.nii.gz", root / "Mask/Case_00002.nii.gz", 4, seed=2)
    pair(part2 / "Case_00401_0000.nii.gz", root / "Mask/Case_00401.nii.gz", 4, seed=401)
    pair(part2 / "Case_00402_0000.nii.gz", root / "Mask/Case_00402.nii.gz", 4, seed=402)
    write_nifti(part2 / "Case_00403_0000.nii.gz", ct(403))  # no mask
    write_nifti(root / "Mask/Case_00999.nii.gz", np.zeros((8, 8, 6), np.uint8))  # no image
    junk(part1 / "._Case_00001_0000.nii.gz")
    junk(root / "Mask/._Case_00001.nii.gz")
    junk(root / "__MACOSX/Mask/._Case_00002.nii.gz")
    return root


def test_abdomenct1k_pairs_split_and_skips(tmp_path: Path) -> None:
    root = _abdomen(tmp_path / "AbdomenCT-1K")
    out = tmp_path / "out"
    manifest = abdomenct1k.convert_abdomenct1k(root, out, val_fraction=0.25, test_fraction=0.25, seed=5)
    records = {r.id: r for r in read_manifest(manifest, require_report=False)}
    assert set(records) == {"Case_00001", "Case_00002", "Case_00401", "Case_00402"}
    assert sorted(r.split for r in records.values()) == ["test", "train", "train", "val"]
    assert Path(records["Case_00401"].label_map).resolve() == (root / "Mask/Case_00401.nii.gz").resolve()
    assert Path(records["Case_00001"].volume).name == "Case_00001_0000.nii.gz"
    assert classes(out) == {"0": "background", "1": "liver", "2": "kidney", "3": "spleen", "4": "pancreas"}
    reasons = {Path(r["item"]).name: r["reason"] for r in skipped(out)}
    assert reasons == {
        "Case_00403_0000.nii.gz": "image without a mask",
        "Case_00999.nii.gz": "mask without an image",
    }


def test_abdomenct1k_mask_folder_elsewhere_and_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    pair(images / "Case_00007_0000.nii.gz", tmp_path / "masks/Case_00007.nii.gz", 4, seed=7)
    pair(images / "Case_00008_0000.nii.gz", tmp_path / "masks/Case_00008.nii.gz", 4, seed=8)
    out = tmp_path / "out"
    assert abdomenct1k.main([str(images), "--masks", str(tmp_path / "masks"), "--out", str(out)]) == 0
    assert sorted(splits(out / "manifest.csv").values()) == ["train", "val"]
    assert skipped(out) == []
    assert abdomenct1k.main([str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_abdomenct1k_duplicate_copy_is_counted(tmp_path: Path) -> None:
    root = tmp_path / "a1k"
    pair(root / "Part1/Case_00001_0000.nii.gz", root / "Mask/Case_00001.nii.gz", 4)
    write_nifti(root / "copy/Case_00001_0000.nii.gz", ct(1))
    manifest = abdomenct1k.convert_abdomenct1k(root, tmp_path / "out")
    assert splits(manifest) == {"Case_00001": "train"}
    (row,) = skipped(tmp_path / "out")
    assert row["reason"] == "duplicate image of Case_00001"


# ------------------------------------------------------------------------------ CT-ORG


def _ct_org(root: Path) -> Path:
    """OrganSegmentations with float32 labels: official test 0 and 20, train 21, 25 (volumes-), 139."""
    folder = root / "OrganSegmentations"
    for n in (0, 20, 21, 139):
        pair(folder / f"volume-{n}.nii.gz", folder / f"labels-{n}.nii.gz", 6, seed=n, dtype=np.float32)
    pair(folder / "volumes-25.nii.gz", folder / "labels-25.nii.gz", 6, seed=25, dtype=np.float32)
    write_nifti(folder / "volume-30.nii.gz", ct(30))  # no labels
    write_nifti(folder / "labels-31.nii.gz", np.zeros((8, 8, 6), np.float32))  # no volume
    junk(folder / "._volume-0.nii.gz")
    junk(folder / "._labels-0.nii.gz")
    return folder


def test_ct_org_official_test_split_and_float_labels(tmp_path: Path) -> None:
    folder = _ct_org(tmp_path)
    out = tmp_path / "out"
    manifest = ct_org.convert_ct_org(tmp_path, out, val_fraction=0.2, seed=1)
    records = {r.id: r for r in read_manifest(manifest, require_report=False)}
    assert set(records) == {"volume-0", "volume-20", "volume-21", "volume-25", "volume-139"}
    assert records["volume-0"].split == "test" and records["volume-20"].split == "test"
    rest = sorted(records[c].split for c in ("volume-21", "volume-25", "volume-139"))
    assert rest == ["train", "train", "val"]  # round(3 * 0.2) = 1
    assert Path(records["volume-25"].volume).name == "volumes-25.nii.gz"
    label = Path(records["volume-20"].label_map)
    assert label.resolve() == (folder / "labels-20.nii.gz").resolve()  # in place, not copied
    assert nib.load(label).get_data_dtype() == np.float32
    assert classes(out) == {
        "0": "background",
        "1": "liver",
        "2": "bladder",
        "3": "lungs",
        "4": "kidneys",
        "5": "bone",
        "6": "brain",
    }
    reasons = {Path(r["item"]).name: r["reason"] for r in skipped(out)}
    assert reasons == {
        "volume-30.nii.gz": "volume without a label map",
        "labels-31.nii.gz": "label map without a volume",
    }


def test_ct_org_cli_exit_codes(tmp_path: Path) -> None:
    _ct_org(tmp_path)
    out = tmp_path / "out"
    assert ct_org.main([str(tmp_path / "OrganSegmentations"), "--out", str(out), "--val-fraction", "0"]) == 0
    got = splits(out / "manifest.csv")
    assert got == {
        "volume-0": "test",
        "volume-20": "test",
        "volume-21": "train",
        "volume-25": "train",
        "volume-139": "train",
    }
    assert ct_org.main([str(tmp_path / "absent"), "--out", str(out)]) == 2
    with pytest.raises(SystemExit):  # no --test-fraction: the test set is official
        ct_org.main([str(tmp_path), "--out", str(out), "--test-fraction", "0.1"])


@pytest.mark.parametrize("how", ["file", "module"])
def test_runs_as_script_and_module(tmp_path: Path, how: str) -> None:
    _ct_org(tmp_path)
    out = tmp_path / "out"
    target = [str(REPO / "data_prep" / "ct_org.py")] if how == "file" else ["-m", "data_prep.ct_org"]
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, *target, str(tmp_path), "--out", str(out)],
        cwd=REPO if how == "module" else tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(splits(out / "manifest.csv")) == 5
    assert "converted 5 cases, skipped 2" in result.stderr

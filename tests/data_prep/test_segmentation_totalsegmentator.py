"""TotalSegmentator converter: mask merging, class subsets, grid checks, BOM + semicolon meta.csv."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_prep import totalsegmentator as ts
from tests.data_prep.seg_helpers import AFFINE, SHAPE, classes, ct, junk, skipped, splits, write_nifti
from velvet.data.manifest import read_manifest

# spot checks of the v2 map (map_to_binary.py class_map["total"]), written out independently
V2_SPOT = {
    1: "spleen",
    2: "kidney_right",
    5: "liver",
    10: "lung_upper_lobe_left",
    116: "sternum",
    117: "costal_cartilages",
}
META_HEADER = "image_id;age;gender;institute;study_type;split;manufacturer;scanner_model;kvp;pathology;pathology_location"
# v2 ids of the structures in the fixture (map_to_binary.py class_map["total"])
V2_IDS = {"spleen": 1, "kidney_right": 2, "gallbladder": 4, "liver": 5}


def _masks(seed: int) -> dict[str, np.ndarray]:
    """Overlapping binary masks: spleen and liver share voxels, liver and kidney_right too; empty gallbladder."""
    rng = np.random.default_rng(seed)
    spleen = np.zeros(SHAPE, np.uint8)
    spleen[1:5, 1:5, 1:4] = 1
    liver = np.zeros(SHAPE, np.uint8)
    liver[3:7, 2:6, 2:5] = 1
    kidney = (rng.random(SHAPE) < 0.3).astype(np.uint8)
    return {
        "spleen": spleen,
        "liver": liver,
        "kidney_right": kidney,
        "gallbladder": np.zeros(SHAPE, np.uint8),
    }


def _dataset(root: Path, meta_rows: list[str] | None = None) -> Path:
    """s0000 train, s0001 val, s0002 test (on disk); s0003 listed only; s0004 on disk only."""
    rows = meta_rows or [
        "s0000;64;m;A;ct abdomen-pelvis;train;siemens;SOMATOM Force;120;no_pathology;",
        "s0001;51;f;C;ct thorax;val;ge;Revolution CT;100;tumor;lung",
        "s0002;70;f;B;ct abdomen;test;philips;iCT 256;120;no_pathology;",
        "s0003;44;m;A;ct neck;train;siemens;Definition AS;100;no_pathology;",
    ]
    root.mkdir(parents=True, exist_ok=True)
    # UTF-8 with a byte-order mark, semicolons, CRLF line ends (as pandas writes it on Windows)
    (root / "meta.csv").write_bytes(("\ufeff" + "\r\n".join([META_HEADER, *rows]) + "\r\n").encode("utf-8"))
    for n, case in enumerate(["s0000", "s0001", "s0002", "s0004"]):
        write_nifti(root / case / "ct.nii.gz", ct(n))
        for name, mask in _masks(n).items():
            write_nifti(root / case / "segmentations" / f"{name}.nii.gz", mask)
    junk(root / "s0000/segmentations/._liver.nii.gz")
    junk(root / "._s0000")
    return root


def _expected(masks: dict[str, np.ndarray], ids: dict[str, int]) -> np.ndarray:
    """Paint in ascending id, later ids overwriting earlier ones, independently of the converter."""
    out = np.zeros(SHAPE, np.int64)
    for name, value in sorted(ids.items(), key=lambda kv: kv[1]):
        out[masks[name] > 0] = value
    return out


def test_default_v2_map_merge_splits_and_skips(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _dataset(tmp_path / "Totalsegmentator_dataset_v201")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="data_prep"):
        manifest = ts.convert_totalsegmentator(tmp_path, out)  # the folder above meta.csv works too
    records = {r.id: r for r in read_manifest(manifest, require_report=False)}
    assert {i: r.split for i, r in records.items()} == {"s0000": "train", "s0001": "val", "s0002": "test"}
    for n, case in enumerate(["s0000", "s0001", "s0002"]):
        img = nib.load(records[case].label_map)
        assert Path(records[case].label_map).resolve() == (out / "labels" / f"{case}.nii.gz").resolve()
        assert Path(records[case].volume).resolve() == (root / case / "ct.nii.gz").resolve()
        assert img.get_data_dtype() == np.uint8
        np.testing.assert_allclose(img.affine, AFFINE)
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), _expected(_masks(n), V2_IDS))
    # overlaps really happened, so "later id wins" was tested: liver (5) over spleen (1)
    assert (_masks(0)["spleen"] & _masks(0)["liver"]).any()
    written = classes(out)
    assert list(written) == [str(i) for i in range(118)] and written["0"] == "background"
    assert {int(k): written[str(k)] for k in V2_SPOT} == V2_SPOT
    reasons = {Path(r["item"]).name: r["reason"] for r in skipped(out)}
    assert reasons == {
        "s0003": "listed in meta.csv but no <id>/ct.nii.gz on disk",
        "s0004": "no meta.csv row (split unknown)",
    }
    assert re.search(r"note\s+339: selected mask files missing", caplog.text)  # (117 - 4) x 3 cases


def test_subset_is_renumbered_in_the_given_order(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ts")
    out = tmp_path / "out"
    manifest = ts.convert_totalsegmentator(root, out, classes=["liver", "spleen", "kidney_right"])
    assert classes(out) == {"0": "background", "1": "liver", "2": "spleen", "3": "kidney_right"}
    record = {r.id: r for r in read_manifest(manifest, require_report=False)}["s0001"]
    got = np.asanyarray(nib.load(record.label_map).dataobj)
    m = _masks(1)
    expected = np.zeros(SHAPE, np.uint8)
    expected[m["liver"] > 0] = 1
    expected[m["spleen"] > 0] = 2  # spleen (2) now paints over liver (1)
    expected[m["kidney_right"] > 0] = 3
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(got)) <= {0, 1, 2, 3}


def test_unknown_class_names_are_an_error_listing_valid_ones(tmp_path: Path, capsys) -> None:
    root = _dataset(tmp_path / "ts")
    with pytest.raises(ValueError, match=r"unknown class name\(s\) \['livr'\].*costal_cartilages"):
        ts.convert_totalsegmentator(root, tmp_path / "out", classes=["liver", "livr"])
    assert ts.main([str(root), "--out", str(tmp_path / "o"), "--classes", "liver,livr"]) == 2
    assert "livr" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        ts.main([str(root), "--out", str(tmp_path / "o"), "--classes", "liver,liver"])
    assert exc.value.code == 2


def test_mask_off_the_ct_grid_skips_the_case(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ts")
    shifted = AFFINE.copy()
    shifted[0, 3] += 4.0  # 5 voxels along x
    write_nifti(root / "s0001/segmentations/liver.nii.gz", _masks(1)["liver"], shifted)
    out = tmp_path / "out"
    manifest = ts.convert_totalsegmentator(root, out, classes=["spleen", "liver"])
    assert splits(manifest) == {"s0000": "train", "s0002": "test"}
    assert not (out / "labels/s0001.nii.gz").exists()
    row = next(r for r in skipped(out) if Path(r["item"]).name == "s0001")
    assert row["reason"] == "mask does not lie on the CT's grid"
    assert "liver.nii.gz" in row["detail"] and "origin differs by 4.0 mm in x (5 voxels)" in row["detail"]


def test_permuted_mask_header_is_resampled_and_missing_mask_is_absent(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ts")
    liver = _masks(2)["liver"]
    # the same grid, stored with the first axis reversed: voxel i is the CT's voxel 7 - i
    flipped = AFFINE.copy()
    flipped[:3, 0] *= -1
    flipped[:3, 3] = AFFINE[:3, 3] + AFFINE[:3, 0] * (SHAPE[0] - 1)
    write_nifti(root / "s0002/segmentations/liver.nii.gz", liver[::-1].copy(), flipped)
    (root / "s0002/segmentations/spleen.nii.gz").unlink()
    out = tmp_path / "out"
    manifest = ts.convert_totalsegmentator(root, out, classes=["spleen", "liver"])
    record = {r.id: r for r in read_manifest(manifest, require_report=False)}["s0002"]
    expected = np.where(liver > 0, 2, 0)  # spleen missing: absent
    np.testing.assert_array_equal(np.asanyarray(nib.load(record.label_map).dataobj), expected)


def test_rerun_keeps_outputs_and_refuses_other_classes(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ts")
    out = tmp_path / "out"
    ts.convert_totalsegmentator(root, out, classes=["liver"], workers=2)
    label = out / "labels/s0000.nii.gz"
    before = label.stat().st_mtime_ns
    (out / "manifest.csv").unlink()
    (out / ".tmp-leftover.nii.gz").write_bytes(b"half")
    assert ts.main([str(root), "--out", str(out), "--classes", "liver"]) == 0
    assert label.stat().st_mtime_ns == before
    assert not (out / ".tmp-leftover.nii.gz").exists()
    assert len(splits(out / "manifest.csv")) == 3
    with pytest.raises(ValueError, match="other classes"):
        ts.convert_totalsegmentator(root, out, classes=["spleen"])


def test_many_classes_give_uint16_and_comma_meta(tmp_path: Path) -> None:
    root = tmp_path / "ts"
    (root / "meta.csv").parent.mkdir(parents=True)
    (root / "meta.csv").write_text(
        "image_id,age,gender,institute,study_type,split\ns0000,60,m,A,ct,train\n", encoding="utf-8"
    )
    write_nifti(root / "s0000/ct.nii.gz", ct(0))
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:4, 2:4, 1:3] = 1
    write_nifti(root / "s0000/segmentations/structure_300.nii.gz", mask)
    class_map = tmp_path / "map.json"
    class_map.write_text(json.dumps({str(i): f"structure_{i}" for i in range(1, 301)}), encoding="utf-8")
    manifest = ts.convert_totalsegmentator(root, tmp_path / "out", class_map=class_map)
    (record,) = read_manifest(manifest, require_report=False)
    img = nib.load(record.label_map)
    assert img.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), np.where(mask > 0, 300, 0))
    assert len(classes(tmp_path / "out")) == 301


def test_missing_root_and_meta(tmp_path: Path, capsys) -> None:
    assert ts.main([str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 2
    (tmp_path / "empty").mkdir()
    assert ts.main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no meta.csv" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/meta.csv").write_text("image_id;age\ns0000;1\n", encoding="utf-8")
    assert ts.main([str(tmp_path / "bad"), "--out", str(tmp_path / "out")]) == 2
    assert "missing column(s) ['split']" in capsys.readouterr().err


def test_packaged_class_map_is_the_v2_map() -> None:
    table = ts.load_class_map()
    assert sorted(table) == list(range(1, 118)) and len(set(table.values())) == 117
    assert {k: table[k] for k in V2_SPOT} == V2_SPOT

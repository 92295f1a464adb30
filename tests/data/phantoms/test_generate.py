"""Writing a phantom set: layout, manifest read-back, re-runs, refusal, resume after a kill, workers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from velvet.data.errors import DataError
from velvet.data.manifest import read_manifest
from velvet.data.phantoms import CLASS_NAMES, LABEL_NAMES, PhantomConfig, generate_phantoms, render_case

# a coarse grid keeps the writes fast; the field of view is the designed ~380 x 380 x 320 mm
CONFIG = PhantomConfig(n_cases=6, n_val=1, n_test=2, shape=(32, 32, 24), spacing=(12.0, 12.0, 13.3))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantoms") / "set"
    manifest = generate_phantoms(out, CONFIG, progress=False)
    assert manifest == out / "manifest.csv"
    return out


def test_layout_and_manifest_read_back(reference):
    manifest = read_manifest(reference / "manifest.csv")
    assert len(manifest) == CONFIG.n_cases
    assert manifest.label_names == list(LABEL_NAMES)
    assert [len(manifest.split(s)) for s in ("train", "val", "test")] == [3, 1, 2]
    for index, record in enumerate(manifest):
        case = render_case(CONFIG, index)
        assert record.id == f"phantom_{index:05d}" and record.split == case.split
        assert record.report == case.report
        assert record.labels == {k: float(v) for k, v in case.labels.items()}
        volume, label_map = nib.load(record.volume), nib.load(record.label_map)
        assert Path(record.volume).name.endswith(".nii.gz")
        assert volume.get_data_dtype() == np.int16 and label_map.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asanyarray(volume.dataobj), case.volume)
        np.testing.assert_array_equal(np.asanyarray(label_map.dataobj), case.label_map)
        np.testing.assert_allclose(volume.affine, case.affine)
        assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")


def test_side_files(reference):
    classes = json.loads((reference / "classes.json").read_text())
    assert {int(k): v for k, v in classes.items()} == CLASS_NAMES
    info = json.loads((reference / "phantoms.json").read_text())
    assert info["config"] == CONFIG.to_dict()
    assert info["label_names"] == list(LABEL_NAMES)
    vqa = [json.loads(line) for line in (reference / "vqa.jsonl").read_text().splitlines()]
    assert {item["case_id"] for item in vqa} == {CONFIG.case_id(i) for i in range(CONFIG.n_cases)}
    assert len({item["id"] for item in vqa}) == len(vqa)
    assert {item["type"] for item in vqa} == {"closed", "open"}
    findings = [json.loads(line) for line in (reference / "findings.jsonl").read_text().splitlines()]
    assert [f["id"] for f in findings] == [CONFIG.case_id(i) for i in range(CONFIG.n_cases)]
    assert all(set(f["labels"]) == set(LABEL_NAMES) for f in findings)


def test_rerun_on_a_finished_folder_is_a_no_op(reference):
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()}
    generate_phantoms(reference, CONFIG, progress=False)
    after = {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()}
    assert after == before


def test_other_config_is_refused_unless_overwrite(reference, tmp_path):
    out = tmp_path / "set"
    shutil.copytree(reference, out)
    smaller = PhantomConfig(n_cases=4, n_val=1, n_test=1, shape=CONFIG.shape, spacing=CONFIG.spacing)
    with pytest.raises(DataError, match="n_cases: 6 -> 4"):
        generate_phantoms(out, smaller, progress=False)
    assert _files(out) == _files(reference)  # refused before touching anything
    generate_phantoms(out, smaller, progress=False, overwrite=True)
    assert len(read_manifest(out / "manifest.csv")) == 4
    assert sorted(p.name for p in (out / "volumes").iterdir()) == [
        f"phantom_{i:05d}.nii.gz" for i in range(4)
    ]


def test_folder_with_a_foreign_data_set_is_refused(tmp_path):
    (tmp_path / "manifest.csv").write_text("id,volume,split,report\n")
    with pytest.raises(DataError, match="did not write"):
        generate_phantoms(tmp_path, CONFIG, progress=False)
    assert (tmp_path / "manifest.csv").read_text() == "id,volume,split,report\n"


def test_killed_run_is_completed_identically(reference, tmp_path):
    out = tmp_path / "set"
    shutil.copytree(reference, out)
    # what a kill leaves: some cases missing, a half-written temporary, no tables yet
    for name in ("manifest.csv", "vqa.jsonl", "findings.jsonl"):
        (out / name).unlink()
    (out / "volumes" / "phantom_00001.nii.gz").unlink()
    (out / "labels" / "phantom_00004.nii.gz").unlink()
    (out / "volumes" / ".tmp-0123456789ab-phantom_00001.nii.gz").write_bytes(b"\x1f\x8b partial")
    kept = (out / "volumes" / "phantom_00002.nii.gz").stat().st_mtime_ns
    generate_phantoms(out, CONFIG, progress=False)
    assert _files(out) == _files(reference)  # byte-identical, leftovers removed
    assert (out / "volumes" / "phantom_00002.nii.gz").stat().st_mtime_ns == kept  # complete cases skipped


@pytest.mark.slow
def test_parallel_workers_write_identical_files(reference, tmp_path):
    generate_phantoms(tmp_path / "set", CONFIG, workers=2, progress=False)
    assert _files(tmp_path / "set") == _files(reference)


def test_uncompressed_float_output(tmp_path):
    config = PhantomConfig(
        n_cases=2,
        n_val=0,
        n_test=1,
        shape=(16, 16, 12),
        spacing=(24.0, 24.0, 26.0),
        dtype="float32",
        compress=False,
    )
    manifest = read_manifest(generate_phantoms(tmp_path, config, progress=False))
    img = nib.load(manifest.records[0].volume)
    assert manifest.records[0].volume.endswith("phantom_00000.nii")
    assert img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), render_case(config, 0).volume)


def test_config_validation():
    assert PhantomConfig(shape=[96, 96, 64], spacing=[4, 4, 5]) == PhantomConfig()
    bad = [
        {"shape": (96, 96)},
        {"shape": (96, 0, 64)},
        {"shape": (96.5, 96, 64)},
        {"spacing": (4, -1, 5)},
        {"seed": -1},
        {"n_cases": 0, "n_val": 0, "n_test": 0},
        {"n_cases": 100, "n_val": 50, "n_test": 100},
        {"dtype": "uint8"},
        {"noise_hu": -3.0},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            PhantomConfig(**kwargs)
    with pytest.raises(ValueError, match="workers"):
        generate_phantoms("unused", CONFIG, workers=0)

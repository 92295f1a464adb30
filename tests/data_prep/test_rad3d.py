"""3D-RAD converter on a fabricated QA folder in the real layout, with and without a CT-RATE manifest."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from data_prep import rad3d
from velvet.data.errors import DataError
from velvet.data.manifest import ManifestRecord, write_manifest
from velvet.data.vqa import read_vqa
from velvet.data.vqa_3drad import COLUMNS

HEADER = ",".join(COLUMNS)


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def qa(tmp_path: Path) -> Path:
    """test: Task4 yes/no (file name with a space) and Task1 open; train: Task5 and Task6 ``c.csv``."""
    root = tmp_path / "3DRAD"
    _write(
        root / "test" / "Task4_Existence_Detection" / "Lung nodule.csv",
        [
            "4,10,test_1_a_1.nii.gz,Is lung nodule noted?,Yes,Close,A,Yes,No,-,-",
            "4,10,test_2_a_1.nii.gz,Is lung nodule noted?,no.,Close,B,Yes,No,-,-",
            "4,10,test_3_a_1.nii.gz,Is lung nodule noted?,No,Close,B,Yes,No,-,-",  # not in the manifest
        ],
    )
    _write(
        root / "test" / "Task1_Image_Observation" / "Anatomical_observation.csv",
        ['1,1,test_1_a_1.nii.gz,"Describe the trachea, please.",Trachea is open.,Open,-,-,-,-,-'],
    )
    temporal = ",Refractory,Resolved,New lesion,No abnormality"
    _write(
        root / "train" / "Task5_Static_Temporal_Diagnosis" / "c.csv",
        [
            f"5,1,train_5_a_1.nii.gz,What is the status?,Resolved,Close,B{temporal}",
            f"5,1,train_6_a_1.nii.gz,What is the status?,Refractory,Close,A{temporal}",
        ],
    )
    _write(
        root / "train" / "Task6_Longitudinal_Temporal_Diagnosis" / "c.csv",
        [
            f'6,1,train_6_a_2.nii.gz,"History: [0, 1]. What is the status?",New lesion,Close,C{temporal}',
            f"6,1,test_4_a_1.nii.gz,What is the status?,New lesion,Close,C{temporal}",  # a test volume in train/
        ],
    )
    return root


@pytest.fixture
def ctrate(tmp_path: Path) -> Path:
    """A ct_rate.py-style manifest: valid_* -> test, train patient 5 in val, 6 in train."""
    folder = tmp_path / "ct_rate"
    records = []
    for name, split in [
        ("valid_1_a_1", "test"),
        ("valid_2_a_1", "test"),
        ("train_5_a_1", "val"),
        ("train_6_a_1", "train"),
        ("train_6_a_2", "train"),
    ]:
        volume = tmp_path / "CT-RATE" / "dataset" / f"{name}.nii.gz"
        volume.parent.mkdir(parents=True, exist_ok=True)
        volume.write_bytes(b"")
        records.append(ManifestRecord(id=name, volume=str(volume), split=split, report="Report."))
    return write_manifest(records, folder / "manifest.csv")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _skips(out: Path) -> list[tuple[str, str]]:
    with (out / "skipped.csv").open(encoding="utf-8", newline="") as fh:
        return [(Path(r["item"]).name, r["reason"]) for r in csv.DictReader(fh)]


def test_with_ctrate_manifest(
    qa: Path, ctrate: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="data_prep"):
        path = rad3d.convert_rad3d(qa, out, ctrate_manifest=ctrate)
    assert path == out / "vqa.jsonl"
    lines = _lines(path)
    volume = "../CT-RATE/dataset/{}.nii.gz".format
    assert lines[0] == {
        "id": "3drad-test-task1-Anatomical_observation-2",
        "case_id": "valid_1_a_1",
        "question": "Describe the trachea, please.",
        "answer": "Trachea is open.",
        "type": "open",
        "question_type": "task1/Anatomical_observation",
        "split": "test",
        "volume": volume("valid_1_a_1"),
        "source": "3d-rad",
    }
    assert lines[2] == {
        "id": "3drad-test-task4-Lung_nodule-3",
        "case_id": "valid_2_a_1",
        "question": "Is lung nodule noted?",
        "answer": "No",  # the option's text, not the Answer column's "no."
        "type": "closed",
        "choices": ["Yes", "No"],
        "answer_choice": "B",
        "question_type": "task4/Lung nodule",
        "split": "test",
        "volume": volume("valid_2_a_1"),
        "source": "3d-rad",
    }
    assert [(d["id"], d["split"], d.get("answer_choice")) for d in lines] == [
        ("3drad-test-task1-Anatomical_observation-2", "test", None),
        ("3drad-test-task4-Lung_nodule-2", "test", "A"),
        ("3drad-test-task4-Lung_nodule-3", "test", "B"),
        ("3drad-train-task5-c-2", "val", "B"),  # patient 5 is in CT-RATE's val
        ("3drad-train-task5-c-3", "train", "A"),
        ("3drad-train-task6-c-2", "train", "C"),
    ]
    assert _skips(out) == [
        ("Lung nodule.csv:4", "volume not in the CT-RATE manifest"),
        ("c.csv:3", "VolumeName prefix disagrees with the train/test folder"),
    ]
    assert "closed answers differing from the option text" in caplog.text
    # the output reads back, also through the CT-RATE manifest (same volumes, no split conflict)
    items = read_vqa(path, ctrate)
    assert [i.volume for i in items] == [i.volume for i in read_vqa(path)]
    assert items[5].question_type == "task6/c" and items[5].answer == "New lesion"
    assert {i.question_type for i in items} == {
        "task1/Anatomical_observation",
        "task4/Lung nodule",
        "task5/c",
        "task6/c",
    }


def test_without_manifest_and_val_fraction(qa: Path, tmp_path: Path) -> None:
    lines = _lines(rad3d.convert_rad3d(qa, tmp_path / "out", val_fraction=0.5, seed=3))
    assert len(lines) == 7 and all("volume" not in d for d in lines)
    assert [d["case_id"] for d in lines[:4]] == ["valid_1_a_1", "valid_1_a_1", "valid_2_a_1", "valid_3_a_1"]
    by_patient: dict[str, set[str]] = {}
    for d in lines[4:]:
        by_patient.setdefault(d["case_id"].split("_")[1], set()).add(d["split"])
    assert sorted(by_patient) == ["5", "6"] and sorted(by_patient.values(), key=sorted) == [
        {"train"},
        {"val"},
    ]
    assert all(d["split"] == "test" for d in lines[:4])
    again = _lines(rad3d.convert_rad3d(qa, tmp_path / "again", val_fraction=0.5, seed=3))
    assert again == lines
    assert [i.case_id for i in read_vqa(tmp_path / "out" / "vqa.jsonl")] == [d["case_id"] for d in lines]


def test_main_and_bad_input(qa: Path, ctrate: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert rad3d.main([str(qa / "test"), "--out", str(out)]) == 0  # root is the test/ folder itself
    assert {d["split"] for d in _lines(out / "vqa.jsonl")} == {"test"}
    argv = [str(qa), "--out", str(out), "--ctrate-manifest", str(ctrate)]
    assert rad3d.main([*argv, "--val-fraction", "0.1"]) == 2
    bad = qa / "test" / "Task4_Existence_Detection" / "Lung nodule.csv"
    bad.write_text(HEADER + "\n4,10,test_1_a_1.nii.gz,Q?,Yes,Close,C,Yes,No,-,-\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"Lung nodule.csv:2: row of volume 'test_1_a_1.nii.gz'"):
        rad3d.convert_rad3d(qa, out)
    assert rad3d.main(argv) == 2
    assert not (out / "vqa.jsonl").exists()  # a failed run leaves no output that looks finished


def test_real_3drad_files(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "reports" / "vqa_3drad"
    files = sorted(folder.glob("*.csv"))
    if not files:
        pytest.skip(f"no 3D-RAD files under {folder}")
    n_rows = 0
    for f in files:
        with f.open(encoding="utf-8", newline="") as fh:
            n_rows += sum(1 for _ in csv.DictReader(fh))
    # flat files (no train/test folder): the part comes from the test_ volume names
    items = read_vqa(rad3d.convert_rad3d(folder, tmp_path / "out"))
    assert len(items) == n_rows and {i.split for i in items} == {"test"}
    assert all(i.case_id.startswith("valid_") for i in items)
    assert all(i.choices[i.answer_index] == i.answer for i in items if i.kind == "closed")
    assert _skips(tmp_path / "out") == []

"""M3D-VQA converter on fabricated CSVs in the real format and an M3D-Cap-converter-style manifest."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from data_prep import m3d_vqa
from velvet.data.errors import DataError
from velvet.data.manifest import ManifestRecord, write_manifest
from velvet.data.vqa import read_vqa

CASE = "M3D_Cap_npy/ct_case/000123/Axial_non_contrast.npy"
QUIZ = "M3D_Cap_npy/ct_quizze/ct_quizze_03/004567/Coronal_C__portal_venous_phase.npy"  # with a chunk folder
TEXT = "Large multiloculated cystic lesion in segment 7 of the liver, with daughter cysts."


@pytest.fixture
def m3d_cap(tmp_path: Path) -> Path:
    """What data_prep/m3d_cap.py writes: volumes/<source>-<case>-<series>.nii.gz, reports/, manifest.csv."""
    out = tmp_path / "m3d_cap"
    records = []
    for series_id, case_id, split in [
        ("ct_case-000123-Axial_non_contrast", "ct_case-000123", "train"),
        ("ct_quizze-004567-Coronal_C__portal_venous_phase", "ct_quizze-004567", "val"),
    ]:
        volume, report = out / "volumes" / f"{series_id}.nii.gz", out / "reports" / f"{case_id}.txt"
        for p in (volume, report):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x")
        records.append(ManifestRecord(id=series_id, volume=str(volume), split=split, report_file=str(report)))
    write_manifest(records, out / "manifest.csv")
    return out


def _csv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(m3d_vqa.COLUMNS)
        writer.writerows(rows)
    return path


@pytest.fixture
def vqa_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "M3D-VQA"
    # fmt: off
    test_rows = [
        [CASE, TEXT, "1", "In which plane is this image shown?", "Sagittal", "Axial", "Coronal", "Oblique", "Axial", "B"],
        # quoted commas, an NA option, a lower-case letter, an Answer worded unlike its option
        [CASE, TEXT, "3", "Which organ, if any, holds the cyst?", "Liver", "Spleen, accessory", "Kidney", "NA", "The liver", "a"],
        ["M3D_Cap_npy/ct_case/999999/Axial_non_contrast.npy", TEXT, "1", "Plane?", "Axial", "Coronal", "NA", "NA", "Axial", "A"],
        [CASE, TEXT, "4", "What is seen?", "Cyst", "NA", "Mass", "Stone", "Cyst", "A"],  # a gap among the options
        [CASE, TEXT, "5", "Where is it?", "Left", "Right", "Both", "NA", "Both", "D"],  # the letter of an NA
        [CASE, TEXT, "7", "What?", "A", "B", "NA", "NA", "A", "A"],  # no such type
        ["ct_case_000123.npy", TEXT, "1", "Plane?", "Axial", "Coronal", "NA", "NA", "Axial", "A"],
    ]
    train_rows = [
        [QUIZ, TEXT, "2", "In which phase was it taken?", "Arterial", "Portal venous", "Delayed", "Non-contrast", "Portal venous", "B"],
    ]
    # fmt: on
    _csv(folder / "M3D_VQA_test.csv", test_rows)
    _csv(folder / "M3D_VQA_train.csv", train_rows)
    (folder / "._M3D_VQA_val.csv").write_bytes(b"\x00\x05junk")  # macOS junk: ignored
    return folder


def _item(
    base: str, kind: str, question: str, answer: str, qt: str, split: str, series: str, **closed
) -> dict:
    d = {"id": f"{base}-{kind}", "case_id": series, "question": question, "answer": answer, "type": kind}
    d.update(closed)
    d.update(question_type=qt, split=split, volume=f"../m3d_cap/volumes/{series}.nii.gz", source="m3d-vqa")
    return d


def test_conversion_output_exactly(
    vqa_dir: Path, m3d_cap: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="data_prep"):
        path = m3d_vqa.convert_m3d_vqa([vqa_dir], m3d_cap, out)
    case, quiz = "ct_case-000123-Axial_non_contrast", "ct_quizze-004567-Coronal_C__portal_venous_phase"
    plane = "In which plane is this image shown?"
    organ = "Which organ, if any, holds the cyst?"
    phase = "In which phase was it taken?"
    expected = [
        _item("m3d-vqa-test-2", "closed", plane, "Axial", "plane", "test", case,
              choices=["Sagittal", "Axial", "Coronal", "Oblique"], answer_choice="B"),
        _item("m3d-vqa-test-2", "open", plane, "Axial", "plane", "test", case),
        _item("m3d-vqa-test-3", "closed", organ, "Liver", "organ", "test", case,
              choices=["Liver", "Spleen, accessory", "Kidney"], answer_choice="A"),
        _item("m3d-vqa-test-3", "open", organ, "The liver", "organ", "test", case),
        _item("m3d-vqa-train-2", "closed", phase, "Portal venous", "phase", "train", quiz,
              choices=["Arterial", "Portal venous", "Delayed", "Non-contrast"], answer_choice="B"),
        _item("m3d-vqa-train-2", "open", phase, "Portal venous", "phase", "train", quiz),
    ]  # fmt: skip
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == expected
    with (out / "skipped.csv").open(encoding="utf-8", newline="") as fh:
        skipped = [(Path(r["item"]).name, r["reason"], r["detail"]) for r in csv.DictReader(fh)]
    assert skipped == [
        ("M3D_VQA_test.csv:4", "image not in the M3D-Cap manifest", "ct_case-999999-Axial_non_contrast"),
        ("M3D_VQA_test.csv:5", "missing choice (NA) before a given one", "Cyst, NA, Mass, Stone"),
        ("M3D_VQA_test.csv:6", "Answer Choice is not the letter of a given choice", "D"),
        ("M3D_VQA_test.csv:7", "unknown Question Type (expected 1-5)", "7"),
        (
            "M3D_VQA_test.csv:8",
            "unrecognised Image Path",
            "Image Path 'ct_case_000123.npy' is not .../<ct_case|ct_quizze>/<case>/<series>.npy",
        ),
    ]
    log = caplog.text
    assert "converted 3 rows (2 items each), skipped 5" in log
    assert "Answer text differs from the chosen option (closed: option, open: Answer)" in log
    assert "test items on an image the M3D-Cap manifest puts in train" in log
    items = read_vqa(path)
    assert [i.volume for i in items] == [
        m3d_cap.resolve() / "volumes" / f"{d['case_id']}.nii.gz" for d in expected
    ]
    assert items[0].answer_letter == "B" and not items[0].is_yes_no
    # the M3D-Cap manifest has no test split: reading through it reports the conflict
    with pytest.raises(DataError, match="split 'test' conflicts with the manifest"):
        read_vqa(path, m3d_cap / "manifest.csv")


def test_file_names_tell_the_split(vqa_dir: Path, m3d_cap: Path, tmp_path: Path) -> None:
    rows = (vqa_dir / "M3D_VQA_test.csv").read_text(encoding="utf-8").splitlines()
    (vqa_dir / "M3D_VQA_test5k.csv").write_text("\n".join(rows[:2]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    m3d_vqa.convert_m3d_vqa(
        [vqa_dir / "M3D_VQA_test5k.csv", vqa_dir / "M3D_VQA_train.csv"], m3d_cap / "manifest.csv", out
    )
    items = read_vqa(out / "vqa.jsonl")
    assert [(i.id, i.split) for i in items][:2] == [
        ("m3d-vqa-test5k-2-closed", "test"),
        ("m3d-vqa-test5k-2-open", "test"),
    ]
    assert [
        m3d_vqa.split_of_file(n) for n in ("M3D_VQA_val.csv", "M3D_VQA_yn_train.csv", "x_test1k.csv")
    ] == [
        "val",
        "train",
        "test",
    ]
    with pytest.raises(ValueError, match="cannot tell the split"):
        m3d_vqa.split_of_file("M3D_VQA.csv")
    assert (
        m3d_vqa.image_id("ct_quizze/12/Axial_Zoomed___thin_cuts.npy")
        == "ct_quizze-12-Axial_Zoomed___thin_cuts"
    )


def test_main_and_bad_input(vqa_dir: Path, m3d_cap: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    train = vqa_dir / "M3D_VQA_train.csv"
    assert m3d_vqa.main([str(train), "--m3d-cap", str(m3d_cap), "--out", str(out)]) == 0
    assert len((out / "vqa.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    odd = _csv(tmp_path / "questions.csv", [])
    assert m3d_vqa.main([str(odd), "--m3d-cap", str(m3d_cap), "--out", str(out)]) == 2  # split unknown
    assert m3d_vqa.main([str(train), "--m3d-cap", str(tmp_path / "none"), "--out", str(out)]) == 2
    train.write_text(train.read_text(encoding="utf-8").replace("Answer Choice", "Letter"), encoding="utf-8")
    with pytest.raises(
        DataError, match=r"M3D_VQA_train.csv: missing M3D-VQA column\(s\) \['Answer Choice'\]"
    ):
        m3d_vqa.convert_m3d_vqa([train], m3d_cap, out)
    assert not (out / "vqa.jsonl").exists()
    # nothing usable: skipped.csv lists why, and no vqa.jsonl claims a finished conversion
    nothing = _csv(
        tmp_path / "M3D_VQA_val.csv", [["ct_case/1/A.npy", TEXT, "1", "Q?", "A", "B", "NA", "NA", "A", "A"]]
    )
    assert m3d_vqa.convert_m3d_vqa([nothing], m3d_cap, out) == out / "vqa.jsonl"
    assert not (out / "vqa.jsonl").exists() and "image not in the M3D-Cap manifest" in (
        out / "skipped.csv"
    ).read_text(encoding="utf-8")

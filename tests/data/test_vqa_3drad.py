"""3D-RAD reader: the real test files load with the counts the csv module finds; fabricated edge cases."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from velvet.data.errors import DataError
from velvet.data.vqa_3drad import COLUMNS, ctrate_volume_name, read_3drad, read_3drad_csv

HEADER = ",".join(COLUMNS)


def _real_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "reports" / "vqa_3drad").glob("*.csv"))
    if not files:
        pytest.skip(f"no 3D-RAD files under {shared_data / 'reports' / 'vqa_3drad'}")
    return files


def test_real_files_match_an_independent_count(shared_data: Path) -> None:
    for path in _real_files(shared_data):
        rows = read_3drad_csv(path)
        # the same counts straight from the csv module, sharing no code with the reader
        with path.open(encoding="utf-8", newline="") as fh:
            raw = list(csv.DictReader(fh))
        assert len(rows) == len(raw) > 0, path.name
        assert Counter(r.kind for r in rows) == Counter(
            {"Open": "open", "Close": "closed"}[r["QuestionType"]] for r in raw
        )
        assert Counter(r.question_type for r in rows) == Counter(f"task{r['Task']}/{path.stem}" for r in raw)
        for row, ref in zip(rows, raw, strict=True):
            assert (row.task, row.subtask) == (int(ref["Task"]), int(ref["Subtask"]))
            assert row.volume_name == ref["VolumeName"] and row.question == ref["Question"].strip()
            if ref["QuestionType"] == "Close":
                letter = ref["AnswerChoice"]
                assert row.answer_letter == letter
                chosen = ref[f"Choice {letter}"]
                assert row.choices[row.answer_index] == chosen
                assert chosen.strip().rstrip(".").lower() == ref["Answer"].strip().rstrip(".").lower()
                assert row.choices == tuple(ref[f"Choice {c}"] for c in "ABCD" if ref[f"Choice {c}"] != "-")
            else:
                assert row.choices == () and row.answer_index is None
    assert len(read_3drad(shared_data / "reports" / "vqa_3drad")) == sum(
        len(read_3drad_csv(p)) for p in _real_files(shared_data)
    )


def _write(path: Path, lines: list[str], *, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def test_fabricated_files(tmp_path: Path) -> None:
    nodule = _write(
        tmp_path / "test" / "Task4_Existence_Detection" / "Lung nodule.csv",
        [
            "4,10,test_1_a_1.nii.gz,Is lung nodule noted?,yes.,Close,A,Yes,No,-,-",
            "",
            '4,10,test_2_a_1.nii.gz,"Is there a nodule, mass or cyst?",No,Close,B,Yes,No,-,-',
        ],
        bom=True,
    )
    temporal = _write(
        tmp_path / "test" / "Task6_Longitudinal_Temporal_Diagnosis" / "b.csv",
        [
            '6,1,test_3_b_1.nii.gz,"History: [0, 1].\nWhat is the status?",New lesion,Close,C,'
            "Refractory,Resolved,New lesion,No abnormality",
        ],
    )
    size = _write(
        tmp_path / "test" / "Task3_Medical_Computation" / "Size.csv",
        ["3,2,test_1_a_1.nii.gz,What is the size of the lesion?,18x12 mm,Open,-,-,-,-,-"],
    )
    (tmp_path / "test" / "._Size.csv").write_bytes(b"\x00\x05junk")  # macOS junk: ignored
    rows = read_3drad(tmp_path)
    assert [r.file for r in rows] == [size, nodule, nodule, temporal]
    assert [r.line for r in rows] == [2, 2, 4, 2]
    first = rows[1]
    assert first.question_type == "task4/Lung nodule" and (first.task, first.subtask) == (4, 10)
    assert first.kind == "closed" and first.choices == ("Yes", "No") and first.answer_letter == "A"
    assert first.answer == "yes."  # as written; the option text is choices[answer_index]
    assert rows[2].question == "Is there a nodule, mass or cyst?" and rows[2].answer_index == 1
    assert rows[3].question_type == "task6/b" and rows[3].choices[rows[3].answer_index] == "New lesion"
    assert rows[3].question.startswith("History: [0, 1].\n") and len(rows[3].choices) == 4
    assert rows[0].kind == "open" and rows[0].answer == "18x12 mm" and rows[0].choices == ()
    assert read_3drad([temporal, size]) == [rows[3], rows[0]]
    assert read_3drad(size) == [rows[0]]
    with pytest.raises(FileNotFoundError):
        read_3drad(tmp_path / "none")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("4,7,test_9_a_1.nii.gz,Q?,Yes,Close,A,Yes,-,No,-", "empty choice before a given one"),
        (
            "4,7,test_9_a_1.nii.gz,Q?,Yes,Closed,A,Yes,No,-,-",
            "QuestionType must be Open or Close, got 'Closed'",
        ),
        (
            "4,7,test_9_a_1.nii.gz,Q?,Yes,Close,C,Yes,No,-,-",
            "AnswerChoice 'C' is not the letter of a given choice (A-B)",
        ),
        ("4,7,test_9_a_1.nii.gz,Q?,Yes,Close,-,Yes,No,-,-", "AnswerChoice '-' is not the letter"),
        ("4,7,test_9_a_1.nii.gz,Q?,Yes,Close,B,Yes,No,-,-", "AnswerChoice B is 'No' but Answer is 'Yes'"),
        ("4,7,test_9_a_1.nii.gz,Q?,Yes,Close,A,Yes,-,-,-", "needs at least 2 choices"),
        ("3,1,test_9_a_1.nii.gz,Q?,5 mm,Open,A,5 mm,6 mm,-,-", "an Open row must have '-'"),
        ("x,7,test_9_a_1.nii.gz,Q?,Yes,Close,A,Yes,No,-,-", "Task/Subtask must be integers"),
        ("4,7,test_9_a_1.nii.gz, ,Yes,Close,A,Yes,No,-,-", "empty VolumeName, Question or Answer"),
    ],
)
def test_bad_rows_name_file_row_and_volume(tmp_path: Path, line: str, problem: str) -> None:
    path = _write(
        tmp_path / "Emphysema.csv",
        ["4,7,test_8_a_1.nii.gz,Is emphysema visible?,Yes,Close,A,Yes,No,-,-", line],
    )
    with pytest.raises(DataError) as info:
        read_3drad_csv(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: row of volume 'test_9_a_1.nii.gz': "), message
    assert problem in message


def test_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(HEADER.replace(",Choice D", "") + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"missing 3D-RAD column\(s\) \['Choice D'\]"):
        read_3drad_csv(path)
    _write(path, ["4,7,test_8_a_1.nii.gz,Q?,Yes,Close,A,Yes,No,-"])
    with pytest.raises(DataError, match=r"x.csv:2: 10 fields, but the header has 11"):
        read_3drad_csv(path)
    path.write_bytes(
        (HEADER + "\n4,7,test_8_a_1.nii.gz,Gr\xf6\xdfe?,Yes,Close,A,Yes,No,-,-\n").encode("latin-1")
    )
    with pytest.raises(DataError, match="not UTF-8"):
        read_3drad_csv(path)


def test_ctrate_volume_name() -> None:
    assert ctrate_volume_name("test_1001_a_1.nii.gz") == "valid_1001_a_1.nii.gz"
    assert ctrate_volume_name(" train_12_b_2.nii.gz ") == "train_12_b_2.nii.gz"
    assert ctrate_volume_name("test_7_a_3") == "valid_7_a_3.nii.gz"
    assert ctrate_volume_name("valid_7_a_3.nii.gz") == "valid_7_a_3.nii.gz"
    for bad in ("test_1001_a.nii.gz", "case_1_a_1.nii.gz", "test_1001_a_1.npy"):
        with pytest.raises(ValueError, match=r"is not <train\|test>"):
            ctrate_volume_name(bad)

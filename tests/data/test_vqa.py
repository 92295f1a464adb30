"""The VQA item schema: phantom question types, vqa.jsonl reading / writing / validation, majority baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from velvet.data.errors import DataError
from velvet.data.manifest import ManifestRecord, write_manifest
from velvet.data.phantoms import PhantomConfig, generate_phantoms, sample_case
from velvet.data.phantoms.vqa import QUESTION_TYPES, question_type_of
from velvet.data.vqa import VQAItem, majority_baseline, normalize_answer, read_vqa, write_vqa

# ----------------------------------------------------------------------------------- phantom items


def test_question_type_of_recovers_every_generated_type() -> None:
    config = PhantomConfig(n_cases=300, n_val=0, n_test=0)
    seen = set()
    for index in range(config.n_cases):
        for item in sample_case(config, index).vqa:
            assert question_type_of(item["question"]) == item["question_type"], item
            seen.add(item["question_type"])
            # the new key is appended: the original layout (and key order) is unchanged
            expected = ["id", "case_id", "question", "answer", "type"]
            expected += ["choices", "answer_choice"] if item["type"] == "closed" else []
            assert list(item) == [*expected, "question_type"]
    assert seen == set(QUESTION_TYPES)
    with pytest.raises(ValueError, match="not a phantom VQA question"):
        question_type_of("Is the pancreas enlarged?")


def test_generated_phantom_set_loads(tmp_path: Path) -> None:
    config = PhantomConfig(n_cases=3, n_val=1, n_test=1, shape=(16, 16, 12), spacing=(24.0, 24.0, 26.6))
    out = tmp_path / "phantoms"
    manifest = generate_phantoms(out, config, progress=False)
    items = read_vqa(out / "vqa.jsonl", manifest)
    specs = {config.case_id(i): sample_case(config, i) for i in range(config.n_cases)}
    assert len(items) == sum(len(s.vqa) for s in specs.values())
    for item in items:
        assert item.source == "phantoms"  # recognised by the phantoms.json beside the file
        assert item.volume == out / "volumes" / f"{item.case_id}.nii.gz"
        assert item.split == specs[item.case_id].split
    assert {i.split for i in read_vqa(out / "vqa.jsonl", manifest, split="val")} == {"val"}


def _legacy_set(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    """A phantom folder written before items had ``question_type``: vqa.jsonl + manifest + volumes."""
    config = PhantomConfig(n_cases=4, n_val=1, n_test=1)
    folder = tmp_path / "legacy"
    (folder / "volumes").mkdir(parents=True)
    (folder / "phantoms.json").write_text("{}", encoding="utf-8")
    records, lines = [], []
    for i in range(config.n_cases):
        spec = sample_case(config, i)
        volume = folder / "volumes" / f"{spec.case_id}.nii.gz"
        volume.write_bytes(b"")
        records.append(ManifestRecord(id=spec.case_id, volume=str(volume), split=spec.split, report="x"))
        lines += list(spec.vqa)
    write_manifest(records, folder / "manifest.csv")
    old = [{k: v for k, v in item.items() if k != "question_type"} for item in lines]
    (folder / "vqa.jsonl").write_text("".join(json.dumps(d) + "\n" for d in old), encoding="utf-8")
    return folder / "vqa.jsonl", folder / "manifest.csv", lines


def test_legacy_phantom_lines_load(tmp_path: Path) -> None:
    path, manifest, generated = _legacy_set(tmp_path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert set(json.loads(first)) == {
        "id",
        "case_id",
        "question",
        "answer",
        "type",
        "choices",
        "answer_choice",
    }
    items = read_vqa(path, manifest)
    assert [i.question_type for i in items] == [d["question_type"] for d in generated]
    for item, d in zip(items, generated, strict=True):
        assert (item.id, item.question, item.answer, item.kind) == (
            d["id"],
            d["question"],
            d["answer"],
            d["type"],
        )
        if item.kind == "closed":
            assert item.choices == tuple(d["choices"]) and item.answer_letter == d["answer_choice"]
            assert item.choices[item.answer_index] == item.answer
        else:
            assert item.choices == () and item.answer_index is None and item.answer_letter is None
        assert item.volume is not None and item.volume.name == f"{d['case_id']}.nii.gz"
    # without the manifest the case stays unresolved, with no split
    bare = read_vqa(path)
    assert all(i.volume is None and i.split is None and i.case_id for i in bare)
    assert [i.question_type for i in bare] == [d["question_type"] for d in generated]


# ----------------------------------------------------------------------------- writing and reading


def _item(**changes) -> VQAItem:
    base = dict(
        id="q1",
        question="Is there a nodule?",
        answer="Yes",
        kind="closed",
        choices=("Yes", "No"),
        answer_index=0,
        question_type="nodule",
        volume=None,
        case_id="case_1",
        split="test",
        source="velvet",
    )
    base.update(changes)
    return VQAItem(**base)


def test_round_trip_and_relative_paths(tmp_path: Path) -> None:
    volume = tmp_path / "data" / "volumes" / "a b.nii.gz"  # a space in the name
    volume.parent.mkdir(parents=True)
    volume.write_bytes(b"")
    items = [
        _item(volume=volume, case_id=None),
        _item(id="q2", kind="open", choices=(), answer_index=None, answer="A 4 mm nodule.", split=None),
        _item(
            id="q3", choices=("Liver", "Spleen", "Kidney"), answer="Kidney", answer_index=2, source="3d-rad"
        ),
    ]
    path = write_vqa(iter(items), tmp_path / "out" / "vqa.jsonl")  # a generator is fine
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {
        "id": "q1",
        "question": "Is there a nodule?",
        "answer": "Yes",
        "type": "closed",
        "choices": ["Yes", "No"],
        "answer_choice": "A",
        "question_type": "nodule",
        "split": "test",
        "volume": "../data/volumes/a b.nii.gz",
        "source": "velvet",
    }
    assert "choices" not in json.loads(lines[1]) and json.loads(lines[2])["answer_choice"] == "C"
    assert read_vqa(path) == items
    assert [i.id for i in read_vqa(path, split="test")] == ["q1", "q3"]
    with pytest.raises(ValueError, match="neither a volume nor a case_id"):
        write_vqa([_item(case_id=None)], tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="answer_index"):
        write_vqa([_item(answer_index=1)], tmp_path / "bad.jsonl")
    assert not (tmp_path / "bad.jsonl").exists()


def test_answer_letter_and_yes_no() -> None:
    assert _item().answer_letter == "A" and _item().is_yes_no
    assert _item(choices=("no", "YES"), answer="YES", answer_index=1).is_yes_no
    assert not _item(choices=("Yes", "No", "Maybe")).is_yes_no
    assert not _item(kind="open", choices=(), answer_index=None).is_yes_no
    assert _item(choices=tuple("abcde"), answer="e", answer_index=4).answer_letter == "E"


def test_default_question_type_outside_phantoms(tmp_path: Path) -> None:
    path = tmp_path / "vqa.jsonl"
    lines = [
        {
            "id": "a",
            "case_id": "c",
            "question": "Q?",
            "answer": "No",
            "type": "closed",
            "choices": ["Yes", "No"],
            "answer_choice": "B",
        },
        {"id": "b", "case_id": "c", "question": "Q?", "answer": "text", "type": "open"},
    ]
    path.write_text(
        "\ufeff" + "".join(json.dumps(d) + "\n\n" for d in lines), encoding="utf-8"
    )  # BOM, blank lines
    items = read_vqa(path)
    assert [(i.question_type, i.source, i.answer_index) for i in items] == [
        ("closed", "velvet", 1),
        ("open", "velvet", None),
    ]
    assert read_vqa(path, source="m3d-vqa")[0].source == "m3d-vqa"


GOOD = {
    "id": "x",
    "case_id": "case_1",
    "question": "Q?",
    "answer": "No",
    "type": "closed",
    "choices": ["Yes", "No"],
    "answer_choice": "B",
}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"id": "x", "question": ', "invalid JSON"),
        ('["a list"]', "each line must be a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "answer"}), "item 'x': missing key 'answer'"),
        (json.dumps({**GOOD, "type": "yes_no"}), "item 'x': unknown type 'yes_no'"),
        (
            json.dumps({**GOOD, "answer_choice": "C"}),
            "item 'x': answer_choice 'C' is not a letter of a choice (A-B)",
        ),
        (json.dumps({**GOOD, "answer_choice": "b"}), "item 'x': answer_choice 'b' is not a letter"),
        (json.dumps({**GOOD, "answer_choice": "A"}), "item 'x': choice A is 'Yes' but the answer is 'No'"),
        (json.dumps({**GOOD, "choices": ["No"], "answer_choice": "A"}), "item 'x': closed item needs 2"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "choices"}),
            "item 'x': closed item needs 'choices'",
        ),
        (json.dumps({**GOOD, "type": "open"}), "item 'x': open item has 'choices'"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "case_id"}),
            "item 'x': missing key 'volume' or 'case_id'",
        ),
        (json.dumps({**GOOD, "split": "validation"}), "item 'x': split 'validation' is not one of"),
        (json.dumps({**GOOD, "case_id": "case_9"}), "item 'x': case_id 'case_9' is not in the manifest"),
        (json.dumps({**GOOD, "split": "train"}), "item 'x': split 'train' conflicts with the manifest"),
        (json.dumps({**GOOD, "volume": "gone.nii.gz", "case_id": None}), "item 'x': volume file"),
        (json.dumps({**GOOD, "volume": "other.nii.gz"}), "is not the volume of case 'case_1'"),
        (json.dumps({**GOOD, "id": 7}), "'id' must be a non-empty string"),
        (json.dumps({**GOOD, "source": "web"}), "item 'x': unknown source 'web'"),
    ],
)
def test_invalid_lines_name_file_line_and_item(tmp_path: Path, line: str, problem: str) -> None:
    (tmp_path / "vol.nii.gz").write_bytes(b"")
    (tmp_path / "other.nii.gz").write_bytes(b"")
    manifest = write_manifest(
        [ManifestRecord(id="case_1", volume=str(tmp_path / "vol.nii.gz"), split="test")], tmp_path / "m.csv"
    )
    path = tmp_path / "vqa.jsonl"
    path.write_text(json.dumps({**GOOD, "id": "ok"}) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_vqa(path, manifest)
    assert str(info.value).startswith(f"{path}:2: ")
    assert problem in str(info.value)


def test_duplicate_id_empty_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "vqa.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"vqa.jsonl:2: item 'x': duplicate id \(first on line 1\)"):
        read_vqa(path)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no items"):
        read_vqa(path)
    with pytest.raises(DataError, match="does not exist"):
        read_vqa(tmp_path / "none.jsonl")
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        read_vqa(path)
    with pytest.raises(ValueError, match="split must be one of"):
        read_vqa(path, split="valid")


# ------------------------------------------------------------------------------------- baseline


def _qa(qt: str, answer: str, choices=("Yes", "No"), kind: str = "closed") -> VQAItem:
    if kind == "open":
        return _item(question_type=qt, answer=answer, kind="open", choices=(), answer_index=None)
    return _item(
        question_type=qt, answer=answer, choices=tuple(choices), answer_index=list(choices).index(answer)
    )


def test_majority_baseline() -> None:
    train = [
        _qa("yn", "Yes"),
        _qa("yn", "No"),
        _qa("yn", "No"),
        _qa("organ", "Liver.", ("Liver.", "Spleen")),  # normalised: "liver"
        _qa("organ", "liver", ("liver", "Spleen")),
        _qa("organ", "Spleen", ("Liver", "Spleen")),
        _qa("tie", "b", ("a", "b")),
        _qa("tie", "a", ("a", "b")),
        _qa("yn", "Yes", kind="open"),  # open items never count
        _qa("yn", "Yes", kind="open"),
    ]
    test = [
        _qa("yn", "No"),
        _qa("yn", "Yes"),
        _qa("yn", "No"),
        _qa("yn", "No"),
        _qa("organ", "LIVER", ("LIVER", "Spleen")),
        _qa("organ", "Spleen", ("Liver", "Spleen")),
        _qa("tie", "a", ("a", "b")),  # tie broken alphabetically: "a"
        _qa("unseen", "x", ("x", "y")),  # no train answer: wrong
        _qa("yn", "No", kind="open"),
    ]
    result = majority_baseline(train, test)
    per = result["per_type"]
    assert list(per) == ["organ", "tie", "unseen", "yn"]
    assert per["yn"] == {"answer": "no", "n_train": 3, "n_test": 4, "correct": 3, "accuracy": 0.75}
    assert per["organ"] == {"answer": "liver", "n_train": 3, "n_test": 2, "correct": 1, "accuracy": 0.5}
    assert per["tie"]["answer"] == "a" and per["tie"]["accuracy"] == 1.0
    assert per["unseen"] == {"answer": None, "n_train": 0, "n_test": 1, "correct": 0, "accuracy": 0.0}
    assert result["overall"]["n_test"] == 8 and result["overall"]["correct"] == 5
    assert result["overall"]["accuracy"] == pytest.approx(5 / 8)
    assert result["overall"]["macro_accuracy"] == pytest.approx((0.75 + 0.5 + 1.0 + 0.0) / 4)
    assert math.isnan(majority_baseline(train, [])["overall"]["accuracy"])
    assert normalize_answer("  Middle  lobe.. ") == "middle lobe"

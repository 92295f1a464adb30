"""Manifest reading/writing: formats, validation errors that name the row, atomic writes."""

from __future__ import annotations

import math
import os

import pytest

from velvet.data.errors import ManifestError
from velvet.data.manifest import ManifestRecord, read_manifest, write_manifest


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "vol").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "vol" / f"{name}.nii.gz").write_bytes(b"x")
    (tmp_path / "b.txt").write_text("Report of b. Second sentence.", encoding="utf-8")
    return tmp_path


def test_csv_with_labels_report_files_and_overrides(files):
    m = files / "m.csv"
    m.write_text(
        "id,volume,split,report,report_file,spacing,rescale_slope,rescale_intercept,label:Nodule,label:Effusion\n"
        'a,vol/a.nii.gz,train,"No nodule, clear lungs.",,,,,0,1\n'
        'b,vol/b.nii.gz,val,,b.txt,"0.7,0.7,1.5",1,-1024,1,\n'
        "c,vol/c.nii.gz,TEST,Fine.,,,,,,\n",
        encoding="utf-8",
    )
    man = read_manifest(m)
    assert [r.id for r in man] == ["a", "b", "c"]
    assert man.label_names == ["Nodule", "Effusion"]
    a, b, c = man.records
    assert a.report == "No nodule, clear lungs." and a.labels == {"Nodule": 0.0, "Effusion": 1.0}
    assert a.volume == str(files / "vol" / "a.nii.gz")
    assert b.load_report() == "Report of b. Second sentence."
    assert b.spacing == (0.7, 0.7, 1.5) and b.rescale == (1.0, -1024.0)
    assert b.labels["Nodule"] == 1.0 and math.isnan(b.labels["Effusion"])
    assert c.split == "test"
    assert [r.id for r in man.split("val")] == ["b"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_write_read_round_trip(files, suffix):
    records = [
        ManifestRecord(
            id="a",
            volume=str(files / "vol" / "a.nii.gz"),
            split="train",
            report='He said "clear", then, a comma.\nNew line.',
            labels={"Nodule": 1.0, "Effusion": math.nan},
            spacing=(0.5, 0.5, 2.0),
            rescale=(1.0, -1024.0),
        ),
        ManifestRecord(
            id="b", volume=str(files / "vol" / "b.nii.gz"), split="val", report_file=str(files / "b.txt")
        ),
    ]
    path = write_manifest(records, files / f"out{suffix}")
    back = read_manifest(path).records
    assert back[0].report == records[0].report and back[0].spacing == records[0].spacing
    assert back[0].rescale == records[0].rescale and back[0].labels["Nodule"] == 1.0
    assert math.isnan(back[0].labels["Effusion"])
    assert back[1].report_file == records[1].report_file
    assert all(math.isnan(v) for v in back[1].labels.values())  # unknown, in either format
    assert "vol/a.nii.gz" in path.read_text()  # stored relative to the manifest
    assert not list(files.glob(".tmp-*"))  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by others, like any written file


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a,vol/a.nii.gz,train,r\na,vol/b.nii.gz,train,r\n", "duplicate id 'a'"),
        ("a,vol/a.nii.gz,training,r\n", "split 'training'"),
        ("a,vol/a.nii.gz,train,\n", "has no report"),
        (",vol/a.nii.gz,train,r\n", "missing value"),
        ("a,vol/zzz.nii.gz,train,r\n", r"do not exist: a \(volume"),
    ],
)
def test_errors_name_the_file_and_row(files, body, message):
    m = files / "bad.csv"
    m.write_text("id,volume,split,report\n" + body, encoding="utf-8")
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(m)
    assert str(m) in str(info.value)


def test_bad_labels_spacing_and_columns(files):
    m = files / "bad.csv"
    m.write_text("id,volume,split,report,label:X\na,vol/a.nii.gz,train,r,2\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"bad.csv:2: label 'X' must be 0, 1 or empty"):
        read_manifest(m)
    m.write_text('id,volume,split,report,spacing\na,vol/a.nii.gz,train,r,"1,2"\n', encoding="utf-8")
    with pytest.raises(ManifestError, match="three positive numbers"):
        read_manifest(m)
    m.write_text("id,path,split\na,vol/a.nii.gz,train\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"missing required column\(s\) \['volume'\]"):
        read_manifest(m)
    j = files / "bad.jsonl"
    j.write_text(
        '{"id": "a", "volume": "vol/a.nii.gz", "split": "train", "report": "r"}\n{oops\n', encoding="utf-8"
    )
    with pytest.raises(ManifestError, match=r"bad.jsonl:2: invalid JSON"):
        read_manifest(j)


def test_report_file_problems(files):
    big = files / "big.txt"
    big.write_bytes(b"a" * (2 << 20))
    rec = ManifestRecord(id="x", volume="v", split="train", report_file=str(big))
    with pytest.raises(ManifestError, match="more than a report can be"):
        rec.load_report()
    latin = files / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        ManifestRecord(id="x", volume="v", split="train", report_file=str(latin)).load_report()


def test_check_files_can_be_disabled(files):
    m = files / "m.jsonl"
    m.write_text(
        '{"id": "a", "volume": "nowhere.nii.gz", "split": "train", "report": "r"}\n', encoding="utf-8"
    )
    assert len(read_manifest(m, check_files=False)) == 1


def test_a_csv_manifest_with_a_very_long_inline_report_is_read(tmp_path):
    from velvet.data.manifest import read_manifest

    report = "Small nodule in the right lower lobe. " * 20_000  # ~760 KB, past csv's 128 KiB field limit
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    path = tmp_path / "manifest.csv"
    path.write_text(f'id,volume,split,report\nc1,ct.nii.gz,train,"{report}"\n', encoding="utf-8")
    manifest = read_manifest(path)
    assert manifest.records[0].load_report() == report

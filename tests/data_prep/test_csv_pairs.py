"""Generic CSV converter: relative paths, skips, strict mode, split column and seeded fractions."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from data_prep import _common, csv_pairs
from velvet.data.errors import DataError
from velvet.data.manifest import read_manifest


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    """data/pairs.csv with paths relative to data/; one missing file and one empty report."""
    data = tmp_path / "data"
    for name in ("a", "b", "c"):
        (data / "scans" / name).mkdir(parents=True)
        (data / "scans" / name / "ct.nii.gz").write_bytes(b"placeholder")
    header = ["path", "findings", "impression", "split", "patient"]
    rows = [
        ["scans/a/ct.nii.gz", "Lungs clear, no nodule.", "Normal.", "train", "p1"],
        ["scans/b/ct.nii.gz", "Small effusion.", "", "Validation", "p2"],
        ["scans/c/ct.nii.gz", "", "Fracture.", "test", "p3"],
        ["scans/missing/ct.nii.gz", "Text.", "Text.", "train", "p4"],
        ["scans/a/ct.nii.gz", " ", "", "train", "p1"],
    ]
    return _csv(data / "pairs.csv", header, rows)


def _skipped(out: Path) -> list[tuple[str, str]]:
    with (out / "skipped.csv").open(encoding="utf-8", newline="") as fh:
        return [(Path(r["item"]).name, r["reason"]) for r in csv.DictReader(fh)]


def test_split_column_relative_paths_and_skips(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = csv_pairs.convert_csv_pairs(
        pairs, out, volume_column="path", report_columns=["findings", "impression"], split_column="split"
    )
    manifest = read_manifest(path)
    got = {r.id: (Path(r.volume).resolve(), r.split, r.report) for r in manifest}
    scans = pairs.parent / "scans"
    assert got == {
        "scans_a_ct": ((scans / "a" / "ct.nii.gz").resolve(), "train", "Lungs clear, no nodule.\nNormal."),
        "scans_b_ct": ((scans / "b" / "ct.nii.gz").resolve(), "val", "Small effusion."),
        "scans_c_ct": ((scans / "c" / "ct.nii.gz").resolve(), "test", "Fracture."),
    }
    # CSV line numbers name the rows: the header is line 1
    assert _skipped(out) == [("pairs.csv:5", "volume file not found"), ("pairs.csv:6", "duplicate id")]


def test_empty_report_and_root(pairs: Path, tmp_path: Path) -> None:
    moved = _csv(
        tmp_path / "elsewhere.csv",
        ["file", "text", "id"],
        [
            ["scans/a/ct.nii.gz", "Report A.", "A"],
            ["scans/b/ct.nii.gz", "  ", "B"],
            [str(pairs.parent / "scans/c/ct.nii.gz"), "C.", "C"],
        ],
    )
    out = tmp_path / "out"
    manifest = read_manifest(
        csv_pairs.convert_csv_pairs(
            moved, out, volume_column="file", report_columns=["text"], id_column="id", root=pairs.parent
        )
    )
    assert sorted(r.id for r in manifest) == ["A", "C"]  # relative to --root, absolute paths kept
    assert _skipped(out) == [("elsewhere.csv:3", "empty report")]


def test_strict_mode_raises_with_the_row(pairs: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"pairs\.csv:5: volume file not found"):
        csv_pairs.convert_csv_pairs(
            pairs,
            tmp_path / "out",
            volume_column="path",
            report_columns=["findings", "impression"],
            strict=True,
        )
    assert not (tmp_path / "out" / "manifest.csv").exists()
    with pytest.raises(DataError, match=r"missing column\(s\) \['report'\]"):
        csv_pairs.convert_csv_pairs(pairs, tmp_path / "out", volume_column="path", report_columns=["report"])


def test_seeded_fractions_by_group(tmp_path: Path) -> None:
    rows = []
    for i in range(40):
        (tmp_path / f"{i}.nii.gz").write_bytes(b"x")
        rows.append([f"{i}.nii.gz", f"Report {i}.", f"patient{i // 2}"])
    table = _csv(tmp_path / "t.csv", ["volume", "report", "patient"], rows)

    def convert(out: str, seed: int) -> dict[str, str]:
        path = csv_pairs.convert_csv_pairs(
            table,
            tmp_path / out,
            volume_column="volume",
            report_columns=["report"],
            group_column="patient",
            val_fraction=0.1,
            test_fraction=0.2,
            seed=seed,
        )
        return {r.id: r.split for r in read_manifest(path)}

    first = convert("a", 7)
    assert first == convert("b", 7)
    assert first != convert("c", 8)
    counts = {s: list(first.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 28, "val": 4, "test": 8}  # 20 patients: 2 val, 4 test, 2 rows each
    for i in range(0, 40, 2):  # both rows of a patient share the split
        assert first[str(i)] == first[str(i + 1)]


def test_main(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--csv", str(pairs), "--volume-column", "path", "--report-column", "findings", "impression"]
    assert csv_pairs.main([*argv, "--split-column", "split", "--out", str(out)]) == 0
    assert len(read_manifest(out / "manifest.csv")) == 3
    assert csv_pairs.main([*argv, "--out", str(out), "--strict"]) == 2


def test_non_utf8_csv_names_the_file_and_line_and_encoding_reads_it(pairs: Path, tmp_path: Path) -> None:
    text = pairs.read_text(encoding="utf-8").replace("Small effusion.", "Kleiner Erguss der Größe 4 mm.")
    pairs.write_bytes(text.encode("latin-1"))
    args = dict(volume_column="path", report_columns=["findings", "impression"], split_column="split")
    with pytest.raises(DataError) as info:
        csv_pairs.convert_csv_pairs(pairs, tmp_path / "out", **args)
    message = str(info.value)
    assert (
        message.startswith(f"{pairs}:3: not utf-8-sig text")
        and "--encoding" in message
        and "--delimiter" in message
    )
    path = csv_pairs.convert_csv_pairs(pairs, tmp_path / "out", encoding="latin-1", **args)
    assert {r.report for r in read_manifest(path)} >= {"Kleiner Erguss der Größe 4 mm."}
    argv = [
        "--csv",
        str(pairs),
        "--volume-column",
        "path",
        "--report-column",
        "findings",
        "--out",
        str(tmp_path / "o2"),
    ]
    assert csv_pairs.main(argv) == 2
    assert csv_pairs.main([*argv, "--encoding", "latin-1"]) == 0


def test_long_report_is_read_and_csv_errors_name_the_line(
    pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default_limit = csv.field_size_limit()
    long_report = "Lungs clear. " * 100_000  # ~1.3 MB: above the csv module's default field limit
    rows = list(csv.reader(pairs.open(encoding="utf-8", newline="")))
    rows[1][1] = long_report
    _csv(pairs, rows[0], rows[1:])
    args = dict(volume_column="path", report_columns=["findings"], split_column="split")
    path = csv_pairs.convert_csv_pairs(pairs, tmp_path / "out", **args)
    assert len(path.read_text(encoding="utf-8")) > len(long_report)
    # a csv.Error left (here: a field above a lowered limit) names the file and the line
    monkeypatch.setattr(_common, "CSV_FIELD_LIMIT", 1000)
    try:
        with pytest.raises(DataError) as info:
            csv_pairs.convert_csv_pairs(pairs, tmp_path / "out", **args)
    finally:
        csv.field_size_limit(default_limit)
    message = str(info.value)
    assert message.startswith(f"{pairs}:2: cannot be read as CSV (field larger than field limit")
    assert "--delimiter" in message

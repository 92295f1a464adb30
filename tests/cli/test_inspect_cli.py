"""``velvet inspect``: human and JSON output, warnings, and errors that do not stop the others."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from velvet.cli.commands import inspect as inspect_command


def _run(argv: list[str]) -> int:
    """Parse ``velvet inspect ...`` with the command's own parser and run it."""
    parser = argparse.ArgumentParser(prog="velvet")
    inspect_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["inspect", *argv])
    return args.func(args)


def test_json_one_path(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_data / "ct/lung_tumour_nrrd/ct.nrrd"
    assert _run([str(path), "--json"]) == 0
    out = capsys.readouterr()
    info = json.loads(out.out)
    assert info["path"] == str(path) and info["format"] == "nrrd"
    assert info["shape"] == [512, 512, 48]
    assert info["spacing"] == pytest.approx([0.57, 0.57, 5.0], abs=1e-3)
    assert info["orientation"] == "LPS"
    assert info["ct"]["verdict"] == "ct_hu"
    assert info["warnings"] == [] and out.err == ""


def test_json_several_paths_with_warnings(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [shared_data / "ct/abdomen_ct_small/ct.nii.gz", shared_data / "ct/edge_cases/mr_not_ct.nii.gz"]
    assert _run([*map(str, paths), "--json"]) == 0
    infos = json.loads(capsys.readouterr().out)
    assert [i["path"] for i in infos] == list(map(str, paths))
    assert [i["ct"]["verdict"] for i in infos] == ["ct_hu", "not_ct"]
    assert infos[0]["warnings"] == [] and "not CT" in infos[1]["warnings"][0]


def test_bad_file_fails_but_others_are_inspected(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"not a volume" * 50)
    good = shared_data / "ct/abdomen_ct_small/ct.nii.gz"
    assert _run([str(bad), str(good)]) == 1
    out = capsys.readouterr()
    assert out.err.startswith(f"error: {bad}: cannot read as NIfTI")
    assert str(good) in out.out and "shape        122 x 101 x 30" in out.out
    assert str(bad) not in out.out


def test_json_lists_the_error_in_place(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.nrrd"
    good = shared_data / "ct/abdomen_ct_small/ct.nii.gz"
    assert _run([str(good), str(missing), "--json"]) == 1
    out = capsys.readouterr()
    infos = json.loads(out.out)
    assert infos[0]["shape"] == [122, 101, 30]
    assert infos[1] == {"path": str(missing), "error": "no such file or directory"}
    assert out.err.strip() == f"error: {missing}: no such file or directory"


def test_human_output_shows_warnings(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = shared_data / "ct/edge_cases/dicom_tiny_16x16"
    assert _run([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "spacing      0.488 x 0.488 x 68.3 mm" in out
    assert f"warning: {folder}: non-uniform DICOM slice spacing" in out


def test_single_slice_is_an_error(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_data / "ct/edge_cases/single_slice_CT_small.dcm"
    assert _run([str(path)]) == 1
    assert "single slice" in capsys.readouterr().err

"""``velvet phantoms`` and ``data_prep/phantoms.py``: generate, print the manifest, clear errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from velvet.cli.commands import phantoms as phantoms_command
from velvet.data.manifest import read_manifest

SMALL = ["--shape", "16,16,12", "--spacing", "24,24,26", "--no-progress"]


def _run(argv: list[str]) -> int:
    """Parse ``velvet phantoms ...`` with the command's own parser and run it."""
    parser = argparse.ArgumentParser(prog="velvet")
    phantoms_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phantoms", *argv])
    return args.func(args)


def test_generates_and_prints_the_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ph"
    assert _run(["--out", str(out), "--n", "5", "--n-val", "1", "--n-test", "2", "--seed", "3", *SMALL]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(out / "manifest.csv")
    manifest = read_manifest(printed)
    assert [len(manifest.split(s)) for s in ("train", "val", "test")] == [2, 1, 2]
    # a second run with the same options does nothing and prints the same path
    assert _run(["--out", str(out), "--n", "5", "--n-val", "1", "--n-test", "2", "--seed", "3", *SMALL]) == 0
    assert capsys.readouterr().out.strip() == printed


def test_bad_options_give_an_error_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--out", str(tmp_path / "a"), "--n", "10", *SMALL]) == 1  # n-val + n-test > n
    assert "must not exceed n_cases" in capsys.readouterr().err
    assert _run(["--out", str(tmp_path / "b"), "--n", "3", "--n-val", "0", "--n-test", "1", *SMALL]) == 0
    capsys.readouterr()
    assert _run(["--out", str(tmp_path / "b"), "--n", "4", "--n-val", "0", "--n-test", "1", *SMALL]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert _run(["--out", str(tmp_path / "c"), "--shape", "16,16"]) == 1
    assert "shape must be three numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run(["--out", str(tmp_path / "c"), "--shape", "a,b,c"])  # argparse rejects it


def test_data_prep_script(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "data_prep" / "phantoms.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--out",
            str(tmp_path),
            "--n",
            "2",
            "--n-val",
            "0",
            "--n-test",
            "1",
            *SMALL,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "manifest.csv")

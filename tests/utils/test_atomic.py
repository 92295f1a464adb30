"""Atomic file and directory writes: complete or absent, nothing left behind, even on Ctrl-C."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from velvet.utils import atomic
from velvet.utils.atomic import (
    TMP_PREFIX,
    atomic_directory,
    atomic_path,
    atomic_write,
    remove_stale_temporaries,
    save_directory_atomically,
)

FAILURES = [ValueError("writer failed"), KeyboardInterrupt()]


def _temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.startswith(TMP_PREFIX))


def test_write_creates_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.json"  # missing parents are created
    assert atomic_write(target, "héllo\n") == target
    assert target.read_bytes() == "héllo\n".encode()  # UTF-8, no newline translation
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _temporaries(tmp_path) == []


def test_temporary_is_a_sibling_that_keeps_the_suffix(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "ct.nii.gz") as tmp:
        # same folder (os.replace is atomic within one filesystem), extension kept for nibabel & co
        assert tmp.parent == tmp_path and tmp.name.startswith(TMP_PREFIX) and tmp.name.endswith("-ct.nii.gz")
        tmp.write_bytes(b"x")
    assert (tmp_path / "ct.nii.gz").read_bytes() == b"x"


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__)
def test_failed_file_write_keeps_the_old_file(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "manifest.csv"
    target.write_text("old")
    with pytest.raises(type(error)), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise error
    assert target.read_text() == "old"
    assert _temporaries(tmp_path) == []


def test_interrupt_during_fsync_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.bin", b"data")
    assert list(tmp_path.iterdir()) == []


def test_data_reaches_the_disk_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    atomic_write(tmp_path / "a.txt", "a")
    assert events[:2] == ["fsync-file", "replace"]


def test_directory_is_swapped_whole(tmp_path: Path) -> None:
    target = tmp_path / "tokenizer"
    target.mkdir()
    (target / "stale.txt").write_text("from the old folder")

    def save(folder: str) -> None:
        Path(folder, "vocab.txt").write_text("[PAD]\n")

    assert save_directory_atomically(save, target) == target
    assert sorted(p.name for p in target.iterdir()) == ["vocab.txt"]
    assert _temporaries(tmp_path) == []


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__)
def test_failed_directory_write_keeps_the_old_folder(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("old")

    def save(folder: str) -> None:
        Path(folder, "config.json").write_text("new")
        raise error

    with pytest.raises(type(error)):
        save_directory_atomically(save, target)
    assert (target / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_interrupt_between_the_two_renames_restores_the_old_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("old")
    real_replace, calls = os.replace, []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the old folder has been moved aside; the new one is not in yet
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("new")
    assert calls[0][0] == "model"  # the interrupt hit between the two renames
    assert (target / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_remove_stale_temporaries(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f"{TMP_PREFIX}0123456789ab-ct.nii.gz").write_bytes(b"partial")
    (tmp_path / "ct.nii.gz").write_bytes(b"complete")
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["ct.nii.gz"]


def test_historical_import_paths_are_the_same_objects() -> None:
    from velvet.data import atomic as data_atomic
    from velvet.data import tokenization

    assert data_atomic.atomic_path is atomic_path
    assert data_atomic.remove_stale_temporaries is remove_stale_temporaries
    assert tokenization.save_directory_atomically is save_directory_atomically

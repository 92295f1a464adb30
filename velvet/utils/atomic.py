"""Atomic file and directory output: write beside the target, flush to disk, then rename into place.

A reader (another DataLoader worker, another DDP rank, a re-run after a crash) therefore sees
either the complete old content or the complete new content, never a half-written one.

- :func:`atomic_path` yields a temporary file path in the target's folder; when the block
  succeeds the file is fsynced and renamed over the target with :func:`os.replace` (atomic on
  POSIX and Windows within one filesystem, which is why the temporary lives beside the target).
- :func:`atomic_write` writes ``bytes`` or ``str`` through :func:`atomic_path`.
- :func:`atomic_directory` / :func:`save_directory_atomically` do the same for a whole folder.

On any exception, ``KeyboardInterrupt`` included, the temporary is deleted and the target is
left as it was. Temporary names start with :data:`TMP_PREFIX` (``.tmp-``), so the leftovers of a
killed process (``SIGKILL`` runs no cleanup) are recognisable: see :func:`remove_stale_temporaries`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "TMP_PREFIX",
    "atomic_directory",
    "atomic_path",
    "atomic_write",
    "remove_stale_temporaries",
    "save_directory_atomically",
]

TMP_PREFIX = ".tmp-"


def _sibling(target: Path, tag: str = "") -> Path:
    # the full target name stays the suffix (``.tmp-<uuid>-ct.nii.gz``): writers that pick the
    # format from the extension (nibabel, SimpleITK, safetensors) keep working
    return target.parent / f"{TMP_PREFIX}{tag}{uuid.uuid4().hex[:12]}-{target.name}"


def _fsync_file(path: Path) -> None:
    # the data must be on disk before the rename: otherwise a power cut can leave the new name
    # pointing at an empty file (ext4/xfs delayed allocation). Windows only fsyncs writable handles.
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable. Best effort: Windows cannot open folders, and some
    # filesystems (network mounts, FUSE) refuse fsync on a directory; the rename is atomic anyway.
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; fsync and rename it to ``path`` when the block succeeds.

    The parent folder is created if needed. The block must create the temporary file (any
    writer: ``open``, ``np.save``, ``nib.save``, ``safetensors``); if the block raises (any
    exception, ``KeyboardInterrupt`` included) the temporary is deleted and ``path`` is untouched.

    Args:
        path: the final file path (replaced if it exists).

    Yields:
        The temporary path to write to.

    Example:
        >>> with atomic_path("out/ct.nii.gz") as tmp:  # doctest: +SKIP
        ...     nib.save(img, tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        # after a successful os.replace the temporary is gone already; otherwise remove it
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: the file (replaced if it exists; its folder is created if needed).
        data: the content; ``str`` is encoded with ``encoding`` and written without newline
            translation, so the bytes are the same on every platform.
        encoding: the text encoding for ``str`` data.

    Returns:
        ``path`` as a Path.
    """
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            _fsync_file(p)
    _fsync_dir(folder)


@contextmanager
def atomic_directory(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``directory``; swap it in when the block succeeds.

    An existing ``directory`` is replaced as a whole (files of the old folder that the new one
    lacks do not survive). A reader sees the old folder or the complete new one; between the two
    renames the name is absent for an instant (POSIX cannot rename over a non-empty folder). If
    the block raises, or the process is interrupted during the swap, the temporary is deleted and
    the old folder is kept (moved back if it had already been moved aside).

    Args:
        directory: the final folder.

    Yields:
        The temporary folder to fill.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target)
    old = _sibling(target, "old-")
    try:
        tmp.mkdir()
        yield tmp
        _fsync_tree(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if old.exists() and not target.exists():
            # interrupted between the two renames: put the old folder back rather than lose it
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def save_directory_atomically(save: Callable[[str], Any], directory: str | os.PathLike[str]) -> Path:
    """Run ``save(tmp_dir)`` then swap ``tmp_dir`` in as ``directory`` (see :func:`atomic_directory`).

    Args:
        save: writes the folder's content into the path it is given (e.g. a Hugging Face
            ``save_pretrained``); it receives a ``str``.
        directory: the final folder (replaced as a whole if it exists).

    Returns:
        ``directory`` as a Path.
    """
    with atomic_directory(directory) as tmp:
        save(str(tmp))
    return Path(directory)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the ``.tmp-*`` files that killed writers left under ``folder``; returns how many.

    Only call this when no other writer is running on the folder (e.g. at a converter's start):
    a live writer's temporary looks the same.

    Args:
        folder: the folder to clean (recursively).

    Returns:
        The number of files deleted.
    """
    count = 0
    for p in Path(folder).rglob(f"{TMP_PREFIX}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            count += 1
    return count

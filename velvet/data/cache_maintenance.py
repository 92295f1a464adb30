"""The volume cache's folder and its housekeeping.

The folder: where it is by default (:func:`default_cache_dir`) and :data:`CACHE_FORMAT`, the
version of the entries' format that names the folder they live in (``<root>/v2/``); bump it
whenever the reader or the preprocessing pipeline of :mod:`velvet.data.cache` changes its output.

The housekeeping: :func:`cache_stats` counts a folder's entries and recorded failures (what
``velvet cache stats`` prints) and :func:`clean_stale_temporaries` removes the ``.tmp-*`` files
that killed writers left behind (once older than :data:`STALE_TEMP_SECONDS`), which
:meth:`~velvet.data.cache.VolumeCache.warm` does before warming.

Standard library only: importing this module does not import torch. Everything public here is
re-exported by :mod:`velvet.data.cache`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from velvet.utils.atomic import TMP_PREFIX
from velvet.utils.paths import velvet_cache_root

__all__ = [
    "CACHE_FORMAT",
    "STALE_TEMP_SECONDS",
    "CacheStats",
    "cache_stats",
    "clean_stale_temporaries",
    "default_cache_dir",
]

CACHE_FORMAT = 2  # 2: label maps resampled onto the image's grid; failure records per path
# a temporary untouched for this long belongs to a killed writer (a live one writes for seconds)
STALE_TEMP_SECONDS = 600


def default_cache_dir() -> Path:
    """``volumes/`` under :func:`velvet.utils.paths.velvet_cache_root` (the hub's root too).

    That is ``$VELVET_CACHE/volumes``, else ``$XDG_CACHE_HOME/velvet/volumes``, else
    ``~/.cache/velvet/volumes``.
    """
    return velvet_cache_root() / "volumes"


@dataclass
class CacheStats:
    """What a cache folder holds (see :func:`cache_stats`).

    Attributes:
        root: the cache folder.
        entries: preprocessed volumes of the current :data:`CACHE_FORMAT`.
        entry_bytes: their total size.
        failures: recorded failures.
        temporaries: ``.tmp-*`` files (live or killed writers'); never counted as entries.
        temporary_bytes: their total size.
        stale_removed: temporaries removed by this call (``clean=True``).
    """

    root: Path
    entries: int = 0
    entry_bytes: int = 0
    failures: int = 0
    temporaries: int = 0
    temporary_bytes: int = 0
    stale_removed: int = 0

    def __str__(self) -> str:
        text = (
            f"{self.root}: {self.entries} volumes ({self.entry_bytes / 2**20:.1f} MiB), "
            f"{self.failures} cached failures"
        )
        if self.temporaries:
            text += (
                f", {self.temporaries} temporary file(s) of writers ({self.temporary_bytes / 2**20:.1f} MiB)"
            )
        if self.stale_removed:
            text += f"; removed {self.stale_removed} stale temporary file(s) of killed writers"
        return text


def clean_stale_temporaries(
    root: str | os.PathLike[str], *, max_age: float = STALE_TEMP_SECONDS
) -> tuple[int, int]:
    """Remove the ``.tmp-*`` files under ``root`` that no writer has touched for ``max_age`` seconds.

    A live writer's temporary is renamed into place seconds after its last write, so one this old
    belongs to a killed process (SIGKILL, OOM killer, power loss). Safe while other writers run.

    Returns:
        ``(files removed, bytes freed)``.
    """
    folder = Path(root)
    if not folder.is_dir():
        return 0, 0
    now = time.time()
    removed = freed = 0
    for tmp in folder.rglob(f"{TMP_PREFIX}*"):
        try:
            st = tmp.stat()
            if not tmp.is_file() or now - st.st_mtime < max_age:
                continue
            tmp.unlink()
        except OSError:  # renamed or removed meanwhile
            continue
        removed += 1
        freed += st.st_size
    return removed, freed


def cache_stats(
    root: str | os.PathLike[str] | None = None, *, clean: bool = False, max_age: float = STALE_TEMP_SECONDS
) -> CacheStats:
    """Count a cache folder's entries and failures, leaving writers' temporaries out of both.

    Args:
        root: cache folder (default :func:`default_cache_dir`).
        clean: first remove stale temporaries (:func:`clean_stale_temporaries`).
        max_age: age in seconds from which a temporary is stale.

    Returns:
        A :class:`CacheStats`; ``str()`` of it is a one-line summary.
    """
    folder = Path(root) if root is not None else default_cache_dir()
    stats = CacheStats(root=folder)
    if clean:
        stats.stale_removed = clean_stale_temporaries(folder, max_age=max_age)[0]
    current = folder / f"v{CACHE_FORMAT}"
    if not current.is_dir():
        return stats
    for f in current.rglob("*"):
        try:
            if not f.is_file():
                continue
            size = f.stat().st_size
        except OSError:
            continue
        if f.name.startswith(TMP_PREFIX):
            stats.temporaries += 1
            stats.temporary_bytes += size
        elif f.name.endswith(".error.json"):
            stats.failures += 1
        elif f.name.endswith(".safetensors"):
            stats.entries += 1
            stats.entry_bytes += size
    return stats

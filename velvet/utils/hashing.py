"""sha256 digests of files (read in chunks, never whole in memory) and of strings."""

from __future__ import annotations

import hashlib
import os
from typing import Any

__all__ = ["CHUNK_SIZE", "sha256_file", "sha256_text", "update_from_file"]

CHUNK_SIZE = 1 << 20  # 1 MiB: large enough for full disk throughput, small enough for any memory


def update_from_file(digest: Any, path: str | os.PathLike[str]) -> None:
    """Feed a file's bytes into a running ``hashlib`` object, chunk by chunk.

    For digests over several files (e.g. a DICOM folder); for one file use :func:`sha256_file`.

    Args:
        digest: a ``hashlib`` hash object (anything with ``update(bytes)``).
        path: the file to read.
    """
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file's bytes.

    Args:
        path: the file to hash.

    Returns:
        64 lower-case hex characters.
    """
    digest = hashlib.sha256()
    update_from_file(digest, path)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """The sha256 hex digest of ``text`` encoded as UTF-8 (cache keys, JSON payloads).

    Args:
        text: the string to hash.

    Returns:
        64 lower-case hex characters.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

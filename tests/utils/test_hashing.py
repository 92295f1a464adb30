"""sha256 of files (chunked) and strings: the one implementation the hub and the cache share."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from velvet.utils import hashing
from velvet.utils.hashing import sha256_file, sha256_text


@pytest.mark.parametrize("size", [0, 1, 6, 7, 8, 29])
def test_file_digest_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(hashing, "CHUNK_SIZE", 7)  # a tiny chunk puts every size across boundaries
    data = bytes(range(size))
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_file_is_read_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100)
    monkeypatch.setattr(hashing, "CHUNK_SIZE", 16)
    sizes: list[int] = []
    real_open = open

    def recording_open(path: Any, mode: str = "r") -> Any:
        fh = real_open(path, mode)
        read = fh.read

        class Reader:
            def __enter__(self) -> Reader:
                return self

            def __exit__(self, *exc: object) -> None:
                fh.close()

            def read(self, n: int = -1) -> bytes:
                sizes.append(n)
                return read(n)

        return Reader()

    monkeypatch.setattr(hashing, "open", recording_open, raising=False)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(b"x" * 100).hexdigest()
    assert sizes and all(n == 16 for n in sizes)  # never read(-1): a 10 GB file stays out of memory


def test_text_digest_is_utf8() -> None:
    text = "Lungs clear. Größe 3 mm"
    assert sha256_text(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert sha256_text("") == hashlib.sha256(b"").hexdigest()


def test_the_hub_reexports_it() -> None:
    import velvet.hub

    assert velvet.hub.sha256_file is sha256_file

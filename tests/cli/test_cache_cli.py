"""velvet cache info: counts volumes and failures, never a killed writer's temporary file."""

from __future__ import annotations

import os
import time

from velvet.cli.main import main
from velvet.data.cache import CACHE_FORMAT


def test_cache_info_removes_and_never_counts_stale_temporaries(tmp_path, capsys):
    shard = tmp_path / f"v{CACHE_FORMAT}" / "ab"
    shard.mkdir(parents=True)
    (shard / "abcd.safetensors").write_bytes(b"x" * 1024)
    (shard / "dead.error.json").write_text("{}")
    stale = shard / ".tmp-1234-efgh.safetensors"  # a writer killed mid-write an hour ago
    stale.write_bytes(b"y" * 4096)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = shard / ".tmp-5678-ijkl.safetensors"  # a writer still at work: left alone
    fresh.write_bytes(b"z")
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ": 1 volumes" in out and "1 cached failures" in out
    assert not stale.exists() and fresh.exists()

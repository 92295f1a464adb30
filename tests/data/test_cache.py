"""The content-addressed volume cache: keys, reuse, failures, damage and concurrent writers."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import shutil

import numpy as np
import pytest
import torch

from velvet.data.atomic import save_nifti
from velvet.data.cache import UncachedVolumes, VolumeCache, content_digest
from velvet.data.contract import PreprocessContract
from velvet.data.errors import VolumeReadError, VolumeValueError
from velvet.data.manifest import ManifestRecord

CONTRACT = PreprocessContract(crop_foreground=False, spacing=(4.0, 4.0, 4.0), spatial_size=(16, 16, 16))


def _volume(path, value=40, shape=(24, 24, 24)):
    x = np.full(shape, -1000, np.int16)
    x[4:20, 4:20, 4:20] = value
    save_nifti(x, np.diag([2.0, 2.0, 2.0, 1.0]), path)
    return str(path)


def _record(path, rid="a", **kw):
    return ManifestRecord(id=rid, volume=str(path), split="train", report="r", **kw)


class _Counting(UncachedVolumes):
    calls = 0

    def get_or_create(self, record):
        type(self).calls += 1
        return super().get_or_create(record)


def test_key_is_content_addressed(tmp_path):
    a = _volume(tmp_path / "a.nii.gz")
    b = tmp_path / "copy" / "b.nii.gz"
    b.parent.mkdir()
    shutil.copy(a, b)
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    assert cache.key(_record(a)) == cache.key(_record(b))  # moved/copied file keeps its key
    assert cache.key(_record(a)) != cache.key(_record(a, spacing=(1.0, 1.0, 1.0)))  # header override
    other = VolumeCache(tmp_path / "cache", CONTRACT.replace(hu_window=(-200, 300)))
    assert other.key(_record(a)) != cache.key(_record(a))  # contract
    _volume(b, value=41)
    assert cache.key(_record(a)) != cache.key(_record(b))  # edited content


def test_digest_memo_is_used_and_invalidated(tmp_path):
    a = _volume(tmp_path / "a.nii.gz")
    memo = tmp_path / "memo"
    d1 = content_digest(a, memo)
    assert len(list(memo.iterdir())) == 1
    assert content_digest(a, memo) == d1
    _volume(tmp_path / "a.nii.gz", value=99)  # new size/mtime -> new signature -> re-hash
    assert content_digest(a, memo) != d1
    with pytest.raises(VolumeReadError, match="does not exist"):
        content_digest(tmp_path / "nope.nii.gz", memo)


def test_content_digest_format_is_stable(tmp_path):
    # the digests are cache keys: a change here silently orphans every user's cache (bump CACHE_FORMAT)
    (tmp_path / "ct.nii.gz").write_bytes(b"volume bytes")
    assert content_digest(tmp_path / "ct.nii.gz") == hashlib.sha256(b"volume bytes").hexdigest()
    series = tmp_path / "series"
    (series / "sub").mkdir(parents=True)
    (series / "b.dcm").write_bytes(b"slice b")
    (series / "sub" / "a.dcm").write_bytes(b"slice a")
    expected = hashlib.sha256(b"b.dcm\0slice b" + b"sub/a.dcm\0slice a").hexdigest()  # sorted paths
    assert content_digest(series) == expected


def test_created_once_then_loaded(tmp_path, monkeypatch):
    a = _volume(tmp_path / "a.nii.gz")
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    _Counting.calls = 0
    cache._compute = _Counting(CONTRACT)
    first = cache.get_or_create(_record(a))
    second = cache.get_or_create(_record(a))
    again = VolumeCache(tmp_path / "cache", CONTRACT).get_or_create(_record(a))  # a later run
    assert _Counting.calls == 1
    assert first["image"].dtype == torch.float16 and first["image"].shape == (1, 16, 16, 16)
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["image"], again["image"])
    assert torch.allclose(first["affine"], second["affine"])
    direct = UncachedVolumes(CONTRACT).get_or_create(_record(a))
    assert torch.equal(direct["image"], first["image"])
    assert not list((tmp_path / "cache").rglob(".tmp-*"))


def test_failures_are_cached_and_reraised(tmp_path):
    bad = tmp_path / "nan.nii.gz"
    x = np.zeros((8, 8, 8), np.float32)
    x[0, 0, 0] = np.nan
    save_nifti(x, np.eye(4), bad)
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    with pytest.raises(VolumeValueError, match="nan.nii.gz"):
        cache.get_or_create(_record(bad))
    _Counting.calls = 0
    cache._compute = _Counting(CONTRACT)
    with pytest.raises(VolumeValueError, match="cached failure"):
        cache.get_or_create(_record(bad))
    assert _Counting.calls == 0


def test_damaged_entry_is_recomputed(tmp_path):
    a = _volume(tmp_path / "a.nii.gz")
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    good = cache.get_or_create(_record(a))
    entry = cache.path(cache.key(_record(a)))
    entry.write_bytes(entry.read_bytes()[:50])  # bit rot / truncated by hand
    again = cache.get_or_create(_record(a))
    assert torch.equal(good["image"], again["image"])


def test_label_maps_are_cached_as_integers(tmp_path):
    a = _volume(tmp_path / "a.nii.gz")
    seg = tmp_path / "seg.nii.gz"
    lab = np.zeros((24, 24, 24), np.uint8)
    lab[4:20, 4:20, 4:20] = 3
    save_nifti(lab, np.diag([2.0, 2.0, 2.0, 1.0]), seg)
    cache = VolumeCache(tmp_path / "cache", CONTRACT, label_map=True)
    out = cache.get_or_create(_record(a, label_map=str(seg)))
    assert out["label_map"].dtype == torch.uint8 and set(out["label_map"].unique().tolist()) == {0, 3}
    loaded = cache.get_or_create(_record(a, label_map=str(seg)))
    assert torch.equal(loaded["label_map"], out["label_map"])


def _hammer(args):
    root, path, n = args
    # as DataLoader workers do: a forked child must not reuse the parent's OpenMP pool (it deadlocks)
    torch.set_num_threads(1)
    cache = VolumeCache(root, CONTRACT)
    for _ in range(n):
        cache.get_or_create(_record(path))
        cache.path(cache.key(_record(path))).unlink(missing_ok=True)  # force rewrites
    return True


@pytest.mark.slow
def test_concurrent_writers_never_expose_partial_files(tmp_path):
    a = _volume(tmp_path / "a.nii.gz")
    root = tmp_path / "cache"
    VolumeCache(root, CONTRACT).get_or_create(_record(a))  # import MONAI here: forked writers start warm
    with mp.get_context("fork").Pool(2) as pool:
        assert all(pool.map(_hammer, [(root, a, 4), (root, a, 4)]))
    cache = VolumeCache(root, CONTRACT)
    out = cache.get_or_create(_record(a))
    assert out["image"].shape == (1, 16, 16, 16)
    assert not list(root.rglob(".tmp-*"))


def test_warm_with_workers_reports_failures(tmp_path):
    good = [_volume(tmp_path / f"v{i}.nii.gz", value=40 + i) for i in range(3)]
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti at all")
    records = [_record(p, rid=f"c{i}") for i, p in enumerate(good)] + [
        _record(tmp_path / "broken.nii.gz", rid="bad")
    ]
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    report = cache.warm(records, workers=2, progress=False)
    assert (report.created, report.cached, len(report.failures)) == (3, 0, 1)
    assert report.failures[0][0] == "bad" and "broken.nii.gz" in report.failures[0][1]
    again = cache.warm(records, workers=0, progress=False)
    assert (again.created, again.cached, len(again.failures)) == (0, 3, 1)

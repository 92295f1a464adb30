"""The content-addressed volume cache: keys, reuse, failures, damage and concurrent writers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time

import numpy as np
import pytest
import torch

from velvet.data.atomic import save_nifti
from velvet.data.cache import STALE_TEMP_SECONDS, UncachedVolumes, VolumeCache, cache_stats, content_digest
from velvet.data.contract import PreprocessContract
from velvet.data.errors import VolumeReadError, VolumeValueError
from velvet.data.io import VolumeTooLargeError
from velvet.data.manifest import ManifestRecord
from velvet.utils.atomic import TMP_PREFIX

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


# ------------------------------------------------------------------ failures name the right file


def test_two_zero_byte_files_each_report_their_own_path(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "empty.nii.gz", tmp_path / "b" / "other.nii.gz"
    first.write_bytes(b"")
    second.write_bytes(b"")
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    with pytest.raises(VolumeReadError) as one:
        cache.get_or_create(_record(first, rid="c1"))
    with pytest.raises(VolumeReadError, match="cached failure") as two:
        cache.get_or_create(_record(second, rid="c2"))
    assert str(one.value).startswith(f"{first}: empty file")
    assert str(two.value).startswith(f"{second}: empty file") and str(first) not in str(two.value)
    report = cache.warm([_record(first, rid="c1"), _record(second, rid="c2")], progress=False)
    assert [message.split(": ")[:2] for _, message in report.failures] == [
        ["case 'c1'", str(first)],
        ["case 'c2'", str(second)],
    ]


def test_a_png_never_gets_its_nifti_twins_entry_or_error(tmp_path):
    good = _volume(tmp_path / "ct.nii.gz")
    twin = tmp_path / "ct.png"
    twin.write_bytes((tmp_path / "ct.nii.gz").read_bytes())
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    assert cache.get_or_create(_record(good))["image"].shape == (1, 16, 16, 16)
    with pytest.raises(VolumeReadError, match=r"ct.png: unknown image format"):
        cache.get_or_create(_record(twin))  # was: served the NIfTI's entry
    broken_png, broken_nii = tmp_path / "x.png", tmp_path / "x.nii.gz"
    broken_png.write_bytes(b"garbage" * 50)
    broken_nii.write_bytes(b"garbage" * 50)
    with pytest.raises(VolumeReadError, match=r"x.png: unknown image format"):
        cache.get_or_create(_record(broken_png))
    with pytest.raises(VolumeReadError) as info:  # was: the .png's cached "unknown image format"
        cache.get_or_create(_record(broken_nii))
    assert str(info.value).startswith(f"{broken_nii}: cannot read as NIfTI")


def test_corrupt_failure_record_is_named_and_repaired(tmp_path, caplog):
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti at all")
    records = [
        _record(_volume(tmp_path / "ok.nii.gz"), rid="ok"),
        _record(tmp_path / "broken.nii.gz", rid="bad"),
    ]
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    assert len(cache.warm(records, progress=False).failures) == 1
    error_file = cache.path(cache.key(records[1])).with_suffix(".error.json")
    error_file.write_bytes(error_file.read_bytes()[:17])  # truncated by a full disk or a kill
    with caplog.at_level("WARNING", logger="velvet.data.cache"):
        report = cache.warm(records, progress=False)  # was: JSONDecodeError in every later warm
    assert (report.cached, len(report.failures)) == (1, 1)
    assert report.failures[0][1].startswith(f"case 'bad': {tmp_path / 'broken.nii.gz'}: cannot read")
    assert str(error_file) in caplog.text and "damaged cache failure record" in caplog.text
    json.loads(error_file.read_text())  # rewritten whole
    error_file.write_text('["a list, not a record"]')
    with pytest.raises(VolumeReadError, match="broken.nii.gz: cannot read"):
        cache.get_or_create(records[1])


def test_damaged_digest_memo_and_entry_metadata_are_recomputed(tmp_path):
    a = _volume(tmp_path / "a.nii.gz")
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    key = cache.key(_record(a))
    (memo,) = (tmp_path / "cache" / "digests").iterdir()
    memo.write_text(memo.read_text()[:20])  # a truncated digest would silently give a wrong key
    assert cache.key(_record(a)) == key
    assert len(memo.read_text()) == 64
    good = cache.get_or_create(_record(a))
    from safetensors.torch import save_file

    entry = cache.path(key)
    save_file({"image": good["image"]}, str(entry), metadata={"affine": "[[1, 2"})  # valid file, bad metadata
    again = cache.get_or_create(_record(a))  # was: a JSONDecodeError
    assert torch.equal(again["image"], good["image"]) and torch.equal(again["affine"], good["affine"])


def test_stale_temporaries_are_removed_and_never_counted(tmp_path):
    a = _volume(tmp_path / "a.nii.gz")
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    cache.get_or_create(_record(a))
    folder = cache.path(cache.key(_record(a))).parent
    stale = folder / f"{TMP_PREFIX}0123456789ab-{'f' * 64}.safetensors"  # a killed writer's
    live = folder / f"{TMP_PREFIX}ba9876543210-{'e' * 64}.safetensors"  # a writer still at work
    stale.write_bytes(b"\0" * 65536)
    live.write_bytes(b"\0" * 100)
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    stats = cache_stats(tmp_path / "cache")
    assert (stats.entries, stats.failures, stats.temporaries) == (1, 0, 2)
    assert stats.entry_bytes == cache.path(cache.key(_record(a))).stat().st_size
    assert "1 volumes" in str(stats) and "2 temporary file(s)" in str(stats)
    report = cache.warm([_record(a)], progress=False)
    assert report.stale_removed == 1 and report.cached == 1
    assert not stale.exists() and live.exists()
    assert cache_stats(tmp_path / "cache").temporaries == 1
    os.utime(live, (old, old))
    assert cache_stats(tmp_path / "cache", clean=True).stale_removed == 1 and not live.exists()


# ------------------------------------------------------------------ lying headers under on_error: skip


def _liar(path):
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((20000, 20000, 20000))
    hdr.set_data_dtype(np.int16)
    hdr["vox_offset"] = 352
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\x01" * 200)  # 552 bytes
    return str(path)


def test_lying_header_is_a_counted_skip_not_a_crash(tmp_path):
    from velvet.data.dataset import VolumeReportDataset

    liar = _liar(tmp_path / "liar.nii")
    records = [_record(_volume(tmp_path / "ok.nii.gz"), rid="ok"), _record(liar, rid="liar")]
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    report = cache.warm(records, workers=0, progress=False)  # was: MemoryError, warm aborted
    assert (report.created, len(report.failures)) == (1, 1)
    assert report.failures[0][0] == "liar"
    assert report.failures[0][1].startswith(f"case 'liar': {liar}: header declares 20000 x 20000 x 20000")
    dataset = VolumeReportDataset(records, cache, on_error="skip")
    assert dataset[0] is not None and dataset[1] is None  # skipped (logged), the run goes on
    with pytest.raises(VolumeReadError, match="liar.nii: header declares"):
        VolumeReportDataset(records, cache, on_error="raise")[1]
    from velvet.models.inference import prepare_volumes  # what `velvet embed` calls per file

    with pytest.raises(VolumeReadError, match="liar.nii: header declares"):
        prepare_volumes(liar, CONTRACT)


def test_machine_limits_are_not_recorded_as_failures(tmp_path, monkeypatch):
    a = _volume(tmp_path / "a.nii.gz")
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    monkeypatch.setenv("VELVET_MAX_VOXELS", "1000")
    with pytest.raises(VolumeTooLargeError, match="a.nii.gz: header declares"):
        cache.get_or_create(_record(a))
    assert not list((tmp_path / "cache").rglob("*.error.json"))  # raising the limit must be enough
    monkeypatch.delenv("VELVET_MAX_VOXELS")
    assert cache.get_or_create(_record(a))["image"].shape == (1, 16, 16, 16)


def test_out_of_memory_while_preprocessing_is_a_data_error(tmp_path, monkeypatch):
    import monai.transforms

    a = _volume(tmp_path / "a.nii.gz")

    def oom(self, data, *args, **kwargs):
        raise MemoryError("Unable to allocate 12 GiB")

    monkeypatch.setattr(monai.transforms.Spacingd, "__call__", oom)
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    report = cache.warm([_record(a, rid="big")], progress=False)
    assert report.failures and report.failures[0][1].startswith(f"case 'big': {a}: ran out of memory")
    assert not list((tmp_path / "cache").rglob("*.error.json"))

"""velvet.data.ct_check: raw intensities judged against the contract, on warm, encode and strict."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from velvet.data.atomic import save_nifti
from velvet.data.cache import VolumeCache
from velvet.data.contract import PreprocessContract
from velvet.data.ct_check import NotCTError, judge_intensities
from velvet.data.errors import NotCTWarning
from velvet.data.io import read_volume
from velvet.data.manifest import ManifestRecord
from velvet.models.inference import prepare_volumes

CONTRACT = PreprocessContract(crop_foreground=False, spacing=(4.0, 4.0, 4.0), spatial_size=(16, 16, 16))
SHAPE = (24, 24, 24)


def _good_ct(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.full(SHAPE, -1024, np.int16)  # outside the field of view
    x[2:22, 2:22, :] = -1000 + rng.integers(-20, 20, (20, 20, 24))  # air
    x[5:19, 5:19, :] = rng.integers(-150, 300, (14, 14, 24))  # fat and soft tissue
    x[6:10, 12:18, :] = rng.integers(-900, -500, (4, 6, 24))  # lung
    x[8:11, 8:11, :] = rng.integers(200, 1200, (3, 3, 24))  # bone
    return x


def _bad_volumes() -> dict[str, tuple[np.ndarray, str]]:
    rng = np.random.default_rng(1)
    mr = rng.integers(0, 20, SHAPE).astype(np.int16)
    mr[4:20, 4:20, 4:20] = rng.integers(300, 1500, (16, 16, 16))
    labels = np.zeros(SHAPE, np.uint8)
    for i in range(1, 5):
        labels[4 * i : 4 * i + 3, 4:20, 4:20] = i  # 5 values: 0..4
    windowed = np.round(np.clip((_good_ct() + 1000) / 2000, 0, 1) * 255).astype(np.uint8)
    no_intercept = (_good_ct().astype(np.int32) + 1024).astype(np.uint16)
    constant = np.full(SHAPE, -1000, np.int16)
    return {
        "mr": (mr, "mr_like"),
        "labels": (labels, "label_map"),
        "windowed": (windowed, "ct_8bit"),
        "no_intercept": (no_intercept, "no_intercept"),
        "constant": (constant, "constant"),
    }


def _save(x: np.ndarray, path) -> str:
    save_nifti(x, np.diag([2.0, 2.0, 2.0, 1.0]), path)
    return str(path)


@pytest.mark.parametrize("name", sorted(_bad_volumes()))
def test_bad_volumes_are_judged(name: str) -> None:
    array, kind = _bad_volumes()[name]
    judgement = judge_intensities(array, "hu")
    assert judgement.kind == kind and not judgement.ok
    assert "Hounsfield" in judgement.reason


def test_good_ct_and_8bit_expectations() -> None:
    assert judge_intensities(_good_ct(), "hu").ok
    windowed = _bad_volumes()["windowed"][0]
    assert judge_intensities(windowed, "uint8").ok
    assert not judge_intensities(_good_ct(), "uint8").ok
    assert judge_intensities(windowed.astype(np.float32) / 255, "unit").ok


def test_warm_warns_names_files_and_counts(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VELVET_CT_CHECK", raising=False)
    records = [
        ManifestRecord(
            id="good", volume=_save(_good_ct(), tmp_path / "good.nii.gz"), split="train", report="r"
        )
    ]
    for name, (array, _) in _bad_volumes().items():
        records.append(
            ManifestRecord(
                id=name, volume=_save(array, tmp_path / f"{name}.nii.gz"), split="train", report="r"
            )
        )
    cache = VolumeCache(tmp_path / "cache", CONTRACT)
    with pytest.warns(NotCTWarning) as caught:
        report = cache.warm(records, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, NotCTWarning)]
    assert report.created == 6 and not report.failures
    assert sorted(rid for rid, _ in report.not_ct) == sorted(_bad_volumes())
    for name in _bad_volumes():
        assert any(f"{name}.nii.gz" in m and f"case {name!r}" in m for m in messages), name
    assert not any("good.nii.gz" in m for m in messages)
    with pytest.warns(NotCTWarning):  # already cached: still counted (and warned), from the entry
        again = cache.warm(records, progress=False)
    assert again.cached == 6 and sorted(rid for rid, _ in again.not_ct) == sorted(_bad_volumes())


def test_good_ct_raises_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VELVET_CT_CHECK", "strict")
    path = _save(_good_ct(), tmp_path / "good.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotCTWarning)
        report = VolumeCache(tmp_path / "c", CONTRACT).warm(
            [ManifestRecord(id="g", volume=path, split="train", report="r")], progress=False
        )
        prepare_volumes(path, CONTRACT)
        prepare_volumes(read_volume(path), CONTRACT)
    assert report.created == 1 and not report.not_ct and not report.failures


def test_strict_refuses_and_is_not_recorded(tmp_path, monkeypatch) -> None:
    path = _save(_bad_volumes()["mr"][0], tmp_path / "mr.nii.gz")
    record = ManifestRecord(id="mr1", volume=path, split="train", report="r")
    cache = VolumeCache(tmp_path / "c", CONTRACT)
    monkeypatch.setenv("VELVET_CT_CHECK", "strict")
    report = cache.warm([record], progress=False)
    assert report.created == 0 and len(report.failures) == 1
    assert "mr.nii.gz" in report.failures[0][1] and "'mr1'" in report.failures[0][1]
    with pytest.raises(NotCTError, match="mr.nii.gz"):
        prepare_volumes(path, CONTRACT)
    with pytest.raises(NotCTError, match="mr.nii.gz"):
        prepare_volumes(read_volume(path), CONTRACT)
    monkeypatch.setenv("VELVET_CT_CHECK", "warn")  # the refusal was not cached as the file's fault
    with pytest.warns(NotCTWarning, match="mr.nii.gz"):
        assert cache.warm([record], progress=False).created == 1


@pytest.mark.parametrize("name", sorted(_bad_volumes()))
def test_encode_path_and_volume_warn(tmp_path, monkeypatch, name: str) -> None:
    monkeypatch.delenv("VELVET_CT_CHECK", raising=False)
    path = _save(_bad_volumes()[name][0], tmp_path / f"{name}.nii.gz")
    with pytest.warns(NotCTWarning, match=f"{name}.nii.gz"):
        prepare_volumes(path, CONTRACT)
    with pytest.warns(NotCTWarning, match=f"{name}.nii.gz"):
        prepare_volumes(read_volume(path), CONTRACT)


def test_m3d_input_under_ct_rate_preset_warns(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VELVET_CT_CHECK", raising=False)
    path = _save(_bad_volumes()["windowed"][0], tmp_path / "m3d.nii.gz")
    with pytest.warns(NotCTWarning, match="8-bit"):
        VolumeCache(tmp_path / "c", PreprocessContract.resolve("ct_rate")).warm(
            [ManifestRecord(id="m", volume=path, split="train", report="r")], progress=False
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotCTWarning)
        VolumeCache(tmp_path / "c", PreprocessContract.resolve("m3d_cap")).warm(
            [ManifestRecord(id="m", volume=path, split="train", report="r")], progress=False
        )

"""velvet.data.inspect: the CT-intensity check on real and derived images, and the file summary."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from velvet.data.errors import VolumeReadError
from velvet.data.inspect import assess_ct, format_inspection, inspect_volume
from velvet.data.io import read_volume

CT_FILES = [
    "ct/abdomen_ct/ct.nii.gz",
    "ct/abdomen_ct_small/ct.nii.gz",
    "ct/dicom_series/series",
    "ct/lung_tumour_nrrd/ct.nrrd",
]


@pytest.fixture(scope="module")
def chest_ct(shared_data: Path) -> np.ndarray:
    """The real NRRD chest CT, int16 HU, (512, 512, 48)."""
    return read_volume(shared_data / "ct/lung_tumour_nrrd/ct.nrrd").array


def _window01(hu: np.ndarray, lo: float = -160.0, hi: float = 240.0) -> np.ndarray:
    return np.clip((hu.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


# ----------------------------------------------------------------------------------- assess_ct


@pytest.mark.parametrize("name", CT_FILES)
def test_real_ct_is_hounsfield(shared_data: Path, name: str) -> None:
    result = assess_ct(read_volume(shared_data / name).array)
    assert result.verdict == "ct_hu" and result.is_hounsfield
    assert "-1000 HU" in result.reasons[0]


def test_real_mr_is_not_ct(shared_data: Path) -> None:
    array = read_volume(shared_data / "ct/edge_cases/mr_not_ct.nii.gz").array
    assert array.min() < 0  # the MR has slightly negative noise: "no negative voxel" would not catch it
    result = assess_ct(array)
    assert result.verdict == "not_ct" and not result.is_hounsfield
    assert "CT air is about -1000 HU" in result.reasons[0]


@pytest.mark.parametrize(
    ("name", "words"), [("abdomen_ct/seg.nii.gz", "label map"), ("lung_tumour_nrrd/tumour.nrrd", "mask")]
)
def test_real_label_maps_are_not_ct(shared_data: Path, name: str, words: str) -> None:
    result = assess_ct(read_volume(shared_data / "ct" / name).array)
    assert result.verdict == "not_ct" and words in result.reasons[0]


def test_windowed_float_is_normalised(chest_ct: np.ndarray) -> None:
    result = assess_ct(_window01(chest_ct))
    assert result.verdict == "normalised" and "[0, 1]" in result.reasons[0]


def test_z_scored_is_normalised(chest_ct: np.ndarray) -> None:
    z = (chest_ct - chest_ct.mean()) / chest_ct.std()
    assert assess_ct(z.astype(np.float32)).verdict == "normalised"


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_8bit_export_is_ct_8bit(chest_ct: np.ndarray, dtype: type) -> None:
    eight_bit = np.round(_window01(chest_ct, -1000, 1000) * 255).astype(dtype)
    result = assess_ct(eight_bit)
    assert result.verdict == "ct_8bit" and not result.is_hounsfield
    assert "0..255" in result.reasons[0]


def test_missing_intercept_is_not_ct_with_hint(chest_ct: np.ndarray) -> None:
    stored = (chest_ct.astype(np.int32) + 1024).astype(np.uint16)
    result = assess_ct(stored)
    assert result.verdict == "not_ct"
    assert "no voxel below 0" in result.reasons[0] and "rescale" in result.reasons[0]


def test_missing_slope_is_not_ct(chest_ct: np.ndarray) -> None:
    result = assess_ct(chest_ct.astype(np.float32) * 10)  # e.g. a slope of 0.1 never applied
    assert result.verdict == "not_ct" and "slope" in result.reasons[0]


def test_non_finite_values_are_ignored(chest_ct: np.ndarray) -> None:
    data = chest_ct.astype(np.float32)
    data[::7, ::5, ::3] = np.nan
    data[0, 0, 0] = np.inf
    result = assess_ct(data)
    assert result.verdict == "ct_hu" and "3071" in result.reasons[0]  # the finite max


@pytest.mark.parametrize("bad", [np.zeros((0, 3, 3)), np.full((4, 4, 4), np.nan)])
def test_no_values_is_an_error(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="no finite values"):
        assess_ct(bad)


@pytest.mark.parametrize("kind", ["hu", "window", "8bit"])
def test_torch_tensors_match_numpy(chest_ct: np.ndarray, kind: str) -> None:
    array = {
        "hu": chest_ct,
        "window": _window01(chest_ct),
        "8bit": np.round(_window01(chest_ct) * 255).astype(np.uint8),
    }[kind]
    expected = assess_ct(array)
    tensor = torch.from_numpy(np.ascontiguousarray(array))[None, None]  # (B, C, H, W, D)
    assert assess_ct(tensor) == expected
    if kind == "window":  # half precision model inputs
        assert assess_ct(tensor.half()).verdict == "normalised"


def test_fast_on_a_large_volume(chest_ct: np.ndarray) -> None:
    """512 x 512 x 200: the budget is 0.1 s; the bound here leaves room for a busy CI machine."""
    big = np.concatenate([chest_ct] * 5, axis=2)[:, :, :200]
    for array in (big, torch.from_numpy(big.astype(np.float32))):  # F-order numpy, permuted tensor
        best = np.inf
        for _ in range(3):
            start = time.perf_counter()
            assert assess_ct(array).verdict == "ct_hu"
            best = min(best, time.perf_counter() - start)
        assert best < 0.25, f"assess_ct took {best:.3f} s on {tuple(array.shape)}"


# ------------------------------------------------------------------------------- inspect_volume


def test_inspect_abdomen(shared_data: Path) -> None:
    path = shared_data / "ct/abdomen_ct/ct.nii.gz"
    info = inspect_volume(path)
    data = np.asanyarray(nib.load(path).dataobj)
    assert info["path"] == str(path) and info["format"] == "nifti"
    assert info["shape"] == [122, 101, 112] and info["dtype"] == "int32"
    assert info["spacing"] == pytest.approx([3.0, 3.0, 3.0])
    assert info["orientation"] == "RAS"
    stats = info["intensity"]
    assert (stats["min"], stats["max"]) == (data.min(), data.max())
    assert stats["mean"] == pytest.approx(data.mean())
    # percentiles come from a subsample: close to the exact ones
    assert stats["p1"] == pytest.approx(np.percentile(data, 1), abs=20)
    assert stats["p99"] == pytest.approx(np.percentile(data, 99), abs=20)
    assert info["ct"]["verdict"] == "ct_hu" and info["ct"]["is_hounsfield"] is True
    assert info["warnings"] == []
    json.dumps(info)  # JSON-ready: plain Python types only


def test_inspect_mr_warns_not_ct(shared_data: Path) -> None:
    info = inspect_volume(shared_data / "ct/edge_cases/mr_not_ct.nii.gz")
    assert info["ct"]["verdict"] == "not_ct"
    assert len(info["warnings"]) == 1 and "not CT in Hounsfield units" in info["warnings"][0]


def test_inspect_captures_reader_warnings(shared_data: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # captured inside inspect_volume, not re-emitted
        info = inspect_volume(shared_data / "ct/edge_cases/dicom_tiny_16x16")
    assert any("non-uniform DICOM slice spacing" in w for w in info["warnings"])
    assert info["meta"]["modality"] == "CT" and info["meta"]["n_files"] == 4


def test_inspect_raises_data_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.nii.gz").write_bytes(b"\x00" * 100)
    with pytest.raises(VolumeReadError, match="bad.nii.gz"):
        inspect_volume(tmp_path / "bad.nii.gz")


# ---------------------------------------------------------------------------- format_inspection


@pytest.mark.parametrize(
    ("name", "shape", "spacing"),
    [
        ("ct/abdomen_ct/ct.nii.gz", "122 x 101 x 112", "3.0 x 3.0 x 3.0 mm"),
        ("ct/dicom_series/series", "512 x 512 x 20", "0.977 x 0.977 x 2.0 mm"),
        ("ct/lung_tumour_nrrd/ct.nrrd", "512 x 512 x 48", "0.57 x 0.57 x 5.0 mm"),
    ],
)
def test_format_real_files(shared_data: Path, name: str, shape: str, spacing: str) -> None:
    text = format_inspection(inspect_volume(shared_data / name))
    assert f"shape        {shape}\n" in text
    assert f"spacing      {spacing}\n" in text
    assert "CT in Hounsfield units" in text and "warning:" not in text


def test_format_spacing_digits_and_warnings() -> None:
    info = {
        "path": "x.nii.gz",
        "format": "nifti",
        "shape": [16, 16, 4],
        "spacing": [0.48828125, 68.33333, 1234.5],
        "orientation": "LPS",
        "dtype": "int16",
        "intensity": {"min": -1000.0, "max": 10.0, "p1": -990.0, "p99": 5.0, "mean": -400.0},
        "ct": {"verdict": "ct_hu", "is_hounsfield": True, "reasons": ["air at -1000"]},
        "warnings": ["x.nii.gz: non-uniform DICOM slice spacing"],
        "meta": {},
    }
    text = format_inspection(info)
    assert "0.488 x 68.3 x 1234.5 mm" in text
    assert text.splitlines()[-1] == "warning: x.nii.gz: non-uniform DICOM slice spacing"

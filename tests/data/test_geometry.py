"""The geometry contract of (image, label map) pairs: refused with both names, or aligned in world mm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from velvet.data.atomic import save_nifti
from velvet.data.cache import VolumeCache
from velvet.data.contract import PRESETS, PreprocessContract
from velvet.data.errors import ManifestError, VolumeShapeError
from velvet.data.geometry import (
    GeometryMismatchError,
    align_to_image,
    grid_differences,
    resample_nearest,
)
from velvet.data.manifest import ManifestRecord, read_manifest, write_manifest
from velvet.data.transforms import create_transforms

SHAPE = (40, 42, 41)
# like an image read from DICOM: voxel axes run right->left and anterior->posterior (LPS storage)
IMAGE_AFFINE = np.array(
    [[-3.0, 0, 0, 180.0], [0, -3.0, 0, 150.0], [0, 0, 3.0, -100.0], [0, 0, 0, 1]], dtype=np.float64
)
CONTRACT = PreprocessContract(crop_foreground=False, spacing=(4.0, 4.0, 4.0), spatial_size=None)


def _pair(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A CT with a bright off-centre "aorta" and its label map (same voxels); returns image, labels."""
    x = np.full(SHAPE, -1000, np.int16)
    x[5:35, 5:37, 5:36] = 40  # body
    labels = np.zeros(SHAPE, np.uint8)
    labels[8:14, 26:33, 10:30] = 52  # aorta: off-centre in x and y, so a mirror moves it
    x[labels == 52] = 300  # contrast-filled
    image = save_nifti(x, IMAGE_AFFINE, tmp_path / "ct.nii.gz")
    return image, labels


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _cache_pair(tmp_path: Path, image: Path, label: Path, **kw) -> dict:
    cache = VolumeCache(tmp_path / "cache", CONTRACT, label_map=True)
    record = ManifestRecord(id="c1", volume=str(image), split="train", report="r", label_map=str(label), **kw)
    return cache.get_or_create(record)


# ----------------------------------------------------------------------------- the three bad labels


def test_label_with_plain_diagonal_header_is_refused(tmp_path: Path) -> None:
    """Same voxels, header diag(3, 3, 3): used to come out mirrored in x and y (aorta Dice 0.086)."""
    image, labels = _pair(tmp_path)
    label = save_nifti(labels, np.diag([3.0, 3.0, 3.0, 1.0]), tmp_path / "seg.nii.gz")
    with pytest.raises(GeometryMismatchError) as info:
        _cache_pair(tmp_path, image, label)
    message = str(info.value)
    assert message.startswith(f"{label}: label map does not lie on the grid of its image {image}: ")
    assert "orientation RAS differs from the image's LPS (x and y run the other way)" in message
    assert "origin differs by" in message and "label_geometry" in message and "use_image" in message
    assert isinstance(info.value, VolumeShapeError)  # callers catching the old shape error still do


def test_label_with_doubled_spacing_is_refused(tmp_path: Path) -> None:
    """Used to be cached at twice the image's size (239x251x246 beside 120x126x123)."""
    image, labels = _pair(tmp_path)
    affine = IMAGE_AFFINE.copy()
    affine[:3, :3] *= 2
    label = save_nifti(labels, affine, tmp_path / "seg.nii.gz")
    with pytest.raises(GeometryMismatchError) as info:
        _cache_pair(tmp_path, image, label)
    message = str(info.value)
    assert message.startswith(f"{label}: ") and str(image) in message
    assert "voxel size 6 x 6 x 6 mm differs from the image's 3 x 3 x 3 mm (2x)" in message


def test_label_with_moved_origin_is_refused(tmp_path: Path) -> None:
    image, labels = _pair(tmp_path)
    affine = IMAGE_AFFINE.copy()
    affine[0, 3] += 30.0
    label = save_nifti(labels, affine, tmp_path / "seg.nii.gz")
    with pytest.raises(GeometryMismatchError) as info:
        _cache_pair(tmp_path, image, label)
    message = str(info.value)
    assert message.startswith(f"{label}: ") and str(image) in message
    assert "origin differs by 30.0 mm in x (10 voxels)" in message
    assert "orientation" not in message and "voxel size" not in message


def test_cached_failure_of_a_pair_names_the_pair_asking(tmp_path: Path) -> None:
    image, labels = _pair(tmp_path)
    affine = IMAGE_AFFINE.copy()
    affine[0, 3] += 30.0
    label = save_nifti(labels, affine, tmp_path / "seg.nii.gz")
    with pytest.raises(GeometryMismatchError):
        _cache_pair(tmp_path, image, label)
    (tmp_path / "copy").mkdir()
    image2, label2 = tmp_path / "copy" / "ct2.nii.gz", tmp_path / "copy" / "seg2.nii.gz"
    image2.write_bytes(image.read_bytes())
    label2.write_bytes(label.read_bytes())
    with pytest.raises(GeometryMismatchError, match="cached failure") as info:  # same content: same record
        _cache_pair(tmp_path, image2, label2)
    message = str(info.value)
    assert message.startswith(f"{label2}: ") and str(image2) in message
    assert str(label) not in message and str(image) not in message


# ------------------------------------------------------------------------------ labels that are fine


def test_good_label_is_cached_on_the_image_grid(tmp_path: Path) -> None:
    image, labels = _pair(tmp_path)
    label = save_nifti(labels, IMAGE_AFFINE, tmp_path / "seg.nii.gz")
    out = _cache_pair(tmp_path, image, label)
    assert out["label_map"].shape == out["image"].shape == (1, 30, 32, 31)
    image_only = VolumeCache(tmp_path / "cache2", CONTRACT).get_or_create(
        ManifestRecord(id="c1", volume=str(image), split="train", report="r")
    )
    torch.testing.assert_close(out["affine"], image_only["affine"])  # the image's affine, for both
    bright = out["image"][0] > (250 + 1000) / 2000  # hu_window default maps HU to [0, 1]
    assert _dice(out["label_map"][0] == 52, bright) > 0.9
    again = _cache_pair(tmp_path, image, label)  # from disk: same tensors, same affine
    assert torch.equal(again["label_map"], out["label_map"])
    torch.testing.assert_close(again["affine"], out["affine"])


def test_label_stored_in_another_axis_order_is_resampled_in_world_coordinates(tmp_path: Path) -> None:
    """The same grid stored RAS and with axes swapped (a common segmentation-tool output)."""
    image, labels = _pair(tmp_path)
    good = _cache_pair(tmp_path, image, save_nifti(labels, IMAGE_AFFINE, tmp_path / "seg.nii.gz"))
    # flip i and j (LPS storage -> RAS storage) and swap i and j: the same voxel centres in world mm
    stored = np.transpose(labels[::-1, ::-1, :], (1, 0, 2))
    affine = np.zeros((4, 4))
    affine[:3, 3] = IMAGE_AFFINE[:3, :3] @ [SHAPE[0] - 1, SHAPE[1] - 1, 0] + IMAGE_AFFINE[:3, 3]
    affine[1, 0], affine[0, 1], affine[2, 2], affine[3, 3] = 3.0, 3.0, 3.0, 1.0
    label = save_nifti(stored, affine, tmp_path / "seg_ras.nii.gz")
    assert grid_differences(IMAGE_AFFINE, SHAPE, affine, stored.shape) == []
    out = _cache_pair(tmp_path, image, label)
    assert torch.equal(out["label_map"], good["label_map"])


def test_small_header_rounding_is_tolerated(tmp_path: Path) -> None:
    affine = IMAGE_AFFINE.copy()
    affine[:3, 3] += [0.05 * 3, -0.05 * 3, 0.0]  # 0.05 voxel
    affine[:3, :3] *= 1.0004  # 0.04 % voxel size
    assert grid_differences(IMAGE_AFFINE, SHAPE, affine, SHAPE) == []
    affine[2, 3] += 0.3 * 3  # 0.3 voxel off in z: a real shift (every offset is listed)
    assert grid_differences(IMAGE_AFFINE, SHAPE, affine, SHAPE) == [
        "origin differs by 0.2 mm in x, -0.2 mm in y and 0.9 mm in z (0.3 voxels)"
    ]


def test_use_image_takes_the_voxels_with_the_image_header(tmp_path: Path) -> None:
    image, labels = _pair(tmp_path)
    good = _cache_pair(tmp_path, image, save_nifti(labels, IMAGE_AFFINE, tmp_path / "seg.nii.gz"))
    liar = save_nifti(labels, np.diag([3.0, 3.0, 3.0, 1.0]), tmp_path / "liar.nii.gz")
    out = _cache_pair(tmp_path, image, liar, label_geometry="use_image")
    assert torch.equal(out["label_map"], good["label_map"])  # same voxels, the image's header
    torch.testing.assert_close(out["affine"], good["affine"])
    with pytest.raises(GeometryMismatchError) as info:  # the same files under "check": refused
        _cache_pair(tmp_path, image, liar)
    assert str(liar) in str(info.value)
    small = save_nifti(labels[:20], IMAGE_AFFINE, tmp_path / "small.nii.gz")
    with pytest.raises(GeometryMismatchError, match=r"use_image .* shape \(20, 42, 41\) differs"):
        _cache_pair(tmp_path, image, small, label_geometry="use_image")
    with pytest.raises(ValueError, match="label_geometry"):
        align_to_image(labels, IMAGE_AFFINE, "seg", IMAGE_AFFINE, SHAPE, "ct", mode="trust_me")


def test_manifest_label_geometry_column(tmp_path: Path) -> None:
    image, labels = _pair(tmp_path)
    save_nifti(labels, IMAGE_AFFINE, tmp_path / "seg.nii.gz")
    path = tmp_path / "manifest.csv"
    path.write_text(
        "id,volume,split,report,label_map,label_geometry\n"
        "a,ct.nii.gz,train,r,seg.nii.gz,use_image\n"
        "b,ct.nii.gz,train,r,seg.nii.gz,\n"
    )
    records = read_manifest(path).records
    assert [r.label_geometry for r in records] == ["use_image", "check"]
    again = read_manifest(write_manifest(records, tmp_path / "out.jsonl")).records
    assert [r.label_geometry for r in again] == ["use_image", "check"]
    cache = VolumeCache(tmp_path / "cache", CONTRACT, label_map=True)
    assert cache.key(records[0]) != cache.key(records[1])  # a different option is a different entry
    path.write_text("id,volume,split,report,label_map,label_geometry\na,ct.nii.gz,train,r,seg.nii.gz,trust\n")
    with pytest.raises(ManifestError, match=r"manifest.csv:2: label_geometry must be one of"):
        read_manifest(path)


# ------------------------------------------------------------------------------------ resampling


def test_resample_nearest_matches_brute_force_on_an_oblique_grid() -> None:
    rng = np.random.default_rng(0)
    source = rng.integers(0, 5, (9, 8, 7)).astype(np.int16)
    src_affine = np.diag([2.0, 2.0, 3.0, 1.0])
    angle = np.deg2rad(7)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    dst_affine = np.eye(4)
    dst_affine[:3, :3] = rotation @ np.diag([1.5, 1.7, 2.0])
    dst_affine[:3, 3] = [1.0, -0.5, 0.7]
    out = resample_nearest(source, src_affine, dst_affine, (10, 9, 8))
    inverse = np.linalg.inv(src_affine) @ dst_affine
    for index in np.ndindex(10, 9, 8):
        src = np.rint(inverse @ [*index, 1.0])[:3].astype(int)
        src = np.clip(src, 0, np.array(source.shape) - 1)
        assert out[index] == source[tuple(src)]


def test_resample_nearest_flip_and_permutation_is_exact() -> None:
    source = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] = 3.0  # i runs the other way: voxel 0 of the target is voxel 3 of the source
    np.testing.assert_array_equal(resample_nearest(source, flipped, np.eye(4), (4, 5, 6)), source[::-1])
    swapped = np.array([[0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(
        resample_nearest(source, swapped, np.eye(4), (5, 4, 6)), source.transpose(1, 0, 2)
    )


# ------------------------------------------------------------------------------------ real data


def test_real_dicom_series_with_its_las_label_map(shared_data: Path) -> None:
    """The series is stored LPS, its segmentation LAS: the same grid, aligned in world mm."""
    series = shared_data / "ct/dicom_series/series"
    seg = shared_data / "ct/dicom_series/seg.nii.gz"
    contract = PRESETS["segmentation"].replace(spacing=(3.0, 3.0, 2.0), pad_to=None, spatial_size=None)
    out = create_transforms(contract, label_map=True)({"image": str(series), "label_map": str(seg)})
    image, labels = out["image"], out["label_map"]
    assert image.shape == labels.shape
    torch.testing.assert_close(image.affine, labels.affine)
    # liver (5) and contrast-filled aorta (52) where they are: bright soft tissue, brighter vessel
    low, high = contract.hu_window
    liver = float(image[labels == 5].mean()) * (high - low) + low
    aorta = float(image[labels == 52].mean()) * (high - low) + low
    assert 40 < liver < 160 and aorta > 120, (liver, aorta)

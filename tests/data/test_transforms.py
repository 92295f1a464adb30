"""Preprocessing transforms built from contracts, on synthetic and real volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from velvet.data.atomic import save_nifti
from velvet.data.contract import PRESETS, PreprocessContract
from velvet.data.errors import VolumeShapeError, VolumeValueError
from velvet.data.transforms import SampleDepth, create_transforms, sample_depth_indices


def _phantom(shape=(40, 30, 20), spacing=(2.0, 2.0, 3.0)) -> tuple[np.ndarray, np.ndarray]:
    x = np.full(shape, -1000, dtype=np.int16)
    x[5:35, 5:25, 3:17] = 40  # a soft-tissue block surrounded by air
    x[10:14, 8:12, 5:9] = 1000  # bone
    return x, np.diag([*spacing, 1.0])


def test_hu_window_maps_linearly_and_clips(tmp_path):
    x, aff = _phantom()
    save_nifti(x, aff, tmp_path / "ct.nii.gz")
    contract = PreprocessContract(hu_window=(-1000, 1000), crop_foreground=False, spatial_size=None)
    out = create_transforms(contract)({"image": str(tmp_path / "ct.nii.gz")})["image"]
    assert out.shape == (1, *x.shape)
    expected = np.clip((x.astype(np.float32) + 1000) / 2000, 0, 1)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)


def test_foreground_crop_spacing_and_size(tmp_path):
    x, aff = _phantom()
    save_nifti(x, aff, tmp_path / "ct.nii.gz")
    contract = PreprocessContract(crop_foreground=True, spacing=(1.0, 1.0, 1.0), spatial_size=None)
    out = create_transforms(contract)({"image": str(tmp_path / "ct.nii.gz")})["image"]
    # foreground box is 30 x 20 x 14 voxels at 2 x 2 x 3 mm -> about 60 x 40 x 42 voxels at 1 mm
    assert abs(out.shape[1] - 60) <= 2 and abs(out.shape[2] - 40) <= 2 and abs(out.shape[3] - 42) <= 3
    np.testing.assert_allclose(out.pixdim.numpy(), [1.0, 1.0, 1.0], atol=1e-5)
    assert float(out.min()) > 0.4  # the air around the block was cropped away


def test_orientation_makes_lps_input_ras(tmp_path):
    x, _ = _phantom()
    lps = np.diag([-2.0, -2.0, 3.0, 1.0])  # i runs right->left, j anterior->posterior
    save_nifti(x, lps, tmp_path / "lps.nii.gz")
    contract = PreprocessContract(crop_foreground=False, spatial_size=None)
    out = create_transforms(contract)({"image": str(tmp_path / "lps.nii.gz")})["image"]
    expected = np.clip((x[::-1, ::-1, :].astype(np.float32) + 1000) / 2000, 0, 1)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)
    assert np.all(np.diag(out.affine.numpy())[:3] > 0)


def test_pad_crop_and_resize_modes(tmp_path):
    x, aff = _phantom()
    save_nifti(x, aff, tmp_path / "ct.nii.gz")
    for mode in ("resize", "pad_crop"):
        contract = PreprocessContract(crop_foreground=False, spatial_size=(32, 32, 32), size_mode=mode)
        out = create_transforms(contract)({"image": str(tmp_path / "ct.nii.gz")})["image"]
        assert out.shape == (1, 32, 32, 32)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_depth_sampling_indices_and_affine():
    assert sample_depth_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert sample_depth_indices(3, 5).tolist() == [0, 0, 1, 2, 2]  # upsampling repeats slices
    from monai.data import MetaTensor

    img = MetaTensor(
        torch.arange(10.0).view(1, 1, 1, 10), affine=torch.diag(torch.tensor([1.0, 1.0, 2.0, 1.0]))
    )
    out = SampleDepth(4)(img)
    assert out[0, 0, 0].tolist() == [0.0, 3.0, 6.0, 9.0]
    assert float(out.affine[2, 2]) == pytest.approx(6.0)  # slices are now 3 steps of 2 mm apart


def test_label_map_follows_the_image(tmp_path):
    x, aff = _phantom()
    labels = (x > 0).astype(np.uint8) + (x > 500).astype(np.uint8)
    save_nifti(x, aff, tmp_path / "ct.nii.gz")
    save_nifti(labels, aff, tmp_path / "seg.nii.gz")
    contract = PreprocessContract(spacing=(1.0, 1.0, 1.0), spatial_size=(24, 24, 24))
    out = create_transforms(contract, label_map=True)(
        {"image": str(tmp_path / "ct.nii.gz"), "label_map": str(tmp_path / "seg.nii.gz")}
    )
    assert out["label_map"].shape == out["image"].shape
    # nearest interpolation: no blended labels; the foreground crop left only the block (labels 1, 2)
    assert set(torch.unique(out["label_map"]).tolist()) == {1.0, 2.0}
    bone, tissue = out["label_map"] == 2, out["label_map"] == 1
    # labels stay on their voxels: bone-labelled voxels are bright (1000 HU -> 1.0), tissue ones ~0.52
    assert float(out["image"][bone].mean()) > 0.8 > 0.6 > float(out["image"][tissue].mean())


def test_label_map_shape_mismatch_and_float_labels(tmp_path):
    x, aff = _phantom()
    save_nifti(x, aff, tmp_path / "ct.nii.gz")
    save_nifti(np.zeros((10, 10, 10), np.uint8), aff, tmp_path / "seg.nii.gz")
    with pytest.raises(
        VolumeShapeError,
        match=r"seg.nii.gz: label map does not lie on the grid of its image \S*ct.nii.gz: "
        r"label map shape \(10, 10, 10\) does not match the volume's \(40, 30, 20\)",
    ):
        create_transforms(PRESETS["segmentation"], label_map=True)(
            {"image": str(tmp_path / "ct.nii.gz"), "label_map": str(tmp_path / "seg.nii.gz")}
        )
    save_nifti(np.full(x.shape, 0.5, np.float32), aff, tmp_path / "half.nii.gz")
    with pytest.raises(VolumeValueError, match="non-integer"):
        create_transforms(PRESETS["segmentation"], label_map=True)(
            {"image": str(tmp_path / "ct.nii.gz"), "label_map": str(tmp_path / "half.nii.gz")}
        )


def test_empty_foreground_is_a_clear_error(tmp_path):
    save_nifti(np.full((20, 20, 20), -1000, np.int16), np.eye(4), tmp_path / "air.nii.gz")
    with pytest.raises(VolumeValueError, match="air.nii.gz: no voxel above the foreground threshold"):
        create_transforms(PRESETS["segmentation"])({"image": str(tmp_path / "air.nii.gz")})


def test_manifest_overrides_reach_the_reader(tmp_path):
    raw = np.full((20, 20, 20), 0, np.int16)  # raw = HU + 1024: air at 0
    raw[5:15, 5:15, 5:15] = 1064  # 40 HU
    save_nifti(raw, np.eye(4), tmp_path / "v1.nii.gz")
    contract = PreprocessContract(
        hu_window=(-1000, 1000), crop_foreground=False, spacing=(2.0, 2.0, 2.0), spatial_size=None
    )
    out = create_transforms(contract)(
        {"image": str(tmp_path / "v1.nii.gz"), "spacing": (1.0, 1.0, 1.0), "rescale": (1.0, -1024.0)}
    )
    img = out["image"]
    assert img.shape == (1, 10, 10, 10)  # 1 mm override resampled to 2 mm
    assert float(img.max()) == pytest.approx((40 + 1000) / 2000, abs=1e-3)


def test_real_ct_segmentation_preset(shared_data):
    ct = shared_data / "ct" / "abdomen_ct_small" / "ct.nii.gz"
    seg = shared_data / "ct" / "abdomen_ct_small" / "seg.nii.gz"
    out = create_transforms(PRESETS["segmentation"], label_map=True)(
        {"image": str(ct), "label_map": str(seg)}
    )
    image, labels = out["image"], out["label_map"]
    np.testing.assert_allclose(image.pixdim.numpy(), [1.5, 1.5, 2.0], atol=1e-4)
    assert image.shape == labels.shape and min(image.shape[1:]) >= 96  # padded to the patch size
    liver = labels == 5  # class_map_total_v2: 5 = liver
    assert liver.sum() > 1000
    # liver is soft tissue: about 40-80 HU -> (HU + 175) / 425 in [0.5, 0.65] on average
    assert 0.45 < float(image[liver].mean()) < 0.7

"""The segmentation DataModule: label geometry refused or kept, class maps, patches that stay paired."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from velvet.data.classes import ClassMap, read_class_names
from velvet.data.datamodule_segmentation import PatchSampler, SegmentationDataModule
from velvet.data.errors import DataError

NAMES = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"}
CONTRACT = {"preset": "segmentation", "spacing": None, "crop_foreground": False, "pad_to": [64, 64, 64]}


def write_case(folder, name, *, shape=(40, 36, 30), spacing=(2.0, 2.0, 3.0), label_affine=None, label_values=None, seed=0):
    """An image whose HU encodes the label: each class has its own intensity (checkable after any crop)."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    label[5:20, 6:22, 4:18] = 1
    label[22:34, 10:20, 10:25] = 2
    label[8:14, 24:32, 20:28] = 3
    if label_values is not None:
        label[label == 3] = label_values
    hu = np.choose(np.minimum(label, 3), [-1000.0, 60.0, 120.0, 200.0]).astype(np.int16)
    hu += rng.integers(-3, 4, size=shape).astype(np.int16)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-30.0, 12.0, 100.0)
    nib.save(nib.Nifti1Image(hu, affine), folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine if label_affine is None else label_affine), folder / f"{name}_seg.nii.gz")
    return affine


def write_manifest(folder, cases, *, classes=NAMES):
    rows = ["id,volume,split,label_map"] + [f"{c},{c}.nii.gz,{s},{c}_seg.nii.gz" for c, s in cases]
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "classes.json").write_text(json.dumps(classes), encoding="utf-8")
    return folder / "manifest.csv"


def datamodule(folder, manifest, **kw):
    args = {"preprocess": CONTRACT, "roi_size": (64, 64, 64), "batch_size": 2, "num_workers": 0, "cache_dir": str(folder / "cache")}
    args.update(kw)
    return SegmentationDataModule(str(manifest), **args)


def test_mismatched_label_header_is_refused_naming_both_files(tmp_path):
    affine = write_case(tmp_path, "a")
    write_case(tmp_path, "b")
    shifted = affine.copy()
    shifted[0, 3] += 30.0  # same voxels, origin 30 mm off in x
    write_case(tmp_path, "c", label_affine=shifted)
    dm = datamodule(tmp_path, write_manifest(tmp_path, [("a", "train"), ("b", "train"), ("c", "val")]))
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "c_seg.nii.gz" in message and "c.nii.gz" in message and "30.0 mm in x" in message


def test_mirrored_label_header_on_the_same_grid_is_resampled_not_refused(tmp_path):
    affine = write_case(tmp_path, "a")
    # the same grid stored with x running the other way: voxels flipped, header says so
    flipped = affine.copy()
    flipped[0, 0] = -affine[0, 0]
    flipped[0, 3] = affine[0, 3] + (40 - 1) * affine[0, 0]
    img = nib.load(tmp_path / "a_seg.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), flipped), tmp_path / "a_seg.nii.gz")
    write_case(tmp_path, "b")
    write_case(tmp_path, "c")
    dm = datamodule(tmp_path, write_manifest(tmp_path, [("a", "val"), ("b", "train"), ("c", "train")]))
    dm.prepare_data()
    dm.setup("fit")
    sample = dm.datasets["val"][0]
    image, label = sample["image"][0], sample["label_map"][0]
    # the label must still sit on its structures: class 2's voxels carry class 2's intensity
    window = (-175.0, 250.0)
    expected = (120.0 - window[0]) / (window[1] - window[0])
    assert abs(float(image[label == 2].mean()) - expected) < 0.02
    torch.testing.assert_close(sample["spacing"], torch.tensor([2.0, 2.0, 3.0], dtype=torch.float64))


def test_label_ids_outside_the_class_map_fail_naming_file_and_case(tmp_path):
    write_case(tmp_path, "a", label_values=7)
    write_case(tmp_path, "b")
    write_case(tmp_path, "x")
    dm = datamodule(tmp_path, write_manifest(tmp_path, [("a", "train"), ("b", "train"), ("x", "val")]))
    dm.prepare_data()
    dm.setup("fit")
    with pytest.raises(DataError) as info:
        dm.datasets["train"][0]
    assert "a_seg.nii.gz" in str(info.value) and "'a'" in str(info.value) and "label id 7" in str(info.value)


def test_class_selection_remaps_ids():
    names = read_class_names(NAMES)
    cm = ClassMap.create(names, ["kidney", "liver"])
    assert cm.names == ("background", "kidney", "liver")
    labels = torch.tensor([0, 1, 2, 3])
    assert cm.apply(labels).tolist() == [0, 2, 0, 1]
    with pytest.raises(ValueError, match="unknown class"):
        ClassMap.create(names, ["lung"])
    with pytest.raises(ValueError, match="without gaps"):
        read_class_names({"0": "background", "2": "x"})


def test_patches_keep_image_and_label_paired_through_augmentation(tmp_path):

    write_case(tmp_path, "a", shape=(70, 66, 40))
    write_case(tmp_path, "b", shape=(70, 66, 40))
    augment = [
        {"class_path": "RandFlipd", "init_args": {"spatial_axis": [0], "prob": 0.5}},
        {"class_path": "RandRotate90d", "init_args": {"prob": 0.5, "max_k": 3}},
    ]
    write_case(tmp_path, "v")
    dm = datamodule(tmp_path, write_manifest(tmp_path, [("a", "train"), ("b", "train"), ("v", "val")]),
                    samples_per_volume=3, augment=augment)
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (6, 1, 64, 64, 64) and batch["label_map"].shape == (6, 1, 64, 64, 64)
    low, high = -175.0, 250.0
    for c, hu in ((1, 60.0), (2, 120.0), (3, 200.0)):
        voxels = batch["image"][batch["label_map"] == c]
        assert voxels.numel() > 0
        assert abs(float(voxels.mean()) - (hu - low) / (high - low)) < 0.02, c
    assert isinstance(dm.datasets["train"].patches, PatchSampler)
    # validation gives whole volumes with their spacing
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[0] == 1 and val["spacing"].shape == (1, 3)

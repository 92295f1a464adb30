"""`velvet segment`: the label map lands on the input's own grid and header, whatever its orientation."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from velvet.data.contract import PreprocessContract
from velvet.segmentation.inference import resample_labels, segment_file
from velvet.segmentation.output import write_segmentation


class ThresholdModel:
    """A stand-in model whose 'segmentation' is known: class 1 where the windowed image is bright."""

    class_names = ("background", "bright")

    def __init__(self, contract: PreprocessContract) -> None:
        self.preprocess = contract

    def predict_labels(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        return (x[:, 0] > 0.7).to(torch.uint8)


CONTRACT = PreprocessContract(
    name="t", hu_window=(-200.0, 300.0), crop_foreground=True, spacing=(2.5, 2.5, 2.5), spatial_size=None
)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return (affine @ np.r_[np.argwhere(mask).mean(0), 1.0])[:3]


def las_scan(tmp_path):
    """A LAS, anisotropic scan: body at 0 HU, an off-centre bright block at 250 HU, air around."""
    hu = np.full((60, 50, 24), -1000, np.int16)
    hu[5:55, 5:45, 2:22] = 0
    hu[8:20, 30:42, 4:12] = 250  # off-centre on every axis: a flipped or swapped axis would move it
    affine = np.array([[-1.5, 0, 0, 40.0], [0, 2.0, 0, -30.0], [0, 0, 3.0, 15.0], [0, 0, 0, 1]])
    image = nib.Nifti1Image(hu, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    path = tmp_path / "scan.nii.gz"
    nib.save(image, path)
    return path, hu, affine


def test_labels_come_back_on_the_input_grid_and_header(tmp_path):
    path, hu, affine = las_scan(tmp_path)
    result = segment_file(ThresholdModel(CONTRACT), path)
    assert result.labels.shape == hu.shape
    np.testing.assert_allclose(result.affine, affine)
    truth = hu > 150
    assert dice(result.labels == 1, truth) > 0.85
    np.testing.assert_allclose(world_centroid(result.labels == 1, affine), world_centroid(truth, affine), atol=1.5)
    assert result.volumes_ml["bright"] == pytest.approx(truth.sum() * 9.0 / 1000, rel=0.2)
    out, sidecar = write_segmentation(result, tmp_path / "out" / "seg.nii.gz")
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, affine)
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 2
    assert written.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(written.dataobj), result.labels)
    info = json.loads(sidecar.read_text(encoding="utf-8"))
    assert info["classes"] == {"0": "background", "1": "bright"} and sidecar.name == "seg.json"


def test_resample_labels_is_background_outside_the_source():
    labels = np.ones((4, 4, 4), np.uint8)
    target = np.eye(4)
    target[:3, 3] = -2.0  # the target grid starts 2 voxels before the source
    out = resample_labels(labels, np.eye(4), target, (8, 8, 8))
    assert out[2:6, 2:6, 2:6].all() and out.sum() == 64


def test_real_dicom_series_keeps_its_geometry(shared_data, tmp_path):
    from velvet.data.io import read_volume

    series = shared_data / "ct" / "dicom_series" / "series"
    volume = read_volume(series)
    contract = CONTRACT.replace(spacing=(4.0, 4.0, 4.0), hu_window=(-200.0, 1000.0))
    result = segment_file(ThresholdModel(contract), series)
    np.testing.assert_allclose(result.affine, volume.affine)
    assert result.labels.shape == volume.shape
    truth = volume.array > 0.7 * 1200 - 200  # the stand-in model's threshold in HU
    assert dice(result.labels == 1, truth) > 0.6  # 4 mm prediction grid vs 0.98 x 0.98 x 2 mm input
    np.testing.assert_allclose(world_centroid(result.labels == 1, volume.affine), world_centroid(truth, volume.affine), atol=3.0)
    out, _ = write_segmentation(result, tmp_path / "seg.nii.gz")
    np.testing.assert_allclose(nib.load(out).affine, volume.affine, atol=1e-4)


def test_segment_cli(tmp_path, capsys):
    from velvet.cli.main import main
    from velvet.models.segmentation import SegmentationConfig, SegmentationModel

    path, hu, affine = las_scan(tmp_path)
    torch.manual_seed(0)
    model = SegmentationModel(
        SegmentationConfig(("background", "bright"), vision={"preset": "swin-tiny", "window_size": 4, "depths": [1, 1, 1, 1]}, roi_size=(64, 64, 64))
    )
    model.save_pretrained(tmp_path / "model", preprocess=CONTRACT)
    out = tmp_path / "out" / "seg.nii.gz"
    code = main(["segment", str(path), "--model", str(tmp_path / "model"), "--out", str(out), "--overlay", str(tmp_path / "o.png")])
    assert code == 0
    written = nib.load(out)
    assert written.shape == hu.shape and np.allclose(written.affine, affine)
    assert (tmp_path / "o.png").stat().st_size > 0 and (tmp_path / "out" / "seg.json").is_file()
    assert main(["segment", str(path), "--model", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert main(["segment", str(path), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "seg.png")]) == 1
    assert "NIfTI" in capsys.readouterr().err

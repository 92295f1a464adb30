"""Datasets and collation: samples, labels, the skip policy and batch-level tokenisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from velvet.data.atomic import save_nifti
from velvet.data.cache import UncachedVolumes
from velvet.data.collate import VolumeReportCollator
from velvet.data.contract import PreprocessContract
from velvet.data.dataset import VolumeReportDataset
from velvet.data.errors import ReportError, VolumeReadError
from velvet.data.manifest import ManifestRecord

CONTRACT = PreprocessContract(crop_foreground=False, spatial_size=(8, 8, 8))


@pytest.fixture()
def records(tmp_path):
    x = np.full((12, 12, 12), -1000, np.int16)
    x[2:10, 2:10, 2:10] = 50
    save_nifti(x, np.eye(4), tmp_path / "ok.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"\x00" * 10)
    ok = str(tmp_path / "ok.nii.gz")
    return [
        ManifestRecord(
            id="a", volume=ok, split="train", report="Liver lesion. Lungs clear.", labels={"L": 1.0}
        ),
        ManifestRecord(id="b", volume=str(tmp_path / "bad.nii.gz"), split="train", report="Fine."),
        ManifestRecord(id="c", volume=ok, split="train", report="   \n  ", labels={"L": 0.0}),
        ManifestRecord(id="d", volume=ok, split="train", report="Normal study.", labels={}),
    ]


def test_sample_contents(records):
    ds = VolumeReportDataset(records, UncachedVolumes(CONTRACT), label_names=["L"])
    s = ds[0]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (1, 8, 8, 8)
    assert s["report"] == "Liver lesion. Lungs clear." and s["id"] == "a"
    assert s["labels"].tolist() == [1.0]
    assert math.isnan(float(ds[3]["labels"][0]))  # unknown label


def test_raise_policy_names_the_file(records):
    ds = VolumeReportDataset(records, UncachedVolumes(CONTRACT))
    with pytest.raises(VolumeReadError, match="bad.nii.gz"):
        ds[1]
    with pytest.raises(ReportError, match="case 'c'"):
        ds[2]


def test_skip_policy_and_collation(records, caplog):
    ds = VolumeReportDataset(records, UncachedVolumes(CONTRACT), label_names=["L"], on_error="skip")
    samples = [ds[i] for i in range(4)]
    assert samples[1] is None and samples[2] is None
    assert "skipping case b" in caplog.text and "bad.nii.gz" in caplog.text
    batch = VolumeReportCollator()(samples)
    assert batch["num_skipped"] == 2 and batch["ids"] == ["a", "d"]
    assert batch["image"].shape == (2, 1, 8, 8, 8) and batch["labels"].shape == (2, 1)
    assert VolumeReportCollator()([None, None]) is None


def test_collator_tokenises_the_batch(records):
    class FakeTokenizer:
        def __call__(self, reports, seed=None):
            return {"input_ids": torch.tensor([[len(r)] for r in reports])}

    ds = VolumeReportDataset(records, UncachedVolumes(CONTRACT), on_error="skip")
    batch = VolumeReportCollator(FakeTokenizer())([ds[0], ds[3]])
    assert batch["input_ids"].tolist() == [[26], [13]]


def test_bad_policy():
    with pytest.raises(ValueError, match="on_error"):
        VolumeReportDataset([], UncachedVolumes(CONTRACT), on_error="ignore")


def test_samples_and_batches_carry_their_dataset_index(records):
    ds = VolumeReportDataset(records, UncachedVolumes(CONTRACT), on_error="skip")
    assert ds[3]["index"] == 3 and ds[-1]["index"] == 3  # the position, whatever the key's sign
    batch = VolumeReportCollator()([ds[i] for i in (3, 1, 0)])  # 1 is skipped: its index goes too
    assert batch["index"].dtype == torch.int64 and batch["index"].tolist() == [3, 0]
    assert batch["ids"] == ["d", "a"]

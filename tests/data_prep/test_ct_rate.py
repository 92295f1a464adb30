"""CT-RATE converter on a fabricated download in the real layout and CSV formats (datasets.md 1 and 5)."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_prep import ct_rate
from velvet.data.errors import DataError
from velvet.data.manifest import read_manifest

REPORT_HEADER = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
METADATA_HEADER = [
    "VolumeName",
    "Manufacturer",
    "SeriesDescription",
    "ManufacturerModelName",
    "PatientSex",
    "PatientAge",
    "ReconstructionDiameter",
    "DistanceSourceToDetector",
    "DistanceSourceToPatient",
    "GantryDetectorTilt",
    "TableHeight",
    "RotationDirection",
    "ExposureTime",
    "XRayTubeCurrent",
    "Exposure",
    "FilterType",
    "GeneratorPower",
    "FocalSpots",
    "ConvolutionKernel",
    "PatientPosition",
    "RevolutionTime",
    "SingleCollimationWidth",
    "TotalCollimationWidth",
    "TableSpeed",
    "TableFeedPerRotation",
    "SpiralPitchFactor",
    "DataCollectionCenterPatient",
    "ReconstructionTargetCenterPatient",
    "ExposureModulationType",
    "CTDIvol",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceLocation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "XYSpacing",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "NumberofSlices",
    "ZSpacing",
    "StudyDate",
]
LABEL_HEADER = ["VolumeName", *ct_rate.LABEL_NAMES]
FINDINGS = "Trachea and both main bronchi are open. A 4 mm nodule, seen before, is in the right lower lobe."
SPACING = (0.75, 0.75, 1.5)


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _hu(seed: int) -> np.ndarray:
    """A small HU volume: air (-1000) around a soft-tissue block and a bone voxel."""
    hu = np.full((6, 5, 4), -1000, np.int16)
    hu[1:5, 1:4, 1:3] = 40 + seed
    hu[2, 2, 2] = 700
    return hu


def _volumes(dataset: Path, name: str, seed: int, *, v1: bool = True) -> None:
    split, patient, scan, _ = name.split("_")
    rel = Path(f"{split}_{patient}") / f"{split}_{patient}_{scan}" / f"{name}.nii.gz"
    hu = _hu(seed)
    # v2: int16 HU with an LPS affine (x and y flipped), slices on the last axis
    lps = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    lps[:3, 3] = [190.0, 180.5, -40.0]
    (dataset / f"{split}_fixed" / rel).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(hu, lps), dataset / f"{split}_fixed" / rel)
    if v1:  # v1: float raw DICOM values (HU + 1024) with a blank identity header
        (dataset / split / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(hu.astype(np.float32) + 1024, np.eye(4)), dataset / split / rel)


def _report(name: str, findings: str = FINDINGS, impression: str = "Nonspecific nodule.") -> dict[str, str]:
    return {
        "VolumeName": f"{name}.nii.gz",
        "ClinicalInformation_EN": "Cough for two weeks.",
        "Technique_EN": "Non-contrast axial images, 1.5 mm sections.",
        "Findings_EN": findings,
        "Impressions_EN": impression,
    }


def _metadata(name: str) -> dict[str, str]:
    return {
        "VolumeName": f"{name}.nii.gz",
        "Manufacturer": "Philips",
        "PatientAge": "061Y",
        "ImagePositionPatient": "[-190.0, -180.5, -40.0]",
        "XYSpacing": f"[{SPACING[0]}, {SPACING[1]}]",
        "RescaleIntercept": "-1024",
        "RescaleSlope": "1",
        "ZSpacing": str(SPACING[2]),
        "StudyDate": "20200312",
    }


def _labels(name: str, positive: tuple[str, ...]) -> dict[str, str]:
    return {"VolumeName": f"{name}.nii.gz", **{n: str(int(n in positive)) for n in ct_rate.LABEL_NAMES}}


@pytest.fixture
def download(tmp_path: Path) -> Path:
    """valid (patients 1, 2, plus edge cases) and train (patients 1-10) in v1 and v2."""
    root = tmp_path / "CT-RATE"
    ds = root / "dataset"
    for i, name in enumerate(["valid_1_a_1", "valid_1_a_2", "valid_2_a_1", "valid_4_a_1", "valid_5_a_1"]):
        _volumes(ds, name, i)
    valid_reports = [
        _report("valid_1_a_1"),
        _report("valid_1_a_2"),
        _report("valid_1_a_1"),  # duplicated row
        _report("valid_2_a_1", impression="Not given."),
        _report("valid_3_a_1"),  # listed, not downloaded
        _report("valid_5_a_1", findings="Not given.", impression=" "),  # nothing left
    ]  # valid_4_a_1 is on disk without a report row
    _write_csv(ds / "radiology_text_reports" / "validation_reports.csv", REPORT_HEADER, valid_reports)
    names = ["valid_1_a_1", "valid_1_a_2", "valid_2_a_1", "valid_4_a_1", "valid_5_a_1"]
    _write_csv(ds / "metadata" / "validation_metadata.csv", METADATA_HEADER, [_metadata(n) for n in names])
    labels = [_labels("valid_1_a_1", ("Emphysema", "Lung nodule")), _labels("valid_1_a_2", ("Lung nodule",))]
    _write_csv(ds / "multi_abnormality_labels" / "valid_predicted_labels.csv", LABEL_HEADER, labels)

    train = [f"train_{p}_{s}_{r}" for p in range(1, 11) for s, r in (("a", 1), ("a", 2), ("b", 1))]
    for i, name in enumerate(train):
        _volumes(ds, name, i, v1=False)
    _write_csv(
        ds / "radiology_text_reports" / "train_reports.csv", REPORT_HEADER, [_report(n) for n in train]
    )
    _write_csv(
        ds / "multi_abnormality_labels" / "train_predicted_labels.csv",
        LABEL_HEADER,
        [_labels(n, ()) for n in train],
    )
    return root


def _skips(out: Path) -> dict[str, str]:
    with (out / "skipped.csv").open(encoding="utf-8", newline="") as fh:
        return {Path(r["item"]).name: r["reason"] for r in csv.DictReader(fh)}


def test_v2_manifest(download: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="data_prep"):
        path = ct_rate.convert_ct_rate(download, out, val_fraction=0.2)
    manifest = read_manifest(path)
    test = {r.id: r for r in manifest.split("test")}
    assert sorted(test) == ["valid_1_a_1", "valid_1_a_2", "valid_2_a_1"]
    for r in manifest:
        assert "_fixed" in Path(r.volume).parts[-4]  # v2 folders only, never mixed with v1
        assert r.spacing is None and r.rescale is None
    assert test["valid_1_a_1"].report == FINDINGS + "\nNonspecific nodule."  # quoted comma kept
    assert test["valid_2_a_1"].report == FINDINGS  # "Not given." impression dropped
    assert manifest.label_names == list(ct_rate.LABEL_NAMES)
    assert test["valid_1_a_1"].labels["Emphysema"] == 1.0 and test["valid_1_a_2"].labels["Emphysema"] == 0.0
    assert all(math.isnan(v) for v in test["valid_2_a_1"].labels.values())  # no label row: unknown
    assert _skips(out) == {
        "valid_3_a_1.nii.gz": "listed in the reports CSV but missing on disk",
        "valid_4_a_1.nii.gz": "volume has no row in the reports CSV",
        "valid_5_a_1.nii.gz": "empty report (both: missing or 'Not given.')",
    }
    log = caplog.text
    assert "validation_reports.csv: duplicated rows (first kept)" in log
    assert "volumes without a label row (labels left unknown)" in log

    # train -> train/val by patient: 2 of 10 patients, all three volumes of a patient together
    split_of_patient: dict[str, set[str]] = {}
    for r in manifest:
        if r.split != "test":
            split_of_patient.setdefault(r.id.split("_")[1], set()).add(r.split)
    assert len(split_of_patient) == 10 and all(len(s) == 1 for s in split_of_patient.values())
    assert sum(s == {"val"} for s in split_of_patient.values()) == 2
    again = read_manifest(ct_rate.convert_ct_rate(download, tmp_path / "again", val_fraction=0.2))
    assert {r.id: r.split for r in again} == {r.id: r.split for r in manifest}


def test_v1_overrides_give_the_v2_hounsfield_units(download: Path, tmp_path: Path) -> None:
    v1 = read_manifest(ct_rate.convert_ct_rate(download, tmp_path / "v1", version="v1", splits=["valid"]))
    v2 = read_manifest(ct_rate.convert_ct_rate(download, tmp_path / "v2", version="v2", splits=["valid"]))
    assert len(v1) == len(v2) == 3
    assert all("_fixed" not in r.volume for r in v1)
    for a, b in zip(v1, v2, strict=True):
        assert a.id == b.id and a.spacing == SPACING and a.rescale == (1.0, -1024.0)
        try:
            from velvet.data.io import read_volume
        except ImportError:  # the reader is another module's job: check the arithmetic directly
            slope, intercept = a.rescale
            hu_v1 = np.asarray(nib.load(a.volume).dataobj, np.float32) * slope + intercept
            hu_v2 = np.asarray(nib.load(b.volume).dataobj)
            spacing_v2 = tuple(float(s) for s in nib.load(b.volume).header.get_zooms())
        else:
            vol1 = read_volume(a.volume, spacing=a.spacing, rescale=a.rescale)
            vol2 = read_volume(b.volume)
            hu_v1, hu_v2, spacing_v2 = vol1.array, vol2.array, vol2.spacing
            assert vol1.spacing == pytest.approx(spacing_v2)
        assert a.spacing == pytest.approx(spacing_v2)
        assert hu_v2.dtype == np.int16 and hu_v2.min() == -1000
        assert np.array_equal(hu_v1, hu_v2.astype(np.float32))


def test_text_option_and_missing_v1_metadata(download: Path, tmp_path: Path) -> None:
    meta = download / "dataset" / "metadata" / "validation_metadata.csv"
    rows = list(csv.DictReader(meta.open(encoding="utf-8")))
    _write_csv(meta, METADATA_HEADER, [r for r in rows if r["VolumeName"] != "valid_1_a_2.nii.gz"])
    out = tmp_path / "out"
    manifest = read_manifest(
        ct_rate.convert_ct_rate(download, out, version="v1", text="impression", splits=["valid"])
    )
    assert {r.id: r.report for r in manifest} == {"valid_1_a_1": "Nonspecific nodule."}
    skips = _skips(out)
    assert skips["valid_1_a_2.nii.gz"] == "no metadata row (v1 needs its spacing and rescale)"
    assert skips["valid_2_a_1.nii.gz"] == "empty report (impression: missing or 'Not given.')"


def test_v2_never_falls_back_to_v1(download: Path, tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(download / "dataset" / "valid_fixed")
    manifest = read_manifest(ct_rate.convert_ct_rate(download, tmp_path / "out"))
    assert {r.split for r in manifest} == {"train", "val"}  # valid exists only as v1: left out
    with pytest.raises(FileNotFoundError, match="no CT-RATE v2 volume folder"):
        ct_rate.convert_ct_rate(download, tmp_path / "none", splits=["valid"])


def test_compose_report() -> None:
    assert ct_rate.compose_report("A, b.", "C.") == "A, b.\nC."
    assert ct_rate.compose_report("A.", "not given") == "A."
    assert ct_rate.compose_report(" Not given. ", "C.", part="findings") == ""
    assert ct_rate.compose_report("A.", "C.", part="impression") == "C."


def test_main_and_dataset_folder_as_root(download: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert ct_rate.main([str(download / "dataset"), "--out", str(out), "--splits", "valid"]) == 0
    assert len(read_manifest(out / "manifest.csv")) == 3
    header = (
        (download / "dataset" / "radiology_text_reports" / "validation_reports.csv").read_text().splitlines()
    )
    bad = download / "dataset" / "radiology_text_reports" / "validation_reports.csv"
    bad.write_text(
        header[0].replace("Findings_EN", "Findings") + "\n" + "\n".join(header[1:]), encoding="utf-8"
    )
    assert ct_rate.main([str(download), "--out", str(out), "--splits", "valid"]) == 2


def test_non_utf8_and_long_report_csvs(download: Path, tmp_path: Path) -> None:
    reports = download / "dataset" / "radiology_text_reports" / "validation_reports.csv"
    rows = list(csv.DictReader(reports.open(encoding="utf-8", newline="")))
    rows[0]["Findings_EN"] = "Lungs clear. " * 100_000  # above the csv module's default field limit
    rows[1]["Findings_EN"] = "Rundherd 4 mm, Größe stabil."
    with reports.open("w", encoding="latin-1", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=REPORT_HEADER, restval="")
        writer.writeheader()
        writer.writerows(rows)
    argv = [str(download), "--splits", "valid", "--out"]
    with pytest.raises(DataError) as info:
        ct_rate.convert_ct_rate(download, tmp_path / "out", splits=["valid"])
    assert str(info.value).startswith(f"{reports}:3: not utf-8-sig text") and "--encoding" in str(info.value)
    assert ct_rate.main([*argv, str(tmp_path / "o1")]) == 2
    assert ct_rate.main([*argv, str(tmp_path / "o2"), "--encoding", "latin-1"]) == 0
    text = (tmp_path / "o2" / "manifest.csv").read_text(encoding="utf-8")
    assert "Größe stabil" in text and text.count("Lungs clear.") >= 100_000

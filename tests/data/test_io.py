"""velvet.data.io: real files (NIfTI, DICOM, NRRD), ITK vs nibabel geometry, and every bad-file error."""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from velvet.data.atomic import save_nifti
from velvet.data.errors import VolumeReadError, VolumeShapeError, VolumeValueError
from velvet.data.io import (
    DamagedSliceWarning,
    MissingSliceWarning,
    NonUniformSpacingWarning,
    Volume,
    VolumeTooLargeError,
    read_volume,
)

TINY_UID = "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.2"


def _itk_orientation(img: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(img.GetDirection())


def _ras_of_index(img: sitk.Image, index: tuple[int, int, int]) -> np.ndarray:
    """ITK's own world point (LPS) of a voxel index, converted to RAS."""
    lps = np.array(img.TransformIndexToPhysicalPoint(index))
    return lps * np.array([-1.0, -1.0, 1.0])


def _check_itk_geometry(vol: Volume, img: sitk.Image) -> None:
    """The volume's affine sends voxel (i, j, k) where ITK sends index (i, j, k), in RAS."""
    for index in [(0, 0, 0), (5, 7, 3), tuple(s - 1 for s in img.GetSize())]:
        np.testing.assert_allclose(vol.affine @ [*index, 1.0], [*_ras_of_index(img, index), 1.0], atol=1e-4)


@pytest.fixture
def ct_array() -> np.ndarray:
    """A small int16 volume with CT-like values."""
    return np.random.default_rng(0).integers(-1024, 2000, (12, 10, 8)).astype(np.int16)


# ----------------------------------------------------------------------------------- real files


def test_abdomen_nifti(shared_data: Path) -> None:
    path = shared_data / "ct/abdomen_ct/ct.nii.gz"
    vol = read_volume(path)
    img = nib.load(path)
    assert vol.format == "nifti" and vol.path == str(path)
    assert vol.shape == (122, 101, 112)
    assert vol.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert vol.orientation == "".join(nib.aff2axcodes(img.affine)) == "RAS"
    assert vol.dtype == np.int32  # unscaled integers stay integers
    np.testing.assert_array_equal(vol.affine, img.affine)
    assert vol.array.min() == -1207 and vol.array.max() == 3382  # the README's HU range


def test_small_slab_equals_part_of_full_scan(shared_data: Path) -> None:
    full = read_volume(shared_data / "ct/abdomen_ct/ct.nii.gz")
    slab = read_volume(shared_data / "ct/abdomen_ct_small/ct.nii.gz")
    assert slab.dtype == np.int16 and slab.shape == (122, 101, 30)
    np.testing.assert_array_equal(slab.array, full.array[:, :, 82:112])


def test_dicom_series(shared_data: Path) -> None:
    folder = shared_data / "ct/dicom_series/series"
    vol = read_volume(folder)
    assert vol.format == "dicom"
    assert vol.shape == (512, 512, 20)
    assert vol.spacing == pytest.approx((0.977, 0.977, 2.0), abs=1e-3)
    assert vol.meta["modality"] == "CT" and vol.meta["n_files"] == 20
    # SimpleITK applied RescaleIntercept -1024: the values are HU, air at -1024
    assert vol.meta["rescale_intercept"] == -1024.0
    assert vol.array.min() == -1024
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    assert vol.orientation == _itk_orientation(img) == "LPS"
    _check_itk_geometry(vol, img)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(img).transpose(2, 1, 0))


def test_nrrd(shared_data: Path) -> None:
    path = shared_data / "ct/lung_tumour_nrrd/ct.nrrd"
    vol = read_volume(path)
    img = sitk.ReadImage(str(path))
    assert vol.format == "nrrd" and vol.dtype == np.int16
    assert vol.shape == (512, 512, 48)
    assert vol.spacing == pytest.approx((0.57, 0.57, 5.0), abs=1e-3)
    assert vol.orientation == _itk_orientation(img) == "LPS"
    _check_itk_geometry(vol, img)
    assert (vol.array.min(), vol.array.max()) == (-1024, 3071)
    assert vol.array[10, 20, 30] == sitk.GetArrayViewFromImage(img)[30, 20, 10]  # (x, y, z) order


def test_mr_orientation(shared_data: Path) -> None:
    path = shared_data / "ct/edge_cases/mr_not_ct.nii.gz"
    vol = read_volume(path)
    assert vol.shape == (117, 91, 20)
    assert vol.orientation == "".join(nib.aff2axcodes(nib.load(path).affine))


def test_single_slice_dicom_is_refused(shared_data: Path) -> None:
    path = shared_data / "ct/edge_cases/single_slice_CT_small.dcm"
    with pytest.raises(VolumeShapeError, match="single slice") as info:
        read_volume(path)
    assert str(path) in str(info.value) and "128 x 128 x 1" in str(info.value)


def test_non_uniform_dicom_spacing_warns(shared_data: Path, capfd: pytest.CaptureFixture[str]) -> None:
    folder = shared_data / "ct/edge_cases/dicom_tiny_16x16"
    with pytest.warns(NonUniformSpacingWarning, match=r"from 1\.25 to 202\.5 mm") as record:
        vol = read_volume(folder)
    assert str(folder) in str(record[0].message)
    assert vol.shape == (16, 16, 4) and vol.meta["series_uid"] == TINY_UID
    assert vol.meta["warnings"] == [str(record[0].message)]
    # ITK's own stderr message is silenced, and its global switch is restored afterwards
    assert "Non uniform sampling" not in capfd.readouterr().err
    assert sitk.ProcessObject.GetGlobalWarningDisplay()


def test_several_series_in_one_folder(shared_data: Path, tmp_path: Path) -> None:
    series = sorted((shared_data / "ct/dicom_series/series").iterdir())[:3]
    tiny = sorted((shared_data / "ct/edge_cases/dicom_tiny_16x16").iterdir())
    for f in series + tiny:
        shutil.copy(f, tmp_path / f.name)
    with pytest.raises(VolumeReadError, match="2 DICOM series") as info:
        read_volume(tmp_path)
    assert TINY_UID in str(info.value) and "series_uid" in str(info.value)
    with pytest.warns(NonUniformSpacingWarning):
        vol = read_volume(tmp_path, series_uid=TINY_UID)
    assert vol.shape == (16, 16, 4)
    assert read_volume(tmp_path, series_uid="").shape == (512, 512, 3)  # the series without a UID
    with pytest.raises(VolumeReadError, match="no DICOM series '1.2.3'"):
        read_volume(tmp_path, series_uid="1.2.3")


def test_folder_without_dicom(tmp_path: Path, ct_array: np.ndarray) -> None:
    with pytest.raises(VolumeReadError, match="no DICOM files.*empty"):
        read_volume(tmp_path)
    save_nifti(ct_array, np.eye(4), tmp_path / "a.nii.gz")
    with pytest.raises(VolumeReadError, match=r"no DICOM files \(it holds 1 entry, e.g. a.nii.gz\)") as info:
        read_volume(tmp_path)
    assert str(tmp_path) in str(info.value)


# ------------------------------------------------------------------------ ITK vs nibabel geometry


@pytest.mark.parametrize("ext", ["mha", "nrrd"])
@pytest.mark.parametrize("flip", [False, True])
def test_itk_formats_match_nibabel(tmp_path: Path, ct_array: np.ndarray, ext: str, flip: bool) -> None:
    """An oblique NIfTI, re-saved by SimpleITK, reads back with the same affine and voxels."""
    rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    if flip:  # a left-handed voxel grid (one axis mirrored)
        rotation[:, 0] *= -1
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.3, 2.5])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    nifti = save_nifti(ct_array, affine, tmp_path / "ct.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(tmp_path / f"ct.{ext}"))
    by_nibabel, by_itk = read_volume(nifti), read_volume(tmp_path / f"ct.{ext}")
    np.testing.assert_allclose(by_itk.affine, by_nibabel.affine, atol=1e-5)  # NIfTI stores float32
    np.testing.assert_allclose(by_nibabel.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(by_itk.array, by_nibabel.array)
    np.testing.assert_array_equal(by_nibabel.array, ct_array)
    assert by_itk.orientation == by_nibabel.orientation == "".join(nib.aff2axcodes(affine))


# -------------------------------------------------------------------------- overrides, scaling


def test_spacing_override_keeps_direction_and_origin(tmp_path: Path, ct_array: np.ndarray) -> None:
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [5.0, 6.0, 7.0]
    path = save_nifti(ct_array, affine, tmp_path / "ct.nii.gz")
    vol = read_volume(path, spacing=(0.5, 0.75, 5.0))
    np.testing.assert_allclose(vol.affine, [[-0.5, 0, 0, 5], [0, 0.75, 0, 6], [0, 0, 5, 7], [0, 0, 0, 1]])
    assert vol.orientation == "LAS"
    with pytest.raises(ValueError, match="spacing"):
        read_volume(path, spacing=(1.0, 0.0, 1.0))


def test_zero_voxel_size_needs_spacing(tmp_path: Path, ct_array: np.ndarray) -> None:
    path = tmp_path / "blank.nii.gz"
    img = nib.Nifti1Image(ct_array, None)
    img.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # a header with no size along k
    nib.save(img, path)
    with pytest.raises(VolumeReadError, match="zero voxel size") as info:
        read_volume(path)
    assert str(path) in str(info.value)
    assert read_volume(path, spacing=(1.0, 1.0, 2.5)).spacing == pytest.approx((1.0, 1.0, 2.5))


def test_rescale_override(tmp_path: Path, ct_array: np.ndarray) -> None:
    raw = (ct_array.astype(np.int32) + 1024).astype(np.uint16)  # stored without the intercept
    path = save_nifti(raw, np.eye(4), tmp_path / "raw.nii.gz")
    vol = read_volume(path, rescale=(1.0, -1024.0))
    assert vol.dtype == np.float32
    np.testing.assert_array_equal(vol.array, ct_array.astype(np.float32))
    with pytest.raises(ValueError, match="slope"):
        read_volume(path, rescale=(0.0, 1.0))


def test_nifti_scl_slope_is_applied(tmp_path: Path, ct_array: np.ndarray) -> None:
    img = nib.Nifti1Image(ct_array, np.eye(4))
    img.header.set_slope_inter(2.0, -1000.0)
    nib.save(img, tmp_path / "scaled.nii")
    vol = read_volume(tmp_path / "scaled.nii")
    assert vol.dtype == np.float32 and vol.meta["rescale"] == [2.0, -1000.0]
    np.testing.assert_allclose(vol.array, ct_array * 2.0 - 1000.0)


def test_trailing_singleton_dimension_is_squeezed(tmp_path: Path, ct_array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(ct_array[..., None], np.eye(4)), tmp_path / "x.nii.gz")
    vol = read_volume(tmp_path / "x.nii.gz")
    assert vol.shape == ct_array.shape
    np.testing.assert_array_equal(vol.array, ct_array)


# ------------------------------------------------------------------------------------ bad files


def _assert_names(info: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    for word in words:
        assert word in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VolumeReadError) as info:
        read_volume(tmp_path / "nope.nii.gz")
    _assert_names(info, tmp_path / "nope.nii.gz", "no such file")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(VolumeReadError) as info:
        read_volume(tmp_path / "empty.nii.gz")
    _assert_names(info, tmp_path / "empty.nii.gz", "empty file")


@pytest.mark.parametrize("name", ["notes.txt", "scan.png", "volume"])
def test_unknown_format(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"hello, not an image" * 20)
    with pytest.raises(VolumeReadError) as info:
        read_volume(tmp_path / name)
    _assert_names(info, tmp_path / name, "unknown image format", ".nii.gz")


@pytest.mark.parametrize(("name", "kind"), [("r.nii.gz", "NIfTI"), ("r.nii", "NIfTI"), ("r.nrrd", "NRRD")])
def test_random_bytes(tmp_path: Path, name: str, kind: str) -> None:
    (tmp_path / name).write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VolumeReadError) as info:
        read_volume(tmp_path / name)
    _assert_names(info, tmp_path / name, f"cannot read as {kind}", "corrupt")


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii", "ct.nrrd"])
def test_truncated_file(tmp_path: Path, ct_array: np.ndarray, name: str) -> None:
    whole = tmp_path / f"whole-{name}"
    if name.endswith(".nrrd"):
        sitk.WriteImage(sitk.GetImageFromArray(ct_array), str(whole), useCompression=False)
    else:
        save_nifti(ct_array, np.eye(4), whole)
    data = whole.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeReadError) as info:
        read_volume(tmp_path / name)
    _assert_names(info, tmp_path / name, "truncated")


def test_truncated_gzip_stream(tmp_path: Path, ct_array: np.ndarray) -> None:
    """A gz cut mid-stream: the header decompresses, the voxels do not."""
    raw = save_nifti(ct_array, np.eye(4), tmp_path / "ct.nii").read_bytes()
    packed = gzip.compress(raw)
    (tmp_path / "cut.nii.gz").write_bytes(packed[: len(packed) * 3 // 4])
    with pytest.raises(VolumeReadError) as info:
        read_volume(tmp_path / "cut.nii.gz")
    _assert_names(info, tmp_path / "cut.nii.gz", "cannot read as NIfTI")


def test_2d_image(tmp_path: Path, ct_array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(ct_array[:, :, 0], np.eye(4)), tmp_path / "2d.nii.gz")
    with pytest.raises(VolumeShapeError) as info:
        read_volume(tmp_path / "2d.nii.gz")
    _assert_names(info, tmp_path / "2d.nii.gz", "2D image", "12 x 10")


def test_single_slice_nifti(tmp_path: Path, ct_array: np.ndarray) -> None:
    save_nifti(ct_array[:, :, :1], np.eye(4), tmp_path / "one.nii.gz")
    with pytest.raises(VolumeShapeError) as info:
        read_volume(tmp_path / "one.nii.gz")
    _assert_names(info, tmp_path / "one.nii.gz", "single slice", "12 x 10 x 1")


def test_4d_multichannel(tmp_path: Path, ct_array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(np.stack([ct_array] * 3, axis=-1), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(VolumeShapeError) as info:
        read_volume(tmp_path / "4d.nii.gz")
    _assert_names(info, tmp_path / "4d.nii.gz", "4D", "3 volumes or channels")


def test_vector_pixels(tmp_path: Path, ct_array: np.ndarray) -> None:
    img = sitk.GetImageFromArray(np.stack([ct_array] * 2, axis=-1), isVector=True)
    sitk.WriteImage(img, str(tmp_path / "vec.mha"))
    with pytest.raises(VolumeShapeError) as info:
        read_volume(tmp_path / "vec.mha")
    _assert_names(info, tmp_path / "vec.mha", "2 channels")


def test_zero_size(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((0, 4, 4), np.int16), np.eye(4)), tmp_path / "zero.nii.gz")
    with pytest.raises(VolumeShapeError) as info:
        read_volume(tmp_path / "zero.nii.gz")
    _assert_names(info, tmp_path / "zero.nii.gz", "no voxels")


@pytest.mark.parametrize(
    ("bad", "words"), [(np.nan, "2 NaN"), (np.inf, "2 infinite"), (-np.inf, "2 infinite")]
)
def test_non_finite_voxels(tmp_path: Path, ct_array: np.ndarray, bad: float, words: str) -> None:
    data = ct_array.astype(np.float32)
    data[0, 0, 0] = data[3, 4, 5] = bad
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "bad.nii.gz")
    with pytest.raises(VolumeValueError) as info:
        read_volume(tmp_path / "bad.nii.gz")
    _assert_names(info, tmp_path / "bad.nii.gz", words, "960")


def test_no_warning_for_good_files(tmp_path: Path, ct_array: np.ndarray) -> None:
    path = save_nifti(ct_array, np.eye(4), tmp_path / "ok.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_volume(path)


# ------------------------------------------------------------------------ headers that lie about size


def _nifti_header(shape: tuple[int, ...], dtype: type) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\0" * 4  # 348-byte header + the 4-byte extension flag


def _peak_bytes(fn) -> int:
    """Peak Python/numpy heap while ``fn`` runs (numpy buffers are traced by tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_552_byte_nifti_declaring_20000_cubed_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "liar.nii"
    path.write_bytes(_nifti_header((20000, 20000, 20000), np.int16) + b"\x01" * 200)
    assert path.stat().st_size == 552
    caught: list[BaseException] = []

    def read() -> None:
        with pytest.raises(VolumeReadError) as info:
            read_volume(path)
        caught.append(info.value)

    assert _peak_bytes(read) < 20 * 2**20  # not the 14.6 TiB the header asks for (was: MemoryError)
    message = str(caught[0])
    assert message.startswith(f"{path}: ") and "20000 x 20000 x 20000 int16" in message
    assert "200 bytes of voxel data" in message and "truncated, or a header that lies" in message
    assert not isinstance(caught[0], VolumeTooLargeError)  # a fact about the file: cacheable


@pytest.mark.parametrize("name", ["liar.nii.gz", "liar.mha", "liar.nrrd"])
def test_tiny_file_declaring_2_gb_is_refused_without_allocating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    path = tmp_path / name
    if name.endswith(".nii.gz"):
        path.write_bytes(gzip.compress(_nifti_header((1290, 1290, 1290), np.uint8), mtime=0))
    elif name.endswith(".mha"):
        path.write_text(
            "NDims = 3\nDimSize = 1290 1290 1290\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
        )
    else:
        path.write_bytes(
            b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1290 1290 1290\nencoding: gzip\n\n\x1f\x8b"
        )
    assert path.stat().st_size < 100
    monkeypatch.setenv("VELVET_MAX_VOXELS", str(10**12))  # the file size alone must give it away

    executed: list[str] = []

    def never(self, *args, **kwargs):  # ITK allocates outside Python's heap: it must never be asked to
        executed.append(self.GetFileName())
        raise AssertionError("the voxels were read")

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", never)
    caught: list[BaseException] = []

    def read() -> None:
        with pytest.raises(VolumeReadError) as info:
            read_volume(path)
        caught.append(info.value)

    assert _peak_bytes(read) < 20 * 2**20  # 2 GiB declared (was: allocated, then "truncated")
    assert executed == []
    _assert_names_value(caught[0], path, "1290 x 1290 x 1290 uint8", "2 GiB", "a header that lies")


def _assert_names_value(exc: BaseException, path: Path, *words: str) -> None:
    message = str(exc)
    assert message.startswith(f"{path}: "), message
    for word in words:
        assert word in message, message


def test_external_data_file_too_small(tmp_path: Path) -> None:
    (tmp_path / "ct.raw").write_bytes(b"\0" * 100)
    header = tmp_path / "ct.mhd"
    header.write_text("NDims = 3\nDimSize = 10 10 10\nElementType = MET_SHORT\nElementDataFile = ct.raw\n")
    with pytest.raises(VolumeReadError) as info:
        read_volume(header)
    _assert_names(info, header, "10 x 10 x 10 int16", "the data file ct.raw holds only 100 bytes")


def test_voxel_budget(tmp_path: Path, ct_array: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_nifti(ct_array, np.eye(4), tmp_path / "ct.nii.gz")
    with pytest.raises(VolumeTooLargeError) as info:
        read_volume(path, max_voxels=500)
    _assert_names(info, path, "960 voxels, more than the limit of 500", "VELVET_MAX_VOXELS")
    assert VolumeTooLargeError.transient  # depends on the settings, not the file: never cached
    monkeypatch.setenv("VELVET_MAX_VOXELS", "959")
    with pytest.raises(VolumeTooLargeError):
        read_volume(path)
    monkeypatch.setenv("VELVET_MAX_VOXELS", "960")
    assert read_volume(path).shape == ct_array.shape
    monkeypatch.setenv("VELVET_MAX_VOXELS", "lots")
    with pytest.raises(ValueError, match="VELVET_MAX_VOXELS"):
        read_volume(path)


def test_out_of_memory_is_a_data_error_naming_the_file(
    tmp_path: Path, ct_array: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import velvet.data.io as io_module

    path = save_nifti(ct_array, np.eye(4), tmp_path / "ct.nii.gz")

    def oom(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.3 GiB")

    monkeypatch.setattr(io_module, "_read_nifti", oom)
    with pytest.raises(VolumeTooLargeError) as info:  # a DataError: on_error=skip skips it
        read_volume(path)
    _assert_names(info, path, "ran out of memory", "7.3 GiB")


# ------------------------------------------------------------------ DICOM series: damaged or missing slices


def _write_series(folder: Path, n: int = 8, step: float = 2.0) -> np.ndarray:
    """An n-slice CT series written by SimpleITK, one file per slice (IM0000.dcm ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    array = (np.arange(n * 20 * 24).reshape(n, 20, 24) % 500 - 200).astype(np.int16)  # (z, y, x)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, step))
    image.SetOrigin((10.0, 20.0, 30.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.424242"
    for i in range(n):
        one = image[:, :, i]
        for tag, value in [
            ("0020|000e", uid),
            ("0020|000d", uid + ".1"),
            ("0008|0060", "CT"),
            ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"),
            ("0008|0018", f"{uid}.{i + 1}"),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0032", "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, i)))),
            ("0020|0013", str(i + 1)),
            ("0028|1052", "0"),
            ("0028|1053", "1"),
        ]:
            one.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{i:04d}.dcm"))
        writer.Execute(one)
    return array.transpose(2, 1, 0)  # (x, y, z), as read_volume returns it


def test_written_series_reads_whole(tmp_path: Path) -> None:
    expected = _write_series(tmp_path / "s")
    (tmp_path / "s" / "notes.txt").write_text("not a slice")  # other files are left alone
    (tmp_path / "s" / "README").write_text("scanned 2024\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = read_volume(tmp_path / "s")
    assert vol.shape == (24, 20, 8) and vol.spacing == pytest.approx((0.8, 0.8, 2.0))
    np.testing.assert_array_equal(vol.array, expected)


@pytest.mark.parametrize(
    ("damage", "why"), [("truncated", "truncated or corrupt"), ("empty", "empty, 0 bytes")]
)
def test_series_with_damaged_last_file(tmp_path: Path, damage: str, why: str) -> None:
    folder = tmp_path / "s"
    expected = _write_series(folder)
    last = folder / "IM0007.dcm"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with pytest.raises(VolumeReadError) as info:  # was: read with 7 of 8 slices, no word
        read_volume(folder)
    _assert_names(info, folder, "IM0007.dcm", why, "7 readable slice(s)")
    with pytest.warns(DamagedSliceWarning, match=r"IM0007\.dcm") as record:
        vol = read_volume(folder, damaged_slices="warn")
    assert str(folder) in str(record[0].message)
    assert vol.shape == (24, 20, 7) and vol.meta["warnings"] == [str(record[0].message)]
    np.testing.assert_array_equal(vol.array, expected[:, :, :7])
    # the preprocessing pipeline (cache, embed, training) refuses it too
    from velvet.data.contract import PreprocessContract
    from velvet.data.transforms import create_transforms

    contract = PreprocessContract(crop_foreground=False, spatial_size=None)
    with pytest.raises(VolumeReadError, match="IM0007.dcm"):
        create_transforms(contract)({"image": str(folder)})


def test_series_with_missing_middle_slice(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    _write_series(folder)
    (folder / "IM0003.dcm").unlink()
    with pytest.raises(VolumeReadError) as info:
        read_volume(folder, missing_slices="error")
    _assert_names(
        info,
        folder,
        "1 gap(s)",
        "4 mm between IM0002.dcm",
        "and IM0004.dcm",
        "about 1 slice(s) missing",
        "2 mm",
    )
    # the default only warns (velvet inspect describes such series), naming the slices around the gap
    with pytest.warns(MissingSliceWarning, match=r"IM0002\.dcm.*IM0004\.dcm") as record:
        vol = read_volume(folder)
    assert issubclass(MissingSliceWarning, NonUniformSpacingWarning)
    assert vol.shape == (24, 20, 7) and "non-uniform DICOM slice spacing" in str(record[0].message)
    from velvet.data.contract import PreprocessContract
    from velvet.data.transforms import create_transforms

    with pytest.raises(VolumeReadError, match=r"gap.*IM0002\.dcm"):  # the pipeline: an error
        create_transforms(PreprocessContract(crop_foreground=False, spatial_size=None))(
            {"image": str(folder)}
        )


def test_series_slice_with_lying_pixel_header(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    _write_series(folder)
    with pytest.raises(VolumeTooLargeError) as info:
        read_volume(folder, max_voxels=24 * 20 * 8 - 1)
    _assert_names(info, folder, "24 x 20 x 8", "more than the limit")


def test_slice_policies_are_checked(tmp_path: Path, ct_array: np.ndarray) -> None:
    path = save_nifti(ct_array, np.eye(4), tmp_path / "ct.nii.gz")
    with pytest.raises(ValueError, match="missing_slices"):
        read_volume(path, missing_slices="ignore")  # type: ignore[arg-type]

"""encode_volume / encode_text on strings: the contract applied to files, intensity checks."""

from __future__ import annotations

import warnings

import pytest
import torch

from velvet.data.io import read_volume
from velvet.data.transforms import create_transforms
from velvet.models.inference import IntensityWarning, prepare_volumes


def _files(phantom_dir):
    return sorted(str(p) for p in (phantom_dir / "volumes").glob("*.nii.gz"))


def test_encode_volume_applies_the_contract_to_files(tiny_model, phantom_dir):
    files = _files(phantom_dir)[:3]
    pipeline = create_transforms(tiny_model.preprocess)
    expected = torch.stack([torch.as_tensor(pipeline({"image": f})["image"]) for f in files])
    with torch.no_grad():
        reference = tiny_model.encode_image(expected.float())["embedding"]
    got = tiny_model.encode_volume(files, batch_size=2)
    torch.testing.assert_close(got, reference)
    one = tiny_model.encode_volume(files[0])
    torch.testing.assert_close(one, reference[:1])
    # a Volume object keeps its geometry, so it gives the same as its file
    torch.testing.assert_close(tiny_model.encode_volume(read_volume(files[1])), reference[1:2])


def test_raw_hu_given_as_model_input_warns(tiny_model, phantom_dir):
    raw = torch.as_tensor(read_volume(_files(phantom_dir)[0]).array).float()
    with pytest.warns(IntensityWarning, match="raw Hounsfield units"):
        prepare_volumes(raw, tiny_model.preprocess)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IntensityWarning)
        x = prepare_volumes(torch.rand(1, 32, 32, 32), tiny_model.preprocess)  # proper model input: silent
    assert x.shape == (1, 1, 32, 32, 32)


def test_normalised_values_given_as_raw_hu_warn(tiny_model):
    with pytest.warns(IntensityWarning, match="already normalised"):
        prepare_volumes(torch.rand(40, 40, 30), tiny_model.preprocess, preprocess=True)


def test_raw_tensor_preprocessing_matches_the_volume_path(tiny_model, phantom_dir):
    volume = read_volume(_files(phantom_dir)[0])
    contract = tiny_model.preprocess.replace(spacing=None)  # a bare tensor has no geometry
    from_tensor = prepare_volumes(torch.as_tensor(volume.array).float(), contract, preprocess=True)
    from_volume = prepare_volumes(volume, contract)
    # phantoms are stored RAS-aligned, so the identity affine of a bare tensor orients them the same
    assert from_tensor.shape == (1, 1, 32, 32, 32)
    torch.testing.assert_close(from_tensor, from_volume)


def test_bad_inputs(tiny_model, tmp_path):
    with pytest.raises(ValueError, match=r"\(1, H, W, D\)"):
        prepare_volumes(torch.rand(2, 8, 8, 8), tiny_model.preprocess)
    with pytest.raises(ValueError, match="always preprocessed"):
        prepare_volumes(str(tmp_path / "x.nii.gz"), tiny_model.preprocess, preprocess=False)
    from velvet.data.errors import DataError

    with pytest.raises(DataError, match="x.nii.gz"):
        tiny_model.encode_volume(str(tmp_path / "x.nii.gz"))


def test_encode_text_on_strings_equals_the_batch_path(tiny_model, reports):
    with torch.no_grad():
        reference = tiny_model.encode_text(tiny_model.tokenizer(reports[:4]))["embedding"]
    torch.testing.assert_close(tiny_model.encode_text(reports[:4]), reference)
    torch.testing.assert_close(tiny_model.encode_text(reports[0]), reference[:1])
    sims = tiny_model.similarity(tiny_model.encode_volume(torch.rand(2, 1, 32, 32, 32)), reference)
    assert sims.shape == (2, 4) and float(sims.abs().max()) <= 1.0 + 1e-5
    tiny_model.tokenizer = None
    with pytest.raises(RuntimeError, match="no tokenizer"):
        tiny_model.encode_text(["No effusion."])

"""The preprocessing contract: validation, presets, JSON round trip, fingerprints."""

from __future__ import annotations

import json

import pytest

from velvet.data.contract import PRESETS, PreprocessContract, list_presets


def test_presets_exist_and_match_the_method():
    assert set(list_presets()) >= {"m3d_cap", "ct_rate", "segmentation"}
    m3d = PRESETS["m3d_cap"]
    # method.md 1.3: 8-bit scaling, Spacing(pixdim=(1,1,0.5), min_pixdim=(1,1,1)), pad 96, 96 slices, 96^3
    assert m3d.intensity == "scale_8bit"
    assert m3d.spacing == (1.0, 1.0, 0.5) and m3d.min_spacing == (1.0, 1.0, 1.0)
    assert m3d.pad_to == (96, 96, 96) and m3d.depth_samples == 96 and m3d.spatial_size == (96, 96, 96)
    seg = PRESETS["segmentation"]
    assert seg.hu_window == (-175.0, 250.0) and seg.spacing == (1.5, 1.5, 2.0) and seg.spatial_size is None
    assert PRESETS["ct_rate"].intensity == "hu_window"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name, tmp_path):
    contract = PRESETS[name]
    assert PreprocessContract.from_json(contract.to_json()) == contract
    path = tmp_path / "c.json"
    contract.to_json(path)
    assert PreprocessContract.resolve(str(path)) == contract
    assert json.loads(path.read_text())["version"] == 1


def test_lists_become_tuples_and_preset_overrides():
    c = PreprocessContract.from_dict(
        {"preset": "ct_rate", "spatial_size": [64, 64, 32], "hu_window": [-200, 300]}
    )
    assert c.spatial_size == (64, 64, 32) and c.hu_window == (-200.0, 300.0)
    assert c.spacing == PRESETS["ct_rate"].spacing
    assert PreprocessContract(spacing=2).spacing == (2.0, 2.0, 2.0)


def test_fingerprint_ignores_name_but_not_parameters():
    a = PRESETS["ct_rate"]
    assert a.replace(name="other").fingerprint() == a.fingerprint()
    assert a.replace(hu_window=(-1000, 400)).fingerprint() != a.fingerprint()
    assert a.replace(spatial_size=(64, 64, 64)).fingerprint() != a.fingerprint()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"intensity": "zscore"}, "intensity must be one of"),
        ({"hu_window": (100, -100)}, "low < high"),
        ({"spacing": (1, 1)}, "3 values"),
        ({"spacing": (1, 0, 1)}, "positive"),
        ({"spatial_size": (96, -1, 96)}, "positive"),
        ({"size_mode": "stretch"}, "size_mode"),
        ({"orientation": "XYZ"}, "orientation"),
        ({"min_spacing": (1, 1, 1)}, "need a target spacing"),
        ({"depth_samples": 0}, "depth_samples"),
    ],
)
def test_bad_values_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PreprocessContract(**kwargs)


def test_unknown_fields_presets_and_versions_are_refused():
    with pytest.raises(ValueError, match="unknown preprocessing field"):
        PreprocessContract.from_dict({"windw": [0, 1]})
    with pytest.raises(ValueError, match="unknown preprocessing preset"):
        PreprocessContract.resolve("mri")
    with pytest.raises(ValueError, match="newer"):
        PreprocessContract.from_dict({"version": 99})

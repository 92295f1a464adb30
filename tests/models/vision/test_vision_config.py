"""Vision encoder configs: presets, validation, JSON round trips, the factory's resolution rules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from velvet.models.vision.config import (
    VISION_PRESETS,
    SwinConfig,
    ViTConfig,
    get_vision_config,
    list_vision_presets,
    vision_config_from_dict,
)
from velvet.models.vision.factory import resolve_vision_config


def test_presets_match_method_md() -> None:
    tv, sv, bv = (get_vision_config(n) for n in ("swin-tv", "swin-sv", "swin-bv"))
    assert (tv.embed_dim, tv.depths, tv.num_heads) == (48, (2, 2, 2, 2), (3, 6, 12, 24))
    assert (sv.embed_dim, sv.depths, sv.num_heads) == (48, (2, 8, 8, 8), (4, 8, 16, 32))
    assert (bv.embed_dim, bv.depths, bv.num_heads) == (96, (2, 8, 8, 8), (4, 8, 16, 32))
    assert bv.feature_dims[-1] == 1536  # "top map has 1,536 channels"
    for cfg in (tv, sv, bv):  # method.md 1.1 encoder settings
        assert (cfg.img_size, cfg.patch_size, cfg.window_size, cfg.mlp_ratio) == ((96,) * 3, 2, 7, 4.0)
        assert cfg.qkv_bias and cfg.drop_path_rate == 0.0 and not cfg.use_v2
    vit = get_vision_config("vit3d-b16")
    assert (vit.img_size, vit.patch_size, vit.hidden_size, vit.num_layers) == (
        (256, 256, 32),
        (16, 16, 4),
        768,
        12,
    )
    assert vit.classification
    assert vit.feature_layers == (3, 6, 9, 12)


def test_swin_feature_geometry_at_96() -> None:
    cfg = get_vision_config("swin-tv")
    assert cfg.feature_dims == (96, 192, 384, 768)
    spatial = [
        tuple(s // st for s, st in zip(cfg.img_size, stride, strict=True)) for stride in cfg.feature_strides
    ]
    assert spatial == [(24,) * 3, (12,) * 3, (6,) * 3, (3,) * 3]


@pytest.mark.parametrize("name", list(VISION_PRESETS))
def test_json_round_trip(name: str) -> None:
    cfg = get_vision_config(name)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["arch"] in ("swin", "vit")
    assert vision_config_from_dict(data) == cfg


def test_lists_from_json_become_tuples() -> None:
    cfg = SwinConfig.from_dict({"img_size": [64, 64, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]})
    assert cfg.img_size == (64, 64, 64) and cfg.depths == (1, 1, 1, 1)
    assert ViTConfig(img_size=[64, 64, 16], patch_size=[16, 16, 4]).img_size == (64, 64, 16)


@pytest.mark.parametrize(
    ("cls", "kwargs", "needle"),
    [
        (SwinConfig, {"img_size": (96, 96, 80)}, "divisible"),
        (SwinConfig, {"depths": (2, 2, 2)}, "4 values"),
        (SwinConfig, {"embed_dim": 48, "num_heads": (5, 6, 12, 24)}, "not divisible by num_heads"),
        (SwinConfig, {"window_size": 0}, "positive"),
        (ViTConfig, {"img_size": (250, 256, 32)}, "divisible"),
        (ViTConfig, {"hidden_size": 100}, "num_heads"),
        (ViTConfig, {"feature_layers": (4, 8)}, "end at num_layers"),
        (ViTConfig, {"feature_layers": (8, 4, 12)}, "increase"),
        (ViTConfig, {"proj_type": "linear"}, "proj_type"),
    ],
)
def test_bad_values_raise(cls: type, kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        cls(**kwargs)


def test_unknown_field_and_arch_errors() -> None:
    with pytest.raises(ValueError, match="unknown SwinConfig field"):
        SwinConfig.from_dict({"arch": "swin", "embed": 48})
    with pytest.raises(ValueError, match="arch"):
        vision_config_from_dict({"embed_dim": 48})
    with pytest.raises(ValueError, match="cannot be built"):
        SwinConfig.from_dict({"arch": "vit"})
    with pytest.raises(ValueError, match="swin-tv"):  # the message lists the presets
        get_vision_config("swin-huge")


def test_vit_default_levels_are_evenly_spaced() -> None:
    assert ViTConfig(num_layers=8, num_heads=4, hidden_size=64).feature_layers == (2, 4, 6, 8)
    assert ViTConfig(num_layers=2, num_heads=4, hidden_size=64).feature_layers == (1, 2)


def test_resolve_preset_dict_json_and_overrides(tmp_path) -> None:
    assert resolve_vision_config("swin-tv") is get_vision_config("swin-tv")
    cfg = resolve_vision_config("swin-tv", use_checkpoint=True, drop_path_rate=None)
    assert cfg.use_checkpoint and cfg.drop_path_rate == 0.0  # None overrides are ignored
    assert resolve_vision_config({"preset": "swin-sv", "embed_dim": 24}).embed_dim == 24
    path = tmp_path / "enc.json"
    path.write_text(json.dumps(get_vision_config("vit3d-tiny").to_dict()))
    assert resolve_vision_config(str(path)) == get_vision_config("vit3d-tiny")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        resolve_vision_config(bad)
    assert "swin-tiny" in list_vision_presets()


def test_config_and_interface_imports_are_light() -> None:
    code = (
        "import sys, velvet.models, velvet.models.vision, velvet.models.heads;"
        "velvet.models.vision.get_vision_config('swin-tv');"
        "print(sorted(m for m in ('torch', 'monai', 'transformers', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""M3D-CLIP / MONAI ViT checkpoints -> ViTEncoder3D: prefixes, patch-embedding layouts, axis order."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange
from monai.networks.nets import ViT

from velvet.models.convert import convert_vit_state_dict, load_vit_weights
from velvet.models.vision import create_vision_encoder, get_vision_config
from velvet.models.weights import WeightsMismatchError

CFG = get_vision_config("vit3d-tiny")  # (H, W, D) = (64, 64, 16), patch (16, 16, 4): a 4x4x4 grid
OTHER_TOWERS = {
    "language_encoder.embeddings.word_embeddings.weight": (100, 32),
    "mm_vision_proj.weight": (32, 32),
    "mm_language_proj.bias": (32,),
    "logit_scale": (),
}


def _monai_vit(proj_type: str, axes: str) -> ViT:
    """A MONAI ViT with vit3d-tiny's architecture, its volume axes in ``axes`` order (M3D: ``"DHW"``)."""
    order = ["HWD".index(a) for a in axes]
    torch.manual_seed(0)
    vit = ViT(
        in_channels=1,
        img_size=tuple(CFG.img_size[i] for i in order),
        patch_size=tuple(CFG.patch_size[i] for i in order),
        hidden_size=CFG.hidden_size,
        mlp_dim=CFG.mlp_dim,
        num_layers=CFG.num_layers,
        num_heads=CFG.num_heads,
        proj_type=proj_type,
        classification=True,
    )
    with torch.no_grad():  # non-trivial norms, biases and [CLS]
        for p in vit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vit.eval()


def _m3d_checkpoint(vit: ViT) -> dict[str, torch.Tensor]:
    """M3D-CLIP's layout: the ViT under ``vision_encoder.`` beside the text tower and projections."""
    state = {"vision_encoder." + k: v for k, v in vit.state_dict().items()}
    state.update({k: torch.randn(s) for k, s in OTHER_TOWERS.items()})
    return state


@pytest.fixture(scope="module")
def volume() -> torch.Tensor:
    return torch.rand(2, 1, *CFG.img_size)  # (B, 1, H, W, D)


@pytest.mark.parametrize(
    ("source_proj", "target_proj", "axes"),
    [
        ("conv", "conv", "HWD"),
        ("perceptron", "conv", "HWD"),
        ("conv", "perceptron", "HWD"),
        ("perceptron", "conv", "DHW"),  # M3D-CLIP
        ("conv", "perceptron", "DHW"),
    ],
)
def test_outputs_match_monai(volume, source_proj, target_proj, axes, tmp_path) -> None:
    """Every level equals MONAI's normed block output on the same (transposed, for DHW) volume."""
    vit = _monai_vit(source_proj, axes)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in _m3d_checkpoint(vit).items()}, tmp_path / "model.safetensors")
    encoder = create_vision_encoder("vit3d-tiny", proj_type=target_proj).eval()
    report = load_vit_weights(encoder, tmp_path / "model.safetensors", source_axes=axes)

    assert report.prefix == "vision_encoder."
    assert report.initialized == [] and report.skipped == []
    dropped = set(report.dropped) - set(OTHER_TOWERS)
    assert set(OTHER_TOWERS) <= set(report.dropped)
    assert dropped and all(".classification_head." in k or ".norm_cross_attn." in k for k in dropped)
    assert ("vit.patch_embedding.position_embeddings" in report.derived) == (axes != "HWD")

    source_volume = rearrange(volume, "b c h w d -> b c " + " ".join(axes.lower()))
    with torch.no_grad():
        _, hidden = vit(source_volume)
        out = encoder(volume)
    grid = dict(
        zip(axes.lower(), (CFG.img_size[i] // CFG.patch_size[i] for i in map("HWD".index, axes)), strict=True)
    )
    for level, layer in enumerate(CFG.feature_layers):
        tokens = vit.norm(hidden[layer - 1])
        expected = rearrange(tokens[:, 1:], f"b ({' '.join(axes.lower())}) e -> b e h w d", **grid)
        torch.testing.assert_close(out["maps"][level], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["pooled"], vit.norm(hidden[-1])[:, 0], atol=1e-5, rtol=1e-5)


def test_pure_mapping_accepts_a_config() -> None:
    vit = _monai_vit("perceptron", "HWD")
    mapped = convert_vit_state_dict(vit.state_dict(), CFG)  # a bare MONAI ViT: no prefix
    assert set(mapped) == set(create_vision_encoder("vit3d-tiny").state_dict())
    linear = vit.state_dict()["patch_embedding.patch_embeddings.1.weight"]  # features ordered (p1 p2 p3 c)
    conv = mapped["vit.patch_embedding.patch_embeddings.weight"]
    assert conv.shape == (32, 1, 16, 16, 4)
    torch.testing.assert_close(conv[:, 0, 3, 5, 2], linear[:, (3 * 16 + 5) * 4 + 2], rtol=0, atol=0)


def test_mismatches_are_readable() -> None:
    # an M3D (D, H, W) checkpoint without source_axes: the conv kernel (4, 16, 16) is not (16, 16, 4)
    checkpoint = _m3d_checkpoint(_monai_vit("conv", "DHW"))
    with pytest.raises(WeightsMismatchError) as err:
        load_vit_weights(create_vision_encoder("vit3d-tiny"), checkpoint)
    assert "vit.patch_embedding.patch_embeddings.weight: (32, 1, 4, 16, 16) vs (32, 1, 16, 16, 4)" in str(
        err.value
    )
    # another width
    wide = create_vision_encoder("vit3d-tiny", hidden_size=64, mlp_dim=128)
    with pytest.raises(WeightsMismatchError, match=r"vit.blocks.0.norm1.weight: \(32,\) vs \(64,\)"):
        load_vit_weights(wide, _m3d_checkpoint(_monai_vit("conv", "HWD")))


def test_unrecognised_layout_and_bad_axes() -> None:
    resnet = {"conv1.weight": torch.zeros(64, 1, 7, 7, 7), "layer1.0.bn1.weight": torch.ones(64)}
    encoder = create_vision_encoder("vit3d-tiny")
    with pytest.raises(
        ValueError, match="not a MONAI / M3D-CLIP ViT checkpoint.*position_embeddings.*conv1.weight"
    ):
        load_vit_weights(encoder, resnet)
    with pytest.raises(ValueError, match="permutation of 'HWD'"):
        load_vit_weights(encoder, _m3d_checkpoint(_monai_vit("conv", "HWD")), source_axes="HWZ")

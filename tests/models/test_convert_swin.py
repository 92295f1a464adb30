"""MONAI SwinUNETR checkpoints (model_swinvit.pt and relatives) -> SwinEncoder3D, with equal outputs."""

from __future__ import annotations

import re

import pytest
import torch
from monai.networks.nets import SwinUNETR

from velvet.models.convert import convert_swin_state_dict, load_swin_weights
from velvet.models.vision import create_vision_encoder, get_vision_config
from velvet.models.weights import WeightsMismatchError

SSL_HEADS = {
    "rotation_head.weight": (4, 192),
    "rotation_head.bias": (4,),
    "contrastive_head.weight": (512, 192),
    "contrastive_head.bias": (512,),
    "conv.0.weight": (96, 192, 3, 3, 3),
    "conv.0.bias": (96,),
}


@pytest.fixture(scope="module")
def swinunetr() -> SwinUNETR:
    """A MONAI SwinUNETR whose encoder has the ``swin-tiny`` architecture, with random weights."""
    cfg = get_vision_config("swin-tiny")
    torch.manual_seed(0)
    net = SwinUNETR(
        in_channels=1, out_channels=2, feature_size=cfg.embed_dim, depths=cfg.depths, num_heads=cfg.num_heads
    )
    with torch.no_grad():  # LayerNorms away from (1, 0) and non-zero biases, so a wrong key would show
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.fixture(scope="module")
def reference(swinunetr) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A random volume and MONAI's normalised stage maps 1..4 of it."""
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        return x, swinunetr.swinViT(x, normalize=True)[1:]


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    """One ``swin-tiny`` encoder shared by the tests (building one costs more than a forward)."""
    return create_vision_encoder("swin-tiny").eval()


def _layout(net: SwinUNETR, name: str) -> tuple[dict, set[str]]:
    """The checkpoint of ``net`` in one of the real layouts, and the keys the converter must drop."""
    swin = net.swinViT.state_dict()
    heads = {k: torch.randn(s) for k, s in SSL_HEADS.items()}
    if name == "model_swinvit":  # the released SSL file: module. prefix, timm-style fc1/fc2, SSL heads
        state = {"module." + re.sub(r"mlp\.linear([12])", r"mlp.fc\1", k): v for k, v in swin.items()}
        state.update({"module." + k: v for k, v in heads.items()})
        return {"state_dict": state}, {"module." + k for k in heads}
    if name == "ssl_training":  # SSLHead's own state dict under DDP
        state = {"module.swinViT." + k: v for k, v in swin.items()}
        state.update({"module." + k: v for k, v in heads.items()})
        return {"state_dict": state}, {"module." + k for k in heads}
    if name == "swinunetr":  # a fine-tuned SwinUNETR: encoder under swinViT., decoder beside it
        state = net.state_dict()
        return state, {k for k in state if not k.startswith("swinViT.")}
    assert name == "dae"  # MONAI filter_swinunetr's layout: encoder.layers<i>.0.0., mask token, norm, decoder
    state = {"encoder." + re.sub(r"^layers(\d)\.0\.", r"layers\1.0.0.", k): v for k, v in swin.items()}
    state = {k: v for k, v in state.items() if not k.endswith("relative_position_index")}  # recomputed
    extras = {"encoder.mask_token": torch.zeros(1, 1, 12), "encoder.norm.weight": torch.ones(192)}
    extras.update(
        {"encoder.norm.bias": torch.zeros(192), "out.conv.conv.weight": torch.zeros(2, 12, 1, 1, 1)}
    )
    return {"model": {**state, **extras}}, set(extras)


@pytest.mark.parametrize("layout", ["model_swinvit", "ssl_training", "swinunetr", "dae"])
def test_layouts_load_strictly_and_match_monai(swinunetr, reference, encoder, layout, tmp_path) -> None:
    checkpoint, dropped = _layout(swinunetr, layout)
    path = tmp_path / "model_swinvit.pt"
    torch.save(checkpoint, path)
    with torch.no_grad():  # nothing left over from an earlier load can pass for converted weights
        for p in encoder.parameters():
            p.zero_()
    report = load_swin_weights(encoder, path)

    assert set(report.dropped) == dropped
    assert report.initialized == [] and report.skipped == []
    x, expected = reference
    with torch.no_grad():
        got = encoder(x)["maps"]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_pure_mapping_keys_and_renames(swinunetr, encoder) -> None:
    checkpoint, _ = _layout(swinunetr, "model_swinvit")
    mapped = convert_swin_state_dict(checkpoint["state_dict"])
    assert set(mapped) == set(encoder.state_dict())
    key = "swin.layers2.0.blocks.1.mlp.linear1.weight"
    torch.testing.assert_close(
        mapped[key], checkpoint["state_dict"]["module.layers2.0.blocks.1.mlp.fc1.weight"]
    )


def test_architecture_mismatch_names_key_and_shapes(swinunetr, encoder) -> None:
    checkpoint, _ = _layout(swinunetr, "model_swinvit")
    wider = create_vision_encoder("swin-tiny", embed_dim=24)
    with pytest.raises(WeightsMismatchError) as err:
        load_swin_weights(wider, checkpoint)
    assert "swin.layers1.0.blocks.0.attn.proj.weight: (12, 12) vs (24, 24)" in str(err.value)
    assert err.value.diff.mismatched["swin.patch_embed.proj.weight"] == ((12, 1, 2, 2, 2), (24, 1, 2, 2, 2))
    report = load_swin_weights(wider, checkpoint, strict=False)  # loads what fits, lists the rest
    assert (
        "swin.patch_embed.proj.weight" in report.skipped and "module.rotation_head.weight" in report.dropped
    )
    # an unknown key inside the encoder is unexpected, not silently dropped
    checkpoint["state_dict"]["module.layers1.0.blocks.0.attn.extra"] = torch.zeros(1)
    with pytest.raises(WeightsMismatchError, match="swin.layers1.0.blocks.0.attn.extra"):
        load_swin_weights(encoder, checkpoint)


def test_unrecognised_layout_is_a_clear_error(encoder) -> None:
    resnet = {
        "conv1.weight": torch.zeros(64, 1, 7, 7, 7),
        "bn1.weight": torch.ones(64),
        "fc.weight": torch.zeros(2, 64),
    }
    with pytest.raises(
        ValueError,
        match=r"not a MONAI Swin \(SwinUNETR\) checkpoint.*patch_embed\.proj\.weight.*conv1\.weight",
    ):
        load_swin_weights(encoder, {"state_dict": resnet})
    with pytest.raises(ValueError, match="expected a state dict of tensors"):
        load_swin_weights(encoder, {"epoch": 3})

"""Vision-SSL heads: pooling heads and the reconstruction decoder for every encoder preset."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from velvet.models.heads.vision_ssl import ContrastiveProjection, ReconstructionDecoder, RotationHead
from velvet.models.vision import VISION_PRESETS, create_vision_encoder, get_vision_config


def test_pooling_heads_accept_maps_and_vectors() -> None:
    top = torch.randn(3, 16, 2, 2, 2)
    rot, proj = RotationHead(16), ContrastiveProjection(16, out_dim=8)
    assert rot(top).shape == (3, 4) and proj(top).shape == (3, 8)
    torch.testing.assert_close(rot(top), rot(top.mean(dim=(2, 3, 4))))  # avg-pool then linear
    with pytest.raises(ValueError, match="feature map"):
        rot(torch.randn(3, 16, 4))


@pytest.mark.parametrize("name", list(VISION_PRESETS))
def test_decoder_restores_the_input_size_for_every_preset(name: str) -> None:
    cfg = get_vision_config(name)
    dec = ReconstructionDecoder(cfg.feature_dims[-1], cfg.in_chans, stride=cfg.feature_strides[-1])
    top_size = [s // st for s, st in zip(cfg.img_size, cfg.feature_strides[-1], strict=True)]
    with torch.no_grad():
        out = dec(torch.randn(1, cfg.feature_dims[-1], *top_size))
    assert tuple(out.shape) == (1, cfg.in_chans, *cfg.img_size)


def test_decoder_matches_the_reference_layout_for_swin() -> None:
    dec = ReconstructionDecoder(768, 1, stride=32)
    convs = [*dec.up_blocks, dec.out_layer]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (768, 384),
        (384, 192),
        (192, 96),
        (96, 48),
        (48, 1),
    ]
    assert all(c.kernel_size == (2, 2, 2) and c.stride == (2, 2, 2) for c in convs)
    assert isinstance(dec.act, nn.Identity)  # no nonlinearity, as the reference


def test_decoder_for_encoder_end_to_end_with_gradients() -> None:
    for name, shape in (("swin-tiny", (2, 1, 32, 32, 32)), ("vit3d-tiny", (2, 1, 64, 64, 16))):
        enc = create_vision_encoder(name)
        dec = ReconstructionDecoder.for_encoder(enc, activation=nn.GELU)
        assert isinstance(dec.act, nn.GELU)
        x = torch.rand(shape)
        recon = dec(enc(x)["maps"][-1])
        assert recon.shape == x.shape
        (recon - x).abs().mean().backward()
        assert all(p.grad is not None for p in dec.parameters())


def test_anisotropic_plan_and_bad_strides() -> None:
    dec = ReconstructionDecoder(64, stride=(16, 16, 4))
    strides = [c.stride for c in [*dec.up_blocks, dec.out_layer]]
    assert strides == [(2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2)]
    with pytest.raises(ValueError, match="powers of two"):
        ReconstructionDecoder(64, stride=(12, 16, 4))
    with pytest.raises(ValueError, match="nothing to upsample"):
        ReconstructionDecoder(64, stride=1)

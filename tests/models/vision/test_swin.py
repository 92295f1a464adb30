"""The Swin encoder: shapes, equality with MONAI, gradients, checkpointing, keys, presets."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn

from velvet.models.vision import VisionEncoder, create_vision_encoder, get_vision_config
from velvet.models.vision.swin import SwinEncoder3D


@pytest.fixture
def tiny() -> SwinEncoder3D:
    torch.manual_seed(0)
    return create_vision_encoder("swin-tiny")


def _monai_reference(cfg) -> SwinTransformer:
    """A plain MONAI SwinTransformer built the way method.md 1.1 describes."""
    return SwinTransformer(
        in_chans=cfg.in_chans,
        embed_dim=cfg.embed_dim,
        window_size=(cfg.window_size,) * 3,
        patch_size=(cfg.patch_size,) * 3,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=cfg.qkv_bias,
        norm_layer=nn.LayerNorm,
        patch_norm=False,
        spatial_dims=3,
        downsample="merging",
        use_v2=cfg.use_v2,
    )


def test_protocol_and_shapes(tiny: SwinEncoder3D) -> None:
    assert isinstance(tiny, VisionEncoder)
    x = torch.rand(2, 1, 32, 32, 32)
    out = tiny(x)
    shapes = [tuple(m.shape) for m in out["maps"]]
    assert shapes == [(2, 24, 8, 8, 8), (2, 48, 4, 4, 4), (2, 96, 2, 2, 2), (2, 192, 1, 1, 1)]
    assert tiny.feature_dims == tuple(s[1] for s in shapes) and tiny.embed_dim == 192
    for m, stride in zip(out["maps"], tiny.feature_strides, strict=True):
        assert tuple(m.shape[2:]) == tuple(s // st for s, st in zip(x.shape[2:], stride, strict=True))
    torch.testing.assert_close(out["pooled"], out["maps"][-1].mean(dim=(2, 3, 4)))


def test_maps_are_channel_normalised_without_affine(tiny: SwinEncoder3D) -> None:
    for m in tiny(torch.rand(1, 1, 64, 64, 64))["maps"]:
        mean, var = m.mean(dim=1), m.var(dim=1, unbiased=False)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
        torch.testing.assert_close(var, torch.ones_like(var), atol=1e-3, rtol=0)


@pytest.mark.parametrize("use_v2", [False, True])
def test_equals_monai_swin_transformer(use_v2: bool) -> None:
    """Our maps == MONAI's ``SwinTransformer(x, normalize=True)[1:]`` with the same weights."""
    cfg = get_vision_config("swin-tiny").replace(use_v2=use_v2)
    ours = create_vision_encoder(cfg).eval()
    ref = _monai_reference(cfg).eval()
    ref.load_state_dict({k.removeprefix("swin."): v for k, v in ours.state_dict().items()})
    x = torch.rand(2, 1, 64, 32, 64)  # anisotropic: shifted and unshifted stages, padded windows
    with torch.no_grad():
        expected = ref(x, normalize=True)[1:]
        got = ours(x)["maps"]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_state_dict_keys_match_monai_and_swinunetr(tiny: SwinEncoder3D) -> None:
    cfg = get_vision_config("swin-tiny")
    ours = {k.removeprefix("swin.") for k in tiny.state_dict()}
    assert all(k.startswith("swin.") for k in tiny.state_dict())
    assert ours == set(_monai_reference(cfg).state_dict())
    unetr = SwinUNETR(
        in_channels=1, out_channels=2, feature_size=cfg.embed_dim, depths=cfg.depths, num_heads=cfg.num_heads
    )
    swin_vit = {k.removeprefix("swinViT.") for k in unetr.state_dict() if k.startswith("swinViT.")}
    assert ours == swin_vit


def test_every_parameter_gets_a_gradient(tiny: SwinEncoder3D) -> None:
    out = tiny(torch.rand(2, 1, 32, 32, 32))
    loss = out["pooled"].square().sum() + sum(m.square().mean() for m in out["maps"])
    loss.backward()
    missing = [n for n, p in tiny.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in tiny.parameters())


def test_grad_checkpointing_gives_same_outputs_and_grads(tiny: SwinEncoder3D) -> None:
    x = torch.rand(2, 1, 32, 32, 32)

    def run() -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        tiny.zero_grad()
        out = tiny(x)
        sum(
            (m * torch.randn(m.shape, generator=torch.Generator().manual_seed(i))).sum()
            for i, m in enumerate(out["maps"])
        ).backward()
        return [m.detach() for m in out["maps"]], {n: p.grad.clone() for n, p in tiny.named_parameters()}

    attn = tiny.swin.layers1[0].blocks[0].attn
    calls: list[int] = []
    handle = attn.register_forward_pre_hook(lambda *a: calls.append(1))
    maps, grads = run()
    plain_calls = len(calls)
    tiny.set_grad_checkpointing(True)
    maps_ckpt, grads_ckpt = run()
    handle.remove()
    assert len(calls) - plain_calls == 2 * plain_calls  # the attention ran again in backward
    for a, b in zip(maps, maps_ckpt, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ckpt[name], atol=1e-5, rtol=1e-4)


def test_forward_intermediates_indices_and_early_stop(tiny: SwinEncoder3D) -> None:
    x = torch.rand(1, 1, 32, 32, 32)
    full = tiny.forward_intermediates(x)
    assert [m.shape[1] for m in tiny.forward_intermediates(x, indices=[0, -1])] == [24, 192]
    last_two = tiny.forward_intermediates(x, indices=2)
    torch.testing.assert_close(last_two[0], full[2])
    with pytest.raises(ValueError, match="out of range"):
        tiny.forward_intermediates(x, indices=[4])
    # stopping early: asking for level 0 never runs stage 2
    calls = []
    handle = tiny.swin.layers2[0].register_forward_hook(lambda *a: calls.append(1))
    tiny.forward_intermediates(x, indices=[0])
    handle.remove()
    assert calls == []


def test_no_weight_decay(tiny: SwinEncoder3D) -> None:
    names = tiny.no_weight_decay()
    params = dict(tiny.named_parameters())
    assert names <= set(params)
    assert {n for n in params if n.endswith("relative_position_bias_table")} <= names
    assert {n for n, p in params.items() if p.ndim == 1} <= names
    assert not any(
        n.endswith(("qkv.weight", "proj.weight", "linear1.weight", "reduction.weight")) for n in names
    )


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (1, 2, 32, 32, 32), (1, 1, 32, 40, 32)])
def test_bad_input_shapes_raise(tiny: SwinEncoder3D, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected|divisible"):
        tiny(torch.zeros(shape))


@pytest.mark.parametrize(
    ("name", "expected_millions", "size"),
    [("swin-tv", 8.0, 64), ("swin-sv", 23.0, 32), ("swin-bv", None, 32)],
)
def test_paper_presets_build_count_and_run(name: str, expected_millions: float | None, size: int) -> None:
    """Parameter counts against method.md 1.2 (Tv ~8M, Sv ~23M, both inferred there), one small forward."""
    enc = create_vision_encoder(name)
    count = sum(p.numel() for p in enc.parameters())
    if expected_millions is not None:
        assert abs(count / 1e6 - expected_millions) / expected_millions < 0.1, count
    with torch.no_grad():
        out = enc(torch.rand(1, 1, size, size, size))
    assert [m.shape[1] for m in out["maps"]] == list(enc.feature_dims)
    assert out["maps"][-1].shape[2:] == (size // 32,) * 3
    assert out["pooled"].shape == (1, enc.embed_dim)


def test_bf16_autocast_matches_monai_attention() -> None:
    """Under CPU bf16 autocast the fused path runs (bf16 q/k/v, float32 bias) and agrees with MONAI's."""
    torch.manual_seed(0)
    fused = create_vision_encoder("swin-tiny")
    plain = create_vision_encoder("swin-tiny", fused_attention=False)
    plain.load_state_dict(fused.state_dict())
    x = torch.rand(2, 1, 32, 32, 32)
    outs = []
    for enc in (fused, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = enc(x)
        out["pooled"].float().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in enc.parameters())
        outs.append(out["maps"][-1].float())
    torch.testing.assert_close(outs[0], outs[1], atol=0.1, rtol=0.05)

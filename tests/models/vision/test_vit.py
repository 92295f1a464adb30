"""The 3D ViT baseline: levels on the patch grid, [CLS] pooling, MONAI equality, gradients, keys."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ViT

from velvet.models.vision import VisionEncoder, create_vision_encoder, get_vision_config
from velvet.models.vision.vit import ViTEncoder3D


@pytest.fixture
def tiny() -> ViTEncoder3D:
    torch.manual_seed(0)
    return create_vision_encoder("vit3d-tiny")


def _monai_vit(cfg) -> ViT:
    return ViT(
        in_channels=cfg.in_chans,
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.hidden_size,
        mlp_dim=cfg.mlp_dim,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        classification=cfg.classification,
        qkv_bias=cfg.qkv_bias,
    )


def test_protocol_and_shapes(tiny: ViTEncoder3D) -> None:
    assert isinstance(tiny, VisionEncoder)
    out = tiny(torch.rand(2, 1, 64, 64, 16))
    assert [tuple(m.shape) for m in out["maps"]] == [(2, 32, 4, 4, 4)] * 4
    assert out["pooled"].shape == (2, 32)
    assert tiny.feature_dims == (32,) * 4 and tiny.feature_strides == ((16, 16, 4),) * 4


def test_matches_monai_vit_hidden_states(tiny: ViTEncoder3D) -> None:
    """Levels = MONAI's block outputs (through the final norm) on the grid; pooled = normed [CLS]."""
    cfg = get_vision_config("vit3d-tiny")
    ref = _monai_vit(cfg).eval()
    state = {k.removeprefix("vit."): v for k, v in tiny.state_dict().items()}
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert unexpected == [] and all(
        k.startswith("classification_head.") or ".norm_cross_attn." in k for k in missing
    )
    x = torch.rand(2, 1, 64, 64, 16)
    with torch.no_grad():
        _, hidden = ref(x)
        out = tiny.eval()(x)
    for level, layer in enumerate(cfg.feature_layers):
        normed = ref.norm(hidden[layer - 1])
        # token (h, w, d) order: patch (i, j, k) of the 4x4x4 grid is token 1 + (i*4 + j)*4 + k
        i, j, k = 1, 2, 3
        torch.testing.assert_close(out["maps"][level][:, :, i, j, k], normed[:, 1 + (i * 4 + j) * 4 + k])
    torch.testing.assert_close(out["pooled"], ref.norm(hidden[-1])[:, 0])


def test_mean_pooling_without_cls() -> None:
    enc = create_vision_encoder("vit3d-tiny", classification=False)
    out = enc(torch.rand(1, 1, 64, 64, 16))
    torch.testing.assert_close(out["pooled"], out["maps"][-1].flatten(2).mean(-1))
    assert not any("cls_token" in k for k in enc.state_dict())


def test_fused_attention_is_identical(tiny: ViTEncoder3D) -> None:
    x = torch.rand(2, 1, 64, 64, 16)
    with torch.no_grad():
        fused = tiny(x)["maps"]
        tiny.set_fused_attention(False)
        plain = tiny(x)["maps"]
    assert not tiny.vit.blocks[0].attn.use_flash_attention
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_every_parameter_gets_a_gradient_and_checkpointing_matches(tiny: ViTEncoder3D) -> None:
    x = torch.rand(2, 1, 64, 64, 16)

    def run() -> dict[str, torch.Tensor]:
        tiny.zero_grad()
        out = tiny(x)
        (out["pooled"].square().sum() + sum(m.square().mean() for m in out["maps"])).backward()
        return {n: p.grad.clone() for n, p in tiny.named_parameters() if p.grad is not None}

    grads = run()
    assert set(grads) == {n for n, p in tiny.named_parameters() if p.requires_grad}
    assert all(g.abs().sum() > 0 for g in grads.values())
    calls: list[int] = []
    tiny.vit.blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    tiny.set_grad_checkpointing(True)
    for name, g in run().items():
        torch.testing.assert_close(g, grads[name], atol=1e-6, rtol=1e-5)
    assert len(calls) == 2  # block 0 ran again in the backward pass


def test_state_dict_keys_are_monai_keys_without_unused_ones(tiny: ViTEncoder3D) -> None:
    ours = {k.removeprefix("vit.") for k in tiny.state_dict()}
    ref = set(_monai_vit(get_vision_config("vit3d-tiny")).state_dict())
    assert ours == {
        k for k in ref if not k.startswith("classification_head.") and ".norm_cross_attn." not in k
    }


def test_no_weight_decay(tiny: ViTEncoder3D) -> None:
    names = tiny.no_weight_decay()
    assert {"vit.cls_token", "vit.patch_embedding.position_embeddings"} <= names
    assert {n for n, p in tiny.named_parameters() if p.ndim == 1} <= names
    assert not any(n.endswith(("qkv.weight", "out_proj.weight", "linear1.weight")) for n in names)


def test_forward_intermediates_and_input_checks(tiny: ViTEncoder3D) -> None:
    x = torch.rand(1, 1, 64, 64, 16)
    full = tiny(x)["maps"]
    first = tiny.forward_intermediates(x, indices=[0])
    torch.testing.assert_close(first[0], full[0])
    with pytest.raises(ValueError, match="fixed by the position embeddings"):
        tiny(torch.rand(1, 1, 64, 64, 32))
    with pytest.raises(ValueError, match="feature_layers"):
        ViTEncoder3D(
            img_size=(64, 64, 16),
            hidden_size=32,
            mlp_dim=64,
            num_layers=4,
            num_heads=2,
            feature_layers=(2, 3),
        )


def test_b16_preset_builds_and_runs_at_a_small_size() -> None:
    enc = create_vision_encoder("vit3d-b16")
    assert enc.vit.patch_embedding.position_embeddings.shape == (1, 16 * 16 * 8, 768)  # 2,048 tokens
    assert len(enc.vit.blocks) == 12 and enc.embed_dim == 768
    small = create_vision_encoder("vit3d-b16", img_size=(64, 64, 16))
    with torch.no_grad():
        out = small(torch.rand(1, 1, 64, 64, 16))
    assert [tuple(m.shape) for m in out["maps"]] == [(1, 768, 4, 4, 4)] * 4

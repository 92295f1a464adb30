"""VisionSSLLoss: rotation CE, masked L1 reconstruction and NT-Xent composition."""

from __future__ import annotations

import math

import pytest
import torch

from velvet.losses.ntxent import NTXentLoss
from velvet.losses.vision_ssl import VisionSSLLoss, masked_l1

F64 = torch.float64


def naive_rotation_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    total = 0
    for i in range(logits.shape[0]):
        denom = sum(torch.exp(logits[i, c]) for c in range(logits.shape[1]))
        total = total - torch.log(torch.exp(logits[i, targets[i]]) / denom)
    return total / logits.shape[0]


def naive_masked_l1(recon: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_sample = []
    for s in range(recon.shape[0]):
        r, t, m = recon[s].flatten(), target[s].flatten(), mask[s].flatten()
        use = [v for v in range(r.numel()) if m[v]] or list(range(r.numel()))  # no cut-out: all voxels
        per_sample.append(sum(torch.abs(r[v] - t[v]) for v in use) / len(use))
    return sum(per_sample) / len(per_sample)


def make_inputs(seed: int, b: int = 3):
    g = torch.Generator().manual_seed(seed)
    shape = (2 * b, 1, 3, 2, 2)
    inputs = {
        "rot_logits": torch.randn(2 * b, 4, generator=g, dtype=F64, requires_grad=True),
        "rot_targets": torch.randint(4, (2 * b,), generator=g),
        "z1": torch.randn(b, 5, generator=g, dtype=F64, requires_grad=True),
        "z2": torch.randn(b, 5, generator=g, dtype=F64, requires_grad=True),
        "recon": torch.randn(shape, generator=g, dtype=F64, requires_grad=True),
        "target": torch.randn(shape, generator=g, dtype=F64),
        "cutout_mask": torch.rand(shape, generator=g) < 0.4,
    }
    inputs["cutout_mask"][1] = False  # one view without any cut-out
    return inputs


def test_matches_naive_forward_and_grad() -> None:
    x = make_inputs(0)
    out = VisionSSLLoss()(**x)
    assert set(out) == {"vis_rot_loss", "vis_contrast_loss", "vis_recon_loss"}
    ref_rot = naive_rotation_ce(x["rot_logits"], x["rot_targets"])
    ref_recon = naive_masked_l1(x["recon"], x["target"], x["cutout_mask"])
    assert torch.allclose(out["vis_rot_loss"], ref_rot, atol=1e-10)
    assert torch.allclose(out["vis_recon_loss"], ref_recon, atol=1e-10)
    # the contrastive term is NT-Xent at tau 0.5 (itself checked against a naive loop in test_ntxent)
    assert torch.allclose(out["vis_contrast_loss"], NTXentLoss(0.5)(x["z1"], x["z2"])["vis_contrast_loss"])
    g_rot = torch.autograd.grad(out["vis_rot_loss"], x["rot_logits"])[0]
    assert torch.allclose(g_rot, torch.autograd.grad(ref_rot, x["rot_logits"])[0], atol=1e-10)
    g_rec = torch.autograd.grad(out["vis_recon_loss"], x["recon"])[0]
    assert torch.allclose(g_rec, torch.autograd.grad(ref_recon, x["recon"])[0], atol=1e-10)


def test_hand_computed_2x2() -> None:
    # 2 views of 1 sample, volumes of 1x1x1x2 voxels
    rot_logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]], dtype=F64)
    rot_targets = torch.tensor([0, 3])
    recon = torch.tensor([0.5, 1.0, 0.0, 0.2], dtype=F64).reshape(2, 1, 1, 1, 2)
    target = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=F64).reshape(2, 1, 1, 1, 2)
    mask = torch.tensor([True, False, False, False]).reshape(2, 1, 1, 1, 2)
    z = torch.tensor([[1.0, 0.0]], dtype=F64)
    # rotation: row 0 -log(e^2 / (e^2 + 3)), row 1 -log(e / (2e + 2))
    rot = (-math.log(math.exp(2) / (math.exp(2) + 3)) - math.log(math.e / (2 * math.e + 2))) / 2
    # view 0: only voxel 0 cut out -> |0.5 - 0| ; view 1 has no cut-out -> mean(|0-1|, |0.2-1|) = 0.9
    recon_expected = (0.5 + 0.9) / 2
    out = VisionSSLLoss()(rot_logits, rot_targets, z, z, recon, target, mask)
    assert out["vis_rot_loss"].item() == pytest.approx(rot, abs=1e-12)
    assert out["vis_recon_loss"].item() == pytest.approx(recon_expected, abs=1e-12)
    # one sample: each view's only candidate is its positive -> log(1) = 0
    assert out["vis_contrast_loss"].item() == pytest.approx(0.0, abs=1e-12)


def test_recon_ignores_voxels_outside_the_cutout() -> None:
    x = make_inputs(1)
    recon2 = torch.where(x["cutout_mask"], x["recon"], x["recon"] + 100)
    recon2[1] = x["recon"][1]  # the view without cut-out uses every voxel
    assert torch.allclose(masked_l1(x["recon"], x["target"], x["cutout_mask"]),
                          masked_l1(recon2, x["target"], x["cutout_mask"]))  # fmt: skip
    assert masked_l1(x["target"], x["target"], x["cutout_mask"]) == 0


def test_bad_arguments_raise() -> None:
    x = make_inputs(2)
    loss = VisionSSLLoss()
    with pytest.raises(ValueError, match="rot_logits"):
        loss(**{**x, "rot_logits": x["rot_logits"][:, :3]})
    with pytest.raises(ValueError, match="z1"):
        loss(**{**x, "z1": x["z1"][:2], "z2": x["z2"][:2]})
    with pytest.raises(ValueError, match="cutout_mask"):
        loss(**{**x, "cutout_mask": x["cutout_mask"].float()})
    with pytest.raises(ValueError, match="recon"):
        loss(**{**x, "target": x["target"][:, :, :2]})

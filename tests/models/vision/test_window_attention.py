"""Fused window attention == MONAI's explicit softmax attention, forward and backward, on every path."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks.nets.swin_unetr import BasicLayer, SwinTransformerBlock, WindowAttention, compute_mask

from velvet.models.vision import window_attention as wa
from velvet.models.vision.window_attention import (
    FusedBasicLayer,
    FusedWindowAttention,
    fuse_window_attention,
    shifted_window_mask,
)


@pytest.mark.parametrize(
    ("dims", "shift"),
    [
        ((21, 21, 21), (3, 3, 3)),
        ((14, 21, 28), (3, 3, 3)),
        ((7, 14, 21), (0, 3, 3)),
        ((14, 7, 14), (3, 0, 2)),
    ],
)
def test_grouped_mask_equals_monai_compute_mask(dims: tuple[int, ...], shift: tuple[int, ...]) -> None:
    grouped = shifted_window_mask(dims, (7, 7, 7), shift, torch.device("cpu"))
    expected = compute_mask(list(dims), (7, 7, 7), shift, torch.device("cpu"))
    assert grouped.num_windows == expected.shape[0]
    assert len(grouped.groups) <= 8
    assert torch.equal(grouped.dense(), expected)
    covered = torch.cat([idx for idx, _ in grouped.groups]).sort().values
    assert torch.equal(covered, torch.arange(expected.shape[0]))  # every window in exactly one group
    assert shifted_window_mask(dims, (7, 7, 7), shift, torch.device("cpu")) is grouped  # cached
    assert shifted_window_mask(dims, (7, 7, 7), (0, 0, 0), torch.device("cpu")) is None


def _layers(dim: int = 12, heads: int = 2) -> tuple[BasicLayer, BasicLayer]:
    """A MONAI stage (unshifted + shifted block) and a fused copy with identical weights."""
    torch.manual_seed(0)
    ref = BasicLayer(
        dim=dim, depth=2, num_heads=heads, window_size=(7, 7, 7), drop_path=[0.0, 0.0], qkv_bias=True
    )
    with torch.no_grad():  # a bias large enough to matter (MONAI initialises it with std 0.02)
        for blk in ref.blocks:
            blk.attn.relative_position_bias_table.normal_(0.0, 1.0)
    fused = fuse_window_attention(copy.deepcopy(ref))
    assert type(fused) is FusedBasicLayer and type(fused.blocks[1].attn) is FusedWindowAttention
    assert type(fused.blocks[1]) is wa.FusedSwinTransformerBlock
    return ref, fused


def _assert_equal(got: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...]) -> None:
    """Equal up to 1e-5 of each tensor's largest magnitude (parameter gradients are sums over ~10^4
    tokens; relative to float64, MONAI's own float32 result is off by up to ~1e-5 on them)."""
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5 * float(e.abs().max()), rtol=0)


def _run(layer: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    out = layer(x)
    out.backward(grad_out)
    grads = [p.grad.clone() for p in layer.parameters() if p.requires_grad]
    return (out.detach(), x.grad, *grads)


# 20^3 tokens (a 40^3 volume after patch 2): padded to 21^3, shifted windows; the anisotropic grid
# leaves one axis unshifted (window clipped to 5) and pads the others differently.
@pytest.mark.parametrize("shape", [(2, 12, 20, 20, 20), (1, 12, 9, 5, 16)])
@pytest.mark.parametrize("path", ["cpu_custom", "sdpa_autograd"])
def test_fused_equals_monai_forward_and_backward(shape: tuple[int, ...], path: str, monkeypatch) -> None:
    if path == "sdpa_autograd":  # the path used without the private CPU kernels (and on GPUs)
        monkeypatch.setattr(wa, "_CPU_FLASH_BWD", None)
    calls: list[int] = []
    custom = wa._CpuWindowAttention.apply
    monkeypatch.setattr(wa._CpuWindowAttention, "apply", lambda *a: calls.append(1) or custom(*a))
    ref, fused = _layers()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen)
    grad_out = torch.randn(shape, generator=gen)
    _assert_equal(_run(fused, x, grad_out), _run(ref, x, grad_out))
    assert len(calls) == (2 if path == "cpu_custom" else 0)


def test_frozen_bias_and_no_grad_paths() -> None:
    ref, fused = _layers()
    x = torch.randn(1, 12, 20, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), atol=1e-5, rtol=1e-5)
    for layer in (ref, fused):  # frozen tables: fused kernels without a mask gradient
        for blk in layer.blocks:
            blk.attn.relative_position_bias_table.requires_grad_(False)
    grad_out = torch.randn(1, 12, 20, 20, 20)
    _assert_equal(_run(fused, x, grad_out), _run(ref, x, grad_out))


def test_dense_monai_mask_is_accepted() -> None:
    """FusedWindowAttention also takes MONAI's dense (nW, n, n) mask, e.g. under an unfused BasicLayer."""
    torch.manual_seed(0)
    ref = WindowAttention(dim=12, num_heads=2, window_size=(7, 7, 7), qkv_bias=True)
    with torch.no_grad():
        ref.relative_position_bias_table.normal_()
    fused = copy.deepcopy(ref)
    fused.__class__ = FusedWindowAttention
    mask = compute_mask([14, 14, 7], (7, 7, 7), (3, 3, 3), torch.device("cpu"))  # 4 windows
    x = torch.randn(2 * 4, 343, 12)
    torch.testing.assert_close(fused(x, mask), ref(x, mask), atol=1e-5, rtol=1e-5)


def test_unfuse_restores_monai_classes() -> None:
    _, fused = _layers()
    keys = list(fused.state_dict())
    fuse_window_attention(fused, enable=False)
    assert type(fused) is BasicLayer and type(fused.blocks[0].attn) is WindowAttention
    assert type(fused.blocks[0]) is SwinTransformerBlock
    assert list(fused.state_dict()) == keys


def test_mask_window_count_mismatch_raises() -> None:
    mask = shifted_window_mask((14, 14, 14), (7, 7, 7), (3, 3, 3), torch.device("cpu"))
    q = torch.randn(5, 1, 343, 4)
    with pytest.raises(ValueError, match="windows per sample"):
        wa.window_attention(q, q, q, torch.zeros(1, 343, 343), mask, scale=0.5)


def _checkpointed(layer: torch.nn.Module) -> torch.nn.Module:
    for blk in layer.blocks:
        blk.use_checkpoint = True
    return layer


def _kept_entries(layer: torch.nn.Module) -> int:
    return sum(len(blk.__dict__.get("_kept_attention", {})) for blk in layer.blocks)


def test_checkpointed_blocks_run_the_attention_kernel_once(monkeypatch) -> None:
    """Under checkpointing the recompute replays the forward's attention: MONAI's values and gradients,
    the fused kernel run as often as without checkpointing (MONAI's blocks run it twice), nothing kept after."""
    ref, fused = _layers()
    checkpointed = _checkpointed(copy.deepcopy(fused))
    calls: list[int] = []
    flash = wa._CPU_FLASH
    monkeypatch.setattr(wa, "_CPU_FLASH", lambda *a, **kw: calls.append(1) or flash(*a, **kw))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 12, 20, 20, 20, generator=gen)
    grad_out = torch.randn(2, 12, 20, 20, 20, generator=gen)
    plain = _run(fused, x, grad_out)
    once = len(calls)  # 1 call for the unshifted block + 1 per shift-mask group of the shifted one
    assert once == 1 + len(
        shifted_window_mask((21, 21, 21), (7, 7, 7), (3, 3, 3), torch.device("cpu")).groups
    )
    calls.clear()
    got = _run(checkpointed, x, grad_out)
    assert len(calls) == once
    _assert_equal(got, _run(_checkpointed(ref), x, grad_out))
    _assert_equal(got, plain)
    assert _kept_entries(checkpointed) == 0


def test_kept_attention_is_freed_without_backward() -> None:
    """A checkpointed forward whose graph is dropped (no backward) leaves nothing kept."""
    _, fused = _layers()
    checkpointed = _checkpointed(fused)
    out = checkpointed(torch.randn(1, 12, 14, 14, 14, requires_grad=True))
    assert _kept_entries(checkpointed) == 2  # one per block until the backward
    del out
    assert _kept_entries(checkpointed) == 0


def test_second_backward_recomputes_the_attention() -> None:
    """retain_graph: the second backward finds nothing kept and runs the kernel again, same gradients."""
    _, fused = _layers()
    checkpointed = _checkpointed(fused)
    x = torch.randn(1, 12, 14, 14, 14, requires_grad=True)
    out = checkpointed(x)
    first = torch.autograd.grad(out.square().sum(), x, retain_graph=True)[0]
    second = torch.autograd.grad(out.square().sum(), x)[0]
    torch.testing.assert_close(second, first)


def test_kept_attention_is_not_replayed_after_an_in_place_weight_change() -> None:
    """Two forwards of one tensor: the second replays only while input and weights are unchanged."""
    _, fused = _layers()
    block = fused.blocks[0]
    block.use_checkpoint = True
    x = torch.randn(1, 14, 14, 14, 12, requires_grad=True)
    first = block(x, None)
    with torch.no_grad():
        block.attn.qkv.weight.mul_(1.5)
    block.use_checkpoint = False
    expected = block(x, None)  # the fused block, no checkpoint, no kept state
    block.use_checkpoint = True
    second = block(x, None)
    torch.testing.assert_close(second, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(second, first, atol=1e-3)

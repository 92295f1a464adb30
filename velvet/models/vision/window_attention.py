"""Fused shifted-window attention for MONAI's 3D Swin: same parameters, same outputs, less time and memory.

MONAI's ``WindowAttention.forward`` materialises ``softmax(q k^T + bias + shift_mask) v`` for every window
and head, and ``BasicLayer.forward`` rebuilds a dense ``(windows, n, n)`` shift mask on every call (0.8 s
per stage at 96^3). Here:

* the shift mask is never materialised per window. With the padded grid tiling the volume exactly, a
  window's mask depends only on whether it is the last window along each shifted axis, so there are at
  most 8 distinct masks. :func:`shifted_window_mask` computes them once per grid (with MONAI's own
  ``compute_mask`` on a 2x2x2-window grid, so the values are MONAI's) and caches the window groups;
* attention runs through ``torch.nn.functional.scaled_dot_product_attention`` once per group, with the
  relative position bias (+ the group's shift mask) as a broadcast ``(1, heads, n, n)`` additive mask;
* when the bias table needs a gradient on CPU, where PyTorch's fused kernels cannot return a mask
  gradient (it would fall back to the unfused math path), a custom autograd function runs the fused CPU
  flash kernel forward, saves only its log-sum-exp, and computes exact gradients (bias included) a
  few windows at a time in the backward, so nothing of size ``windows x heads x n x n`` is kept
  between forward and backward and each chunk stays in cache;
* under gradient checkpointing, :class:`FusedSwinTransformerBlock` keeps that kernel's output for
  the backward's recompute instead of running the kernel twice.

:func:`fuse_window_attention` switches the classes of a MONAI Swin's ``WindowAttention``,
``BasicLayer`` and ``SwinTransformerBlock`` modules (forward methods only), so state-dict keys and
parameters are unchanged and MONAI weights load as they are. Outputs and gradients equal MONAI's to
float rounding (tested).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import (
    BasicLayer,
    SwinTransformerBlock,
    WindowAttention,
    compute_mask,
    get_window_size,
)
from torch import nn

__all__ = [
    "FusedBasicLayer",
    "FusedSwinTransformerBlock",
    "FusedWindowAttention",
    "ShiftedWindowMask",
    "fuse_window_attention",
    "shifted_window_mask",
    "window_attention",
]

# Fused CPU kernels: private aten ops (present since torch 2.2); without them the autograd path is used.
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CPU_FLASH_BWD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
_LOG2E = math.log2(math.e)
_CHUNK_BYTES = 4 * 2**20  # one (windows, heads, n, n) backward chunk: small enough to stay in cache


@dataclass(frozen=True, eq=False)
class ShiftedWindowMask:
    """The shift mask of a padded grid, as groups of windows that share one ``(n, n)`` mask.

    Attributes:
        num_windows: windows per sample ``nW`` (MONAI order: depth-major over the padded grid).
        groups: ``(window_indices, mask)`` pairs; ``window_indices`` ``(G,)`` int64 into ``0..nW-1``,
            ``mask`` ``(n, n)`` float with 0 (same region) or -100 (MONAI's value), or None for windows
            whose mask is all zero.
    """

    num_windows: int
    groups: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]

    def dense(self) -> torch.Tensor:
        """MONAI's ``compute_mask`` layout ``(nW, n, n)`` (for tests and the unfused path)."""
        ref = next(m for _, m in self.groups if m is not None)  # a shifted grid always has one
        out = ref.new_zeros(self.num_windows, *ref.shape)
        for idx, mask in self.groups:
            if mask is not None:
                out[idx] = mask
        return out


def shifted_window_mask(
    padded_dims: Sequence[int], window_size: Sequence[int], shift_size: Sequence[int], device: torch.device
) -> ShiftedWindowMask | None:
    """The grouped shift mask of a padded ``(d, h, w)`` grid, cached per grid; None when nothing shifts.

    Args:
        padded_dims: grid size after padding to a multiple of ``window_size`` on each axis.
        window_size: window edges (after MONAI's clipping to the grid).
        shift_size: shifts (0 on axes not larger than the window).
        device: where the cached tensors live.
    """
    if not any(shift_size):
        return None
    return _shifted_window_mask(tuple(padded_dims), tuple(window_size), tuple(shift_size), str(device))


@functools.lru_cache(maxsize=64)
def _shifted_window_mask(
    dims: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...], device: str
) -> ShiftedWindowMask:
    grid = [d // w for d, w in zip(dims, window, strict=True)]
    # A 2-window axis per shifted axis holds every distinct pattern: MONAI labels regions from the end
    # of the padded axis, so windows before the last one lie in one region (mask 0) along that axis.
    small_grid = [2 if s else 1 for s in shift]
    # built on the host (once per grid, cached) and moved: no device sync inside a forward pass
    small = compute_mask(
        [g * w for g, w in zip(small_grid, window, strict=True)], window, shift, torch.device("cpu")
    )
    axes = [torch.arange(g) for g in grid]
    last = [
        (a == g - 1).long() if s else torch.zeros_like(a) for a, g, s in zip(axes, grid, shift, strict=True)
    ]
    # the window's index in the small grid, in MONAI's window order (d-major, then h, then w)
    small_id = (last[0][:, None, None] * small_grid[1] + last[1][:, None]) * small_grid[2] + last[2]
    small_id = small_id.reshape(-1)  # (nW,)
    groups = []
    for sid in torch.unique(small_id).tolist():
        mask = small[sid]
        idx = torch.nonzero(small_id == sid).squeeze(1).to(device)
        groups.append((idx, mask.to(device) if bool(mask.any()) else None))
    return ShiftedWindowMask(num_windows=math.prod(grid), groups=tuple(groups))


def _take(x: torch.Tensor, idx: torch.Tensor | None, nw: int) -> torch.Tensor:
    """Windows ``idx`` of every sample: ``(B*nW, ...)`` -> ``(B*G, ...)``."""
    if idx is None:
        return x
    return x.unflatten(0, (-1, nw))[:, idx].flatten(0, 1)


def _put(dst: torch.Tensor, idx: torch.Tensor | None, nw: int, value: torch.Tensor) -> None:
    if idx is None:
        dst.copy_(value)
    else:
        dst.unflatten(0, (-1, nw))[:, idx] = value.unflatten(0, (-1, idx.numel()))


def _group_mask(bias: torch.Tensor, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``(1, heads, n, n)`` additive mask of one window group: the bias, ``-inf`` where the shift masks.

    MONAI adds -100 instead; ``exp(-100)`` is a float32 denormal, whose arithmetic makes the CPU
    backward of a shifted window ~20 % slower, and it weighs < 1e-43 against the never-masked
    diagonal, so ``-inf`` gives MONAI's outputs and gradients to float rounding.
    """
    out = bias if mask is None else bias.masked_fill(mask < 0, float("-inf"))
    return out.unsqueeze(0).to(dtype)


def _groups_of(
    shift_mask: ShiftedWindowMask | None,
) -> tuple[tuple[torch.Tensor | None, torch.Tensor | None], ...]:
    if shift_mask is None:
        return ((None, None),)
    if len(shift_mask.groups) == 1:  # every window has the same mask: no gather needed
        return ((None, shift_mask.groups[0][1]),)
    return shift_mask.groups  # type: ignore[return-value]


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    shift_mask: ShiftedWindowMask | torch.Tensor | None,
    *,
    scale: float,
    dropout_p: float = 0.0,
    keep: _KeptAttention | None = None,
) -> torch.Tensor:
    """``softmax(scale * q k^T + bias + shift_mask) v`` over windows, without per-window mask copies.

    Args:
        q, k, v: ``(B * nW, heads, n, head_dim)``, windows sample-major as MONAI orders them.
        bias: ``(heads, n, n)`` relative position bias (may require grad).
        shift_mask: a :class:`ShiftedWindowMask`, MONAI's dense ``(nW, n, n)`` mask, or None.
        scale: logit scale (``head_dim ** -0.5``).
        dropout_p: attention dropout (pass 0 in eval).
        keep: where a checkpointed block keeps the fused CPU kernel's output for its recompute (see
            :class:`FusedSwinTransformerBlock`); ignored on other paths.

    Returns:
        ``(B * nW, heads, n, head_dim)``.
    """
    if isinstance(shift_mask, torch.Tensor):  # MONAI's dense mask: correct, not the fast path
        nw = shift_mask.shape[0]
        mask = (bias.unsqueeze(0) + shift_mask.unsqueeze(1)).to(q.dtype)  # (nW, heads, n, n)
        out = F.scaled_dot_product_attention(
            q.unflatten(0, (-1, nw)), k.unflatten(0, (-1, nw)), v.unflatten(0, (-1, nw)),
            attn_mask=mask, dropout_p=dropout_p, scale=scale,
        )  # fmt: skip
        return out.flatten(0, 1)
    nw = shift_mask.num_windows if shift_mask is not None else q.shape[0]
    if q.shape[0] % nw:
        raise ValueError(f"the shift mask is for {nw} windows per sample, got {q.shape[0]} windows in all")
    groups = _groups_of(shift_mask)
    bias_grad = torch.is_grad_enabled() and bias.requires_grad
    if bias_grad and q.device.type == "cpu" and dropout_p == 0.0 and _CPU_FLASH_BWD is not None:
        return _CpuWindowAttention.apply(q, k, v, bias, groups, nw, scale, keep)
    out = q.new_empty(q.shape) if len(groups) > 1 else None
    for idx, mask in groups:
        o = F.scaled_dot_product_attention(
            _take(q, idx, nw), _take(k, idx, nw), _take(v, idx, nw),
            attn_mask=_group_mask(bias, mask, q.dtype), dropout_p=dropout_p, scale=scale,
        )  # fmt: skip
        if out is None:
            return o
        _put(out, idx, nw, o)  # index_put records the copy for autograd
    return out  # type: ignore[return-value]


class _CpuWindowAttention(torch.autograd.Function):
    """Fused CPU flash attention forward; a chunked exact backward that also returns the bias gradient."""

    @staticmethod
    def forward(ctx, q, k, v, bias, groups, nw, scale, keep):  # type: ignore[override]
        if keep is not None and keep.replay is not None:  # a checkpoint's recompute: the forward's result
            out, lse = keep.replay
        elif len(groups) == 1:
            out, lse = _CPU_FLASH(
                q, k, v, attn_mask=_group_mask(bias.detach(), groups[0][1], q.dtype), scale=scale
            )
        else:
            out = torch.empty_like(q, memory_format=torch.contiguous_format)
            lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
            for idx, mask in groups:
                m = _group_mask(bias.detach(), mask, q.dtype)
                o, lg = _CPU_FLASH(
                    _take(q, idx, nw), _take(k, idx, nw), _take(v, idx, nw), attn_mask=m, scale=scale
                )
                _put(out, idx, nw, o)
                _put(lse, idx, nw, lg)
        if keep is not None and keep.replay is None:
            keep.kept = (out.detach(), lse)
        ctx.save_for_backward(q, k, v, bias, out, lse)  # no (windows, heads, n, n) tensor is kept
        ctx.groups, ctx.nw, ctx.scale = groups, nw, scale
        return out

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        q, k, v, bias, out, lse = ctx.saved_tensors
        groups, nw, scale = ctx.groups, ctx.nw, ctx.scale
        dbias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
        if len(groups) == 1:
            m = _group_mask(bias.detach(), groups[0][1], torch.float32)[0]
            dq, dk, dv = _attention_backward(q, k, v, out, lse, dout, mask=m, scale=scale, dbias=dbias)
            return dq, dk, dv, dbias.to(bias.dtype), None, None, None, None
        dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
        for idx, mask in groups:
            m = _group_mask(bias.detach(), mask, torch.float32)[0]
            inputs = (_take(t, idx, nw) for t in (q, k, v, out, lse, dout))
            grads = _attention_backward(*inputs, mask=m, scale=scale, dbias=dbias)
            for dst, g in zip((dq, dk, dv), grads, strict=True):
                _put(dst, idx, nw, g)
        return dq, dk, dv, dbias.to(bias.dtype), None, None, None, None


def _attention_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dout: torch.Tensor,
    *,
    mask: torch.Tensor,
    scale: float,
    dbias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact attention gradients from the saved log-sum-exp, a few windows at a time.

    With ``P = exp(scale q k^T + mask - lse)`` and ``dS = P * (dO v^T - rowsum(dO * O))``:
    ``dv = P^T dO``, ``dq = scale dS k``, ``dk = scale dS^T q`` and ``dbias += sum_windows dS``. Chunks
    of a few windows keep ``P`` and ``dS`` in cache, which makes this twice as fast as whole-tensor ops.

    Args:
        q, k, v, out, dout: ``(BW, heads, n, head_dim)``; lse: ``(BW, heads, n)``; mask: ``(heads, n, n)``
            float32 (bias + shift mask); dbias: ``(heads, n, n)`` float32 accumulator (updated in place).

    Returns:
        ``(dq, dk, dv)``, each ``(BW, heads, n, head_dim)`` in ``q``'s dtype.
    """
    heads, n, dtype = mask.shape[0], mask.shape[-1], q.dtype
    chunk = max(1, _CHUNK_BYTES // (heads * n * n * 4))
    # float32, contiguous (B*nW*heads, n, head_dim)
    q, k, v, dout = (t.float().contiguous().flatten(0, 1) for t in (q, k, v, dout))
    # Transposed copies of the thin (n, head_dim) operands, made once: no (n, n) operand is ever
    # transposed, which would make bmm copy it (27 % of this function's time before).
    qt, kt, vt, dot = (t.transpose(1, 2).contiguous() for t in (q, k, v, dout))
    dq, dkt, dvt = torch.empty_like(q), torch.empty_like(kt), torch.empty_like(vt)
    delta = (dout * out.float().flatten(0, 1)).sum(-1, keepdim=True)  # (BW*heads, n, 1)
    # exp2 is ~1.7x faster than exp on CPU: work in base-2 logits (P = 2^(log2e * (logits - lse))).
    rows = chunk * heads
    mask2 = (mask * _LOG2E).repeat(chunk, 1, 1)  # (rows, n, n)
    lse2 = lse.float().flatten(0, 1).unsqueeze(-1) * _LOG2E
    # Reused chunk buffers: a fresh multi-MB tensor per chunk costs page faults on every allocation.
    p_buf, ds_buf = q.new_empty(rows, n, n), q.new_empty(rows, n, n)
    # dS summed over windows in place, one slot per window of a chunk (no temporary per chunk)
    ds_sum = q.new_zeros(rows, n, n)
    for start in range(0, q.shape[0], rows):
        sl = slice(start, start + rows)
        r = q[sl].shape[0]
        p = torch.baddbmm(mask2[:r], q[sl], kt[sl], alpha=scale * _LOG2E, out=p_buf[:r])
        p.sub_(lse2[sl]).exp2_()  # attention probabilities
        torch.bmm(dot[sl], p, out=dvt[sl])  # dv^T = dO^T P
        ds = torch.bmm(dout[sl], vt[sl], out=ds_buf[:r]).sub_(delta[sl]).mul_(p)  # (r, n, n)
        ds_sum[:r] += ds
        torch.bmm(ds, k[sl], out=dq[sl])  # dq = dS k (scaled below)
        torch.bmm(qt[sl], ds, out=dkt[sl])  # dk^T = q^T dS
    dbias += ds_sum.unflatten(0, (-1, heads)).sum(0)
    dq.mul_(scale)
    dk, dv = dkt.mul_(scale).transpose(1, 2), dvt.transpose(1, 2)
    return tuple(t.unflatten(0, (-1, heads)).to(dtype) for t in (dq, dk, dv))  # type: ignore[return-value]


class FusedWindowAttention(WindowAttention):
    """MONAI ``WindowAttention`` whose forward goes through :func:`window_attention` (same parameters)."""

    def forward(self, x: torch.Tensor, mask: ShiftedWindowMask | torch.Tensor | None) -> torch.Tensor:
        """Args: x ``(B * nW, n, C)`` window tokens; mask as in :func:`window_attention`. Returns ``(B * nW, n, C)``."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B*nW, heads, n, head_dim)
        index = self.relative_position_index[:n, :n].reshape(-1)  # type: ignore[index]
        bias = self.relative_position_bias_table[index].reshape(n, n, -1).permute(2, 0, 1).contiguous()
        drop = self.attn_drop.p if self.training else 0.0
        keep = self.__dict__.get("_keep")  # set by a checkpointing FusedSwinTransformerBlock
        x = window_attention(q, k, v, bias, mask, scale=self.scale, dropout_p=drop, keep=keep)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class _KeptAttention:
    """One block call's attention result, carried from the forward to the checkpoint's recompute."""

    __slots__ = ("kept", "replay")

    def __init__(self, replay: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.replay = replay  # (out, lse) to return instead of running the kernel
        self.kept: tuple[torch.Tensor, torch.Tensor] | None = None  # (out, lse) the kernel made


class FusedSwinTransformerBlock(SwinTransformerBlock):
    """MONAI ``SwinTransformerBlock`` whose gradient checkpointing does not run the attention twice.

    MONAI's ``use_checkpoint`` recomputes the attention half in the backward, fused kernel included
    (a third of the window attention's time). Here the forward keeps the kernel's output and
    log-sum-exp (one tensor of the block's token size) and the recompute replays the cheap parts
    (norm, shift, partition, projections) around it. The entry is keyed by the block input the
    checkpoint holds for its recompute and dropped at the recompute or when that input is freed.
    Only the fused CPU path keeps anything (GPU kernels recompute quickly).
    """

    def forward_part1(
        self, x: torch.Tensor, mask_matrix: ShiftedWindowMask | torch.Tensor | None
    ) -> torch.Tensor:
        """Args: x ``(B, d, h, w, C)``; mask_matrix as :class:`FusedWindowAttention` takes. Returns the same shape."""
        if not (self.use_checkpoint and torch.is_grad_enabled() and type(self.attn) is FusedWindowAttention):
            return super().forward_part1(x, mask_matrix)
        entries: dict[int, tuple[weakref.ref, tuple[torch.Tensor, torch.Tensor], object, tuple[int, ...]]]
        entries = self.__dict__.setdefault("_kept_attention", {})
        entry = entries.pop(id(x), None)
        # The same input object, unchanged, with unchanged weights: the checkpoint's recompute (or a
        # second forward of one tensor, where the kept result is just as right). An in-place update
        # in between (an optimizer step, a weight edit) bumps a version and the kernel runs again.
        state = self._attention_state(x)
        fresh = entry is not None and entry[0]() is x and entry[3] == state
        keep = _KeptAttention(entry[1] if fresh else None)
        self.attn.__dict__["_keep"] = keep
        try:
            out = super().forward_part1(x, mask_matrix)
        finally:
            del self.attn.__dict__["_keep"]
        if keep.kept is not None:
            token = object()  # the finalizer holds this, not the kept tensors
            entries[id(x)] = (weakref.ref(x), keep.kept, token, state)
            weakref.finalize(x, _drop_entry, entries, id(x), token)
        return out

    def _attention_state(self, x: torch.Tensor) -> tuple[int, ...]:
        """In-place versions of everything the kept attention output depends on: ``x``, norm1, attn."""
        return (x._version, *(t._version for t in (*self.norm1.parameters(), *self.attn.parameters())))


def _drop_entry(entries: dict, key: int, token: object) -> None:
    """Forget a kept result once its block input is freed (no backward came), unless replaced."""
    entry = entries.get(key)
    if entry is not None and entry[2] is token:
        del entries[key]


class FusedBasicLayer(BasicLayer):
    """MONAI ``BasicLayer`` (3D) that hands its blocks a cached :class:`ShiftedWindowMask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, C, d, h, w)``. Returns the stage output, downsampled when the layer merges."""
        if x.ndim != 5:
            raise ValueError(f"FusedBasicLayer is 3D only: expected (B, C, d, h, w), got {tuple(x.shape)}")
        b, _, d, h, w = x.shape
        window, shift = get_window_size((d, h, w), self.window_size, self.shift_size)
        x = x.permute(0, 2, 3, 4, 1)  # (B, d, h, w, C), as MONAI's rearrange
        padded = [math.ceil(s / ws) * ws for s, ws in zip((d, h, w), window, strict=True)]
        mask = shifted_window_mask(padded, window, shift, x.device)
        for blk in self.blocks:
            x = blk(x, mask)
        x = x.view(b, d, h, w, -1)
        if self.downsample is not None:
            x = self.downsample(x)
        return x.permute(0, 4, 1, 2, 3)


_SWAPS = {
    WindowAttention: FusedWindowAttention,
    BasicLayer: FusedBasicLayer,
    SwinTransformerBlock: FusedSwinTransformerBlock,
}


def fuse_window_attention(model: nn.Module, enable: bool = True) -> nn.Module:
    """Switch every MONAI ``WindowAttention``/``BasicLayer``/``SwinTransformerBlock`` to the fused forward (or back).

    Only the classes change (the subclasses override forward methods alone), so parameters, buffers and
    state-dict keys stay MONAI's. Hyena stages are left alone.

    Args:
        model: any module holding MONAI Swin layers (changed in place).
        enable: True to fuse, False to restore MONAI's classes.

    Returns:
        ``model``.
    """
    pairs = _SWAPS.items() if enable else [(new, old) for old, new in _SWAPS.items()]
    for module in model.modules():
        for old, new in pairs:
            if type(module) is old and not getattr(module, "use_hyena", False):
                module.__class__ = new
    return model

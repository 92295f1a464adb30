"""Views for vision self-supervision (method.md 4.1, the SwinUNETR recipe): rotation and cut-out.

Everything is vectorised over the batch (random boxes are drawn as tensors and painted with
broadcasting; the only Python loops are over the 4 rotation angles and over chunks of boxes) and
seedable with a ``torch.Generator``. Random numbers are drawn on the generator's device (CPU by
default) and moved to the volume's device, so a seed gives the same views on CPU and GPU.

Differences from the reference, on purpose:

* Rotation needs the two rotated axes to be equally long (a quarter turn of a non-square plane would
  change the shape). The default plane is the reference's, the last two spatial axes ``(W, D)``; for
  M3D-style 256x256x32 inputs pass ``plane=(2, 3)``, the ``(H, W)`` plane.
* The noise of a cut-out is min-max normalised per sample, not per cuboid (same [0, 1] range).
* The second cut-out round pastes cuboids from another sample's first-round result; the reference's
  sequential loop pasted from a sample that may already have had both rounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["cutout", "make_ssl_views", "rotate", "rotate_views"]

_BOXES_PER_ROUND = 32  # boxes drawn per vectorised chunk; most samples finish in 1-4 chunks


def _gen_device(generator: torch.Generator | None, x: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else x.device


def _check_volume(x: torch.Tensor) -> None:
    if x.ndim != 5:
        raise ValueError(f"expected volumes (B, C, H, W, D), got shape {tuple(x.shape)}")


def rotate(x: torch.Tensor, k: torch.Tensor, plane: Sequence[int] = (3, 4)) -> torch.Tensor:
    """Rotate each sample by ``k[b]`` quarter turns in ``plane`` (``torch.rot90`` direction).

    Args:
        x: ``(B, C, H, W, D)`` volumes.
        k: ``(B,)`` int quarter turns (any integer; ``-k`` undoes ``k``).
        plane: two tensor dims among 2, 3, 4 with equal sizes.

    Returns:
        ``(B, C, H, W, D)`` rotated copy.

    Raises:
        ValueError: bad shapes or a non-square plane.
    """
    _check_volume(x)
    a, b = plane
    if sorted((a, b)) not in ([2, 3], [2, 4], [3, 4]):
        raise ValueError(f"plane must be two distinct spatial dims of (B, C, H, W, D), got {tuple(plane)}")
    if x.shape[a] != x.shape[b]:
        raise ValueError(
            f"rotation plane {tuple(plane)} is not square ({x.shape[a]} x {x.shape[b]}); a quarter turn would "
            "change the shape: pick a plane with equal sizes, e.g. plane=(2, 3) for H == W"
        )
    if k.shape != (x.shape[0],):
        raise ValueError(f"k must have shape ({x.shape[0]},), got {tuple(k.shape)}")
    k = k.to(x.device) % 4
    out = torch.empty_like(x)
    for turns in range(4):  # one rot90 per angle, over every sample with that angle
        sel = torch.nonzero(k == turns).squeeze(1)
        if sel.numel():
            out[sel] = torch.rot90(x[sel], turns, dims=(a, b))
    return out


def rotate_views(
    x: torch.Tensor, generator: torch.Generator | None = None, *, plane: Sequence[int] = (3, 4)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate every sample by a random multiple of 90 degrees (method.md 4.1).

    Args:
        x: ``(B, C, H, W, D)`` volumes.
        generator: random source (None: the global RNG of ``x``'s device).
        plane: the rotation plane (default ``(W, D)``, as the reference); its sides must be equal.

    Returns:
        ``(rotated (B, C, H, W, D), k (B,) int64 in 0..3)``; ``rotate(rotated, -k, plane)`` gives ``x`` back.
    """
    _check_volume(x)
    k = torch.randint(0, 4, (x.shape[0],), generator=generator, device=_gen_device(generator, x))
    k = k.to(x.device)
    return rotate(x, k, plane), k


def _sizes(n: int, min_block: float, max_block: float) -> tuple[int, int]:
    """Cuboid edge range ``[lo, hi)`` on an axis of ``n`` voxels (the reference's ``randint(tolr, max)``)."""
    lo = min(n, max(1, int(n * min_block)))
    hi = max(lo + 1, int(n * max_block))
    return lo, min(hi, n + 1)


def _box_mask(
    batch: int,
    spatial: Sequence[int],
    target: torch.Tensor,
    generator: torch.Generator | None,
    device: torch.device,
    min_block: float,
    max_block: float,
) -> torch.Tensor:
    """``(B, H, W, D)`` bool union of random cuboids, added per sample while their summed volume < target.

    As in the reference, a box is added while the *summed* volume of earlier boxes (overlaps counted
    twice) is below the target, so the covered fraction is at most target + one box.
    """
    ranges = [_sizes(n, min_block, max_block) for n in spatial]
    count = torch.zeros(batch, spatial[0], math.prod(spatial[1:]), device=device)
    total = torch.zeros(batch, device=device)
    axes = [torch.arange(n, device=device) for n in spatial]
    while bool((total < target).any()):
        inside = []
        volume = torch.ones(batch, _BOXES_PER_ROUND, device=device)
        for n, (lo, hi), axis in zip(spatial, ranges, axes, strict=True):
            shape = (batch, _BOXES_PER_ROUND)
            start = torch.randint(0, n - lo + 1, shape, generator=generator, device=device)
            size = torch.randint(lo, hi, shape, generator=generator, device=device)
            stop = torch.clamp(start + size, max=n)
            volume *= stop - start
            inside.append((axis >= start[..., None]) & (axis < stop[..., None]))  # (B, K, n)
        before = total[:, None] + torch.cumsum(volume, dim=1) - volume  # summed volume of earlier boxes
        keep = (before < target[:, None]).float()  # (B, K)
        total = total + (volume * keep).sum(dim=1)
        plane = inside[1][..., :, None] & inside[2][..., None, :]  # (B, K, W, D)
        plane = plane.flatten(2).float() * keep[..., None]
        count += torch.bmm(inside[0].transpose(1, 2).float(), plane)  # (B, H, W*D) boxes per voxel
    return (count > 0).view(batch, *spatial)


def cutout(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    max_drop: float = 0.3,
    max_block: float = 0.25,
    min_block: float = 0.05,
    noise: bool = True,
    paste_other: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace random cuboids with noise (the reference's ``patch_rand_drop``), then paste from another sample.

    Round 1: per sample, cuboids with edges in ``[min_block, max_block)`` of each axis are added until
    their summed volume reaches a fraction ``U(0, max_drop)`` of the volume; they get Gaussian noise
    min-max normalised to [0, 1] (``noise=True``) or 0. Round 2 (``paste_other``): each sample draws a
    random batch index; if it is another sample, a second set of cuboids is copied from that sample's
    round-1 result (the reference's in-batch mixing).

    Args:
        x: ``(B, C, H, W, D)`` volumes (not modified).
        generator: random source (None: the global RNG of ``x``'s device).
        max_drop: largest fraction of voxels targeted per round.
        max_block, min_block: cuboid edge range, as fractions of each axis.
        noise: fill with normalised Gaussian noise (else zeros).
        paste_other: run the second, in-batch pasting round.

    Returns:
        ``(corrupted (B, C, H, W, D), mask (B, 1, H, W, D) bool)``; ``mask`` marks every replaced voxel
        and ``corrupted`` equals ``x`` wherever ``mask`` is False.
    """
    _check_volume(x)
    if not (0.0 <= max_drop <= 1.0 and 0.0 < min_block <= max_block <= 1.0):
        raise ValueError(
            f"need 0 <= max_drop <= 1 and 0 < min_block <= max_block <= 1, got {max_drop}, {min_block}, {max_block}"
        )
    batch, spatial = x.shape[0], tuple(x.shape[2:])
    dev = _gen_device(generator, x)
    with torch.no_grad():
        target = torch.rand(batch, generator=generator, device=dev) * max_drop * math.prod(spatial)
        mask = _box_mask(batch, spatial, target, generator, dev, min_block, max_block).to(x.device)[:, None]
        if noise:
            fill = torch.randn(x.shape, generator=generator, device=dev).to(x.device, x.dtype)
            low = fill.flatten(1).amin(1).view(-1, 1, 1, 1, 1)
            high = fill.flatten(1).amax(1).view(-1, 1, 1, 1, 1)
            fill = (fill - low) / (high - low)
        else:
            fill = torch.zeros_like(x)
        out = torch.where(mask, fill, x)
        if paste_other and batch > 1:
            other = torch.randint(0, batch, (batch,), generator=generator, device=dev).to(x.device)
            active = other != torch.arange(batch, device=x.device)
            target = torch.rand(batch, generator=generator, device=dev) * max_drop * math.prod(spatial)
            second = _box_mask(batch, spatial, target, generator, dev, min_block, max_block).to(x.device)[
                :, None
            ]
            second &= active.view(-1, 1, 1, 1, 1)
            out = torch.where(second, out[other], out)
            mask = mask | second
    return out, mask


def make_ssl_views(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    plane: Sequence[int] = (3, 4),
    **cutout_kwargs: float | bool,
) -> dict[str, torch.Tensor]:
    """Two rotated, cut-out views of each volume with their targets (method.md 4.1).

    Args:
        x: ``(B, C, H, W, D)`` volumes, e.g. the local 96^3 crops in [0, 1].
        generator: random source (None: the global RNG).
        plane: the rotation plane (see :func:`rotate_views`).
        **cutout_kwargs: passed to :func:`cutout`.

    Returns:
        ``view1``/``view2`` ``(B, C, H, W, D)`` encoder inputs; ``target1``/``target2`` the rotated
        views before cut-out (reconstruction targets); ``mask1``/``mask2`` ``(B, 1, H, W, D)`` bool
        cut-out voxels; ``rot1``/``rot2`` ``(B,)`` int64 quarter turns (rotation labels).
    """
    views: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for i in (1, 2):
            target, k = rotate_views(x, generator, plane=plane)
            views[f"view{i}"], views[f"mask{i}"] = cutout(target, generator, **cutout_kwargs)  # type: ignore[arg-type]
            views[f"target{i}"], views[f"rot{i}"] = target, k
    return views

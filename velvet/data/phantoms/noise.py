"""Smooth random fields for tissue texture, made at low resolution and upsampled (numpy only).

Drawing a smooth field directly at 512x512x200 would mean filtering 52 M voxels; instead the
field is drawn on a coarse lattice in world millimetres (so it looks the same at any spacing) and
trilinearly interpolated, one axis at a time, which costs a few passes over the output.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["smooth_noise"]


def smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    *,
    cell_mm: float = 10.0,
) -> np.ndarray:
    """A smooth, roughly unit-variance random field on a voxel grid.

    Two octaves (``2 * cell_mm`` and ``cell_mm`` lattices) are summed on the fine lattice, then
    the fine lattice is interpolated to the voxels.

    Args:
        rng: random stream.
        shape: ``(H, W, D)`` voxel grid.
        spacing: voxel size in mm along each axis.
        cell_mm: lattice step of the finer octave (the feature size of the texture).

    Returns:
        ``(H, W, D)`` float32 field, mean ~0, std ~1.
    """
    extent = [n * s for n, s in zip(shape, spacing, strict=True)]
    fine_shape = tuple(int(math.ceil(e / cell_mm)) + 2 for e in extent)
    coarse_shape = tuple(int(math.ceil(e / (2 * cell_mm))) + 2 for e in extent)
    fine = rng.standard_normal(fine_shape, dtype=np.float32)
    coarse = rng.standard_normal(coarse_shape, dtype=np.float32)
    # coarse lattice point k sits at fine lattice coordinate 2k
    coarse_on_fine = _upsample(coarse, [np.arange(n, dtype=np.float64) / 2.0 for n in fine_shape])
    lattice = 0.6 * fine + 0.8 * coarse_on_fine
    # voxel i of an axis sits at lattice coordinate (i + 0.5) * spacing / cell_mm
    coords = [(np.arange(n) + 0.5) * s / cell_mm for n, s in zip(shape, spacing, strict=True)]
    field = _upsample(lattice, coords)
    # linear interpolation shrinks the variance between lattice points; restore ~unit std
    sample = field.reshape(-1)[:: max(1, field.size // 200_000)]  # a strided subsample is enough
    # (a tiny grid has no usable spread: fall back to the typical std of the interpolated field)
    std = float(sample.std()) if sample.size >= 1000 else 0.75
    field *= np.float32(1.0 / max(std, 1e-3))
    return field


def _upsample(lattice: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    """Separable linear interpolation of a 3D lattice at per-axis fractional coordinates.

    The last axis is done first and the first axis last, so the final (largest) pass gathers
    whole contiguous planes.
    """
    out = lattice
    for axis in (2, 1, 0):
        c = np.clip(coords[axis], 0, out.shape[axis] - 1.000001)
        i0 = np.floor(c).astype(np.intp)
        t = (c - i0).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = len(t)
        t = t.reshape(shape)
        lo = np.take(out, i0, axis=axis)
        hi = np.take(out, i0 + 1, axis=axis)
        hi -= lo
        hi *= t
        lo += hi
        out = lo
    return out

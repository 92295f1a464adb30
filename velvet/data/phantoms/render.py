"""Render a phantom on a voxel grid: paint tissue ids, then turn them into HU and class labels.

Painting works on a ``(H, W, D)`` uint8 tissue-id canvas. Each shape is evaluated only inside its
bounding box, and its in-plane part (a 2D array) is broadcast along z, so a full 512x512x200 case
costs a few passes over the volume. A shape only overwrites the tissues it is allowed to
(``allowed``), which is how organs nest (the liver's dome pushes into the lung; a kidney's
medulla stays inside its cortex). Finally ``HU = base[tissue] + texture[tissue] * smooth_field +
white noise``, and ``label = TISSUE_CLASS[tissue]``.
"""

from __future__ import annotations

import math

import numpy as np

from velvet.data.phantoms import anatomy as A
from velvet.data.phantoms.anatomy import Anatomy, Ellipsoid, effusion_region
from velvet.data.phantoms.findings import Findings
from velvet.data.phantoms.noise import smooth_noise

__all__ = ["grid_affine", "grid_axes", "render_volume"]

HU_MIN, HU_MAX = -1024.0, 3071.0  # the 12-bit range of CT scanners
_ORGAN_WOBBLE = 0.12  # boundary irregularity: the squared radius threshold varies by +-12% per unit of noise

_Bounds = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]


def _lut(*tissues: int) -> np.ndarray:
    lut = np.zeros(A.N_TISSUES, dtype=bool)
    lut[list(tissues)] = True
    return lut


_SOFT = (A.INTERIOR, A.ASCITES)
_LUNGS = (A.LUNG_R, A.LUNG_L, A.EFFUSION)
_NOT_SKIN = _lut(*(t for t in range(A.N_TISSUES) if t not in (A.AIR, A.FAT)))
_ORGAN_TISSUES = {
    "liver": (A.LIVER,),
    "spleen": (A.SPLEEN,),
    "kidney_right": (A.KIDNEY_R, A.KIDNEY_R_MED),
    "kidney_left": (A.KIDNEY_L, A.KIDNEY_L_MED),
    "lung_right": (A.LUNG_R,),
    "lung_left": (A.LUNG_L,),
}


def grid_axes(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> list[np.ndarray]:
    """World coordinates (mm, RAS) of the voxel centres along each axis; the grid is centred on 0."""
    return [
        ((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing, strict=True)
    ]


def grid_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """The ``(4, 4)`` voxel -> RAS world (mm) matrix of the centred grid."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing, strict=True)]
    return affine


class _Canvas:
    """The tissue-id volume being painted, with the grid's world axes and the smooth field."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float], smooth: np.ndarray):
        self.shape, self.spacing, self.smooth = shape, spacing, smooth
        self.axes = grid_axes(shape, spacing)
        self.tid = np.zeros(shape, dtype=np.uint8)

    def _range(self, axis: int, lo: float, hi: float) -> slice:
        x0, s, n = float(self.axes[axis][0]), self.spacing[axis], self.shape[axis]
        i0 = max(0, math.ceil((lo - x0) / s))
        i1 = min(n, math.floor((hi - x0) / s) + 1)
        return slice(i0, max(i0, i1))

    def box(self, ell: Ellipsoid, pad: float, bounds: _Bounds | None = None) -> tuple[slice, ...] | None:
        """Index box of an ellipsoid (its extent times ``pad``), cut to ``bounds``; None if empty."""
        slices = []
        for k, (c, h) in enumerate(zip(ell.center, ell.half_extent(), strict=True)):
            lo, hi = c - h * pad, c + h * pad
            if bounds is not None:
                lo, hi = max(lo, bounds[k][0]), min(hi, bounds[k][1])
            sl = self._range(k, lo, hi)
            if sl.start >= sl.stop:
                return None
            slices.append(sl)
        return tuple(slices)

    def paint(
        self,
        ell: Ellipsoid,
        tissue: int,
        allowed: np.ndarray,
        *,
        wobble: float = 0.0,
        bounds: _Bounds | None = None,
    ) -> None:
        """Set ``tissue`` inside ``ell`` where the current tissue is ``allowed`` (a bool LUT).

        ``wobble`` perturbs the boundary with the smooth field; ``bounds`` (world mm per axis)
        cuts the shape, e.g. to a fluid level.
        """
        box = self.box(ell, math.sqrt(1.0 + 3.0 * wobble), bounds)
        if box is None:
            return
        xs, ys, zs = (self.axes[k][box[k]] for k in range(3))
        cx, cy, cz = ell.center
        a, b, c = ell.semi_axes
        cos, sin = math.cos(ell.yaw), math.sin(ell.yaw)
        dx, dy = xs[:, None] - np.float32(cx), ys[None, :] - np.float32(cy)
        q_xy = ((cos * dx + sin * dy) / a) ** 2 + ((cos * dy - sin * dx) / b) ** 2  # (h, w)
        q = q_xy[:, :, None] + (((zs - np.float32(cz)) / c) ** 2)[None, None, :]  # (h, w, d)
        if wobble:
            q -= np.float32(wobble) * self.smooth[box]
        view = self.tid[box]
        mask = q <= 1.0
        mask &= allowed[view]
        view[mask] = tissue

    def paint_slab(
        self, mask2d: np.ndarray, z_lo: float, z_hi: float, tissue: int, allowed: np.ndarray
    ) -> None:
        """Set ``tissue`` where the in-plane ``mask2d`` ``(H, W)`` holds, for ``z_lo <= z <= z_hi``."""
        sz = self._range(2, z_lo, z_hi)
        if sz.start >= sz.stop:
            return
        view = self.tid[:, :, sz]
        mask = allowed[view]
        mask &= mask2d[:, :, None]
        view[mask] = tissue


def render_volume(
    anatomy: Anatomy,
    findings: Findings,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    *,
    noise_hu: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one case.

    Args:
        anatomy: the case's geometry and tissue HU values.
        findings: its findings (lesions, effusion; the rest is already in ``anatomy``).
        shape: ``(H, W, D)`` voxel grid, RAS axes, centred on the origin.
        spacing: voxel size in mm.
        noise_hu: standard deviation of the white (quantum) noise in HU.
        rng: the case's noise random stream.

    Returns:
        ``(hu, label_map)``: ``(H, W, D)`` float32 HU clipped to [-1024, 3071], and ``(H, W, D)``
        uint8 class ids of :data:`~velvet.data.phantoms.anatomy.CLASS_NAMES`.
    """
    canvas = _Canvas(shape, spacing, smooth_noise(rng, shape, spacing))
    _paint_body(canvas, anatomy)
    _paint_organs(canvas, anatomy, findings)
    _paint_bones(canvas, anatomy)
    for gas in anatomy.gas:
        canvas.paint(gas, A.GAS, _lut(A.INTERIOR))
    for k, lesion in enumerate(findings.lesions):
        canvas.paint(lesion.shape, A.LESION0 + k, _lut(*_ORGAN_TISSUES[lesion.organ]), wobble=0.04)
    return _compose(canvas, anatomy, findings, noise_hu, rng)


def _paint_body(canvas: _Canvas, anatomy: Anatomy) -> None:
    """The torso cross-section (the same on every slice): fat, muscle wall, paraspinal muscles."""
    x, y = canvas.axes[0][:, None], canvas.axes[1][None, :]
    (a, b), (ia, ib), fat = anatomy.body, anatomy.interior, anatomy.fat_mm
    plane = np.full((len(canvas.axes[0]), len(canvas.axes[1])), A.AIR, dtype=np.uint8)
    plane[(x / a) ** 2 + (y / b) ** 2 <= 1] = A.FAT
    plane[(x / (a - fat)) ** 2 + (y / (b - fat)) ** 2 <= 1] = A.MUSCLE
    plane[(x / ia) ** 2 + (y / ib) ** 2 <= 1] = A.INTERIOR
    for side in (-1.0, 1.0):  # erector spinae either side of the spine
        plane[((x - side * 0.2 * ia) / (0.17 * ia)) ** 2 + ((y + ib - 16) / 22) ** 2 <= 1] = A.MUSCLE
    canvas.tid[...] = plane[:, :, None]


def _paint_organs(canvas: _Canvas, anatomy: Anatomy, findings: Findings) -> None:
    """Organs in an order where later ones overwrite only what they may."""
    organs, w = anatomy.organs, _ORGAN_WOBBLE
    canvas.paint(organs["lung_right"], A.LUNG_R, _lut(*_SOFT), wobble=w)
    canvas.paint(organs["lung_left"], A.LUNG_L, _lut(*_SOFT), wobble=w)
    if findings.effusion is not None:
        sides = ("right", "left") if findings.effusion == "bilateral" else (findings.effusion,)
        for side in sides:
            lung = organs[f"lung_{side}"]
            y_level, z_max = effusion_region(lung, findings.effusion_amount or "small")
            bounds = ((-1e9, 1e9), (-1e9, y_level), (-1e9, z_max))
            tissue = A.LUNG_R if side == "right" else A.LUNG_L
            canvas.paint(lung.scaled(1.3), A.EFFUSION, _lut(tissue), bounds=bounds)
    canvas.paint(organs["heart"], A.HEART, _lut(*_SOFT, *_LUNGS), wobble=w / 2)
    # free fluid fills what the chest leaves of the cavity; abdominal organs then displace it
    for compartment in anatomy.ascites:
        canvas.paint(compartment, A.ASCITES, _lut(A.INTERIOR), wobble=w)
    canvas.paint(organs["liver"], A.LIVER, _lut(*_SOFT, *_LUNGS), wobble=w)
    stomach = organs["stomach"]
    canvas.paint(stomach, A.STOMACH, _lut(*_SOFT), wobble=w)
    # swallowed air rises to the anterior (non-dependent) part of the stomach
    gas_from = stomach.center[1] + 0.3 * stomach.semi_axes[1]
    canvas.paint(
        stomach.scaled(0.85), A.GAS, _lut(A.STOMACH), bounds=((-1e9, 1e9), (gas_from, 1e9), (-1e9, 1e9))
    )
    canvas.paint(organs["spleen"], A.SPLEEN, _lut(*_SOFT, A.LUNG_L, A.EFFUSION), wobble=w)
    for side, cortex, medulla in (
        ("right", A.KIDNEY_R, A.KIDNEY_R_MED),
        ("left", A.KIDNEY_L, A.KIDNEY_L_MED),
    ):
        kidney = organs.get(f"kidney_{side}")
        if kidney is not None:
            canvas.paint(kidney, cortex, _lut(*_SOFT, A.LIVER, A.SPLEEN), wobble=w / 2)
            canvas.paint(kidney.scaled(0.6), medulla, _lut(cortex), wobble=w)
    canvas.paint(organs["aorta"], A.AORTA, _lut(*_SOFT, *_LUNGS, A.LIVER, A.HEART))


def _paint_bones(canvas: _Canvas, anatomy: Anatomy) -> None:
    """Vertebrae with discs, the spinal canal, and ribs lining the cavity above the upper abdomen."""
    organs = anatomy.organs
    body = organs["vertebral_body"]
    canvas.paint(body, A.CORTEX, _NOT_SKIN)
    canvas.paint(body.scaled(0.78), A.MARROW, _lut(A.CORTEX))
    canvas.paint(organs["vertebral_arch"], A.CORTEX, _NOT_SKIN)
    canvas.paint(organs["spinous_process"], A.CORTEX, _NOT_SKIN)
    canvas.paint(organs["spinal_canal"], A.CANAL, _lut(A.CORTEX))
    z_lo, z_hi = float(canvas.axes[2][0]), float(canvas.axes[2][-1])
    for z in anatomy.disc_z:
        if z_lo - 8 <= z <= z_hi:
            canvas.paint(
                body, A.DISC, _lut(A.CORTEX, A.MARROW), bounds=((-1e9, 1e9), (-1e9, 1e9), (z, z + 7))
            )
    x, y = canvas.axes[0][:, None], canvas.axes[1][None, :]
    ia, ib = anatomy.interior
    ring = ((x / (ia - 1)) ** 2 + (y / (ib - 1)) ** 2 <= 1) & (
        (x / (ia - 10)) ** 2 + (y / (ib - 10)) ** 2 > 1
    )
    ring &= ~((np.abs(x) < 25) & (y > 0)) & ~((np.abs(x) < 45) & (y < 0))  # sternum gap, spine
    rib_allowed = _lut(*_SOFT, *_LUNGS, A.LIVER, A.SPLEEN)
    angle = np.arctan2(y, x)  # (H, W)
    for k, z in enumerate(anatomy.rib_z):
        if z_lo - 9 <= z <= z_hi:
            # ribs run obliquely, so an axial slab cuts them into arcs that shift from rib to rib
            arcs = ring & (np.cos(5.0 * angle + 1.3 * k) > -0.2)
            canvas.paint_slab(arcs, z, z + 9, A.CORTEX, rib_allowed)


def _compose(
    canvas: _Canvas, anatomy: Anatomy, findings: Findings, noise_hu: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue ids -> HU (base + texture + noise) and class ids, in chunks of ~2 M voxels.

    Chunking converts each chunk's uint8 ids to an index array once for three table look-ups and
    keeps the temporaries small (a 512x512x200 volume would otherwise need several 400 MB arrays).
    """
    base = np.zeros(A.N_TISSUES, dtype=np.float32)
    for tissue, hu in anatomy.hu.items():
        base[tissue] = hu
    for k, lesion in enumerate(findings.lesions):
        base[A.LESION0 + k] = lesion.hu
    tid, smooth = canvas.tid.reshape(-1), canvas.smooth.reshape(-1)
    hu = np.empty(tid.size, dtype=np.float32)
    labels = np.empty(tid.size, dtype=np.uint8)
    step = 1 << 21
    for start in range(0, tid.size, step):
        stop = min(start + step, tid.size)
        idx = tid[start:stop].astype(np.intp)
        out = hu[start:stop]
        np.take(base, idx, out=out)
        texture = np.take(A.TISSUE_TEXTURE, idx)
        texture *= smooth[start:stop]
        out += texture
        noise = rng.standard_normal(stop - start, dtype=np.float32)
        noise *= np.float32(noise_hu)
        out += noise
        np.take(A.TISSUE_CLASS, idx, out=labels[start:stop])
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    return hu.reshape(canvas.shape), labels.reshape(canvas.shape)

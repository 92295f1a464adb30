"""Phantom anatomy: tissues, segmentation classes and per-case organ geometry in world millimetres.

Everything is placed in RAS world coordinates (x: patient left, y: anterior, z: superior), with
the torso centred on the origin, so a case can be rendered on any grid (shape, spacing). The
torso is an elliptic cylinder along z (skin -> subcutaneous fat -> muscle wall -> interior);
organs are ellipsoids rotated about z ("yaw"), cylinders (aorta, spine) are ellipsoids with a
huge z semi-axis. Sizes and positions are jittered per case so that no mask is fixed.

Tissue ids (uint8, internal to rendering) map to the segmentation classes of :data:`CLASS_NAMES`
through :data:`TISSUE_CLASS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "TISSUE_CLASS",
    "TISSUE_TEXTURE",
    "Anatomy",
    "Ellipsoid",
    "effusion_region",
    "local_to_world",
    "sample_anatomy",
]

# ----------------------------------------------------------------------------- segmentation classes

CLASS_NAMES: dict[int, str] = {
    0: "background",
    1: "liver",
    2: "spleen",
    3: "kidney_right",
    4: "kidney_left",
    5: "lung_right",
    6: "lung_left",
    7: "heart",
    8: "aorta",
    9: "bone",  # vertebrae and ribs
    10: "stomach",
    11: "lesion",  # every focal lesion, whatever its organ
    12: "pleural_effusion",
    13: "ascites",
}

# ----------------------------------------------------------------------------- tissues (render ids)

AIR, FAT, MUSCLE, INTERIOR, LUNG_R, LUNG_L, HEART, AORTA = range(8)
CORTEX, MARROW, DISC, LIVER, SPLEEN, KIDNEY_R, KIDNEY_R_MED, KIDNEY_L = range(8, 16)
KIDNEY_L_MED, STOMACH, GAS, EFFUSION, ASCITES, CANAL = range(16, 22)
LESION0 = 24  # lesion k is tissue LESION0 + k
N_TISSUES = 32

_CLASS_OF = {
    LIVER: 1,
    SPLEEN: 2,
    KIDNEY_R: 3,
    KIDNEY_R_MED: 3,
    KIDNEY_L: 4,
    KIDNEY_L_MED: 4,
    LUNG_R: 5,
    LUNG_L: 6,
    HEART: 7,
    AORTA: 8,
    CORTEX: 9,
    MARROW: 9,
    STOMACH: 10,
    EFFUSION: 12,
    ASCITES: 13,
}
TISSUE_CLASS = np.zeros(N_TISSUES, dtype=np.uint8)
for _tissue, _cls in _CLASS_OF.items():
    TISSUE_CLASS[_tissue] = _cls
TISSUE_CLASS[LESION0:N_TISSUES] = 11

# Amplitude (HU per unit of the smooth noise field) of each tissue's low-frequency texture: the
# interior mixes fat and bowel, the lungs carry vessels, bone marrow is trabecular.
TISSUE_TEXTURE = np.zeros(N_TISSUES, dtype=np.float32)
for _tissue, _amp in {
    FAT: 12,
    MUSCLE: 8,
    INTERIOR: 30,
    LUNG_R: 35,
    LUNG_L: 35,
    HEART: 6,
    AORTA: 4,
    CORTEX: 90,
    MARROW: 45,
    DISC: 8,
    LIVER: 5,
    SPLEEN: 4,
    KIDNEY_R: 4,
    KIDNEY_R_MED: 4,
    KIDNEY_L: 4,
    KIDNEY_L_MED: 4,
    STOMACH: 6,
    GAS: 15,
    EFFUSION: 3,
    ASCITES: 3,
    CANAL: 3,
}.items():
    TISSUE_TEXTURE[_tissue] = _amp
TISSUE_TEXTURE[LESION0:N_TISSUES] = 4

# Base HU ranges, drawn once per case (non-contrast values unless noted).
_HU_RANGE: dict[int, tuple[float, float]] = {
    AIR: (-1000, -1000),
    FAT: (-110, -90),
    MUSCLE: (38, 50),
    INTERIOR: (-55, -25),
    LUNG_R: (-870, -830),
    LUNG_L: (-870, -830),
    HEART: (35, 45),
    AORTA: (35, 45),
    CORTEX: (600, 900),
    MARROW: (180, 280),
    DISC: (70, 90),
    LIVER: (55, 65),
    SPLEEN: (45, 50),
    KIDNEY_R: (33, 40),
    KIDNEY_R_MED: (27, 32),
    KIDNEY_L: (33, 40),
    KIDNEY_L_MED: (27, 32),
    STOMACH: (15, 30),
    GAS: (-980, -920),
    EFFUSION: (5, 15),
    ASCITES: (2, 12),
    CANAL: (5, 15),
}
_CONTRAST_HU = (150.0, 200.0)  # blood pool (aorta, heart) after intravenous contrast
_STEATOSIS_HU = (15.0, 35.0)  # fatty liver: darker than the spleen

# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid rotated about the z axis.

    Attributes:
        center: ``(x, y, z)`` RAS world position in mm.
        semi_axes: ``(a, b, c)`` mm along the rotated x', y' axes and z (``c`` huge for a cylinder).
        yaw: rotation about z in radians (x' = cos*x + sin*y of the offset).
    """

    center: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    yaw: float = 0.0

    def scaled(self, factor: float | tuple[float, float, float]) -> Ellipsoid:
        """The same ellipsoid with its semi-axes multiplied by ``factor`` (scalar or per axis)."""
        f = (factor,) * 3 if isinstance(factor, (int, float)) else factor
        return replace(self, semi_axes=tuple(s * k for s, k in zip(self.semi_axes, f, strict=True)))  # type: ignore[arg-type]

    def r2(self, points: np.ndarray) -> np.ndarray:
        """Normalised squared radius of ``points`` ``(N, 3)`` mm: ``<= 1`` inside. Returns ``(N,)``."""
        d = np.asarray(points, dtype=np.float64) - np.asarray(self.center)
        cos, sin = math.cos(self.yaw), math.sin(self.yaw)
        u = cos * d[:, 0] + sin * d[:, 1]
        v = -sin * d[:, 0] + cos * d[:, 1]
        a, b, c = self.semi_axes
        return (u / a) ** 2 + (v / b) ** 2 + (d[:, 2] / c) ** 2

    def half_extent(self) -> tuple[float, float, float]:
        """Half widths (mm) of the axis-aligned bounding box."""
        a, b, c = self.semi_axes
        cos, sin = math.cos(self.yaw), math.sin(self.yaw)
        return (math.hypot(a * cos, b * sin), math.hypot(a * sin, b * cos), c)


def _yaw_matrix(yaw: float) -> np.ndarray:
    cos, sin = math.cos(yaw), math.sin(yaw)
    # local (x', y', z) -> world offset; the inverse of the rotation used by Ellipsoid.r2
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def local_to_world(ell: Ellipsoid, local: np.ndarray) -> np.ndarray:
    """Map a point given in the ellipsoid's rotated frame (mm from its centre) to world mm."""
    return np.asarray(ell.center) + _yaw_matrix(ell.yaw) @ np.asarray(local, dtype=np.float64)


@dataclass(frozen=True)
class Anatomy:
    """One case's body and organ geometry plus its tissue HU values.

    Attributes:
        body: ``(a, b)`` outer semi-axes (mm) of the torso's elliptic cross-section.
        fat_mm: subcutaneous fat thickness.
        muscle_mm: muscle wall thickness.
        organs: name -> ellipsoid (``liver``, ``spleen``, ``kidney_right``/``kidney_left`` unless
            removed, ``lung_right``, ``lung_left``, ``heart``, ``aorta``, ``stomach``,
            ``vertebral_body``, ``vertebral_arch``, ``spinous_process``, ``spinal_canal``).
        hu: tissue id -> base HU.
        disc_z: z (mm) of the lower face of each intervertebral disc.
        rib_z: z (mm) of the lower face of each rib.
        gas: bowel gas bubbles.
        ascites: fluid compartments (empty without ascites).
    """

    body: tuple[float, float]
    fat_mm: float
    muscle_mm: float
    organs: dict[str, Ellipsoid]
    hu: dict[int, float] = field(hash=False)
    disc_z: tuple[float, ...] = ()
    rib_z: tuple[float, ...] = ()
    gas: tuple[Ellipsoid, ...] = ()
    ascites: tuple[Ellipsoid, ...] = ()

    @property
    def interior(self) -> tuple[float, float]:
        """Semi-axes (mm) of the body cavity inside the muscle wall."""
        t = self.fat_mm + self.muscle_mm
        return (self.body[0] - t, self.body[1] - t)

    def in_interior(self, points: np.ndarray, margin: float) -> np.ndarray:
        """Whether ``(N, 3)`` points lie at least ``margin`` mm inside the body cavity. ``(N,)`` bool."""
        a, b = self.interior
        p = np.asarray(points, dtype=np.float64)
        return (p[:, 0] / (a - margin)) ** 2 + (p[:, 1] / (b - margin)) ** 2 <= 1.0


def effusion_region(lung: Ellipsoid, amount: str) -> tuple[float, float]:
    """Where a pleural effusion fills a lung: voxels with ``y < y_level`` and ``z < z_max`` (mm).

    A supine patient's fluid layers posteriorly (low y) under a coronal fluid level; more fluid
    raises the level and reaches higher up the chest.
    """
    frac = {"small": 0.25, "moderate": 0.4, "large": 0.55}[amount]
    cx, cy, cz = lung.center
    _, b, c = lung.semi_axes
    return cy - b + 2.0 * b * frac, cz + c * (2.0 * frac - 0.7)


# ----------------------------------------------------------------------------- sampling

# Nominal layout (mm, before the per-case body scale): centre, semi-axes, yaw.
_LAYOUT: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], float]] = {
    "lung_right": ((-78, -5, 80), (56, 80, 105), 0.0),
    "lung_left": ((80, -5, 85), (54, 78, 100), 0.0),
    "heart": ((22, 32, 52), (58, 44, 50), 0.5),
    "liver": ((-52, 5, -35), (82, 78, 72), -0.15),
    "stomach": ((52, 38, -20), (40, 32, 42), 0.3),
    "spleen": ((86, -30, -25), (28, 52, 55), 0.6),
    "kidney_right": ((-72, -48, -100), (28, 30, 55), -0.35),
    "kidney_left": ((72, -48, -88), (28, 30, 55), 0.35),
}
_CYLINDERS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "aorta": ((14, -28), (12, 12)),
    "vertebral_body": ((0, -52), (20, 16)),
    "vertebral_arch": ((0, -78), (16, 14)),
    "spinous_process": ((0, -98), (6, 13)),
    "spinal_canal": ((0, -77), (8, 7)),
}
_CYLINDER_C = 1e5  # z semi-axis of an "infinite" cylinder


def sample_anatomy(
    rng: np.random.Generator,
    *,
    organ_scale: Mapping[str, tuple[float, float, float]] | None = None,
    absent: tuple[str, ...] = (),
    steatosis: bool = False,
    contrast: bool = False,
    ascites: str | None = None,
) -> Anatomy:
    """Draw one case's body, organs and tissue HU values.

    Args:
        rng: the case's anatomy random stream.
        organ_scale: extra per-axis scale of named organs (hepatomegaly, splenomegaly, cardiomegaly).
        absent: organs not present (e.g. ``("kidney_left",)`` after nephrectomy).
        steatosis: the liver is fatty (darker than the spleen).
        contrast: intravenous contrast (bright aorta and heart blood pool).
        ascites: ``"small"`` / ``"moderate"`` free fluid, or None.

    Returns:
        The anatomy, in RAS world mm around the origin.
    """
    organ_scale = organ_scale or {}
    s = rng.uniform(0.9, 1.06)  # body habitus: scales positions and sizes together
    body = (165.0 * s * rng.uniform(0.95, 1.05), 115.0 * s * rng.uniform(0.93, 1.07))
    fat, muscle = rng.uniform(10, 24), rng.uniform(8, 13)

    organs: dict[str, Ellipsoid] = {}
    for name, (center, axes, yaw) in _LAYOUT.items():
        jitter = np.clip(rng.normal(0.0, 4.0, 3), -9, 9)
        size = rng.uniform(0.92, 1.08, 3)
        ell = Ellipsoid(
            center=tuple(float(v) for v in np.asarray(center) * s + jitter),  # type: ignore[arg-type]
            semi_axes=tuple(float(v) for v in np.asarray(axes) * s * size),  # type: ignore[arg-type]
            yaw=yaw + float(rng.normal(0.0, 0.08)),
        )
        if name in organ_scale:
            ell = _enlarge(ell, organ_scale[name], name)
        if name not in absent:
            organs[name] = ell
    for name, ((cx, cy), (a, b)) in _CYLINDERS.items():
        organs[name] = Ellipsoid((cx * s, cy * s, 0.0), (a * s, b * s, _CYLINDER_C))

    hu = {t: float(rng.uniform(lo, hi)) for t, (lo, hi) in _HU_RANGE.items()}
    if contrast:
        hu[AORTA] = hu[HEART] = float(rng.uniform(*_CONTRAST_HU))
    if steatosis:
        hu[LIVER] = float(rng.uniform(*_STEATOSIS_HU))

    return Anatomy(
        body=body,
        fat_mm=fat,
        muscle_mm=muscle,
        organs=organs,
        hu=hu,
        disc_z=tuple(np.arange(-400.0, 400.0, 30.0 * s) + rng.uniform(0, 30)),
        rib_z=tuple(np.arange(-70.0, 400.0, 26.0 * s) + rng.uniform(0, 20)),
        gas=_sample_gas(rng, s),
        ascites=_ascites_compartments(organs["liver"], s, ascites) if ascites else (),
    )


def _enlarge(ell: Ellipsoid, scale: tuple[float, float, float], name: str) -> Ellipsoid:
    """Scale an organ, growing it mostly caudally/anteriorly as enlarged organs do."""
    grown = ell.scaled(scale)
    cx, cy, cz = ell.center
    dz = (grown.semi_axes[2] - ell.semi_axes[2]) * (0.6 if name != "heart" else 0.0)
    dy = (grown.semi_axes[1] - ell.semi_axes[1]) * (0.4 if name == "spleen" else 0.0)
    return replace(grown, center=(cx, cy + dy, cz - dz))


def _sample_gas(rng: np.random.Generator, s: float) -> tuple[Ellipsoid, ...]:
    n = int(rng.integers(3, 8))
    out = []
    for _ in range(n):
        r = rng.uniform(6, 14)
        center = (rng.uniform(-90, 90) * s, rng.uniform(-15, 60) * s, rng.uniform(-160, -70))
        out.append(Ellipsoid(center, (r * rng.uniform(0.8, 1.3), r, r * rng.uniform(0.7, 1.2))))
    return tuple(out)


def _ascites_compartments(liver: Ellipsoid, s: float, amount: str) -> tuple[Ellipsoid, ...]:
    k = 1.0 if amount == "small" else 1.35
    return (
        liver.scaled(1.0 + 0.1 * k),  # perihepatic rim; the liver is painted over its core
        Ellipsoid((0.0, 20.0 * s, -140.0), (85 * s * k, 50 * s * k, 38 * k)),  # pelvis
        Ellipsoid((-105.0 * s, 5.0 * s, -95.0), (16 * k, 38 * k, 60 * k)),  # right paracolic gutter
        Ellipsoid((105.0 * s, 5.0 * s, -95.0), (16 * k, 38 * k, 60 * k)),  # left paracolic gutter
    )

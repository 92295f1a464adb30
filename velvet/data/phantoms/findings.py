"""The learnable signal of a phantom: a case's findings (focal lesions + global abnormalities).

Probabilities are chosen so that each finding is common (every label is positive in roughly 8-40%
of cases) while combinations are rare: with 0-3 lesions of continuous size in six organs plus
seven independent global findings, only ~5% of cases are entirely normal, and a report (which gives
every lesion's organ, size in mm and density) pins its volume down to a handful of candidates.
Lesions are placed where they stay visible: inside their organ, away from the organs painted
over it, above any pleural fluid, and mostly >= 15 mm so that they survive downsampling to ~6 mm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from velvet.data.phantoms.anatomy import Anatomy, Ellipsoid, effusion_region, local_to_world

__all__ = [
    "DENSITIES",
    "FIELD_Z_MM",
    "LABEL_NAMES",
    "LESION_ORGANS",
    "Findings",
    "Lesion",
    "place_lesions",
    "sample_global_findings",
]

LESION_ORGANS = ("liver", "spleen", "kidney_right", "kidney_left", "lung_right", "lung_left")
DENSITIES = ("hypodense", "hyperdense", "calcified", "soft_tissue")
LABEL_NAMES = (
    "Liver lesion",
    "Splenic lesion",
    "Renal lesion",
    "Lung nodule",
    "Hepatomegaly",
    "Hepatic steatosis",
    "Splenomegaly",
    "Pleural effusion",
    "Ascites",
    "Cardiomegaly",
    "Nephrectomy",
)

Density = Literal["hypodense", "hyperdense", "calcified", "soft_tissue"]
Side = Literal["left", "right", "bilateral"]

_N_LESIONS_P = (0.15, 0.35, 0.30, 0.20)  # P(0..3 lesions)
_ORGAN_P = {
    "liver": 0.30,
    "spleen": 0.12,
    "kidney_right": 0.14,
    "kidney_left": 0.14,
    "lung_right": 0.15,
    "lung_left": 0.15,
}
_DIAMETER_MM = {"liver": (15, 60), "spleen": (15, 45), "kidney": (15, 40), "lung": (10, 50)}
_LESION_HU = {
    "hypodense": (0.0, 15.0),
    "hyperdense": (130.0, 190.0),
    "calcified": (450.0, 800.0),
    "soft_tissue": (20.0, 45.0),
}
# Organs painted over (or not painted under) each lesion organ: a lesion must avoid them.
_BLOCKERS = {
    "liver": ("heart", "kidney_right", "aorta", "vertebral_body"),
    "spleen": ("kidney_left", "stomach", "aorta", "vertebral_body"),
    "kidney_right": ("aorta", "vertebral_body"),
    "kidney_left": ("aorta", "vertebral_body"),
    "lung_right": ("heart", "liver", "aorta", "vertebral_body", "vertebral_arch"),
    "lung_left": ("heart", "spleen", "aorta", "vertebral_body", "vertebral_arch"),
}
_RIB_MARGIN_MM = 15.0  # ribs and the muscle wall line the cavity's outer 11 mm
# Lesions stay within |z| <= this, so every grid covering 300 mm in z (the designed field of view,
# e.g. 64 x 5 mm or 200 x 1.5 mm) shows all of them; lung apices may lie outside the field.
FIELD_Z_MM = 140.0


@dataclass(frozen=True)
class Lesion:
    """One focal lesion.

    Attributes:
        organ: one of :data:`LESION_ORGANS`.
        diameter_mm: largest diameter, as reported.
        minor_mm: second diameter, as reported in "A x B mm".
        density: ``hypodense`` (cystic), ``hyperdense`` (enhancing), ``calcified`` or
            ``soft_tissue`` (lung nodule / mass).
        hu: the lesion's HU.
        shape: its ellipsoid (world mm).
        location: sub-organ location words (``right lobe``, ``upper pole``, ``lower lobe``, ``""``).
    """

    organ: str
    diameter_mm: int
    minor_mm: int
    density: Density
    hu: float
    shape: Ellipsoid
    location: str

    @property
    def size_word(self) -> str:
        """``small`` (< 20 mm), ``medium`` (20-39 mm) or ``large`` (>= 40 mm)."""
        return "small" if self.diameter_mm < 20 else "medium" if self.diameter_mm < 40 else "large"

    @property
    def side(self) -> str | None:
        """``left``/``right`` for paired organs, else None."""
        return self.organ.rsplit("_", 1)[1] if "_" in self.organ else None


@dataclass(frozen=True)
class Findings:
    """Everything a report states about a case.

    Attributes:
        lesions: focal lesions, largest first.
        hepatomegaly / steatosis / splenomegaly / cardiomegaly: global findings.
        effusion: pleural effusion side, or None; ``effusion_amount``: small / moderate / large.
        ascites: ``small`` / ``moderate`` free fluid, or None.
        nephrectomy: side of a surgically absent kidney, or None.
        contrast: intravenous contrast given (technique, not a finding).
        liver_span_cm / spleen_length_cm: craniocaudal liver span and splenic length.
    """

    lesions: tuple[Lesion, ...] = ()
    hepatomegaly: bool = False
    steatosis: bool = False
    splenomegaly: bool = False
    cardiomegaly: bool = False
    effusion: Side | None = None
    effusion_amount: str | None = None
    ascites: str | None = None
    nephrectomy: Literal["left", "right"] | None = None
    contrast: bool = False
    liver_span_cm: int = 0
    spleen_length_cm: int = 0

    def lesions_in(self, *organs: str) -> tuple[Lesion, ...]:
        """The lesions of the given organs."""
        return tuple(les for les in self.lesions if les.organ in organs)

    def labels(self) -> dict[str, int]:
        """Binary finding labels, keyed by :data:`LABEL_NAMES` in that order."""
        values = (
            bool(self.lesions_in("liver")),
            bool(self.lesions_in("spleen")),
            bool(self.lesions_in("kidney_right", "kidney_left")),
            bool(self.lesions_in("lung_right", "lung_left")),
            self.hepatomegaly,
            self.steatosis,
            self.splenomegaly,
            self.effusion is not None,
            self.ascites is not None,
            self.cardiomegaly,
            self.nephrectomy is not None,
        )
        return {name: int(v) for name, v in zip(LABEL_NAMES, values, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lesion geometry in mm, yaw in radians)."""
        d = asdict(self)
        for les in d["lesions"]:
            les["hu"] = round(les["hu"], 1)
        return d


def sample_global_findings(rng: np.random.Generator) -> Findings:
    """Draw the global (non-focal) findings of a case; lesions come later from :func:`place_lesions`."""
    effusion = None
    amount = None
    if rng.random() < 0.2:
        effusion = str(rng.choice(["right", "left", "bilateral"], p=[0.35, 0.3, 0.35]))
        amount = str(rng.choice(["small", "moderate", "large"], p=[0.45, 0.35, 0.2]))
    return Findings(
        hepatomegaly=bool(rng.random() < 0.15),
        steatosis=bool(rng.random() < 0.12),
        splenomegaly=bool(rng.random() < 0.15),
        cardiomegaly=bool(rng.random() < 0.15),
        effusion=effusion,  # type: ignore[arg-type]
        effusion_amount=amount,
        ascites=str(rng.choice(["small", "moderate"])) if rng.random() < 0.12 else None,
        nephrectomy=str(rng.choice(["left", "right"])) if rng.random() < 0.08 else None,  # type: ignore[arg-type]
        contrast=bool(rng.random() < 0.5),
    )


def place_lesions(rng: np.random.Generator, findings: Findings, anatomy: Anatomy) -> Findings:
    """Draw 0-3 lesions and place them visibly inside ``anatomy``; also fill in organ sizes.

    Returns:
        ``findings`` with ``lesions`` (largest first), ``liver_span_cm`` and ``spleen_length_cm`` set.
    """
    organs = [o for o in LESION_ORGANS if o in anatomy.organs]
    weights = np.array([_ORGAN_P[o] for o in organs])
    n = int(rng.choice(len(_N_LESIONS_P), p=_N_LESIONS_P))
    lesions: list[Lesion] = []
    for _ in range(n):
        organ = str(rng.choice(organs, p=weights / weights.sum()))
        lesion = _place_one(rng, organ, findings, anatomy, lesions)
        if lesion is not None:
            lesions.append(lesion)
    lesions.sort(key=lambda les: -les.diameter_mm)
    liver, spleen = anatomy.organs["liver"], anatomy.organs["spleen"]
    return replace(
        findings,
        lesions=tuple(lesions),
        liver_span_cm=round(2 * liver.semi_axes[2] / 10),
        spleen_length_cm=round(2 * max(spleen.semi_axes) / 10),
    )


def _draw_density(rng: np.random.Generator, organ: str, steatosis: bool) -> Density:
    if organ.startswith("lung"):
        return "soft_tissue" if rng.random() < 0.8 else "calcified"
    if organ == "liver" and steatosis:
        # a cyst in a fatty liver has almost no contrast: only dense lesions there
        return "hyperdense" if rng.random() < 0.65 else "calcified"
    return str(rng.choice(["hypodense", "hyperdense", "calcified"], p=[0.55, 0.3, 0.15]))  # type: ignore[return-value]


def _place_one(
    rng: np.random.Generator, organ: str, findings: Findings, anatomy: Anatomy, others: list[Lesion]
) -> Lesion | None:
    density = _draw_density(rng, organ, findings.steatosis)
    lo, hi = _DIAMETER_MM[organ.split("_")[0]]
    if density == "calcified" and organ.startswith("lung"):
        hi = 20  # calcified granulomas are small
    diameter = float(rng.uniform(lo, hi))
    host = anatomy.organs[organ]
    for attempt in range(40):
        if attempt and attempt % 10 == 0:
            diameter = max(lo, diameter * 0.8)  # a big lesion that does not fit: try it smaller
        r = diameter / 2
        free = np.maximum(np.asarray(host.semi_axes) - r - 3.0, 0.0)
        direction = rng.normal(size=3)
        local = direction / (np.linalg.norm(direction) + 1e-12) * rng.random() ** (1 / 3) * free
        center = local_to_world(host, local)
        if _fits(center, r, organ, findings, anatomy, others):
            ratios = rng.uniform(0.75, 1.0, 2)
            shape = Ellipsoid(
                center=tuple(float(c) for c in center),  # type: ignore[arg-type]
                semi_axes=(r, r * float(ratios[0]), r * float(ratios[1])),
                yaw=float(rng.uniform(0, math.pi)),
            )
            return Lesion(
                organ=organ,
                diameter_mm=round(diameter),
                minor_mm=round(diameter * float(ratios[0])),
                density=density,
                hu=float(rng.uniform(*_LESION_HU[density])),
                shape=shape,
                location=_location(host, local, organ),
            )
    return None


def _fits(
    center: np.ndarray, r: float, organ: str, findings: Findings, anatomy: Anatomy, others: list[Lesion]
) -> bool:
    """Whether a sphere of radius ``r`` at ``center`` stays inside the visible part of ``organ``."""
    offsets = np.vstack([np.zeros(3), np.eye(3) * r, -np.eye(3) * r])
    points = center + offsets  # (7, 3): centre and the six extreme points
    host = anatomy.organs[organ]
    if np.any(host.r2(points) > 0.95) or not np.all(anatomy.in_interior(points, _RIB_MARGIN_MM)):
        return False
    if np.any(np.abs(points[:, 2]) > FIELD_Z_MM):
        return False
    for name in _BLOCKERS[organ]:
        blocker = anatomy.organs.get(name)
        if blocker is not None and np.any(blocker.scaled(1.1).r2(points) <= 1.0):
            return False
    side = organ.split("_")[-1]
    if organ.startswith("lung") and findings.effusion in (side, "bilateral"):
        y_level, z_max = effusion_region(host, findings.effusion_amount or "small")
        if center[1] - r < y_level + 4 and center[2] - r < z_max + 4:
            return False
    return all(
        np.linalg.norm(center - np.asarray(o.shape.center)) > r + o.diameter_mm / 2 + 4 for o in others
    )


def _location(host: Ellipsoid, local: np.ndarray, organ: str) -> str:
    """Sub-organ location words from the position in the host's frame."""
    a, _, c = host.semi_axes
    if organ == "liver":
        # the left lobe lies towards the patient's left (+x), medial to the right lobe
        return "left lobe" if local[0] > 0.3 * a else "right lobe"
    if organ.startswith("kidney"):
        return (
            "upper pole" if local[2] > c / 3 else "lower pole" if local[2] < -c / 3 else "interpolar region"
        )
    if organ.startswith("lung"):
        return "upper lobe" if local[2] > 0 else "lower lobe"
    return ""

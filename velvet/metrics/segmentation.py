"""Segmentation metrics in millimetres: Dice, normalised surface Dice (NSD) and HD95, per class and case.

Every number is computed on label maps (argmax predictions vs references) for each case and each
foreground class, with the case's **voxel spacing in mm**, so NSD's tolerance and HD95 are physical
distances whatever the grid (the reference code passed no spacing and so measured voxels). The
surface computations are MONAI's (:func:`monai.metrics.compute_surface_dice`,
:func:`monai.metrics.compute_hausdorff_distance`); Dice is counted directly.

Conventions (recorded in :data:`METRIC_DEFINITIONS`, which tasks write beside their results):

- a class absent from both the reference and the prediction of a case is *not scored* for that case
  (NaN, left out of means) rather than counted as a perfect 1;
- a class present in one of the two only scores Dice 0 and NSD 0; its HD95 is undefined (NaN) and
  counted in ``hd95_undefined``;
- the per-class value is the mean over the cases that score it; the mean over classes is the mean of
  the per-class values (background excluded).

:class:`SegmentationMetrics` accumulates per-case rows and is reset by its owner every epoch (the
reference never reset its metric objects, so validation numbers mixed epochs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "METRIC_DEFINITIONS",
    "CaseScores",
    "SegmentationMetrics",
    "case_scores",
    "dice_per_class",
]

METRIC_DEFINITIONS: dict[str, str] = {
    "dice": "2|P∩R| / (|P| + |R|) per case and foreground class on argmax labels",
    "nsd": "normalised surface Dice: fraction of both boundaries (edge voxels, 6-connected erosion) "
    "within the tolerance of the other boundary, distances in mm (MONAI compute_surface_dice)",
    "hd95": "symmetric 95th-percentile Hausdorff distance between boundaries in mm "
    "(MONAI compute_hausdorff_distance, percentile 95)",
    "empty": "class absent from reference and prediction: not scored (NaN, left out of means); "
    "absent from one only: Dice 0, NSD 0, HD95 undefined (counted in hd95_undefined)",
    "averaging": "per class: mean over scored cases; mean: mean over foreground classes of the per-class means",
}


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(H, W, D)`` int labels -> ``(1, C, H, W, D)`` uint8 one-hot."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).permute(3, 0, 1, 2).unsqueeze(0).to(torch.uint8)


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice of every class of one case (NaN where the class is in neither label map).

    Args:
        pred: ``(H, W, D)`` predicted class ids.
        target: ``(H, W, D)`` reference class ids.
        num_classes: C, background included.

    Returns:
        ``(C,)`` float64 (index 0 is the background's).
    """
    n = num_classes
    flat_p, flat_t = pred.reshape(-1).long(), target.reshape(-1).long()
    both = torch.bincount(flat_t[flat_p == flat_t], minlength=n)[:n].double()
    size_p = torch.bincount(flat_p, minlength=n)[:n].double()
    size_t = torch.bincount(flat_t, minlength=n)[:n].double()
    denom = size_p + size_t
    return torch.where(denom > 0, 2 * both / denom.clamp_min(1), torch.full_like(denom, math.nan))


@dataclass
class CaseScores:
    """The scores of one case, ``(C - 1,)`` float64 arrays over the foreground classes."""

    case_id: str
    dice: np.ndarray
    nsd: np.ndarray
    hd95: np.ndarray
    present: np.ndarray  # class in the reference or the prediction (scored)
    spacing: tuple[float, float, float]


def case_scores(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    spacing: Sequence[float],
    *,
    nsd_tolerance_mm: float | Sequence[float] = 2.0,
    case_id: str = "",
    surface: bool = True,
) -> CaseScores:
    """Dice, NSD and HD95 of every foreground class of one case.

    Args:
        pred: ``(H, W, D)`` predicted class ids.
        target: ``(H, W, D)`` reference class ids on the same grid.
        num_classes: C, background (id 0) included.
        spacing: the grid's voxel size in mm along H, W, D.
        nsd_tolerance_mm: NSD tolerance in mm, one for all classes or one per foreground class.
        case_id: the case's name (kept in the row).
        surface: also compute NSD and HD95 (False: Dice only, NaN elsewhere; much cheaper).

    Returns:
        A :class:`CaseScores` (see the module docstring for empty classes).

    Raises:
        ValueError: shapes differ, a label is outside ``0..C-1``, or a spacing/tolerance is not positive.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must be (H, W, D) of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    for name, t in (("prediction", pred), ("reference", target)):
        low, high = int(t.min()), int(t.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"case {case_id!r}: {name} has label {high if high >= num_classes else low}, outside 0..{num_classes - 1}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"case {case_id!r}: spacing must be 3 positive mm values, got {spacing}")
    k = num_classes - 1
    tolerances = [float(nsd_tolerance_mm)] * k if isinstance(nsd_tolerance_mm, (int, float)) else [float(t) for t in nsd_tolerance_mm]
    if len(tolerances) != k or any(t < 0 or not math.isfinite(t) for t in tolerances):
        raise ValueError(f"nsd_tolerance_mm needs one non-negative value or {k} (one per foreground class), got {nsd_tolerance_mm}")
    pred, target = pred.cpu(), target.cpu()
    dice = dice_per_class(pred, target, num_classes)[1:].numpy()
    present = ~np.isnan(dice)
    nsd = np.full(k, math.nan)
    hd95 = np.full(k, math.nan)
    classes = np.flatnonzero(present)
    if surface and classes.size:
        import warnings

        from monai.metrics import compute_hausdorff_distance, compute_surface_dice

        p1, t1 = _one_hot(pred, num_classes), _one_hot(target, num_classes)
        keep = torch.as_tensor(classes + 1)  # only the scored classes: the others cost time for NaN
        p1, t1 = p1[:, keep], t1[:, keep]
        with warnings.catch_warnings():  # an empty side is expected and handled below
            warnings.simplefilter("ignore")
            nsd[classes] = compute_surface_dice(
                p1, t1, [tolerances[c] for c in classes], include_background=True, spacing=list(spacing)
            )[0].double().numpy()
            hd = compute_hausdorff_distance(p1, t1, include_background=True, percentile=95, spacing=list(spacing))[0]
        hd = hd.double().numpy()
        sizes_p = p1.flatten(2).sum(-1)[0].numpy()
        sizes_t = t1.flatten(2).sum(-1)[0].numpy()
        one_sided = (sizes_p == 0) | (sizes_t == 0)
        hd[one_sided | ~np.isfinite(hd)] = math.nan
        hd95[classes] = hd
        nsd[classes[one_sided]] = 0.0
    return CaseScores(case_id, dice, nsd, hd95, present, spacing)  # type: ignore[arg-type]


@dataclass
class SegmentationMetrics:
    """Per-case Dice / NSD / HD95 accumulated over an epoch; :meth:`reset` at every epoch start.

    Args:
        class_names: names of all C classes, background (id 0) first.
        nsd_tolerance_mm: NSD tolerance in mm (one value, or one per foreground class).
        surface: compute NSD and HD95 (False: Dice only).
    """

    class_names: Sequence[str]
    nsd_tolerance_mm: float | Sequence[float] = 2.0
    surface: bool = True
    cases: list[CaseScores] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def reset(self) -> None:
        """Forget every case (call at the start of each validation / test epoch)."""
        self.cases = []

    def update(self, pred: torch.Tensor, target: torch.Tensor, spacing: Sequence[float], case_id: str = "") -> CaseScores:
        """Score one case (``(H, W, D)`` label maps, spacing in mm) and keep its row."""
        row = case_scores(
            pred, target, self.num_classes, spacing, nsd_tolerance_mm=self.nsd_tolerance_mm, case_id=case_id, surface=self.surface
        )
        self.cases.append(row)
        return row

    def extend(self, rows: Sequence[CaseScores]) -> None:
        """Add rows scored elsewhere (other ranks)."""
        self.cases.extend(rows)

    def per_class(self) -> list[dict[str, Any]]:
        """One dict per foreground class: ``class``, ``dice``, ``nsd``, ``hd95`` (means over scored
        cases; NaN when no case scores it), ``n`` (scored cases) and ``hd95_undefined``."""
        if not self.cases:
            raise ValueError("no case was scored: nothing to summarise")
        dice = np.stack([c.dice for c in self.cases])
        nsd = np.stack([c.nsd for c in self.cases])
        hd = np.stack([c.hd95 for c in self.cases])
        present = np.stack([c.present for c in self.cases])
        rows = []
        for j, name in enumerate(self.class_names[1:]):
            n = int(present[:, j].sum())
            rows.append(
                {
                    "class": name,
                    "dice": _mean(dice[:, j]),
                    "nsd": _mean(nsd[:, j]),
                    "hd95": _mean(hd[:, j]),
                    "n": n,
                    "hd95_undefined": int((present[:, j] & np.isnan(hd[:, j])).sum()) if self.surface else n,
                }
            )
        return rows

    def summary(self) -> dict[str, float]:
        """``{"dice", "nsd", "hd95"}``: means over foreground classes of the per-class means (classes
        no case scores are left out), plus ``cases``."""
        rows = self.per_class()
        out = {key: _mean(np.array([r[key] for r in rows])) for key in ("dice", "nsd", "hd95")}
        out["cases"] = float(len(self.cases))
        return out


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan

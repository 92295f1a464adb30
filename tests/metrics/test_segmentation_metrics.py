"""Segmentation metrics against naive numpy code and hand cases, with anisotropic spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from velvet.metrics.segmentation import SegmentationMetrics, case_scores, dice_per_class

# ----------------------------------------------------------------------------- naive references


def naive_dice(p: np.ndarray, t: np.ndarray) -> float:
    if p.sum() + t.sum() == 0:
        return math.nan
    return 2.0 * np.logical_and(p, t).sum() / (p.sum() + t.sum())


def border_points(mask: np.ndarray, spacing) -> np.ndarray:
    """World (mm) positions of the voxels of ``mask`` that touch a non-mask 6-neighbour or the edge."""
    padded = np.pad(mask, 1)
    interior = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    border = mask & ~interior
    return np.argwhere(border) * np.asarray(spacing, float)


def nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each point of a, the distance to the closest point of b (brute force)."""
    if len(b) == 0:
        return np.full(len(a), np.inf)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(1)


def naive_nsd(p, t, spacing, tol) -> float:
    bp, bt = border_points(p, spacing), border_points(t, spacing)
    if len(bp) + len(bt) == 0:
        return math.nan
    return ((nearest(bp, bt) <= tol).sum() + (nearest(bt, bp) <= tol).sum()) / (len(bp) + len(bt))


def naive_hd95(p, t, spacing) -> float:
    bp, bt = border_points(p, spacing), border_points(t, spacing)
    if len(bp) == 0 or len(bt) == 0:
        return math.nan
    return max(np.percentile(nearest(bp, bt), 95), np.percentile(nearest(bt, bp), 95))


def blob(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return (((grid - np.array(centre, float)[:, None, None, None]) / np.array(radii, float)[:, None, None, None]) ** 2).sum(0) <= 1


# ----------------------------------------------------------------------------- hand cases


def test_dice_hand_case():
    t = torch.zeros(4, 4, 4, dtype=torch.long)
    p = torch.zeros_like(t)
    t[0, 0, :4] = 1  # 4 voxels of class 1
    p[0, 0, :2] = 1  # 2 of them predicted
    p[3, 3, 3] = 2  # class 2 only in the prediction
    d = dice_per_class(p, t, 4)
    assert d[1].item() == pytest.approx(2 * 2 / (2 + 4))
    assert d[2].item() == 0.0
    assert math.isnan(d[3].item())  # in neither: not scored


def test_surface_metrics_hand_case_in_mm():
    # two slabs one slice apart along an axis of 5 mm voxels: every boundary voxel is 5 mm from the other
    t = np.zeros((6, 6, 6), bool)
    p = np.zeros_like(t)
    t[:, :, 2] = True
    p[:, :, 3] = True
    spacing = (1.0, 1.0, 5.0)
    s = case_scores(torch.as_tensor(p).long(), torch.as_tensor(t).long(), 2, spacing, nsd_tolerance_mm=4.9)
    assert s.dice[0] == 0.0
    assert s.nsd[0] == 0.0  # 5 mm > 4.9 mm
    assert s.hd95[0] == pytest.approx(5.0)
    s = case_scores(torch.as_tensor(p).long(), torch.as_tensor(t).long(), 2, spacing, nsd_tolerance_mm=5.0)
    assert s.nsd[0] == 1.0
    # the same voxels along an axis of 1 mm: the distance is in mm, not voxels
    s = case_scores(torch.as_tensor(p).long(), torch.as_tensor(t).long(), 2, (5.0, 5.0, 1.0), nsd_tolerance_mm=2.0)
    assert s.nsd[0] == 1.0 and s.hd95[0] == pytest.approx(1.0)


def test_one_sided_and_absent_classes():
    t = torch.zeros(8, 8, 8, dtype=torch.long)
    p = torch.zeros_like(t)
    t[2:4, 2:4, 2:4] = 1  # class 1 missed entirely
    p[5:7, 5:7, 5:7] = 2  # class 2 false positive
    s = case_scores(p, t, 4, (1.0, 1.0, 1.0))
    assert list(s.dice[:2]) == [0.0, 0.0] and list(s.nsd[:2]) == [0.0, 0.0]
    assert np.isnan(s.hd95[:2]).all()
    assert np.isnan(s.dice[2]) and np.isnan(s.nsd[2]) and not s.present[2]
    m = SegmentationMetrics(["bg", "a", "b", "c"])
    m.extend([s])
    rows = {r["class"]: r for r in m.per_class()}
    assert rows["a"]["hd95_undefined"] == 1 and rows["c"]["n"] == 0 and math.isnan(rows["c"]["dice"])
    assert m.summary()["dice"] == 0.0  # the mean leaves out the class no case scores, never counts it as 1


# ----------------------------------------------------------------------------- random cases vs naive code


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cases_match_naive_code(seed):
    rng = np.random.default_rng(seed)
    shape = (14, 12, 10)
    spacing = tuple(rng.uniform(0.5, 3.0, 3).round(2))
    tol = float(rng.uniform(1.0, 4.0))
    t = np.zeros(shape, np.int64)
    p = np.zeros(shape, np.int64)
    for c in (1, 2):
        centre = rng.uniform(3, 8, 3)
        radii = rng.uniform(2, 4, 3)
        t[blob(shape, centre, radii)] = c
        p[blob(shape, centre + rng.normal(0, 1, 3), radii * rng.uniform(0.7, 1.3, 3))] = c
    # speckle noise: ragged, non-convex boundaries
    noise = ndimage.binary_dilation(rng.random(shape) > 0.97)
    p[noise & (p == 0)] = 1
    s = case_scores(torch.as_tensor(p), torch.as_tensor(t), 3, spacing, nsd_tolerance_mm=tol)
    for c in (1, 2):
        pc, tc = p == c, t == c
        assert s.dice[c - 1] == pytest.approx(naive_dice(pc, tc), abs=1e-12)
        assert s.nsd[c - 1] == pytest.approx(naive_nsd(pc, tc, spacing, tol), abs=1e-6)
        assert s.hd95[c - 1] == pytest.approx(naive_hd95(pc, tc, spacing), rel=1e-5)


def test_metrics_reset_and_averaging():
    m = SegmentationMetrics(["bg", "a", "b"], surface=False)
    t = torch.zeros(4, 4, 4, dtype=torch.long)
    t[:2] = 1
    t[2:] = 2
    m.update(t.clone(), t, (1, 1, 1))  # perfect
    p = t.clone()
    p[p == 2] = 1  # class b lost, a half right
    m.update(p, t, (1, 1, 1))
    rows = m.per_class()
    a = (1.0 + naive_dice((p == 1).numpy(), (t == 1).numpy())) / 2
    assert rows[0]["dice"] == pytest.approx(a) and rows[1]["dice"] == pytest.approx(0.5)
    assert m.summary()["dice"] == pytest.approx((a + 0.5) / 2)
    m.reset()
    with pytest.raises(ValueError, match="no case"):
        m.summary()


def test_bad_inputs_are_refused():
    t = torch.zeros(4, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="label 5"):
        case_scores(t + 5, t, 3, (1, 1, 1), case_id="c1")
    with pytest.raises(ValueError, match="spacing"):
        case_scores(t, t, 3, (1, 0, 1))
    with pytest.raises(ValueError, match="same shape|one shape"):
        case_scores(t[:3], t, 3, (1, 1, 1))

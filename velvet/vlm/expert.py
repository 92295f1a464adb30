"""Expert knowledge for the prompt: what a segmentation says about a scan, as a line of text.

An idea of VILA-M3: run a segmentation model first and give its findings to the language model in
words. From a label map (and optionally the scan in HU) this writes organ volumes in mL, the volume
of a sided class (a pleural effusion) on each side, and the focal lesions (connected components of
a lesion class) with their largest extent in mm, the organ around them, the patient side and their
mean HU. Sides come from world coordinates: with the voxel -> RAS ``affine``, ``+x`` points to the
patient's left, so a component whose mean RAS ``x`` is below the body's is on the patient's right. Without an affine the grid is taken as RAS-aligned (first axis = RAS ``x``).
Deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["expert_findings", "expert_text"]


def expert_findings(
    label_map: np.ndarray,
    spacing: Sequence[float] | None,
    class_names: Mapping[int, str],
    *,
    affine: np.ndarray | None = None,
    image: np.ndarray | None = None,
    lesion_classes: Sequence[str] = ("lesion",),
    sided_classes: Sequence[str] = ("pleural_effusion",),
    min_lesion_voxels: int = 1,
) -> dict[str, object]:
    """Organ volumes, sided volumes and lesions of a label map.

    Args:
        label_map: ``(H, W, D)`` integer classes.
        spacing: voxel size in mm ``(sx, sy, sz)``; None takes it from ``affine``.
        class_names: class id -> name (0 = background is skipped).
        affine: ``(4, 4)`` voxel -> RAS mm matrix (sides and, without ``spacing``, voxel size);
            None: an RAS-aligned grid.
        image: ``(H, W, D)`` the scan in HU on the same grid: adds mean HU of organs and lesions.
        lesion_classes: classes whose connected components are reported one by one.
        sided_classes: classes whose volume is split into the patient's right and left.
        min_lesion_voxels: smaller components are left out (segmentation noise).

    Returns:
        ``{"volumes_ml": {organ: mL}, "sided_ml": {class: {"right": mL, "left": mL}},
        "mean_hu": {organ: HU} (with ``image``), "lesions": [{"size_mm", "organ", "side", "voxels"
        (, "hu")}, ...]}``, lesions largest first.
    """
    from scipy import ndimage

    labels = np.asarray(label_map)
    if labels.ndim != 3:
        raise ValueError(f"label_map must be (H, W, D), got shape {labels.shape}")
    if image is not None and np.shape(image) != labels.shape:
        raise ValueError(f"image shape {np.shape(image)} differs from the label map's {labels.shape}")
    matrix = np.eye(4) if affine is None else np.asarray(affine, np.float64)
    if spacing is None:
        spacing = tuple(float(v) for v in np.linalg.norm(matrix[:3, :3], axis=0))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=max(class_names) + 1)
    lesion_ids = {i for i, n in class_names.items() if n in lesion_classes}
    sided_ids = {i for i, n in class_names.items() if n in sided_classes}
    organ_ids = [i for i in sorted(class_names) if i != 0 and i not in lesion_ids | sided_ids]
    volumes = {class_names[i]: round(float(counts[i]) * voxel_ml, 1) for i in organ_ids if counts[i] > 0}

    def world_x(voxels: np.ndarray) -> np.ndarray:  # (N, 3) voxel indices -> RAS x in mm
        return voxels @ matrix[0, :3] + matrix[0, 3]

    body = np.argwhere(labels > 0)
    mid_x = float(world_x(body).mean()) if len(body) else float(world_x(np.array(labels.shape) / 2.0))
    sided = {}
    for i in sorted(sided_ids):
        cells = np.argwhere(labels == i)
        right = int((world_x(cells) < mid_x).sum()) if len(cells) else 0
        sided[class_names[i]] = {
            "right": round(right * voxel_ml, 1),
            "left": round((len(cells) - right) * voxel_ml, 1),
        }
    findings: dict[str, object] = {"volumes_ml": volumes, "sided_ml": sided}
    hu = None if image is None else np.asarray(image, np.float64)
    if hu is not None:
        # one pass: sums of HU per class
        sums = np.bincount(labels.ravel().astype(np.int64), weights=hu.ravel(), minlength=len(counts))
        findings["mean_hu"] = {class_names[i]: round(sums[i] / counts[i]) for i in organ_ids if counts[i] > 0}
    # the organ a lesion sits in: the most common organ class in a one-voxel shell around it
    organs = np.where(np.isin(labels, list(lesion_ids)), 0, labels)
    lesions = []
    for lid in sorted(lesion_ids):
        comps, n = ndimage.label(labels == lid)
        if n == 0:
            continue
        sizes = np.bincount(comps.ravel())[1:]
        for k, box in enumerate(ndimage.find_objects(comps), start=1):
            if sizes[k - 1] < min_lesion_voxels:
                continue
            extent = max((s.stop - s.start) * float(sp) for s, sp in zip(box, spacing, strict=True))
            # work in the component's box grown by one voxel (the shell lies there)
            grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
            mask = comps[grown] == k
            shell = ndimage.binary_dilation(mask) & ~mask
            around = np.bincount(organs[grown][shell].astype(np.int64), minlength=len(counts))
            around[0] = 0
            organ = class_names.get(int(around.argmax()), "unknown") if around.any() else "unknown"
            offset = np.array([s.start for s in grown])
            centre = float(world_x(np.argwhere(mask) + offset).mean())
            lesion = {"size_mm": round(extent), "organ": organ, "side": "right" if centre < mid_x else "left",
                      "voxels": int(sizes[k - 1])}  # fmt: skip
            if hu is not None:
                lesion["hu"] = round(float(hu[grown][mask].mean()))
            lesions.append(lesion)
    lesions.sort(key=lambda d: (-d["voxels"], d["organ"]))
    findings["lesions"] = lesions
    return findings


def _name(name: str) -> str:
    # "kidney_left" -> "left kidney", "pleural_effusion" -> "pleural effusion"
    for side in ("left", "right"):
        if name.endswith("_" + side):
            name = f"{side}_{name[: -len(side) - 1]}"
    return name.replace("_", " ")


def expert_text(
    findings: Mapping[str, object], organs: Sequence[str] | None = None, *, max_lesions: int = 3
) -> str:
    """One line for the prompt, e.g. ``"Segmentation: liver 1650 mL 52 HU, left kidney 0 mL;
    pleural effusion right 120 mL, left 0 mL; 1 lesion: 35 mm in the liver (right, 60 HU)."``

    Args:
        findings: :func:`expert_findings`' result.
        organs: the organs whose volume (and mean HU) is listed, in this order (0 mL when not
            found); None: all found.
        max_lesions: the largest lesions described (all are counted), so a noisy segmentation
            cannot push the question out of a bounded prompt.
    """
    volumes = findings["volumes_ml"]
    mean_hu = findings.get("mean_hu") or {}
    assert isinstance(volumes, Mapping) and isinstance(mean_hu, Mapping)
    # a requested organ the segmentation did not find is written as 0 mL (a missing kidney, no ascites)
    names = list(organs) if organs is not None else list(volumes)
    parts = [
        f"{_name(o)} {volumes.get(o, 0.0):.0f} mL" + (f" {mean_hu[o]} HU" if o in mean_hu else "")
        for o in names
    ]
    sided = findings.get("sided_ml") or {}
    assert isinstance(sided, Mapping)
    sections = [", ".join(parts)] if parts else []
    sections += [f"{_name(c)} right {v['right']:.0f} mL, left {v['left']:.0f} mL" for c, v in sided.items()]
    lesions = list(findings["lesions"])  # type: ignore[call-overload]
    if lesions:

        def one(d: Mapping[str, object]) -> str:
            where = f"{d['side']}, {d['hu']} HU" if "hu" in d else f"{d['side']}"
            return f"{d['size_mm']} mm in the {_name(str(d['organ']))} ({where})"

        desc = "; ".join(one(d) for d in lesions[:max_lesions])
        sections.append(f"{len(lesions)} lesion{'s' if len(lesions) > 1 else ''}: {desc}")
    else:
        sections.append("no lesion")
    return "Segmentation: " + "; ".join(sections) + "."

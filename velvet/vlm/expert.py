"""Expert knowledge for the prompt: what a segmentation says about a scan, as a line of text.

An idea of VILA-M3: run a segmentation model first and give its findings to the language model in
words. From a label map on a known grid this writes organ volumes in mL and the focal lesions
(connected components of a lesion class) with their largest extent in mm, the organ they touch
most and the patient side: on velvet's model-input grid the first axis runs from the patient's right
to the patient's left (the liver has low ``x``; checked on phantoms in the tests), so a component
below the body's mean ``x`` is on the patient's right. Deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["expert_findings", "expert_text"]


def expert_findings(
    label_map: np.ndarray,
    spacing: Sequence[float],
    class_names: Mapping[int, str],
    *,
    lesion_classes: Sequence[str] = ("lesion",),
    min_lesion_voxels: int = 1,
) -> dict[str, object]:
    """Organ volumes and lesions of a label map.

    Args:
        label_map: ``(H, W, D)`` integer classes on a RAS grid.
        spacing: voxel size in mm ``(sx, sy, sz)``.
        class_names: class id -> name (0 = background is skipped).
        lesion_classes: classes whose connected components are reported one by one.
        min_lesion_voxels: smaller components are left out (segmentation noise).

    Returns:
        ``{"volumes_ml": {organ: mL}, "lesions": [{"size_mm", "organ", "side", "voxels"}, ...]}``,
        lesions largest first.
    """
    from scipy import ndimage

    labels = np.asarray(label_map)
    if labels.ndim != 3:
        raise ValueError(f"label_map must be (H, W, D), got shape {labels.shape}")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=max(class_names) + 1)
    lesion_ids = {i for i, n in class_names.items() if n in lesion_classes}
    volumes = {
        name: round(float(counts[i]) * voxel_ml, 1)
        for i, name in sorted(class_names.items())
        if i != 0 and i not in lesion_ids and counts[i] > 0
    }
    body = np.argwhere(labels > 0)
    mid_x = float(body[:, 0].mean()) if len(body) else labels.shape[0] / 2
    # the organ a lesion sits in: the most common non-lesion class in a one-voxel shell around it
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
            mask = comps[box] == k
            extent = max((s.stop - s.start) * float(sp) for s, sp in zip(box, spacing, strict=True))
            shell = ndimage.binary_dilation(comps == k) & (comps != k)
            around = np.bincount(organs[shell].astype(np.int64), minlength=len(counts))
            around[0] = 0
            organ = class_names.get(int(around.argmax()), "unknown") if around.any() else "unknown"
            centre_x = float(np.argwhere(mask)[:, 0].mean()) + box[0].start
            lesions.append({
                "size_mm": round(extent), "organ": organ, "side": "right" if centre_x < mid_x else "left",
                "voxels": int(sizes[k - 1]),
            })  # fmt: skip
    lesions.sort(key=lambda d: (-d["voxels"], d["organ"]))
    return {"volumes_ml": volumes, "lesions": lesions}


def expert_text(findings: Mapping[str, object], organs: Sequence[str] | None = None) -> str:
    """One line for the prompt, e.g. ``"Segmentation: liver 1650 mL, spleen 210 mL; 1 lesion: 35 mm
    in the liver (right)."``; ``organs`` limits the volumes listed."""
    volumes = findings["volumes_ml"]
    assert isinstance(volumes, Mapping)
    names = [o for o in (organs or list(volumes)) if o in volumes]
    parts = ", ".join(f"{o.replace('_', ' ')} {volumes[o]:.0f} mL" for o in names)
    lesions = list(findings["lesions"])  # type: ignore[call-overload]
    if lesions:
        desc = "; ".join(
            f"{d['size_mm']} mm in the {d['organ'].replace('_', ' ')} ({d['side']})" for d in lesions
        )
        lesion_text = f"{len(lesions)} lesion{'s' if len(lesions) > 1 else ''}: {desc}"
    else:
        lesion_text = "no lesion"
    return f"Segmentation: {parts}; {lesion_text}."

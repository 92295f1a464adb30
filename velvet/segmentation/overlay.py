"""Pictures of a segmentation: axial, coronal and sagittal slices with the label map blended on top.

Slices are cut through the centre of the segmented structures, after reorienting to RAS, and shown
in the radiological convention (axial and coronal: patient's right on the image's left; axial:
anterior up; coronal and sagittal: superior up; sagittal: anterior on the left), each scaled by its
voxel spacing so anisotropic scans keep their proportions. A legend names the colours.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["PALETTE", "overlay_image", "save_overlay"]

# 20 distinguishable colours (label 1 gets the first; ids beyond 20 wrap around)
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def _to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from nibabel.orientations import apply_orientation, io_orientation

    ornt = io_orientation(affine)
    spacing = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    ras_spacing = np.empty(3)
    for src, (dst, _) in enumerate(ornt):
        ras_spacing[int(dst)] = spacing[src]
    return apply_orientation(array, ornt), ras_spacing


def _panel(
    image: np.ndarray, labels: np.ndarray, pixel: tuple[float, float], window: tuple[float, float], alpha: float, height: int
) -> np.ndarray:
    """One slice as RGB uint8, resized so that a pixel is square in mm, fitting a ``height`` square box
    (a thin slab stays a thin strip rather than a picture thousands of pixels wide)."""
    from PIL import Image

    low, high = window
    grey = np.clip((image.astype(np.float32) - low) / (high - low), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    colours = np.array([(0, 0, 0), *PALETTE], dtype=np.float32)
    ids = labels.astype(np.int64)
    mask = ids > 0
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colours[((ids[mask] - 1) % len(PALETTE)) + 1]
    rows, cols = grey.shape
    mm_h, mm_w = rows * pixel[0], cols * pixel[1]
    scale = height / max(mm_h, mm_w, 1e-6)  # pixels per mm
    size = (max(1, round(mm_w * scale)), max(1, round(mm_h * scale)))
    return np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize(size, Image.Resampling.NEAREST))


def overlay_image(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    class_names: Sequence[str],
    *,
    window: tuple[float, float] = (-160.0, 240.0),
    alpha: float = 0.45,
    height: int = 320,
) -> np.ndarray:
    """An RGB picture (``(h, w, 3)`` uint8) of three orthogonal slices with the labels blended in.

    Args:
        image: ``(H, W, D)`` scan voxels (HU) on ``affine``'s grid.
        labels: ``(H, W, D)`` class ids on the same grid.
        affine: voxel -> RAS mm.
        class_names: names by id (background first), for the legend.
        window: HU range shown from black to white.
        alpha: label opacity.
        height: panel height in pixels.
    """
    from PIL import Image, ImageDraw

    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must share a grid")
    img, sp = _to_ras(np.asarray(image), affine)
    lab, _ = _to_ras(np.asarray(labels), affine)
    fg = np.argwhere(lab > 0)
    x, y, z = (fg.mean(0).round().astype(int) if len(fg) else np.array(lab.shape) // 2)
    panels = [
        # axial (rows: anterior -> posterior, cols: right -> left)
        _panel(img[::-1, ::-1, z].T, lab[::-1, ::-1, z].T, (sp[1], sp[0]), window, alpha, height),
        # coronal (rows: superior -> inferior, cols: right -> left)
        _panel(img[::-1, y, ::-1].T, lab[::-1, y, ::-1].T, (sp[2], sp[0]), window, alpha, height),
        # sagittal (rows: superior -> inferior, cols: anterior -> posterior)
        _panel(img[x, ::-1, ::-1].T, lab[x, ::-1, ::-1].T, (sp[2], sp[1]), window, alpha, height),
    ]
    present = [i for i in range(1, len(class_names)) if np.any(lab == i)]
    legend_h = 16 * max(1, (len(present) + 3) // 4) + 8
    width = sum(p.shape[1] for p in panels) + 8 * (len(panels) + 1)
    canvas = Image.new("RGB", (width, height + 16 + legend_h), (0, 0, 0))
    offset = 8
    draw = ImageDraw.Draw(canvas)
    for title, p in zip(("axial", "coronal", "sagittal"), panels, strict=True):
        canvas.paste(Image.fromarray(p), (offset, 16 + (height - p.shape[0]) // 2))
        draw.text((offset, 2), title, fill=(255, 255, 255))
        offset += p.shape[1] + 8
    column = max(1, (width - 16) // 4)
    for n, i in enumerate(present):
        cx, cy = 8 + (n % 4) * column, height + 24 + 16 * (n // 4)
        draw.rectangle((cx, cy, cx + 10, cy + 10), fill=PALETTE[(i - 1) % len(PALETTE)])
        draw.text((cx + 14, cy - 1), class_names[i], fill=(255, 255, 255))
    return np.asarray(canvas)


def save_overlay(
    path: str | os.PathLike[str],
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    class_names: Sequence[str],
    **kwargs: object,
) -> Path:
    """Write :func:`overlay_image` as a PNG (atomically). Returns the path."""
    from PIL import Image

    from velvet.utils.atomic import atomic_path

    picture = overlay_image(image, labels, affine, class_names, **kwargs)  # type: ignore[arg-type]
    out = Path(path)
    with atomic_path(out) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    return out

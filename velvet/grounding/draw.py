"""Grounding pictures: for each chosen word or sentence, three slices through its hottest point.

The scan is the model's input (RAS, values in [0, 1]); slices follow the radiological convention of
:mod:`velvet.segmentation.overlay` (axial and coronal: patient's right on the image's left, anterior
and superior up). The heat is min-max scaled per unit, drawn with :func:`velvet.grounding.colormap.heat_colors`
and blended where it is above its median, so the scan stays readable; a cross marks the peak.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from velvet.grounding.colormap import heat_colors
from velvet.utils.atomic import atomic_path

__all__ = ["default_units", "grounding_image", "save_grounding_png"]

# words that carry no finding: never drawn by default
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "and",
        "or",
        "with",
        "without",
        "is",
        "are",
        "was",
        "were",
        "be",
        "there",
        "this",
        "that",
        "no",
        "not",
        "as",
        "by",
        "for",
        "from",
        "its",
        "it",
        "into",
        "than",
        "which",
        "seen",
        "present",
        "measuring",
        "noted",
    ]
)


def default_units(grounding: Any, limit: int = 8) -> list[int]:
    """Units worth drawing: sentences in order, or words that are not stop words, numbers or punctuation."""
    if grounding.level == "sentence":
        return list(range(min(limit, len(grounding.units))))
    keep = [
        i
        for i, w in enumerate(grounding.units)
        if re.fullmatch(r"[a-z][a-z\-]+", w.lower()) and w.lower() not in _STOP
    ]
    return keep[:limit]


def _panel(
    image: np.ndarray, heat: np.ndarray, pixel: tuple[float, float], height: int, peak: tuple[int, int] | None
) -> np.ndarray:
    from PIL import Image, ImageDraw

    grey = np.repeat((np.clip(image, 0, 1) * 255)[..., None], 3, axis=-1).astype(np.float32)
    colours = heat_colors(heat).astype(np.float32)
    alpha = np.clip((heat - np.median(heat)) / max(1e-6, 1 - np.median(heat)), 0, 1)[..., None] * 0.75
    rgb = (1 - alpha) * grey + alpha * colours
    rows, cols = image.shape
    mm_h, mm_w = rows * pixel[0], cols * pixel[1]
    scale = height / max(mm_h, mm_w, 1e-6)
    size = (max(1, round(mm_w * scale)), max(1, round(mm_h * scale)))
    picture = Image.fromarray(rgb.astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    if peak is not None:
        draw = ImageDraw.Draw(picture)
        r, c = (peak[0] + 0.5) * size[1] / rows, (peak[1] + 0.5) * size[0] / cols
        draw.line((c - 6, r, c + 6, r), fill=(0, 255, 0))
        draw.line((c, r - 6, c, r + 6), fill=(0, 255, 0))
    return np.asarray(picture)


def grounding_image(grounding: Any, units: Sequence[int] | None = None, *, height: int = 200) -> np.ndarray:
    """``(h, w, 3)`` uint8: one row per unit (label, axial, coronal, sagittal through its peak)."""
    from PIL import Image, ImageDraw

    chosen = list(units) if units is not None else default_units(grounding)
    if not chosen:
        raise ValueError("no unit to draw (all words are stop words?); name the words to draw")
    img = grounding.image.numpy()
    sp = grounding.spacing
    rows = []
    for k in chosen:
        heat = grounding.heat[k].numpy().astype(np.float64)
        heat = (heat - heat.min()) / max(1e-12, heat.max() - heat.min())
        x, y, z = grounding.peak(k)
        X, Y, Z = img.shape
        panels = [
            _panel(
                img[::-1, ::-1, z].T, heat[::-1, ::-1, z].T, (sp[1], sp[0]), height, (Y - 1 - y, X - 1 - x)
            ),
            _panel(
                img[::-1, y, ::-1].T, heat[::-1, y, ::-1].T, (sp[2], sp[0]), height, (Z - 1 - z, X - 1 - x)
            ),
            _panel(
                img[x, ::-1, ::-1].T, heat[x, ::-1, ::-1].T, (sp[2], sp[1]), height, (Z - 1 - z, Y - 1 - y)
            ),
        ]
        rows.append((k, grounding.units[k], panels))
    label_w = 180
    width = label_w + max(sum(p.shape[1] for p in ps) + 8 * len(ps) for _, _, ps in rows)
    canvas = Image.new("RGB", (width, 18 + len(rows) * (height + 8)), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (4, 2),
        f"{grounding.level} -> region {grounding.mode} (axial | coronal | sagittal through the peak, radiological)",
        fill=(255, 255, 255),
    )
    for r, (index, name, panels) in enumerate(rows):
        top = 18 + r * (height + 8)
        text = name if len(name) <= 26 else name[:23] + "..."
        # sentences wrap over several lines so the label column stays narrow
        lines = (
            [text]
            if grounding.level == "word"
            else [name[i : i + 26] for i in range(0, min(len(name), 26 * 8), 26)]
        )
        focus = grounding.focus(index)
        if focus == focus:  # attention maps: say how far from uniform (0) the map is
            lines.append(f"focus {focus:.3f}")
        draw.text((4, top + 4), "\n".join(lines), fill=(255, 255, 255))
        offset = label_w
        for p in panels:
            canvas.paste(Image.fromarray(p), (offset, top + (height - p.shape[0]) // 2))
            offset += p.shape[1] + 8
    return np.asarray(canvas)


def save_grounding_png(
    grounding: Any, path: str | os.PathLike[str], units: Sequence[int] | None = None, **kwargs: Any
) -> Path:
    """Write :func:`grounding_image` as a PNG (atomically)."""
    from PIL import Image

    target = Path(path)
    picture = Image.fromarray(grounding_image(grounding, units, **kwargs))
    with atomic_path(target) as tmp:
        picture.save(tmp, format="PNG")
    return target

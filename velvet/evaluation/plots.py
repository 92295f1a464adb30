"""PNG pictures of evaluation results (Pillow only): similarity matrices."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from velvet.grounding.colormap import heat_colors
from velvet.utils.atomic import atomic_path

__all__ = ["save_similarity_png"]


def save_similarity_png(
    similarity: torch.Tensor, path: str | os.PathLike[str], *, title: str = "", max_pixels: int = 800
) -> Path:
    """Draw an ``(N_image, N_text)`` score matrix (rows = images, columns = texts; pairs on the diagonal).

    Scores are min-max scaled to the colour map; each cell is an integer number of pixels (at most
    ``max_pixels`` per side), with the title and axis names in a margin.
    """
    from PIL import Image, ImageDraw

    s = similarity.detach().float().cpu().numpy()
    if s.ndim != 2 or s.size == 0:
        raise ValueError(f"need a non-empty 2-D matrix, got shape {s.shape}")
    low, high = float(np.nanmin(s)), float(np.nanmax(s))
    scaled = (s - low) / (high - low) if high > low else np.zeros_like(s)
    cell = max(1, max_pixels // max(s.shape))
    grid = Image.fromarray(heat_colors(scaled)).resize((s.shape[1] * cell, s.shape[0] * cell), Image.NEAREST)
    margin_top, margin_left = 34, 20
    canvas = Image.new("RGB", (grid.width + margin_left + 4, grid.height + margin_top + 4), (255, 255, 255))
    canvas.paste(grid, (margin_left, margin_top))
    draw = ImageDraw.Draw(canvas)
    draw.text((margin_left, 2), title[:120], fill=(0, 0, 0))
    draw.text((margin_left, 18), f"texts ->  (scores {low:.3g} .. {high:.3g})", fill=(0, 0, 0))
    draw.text((4, margin_top), "i\nm\na\ng\ne\ns", fill=(0, 0, 0))
    target = Path(path)
    with atomic_path(target) as tmp:
        canvas.save(tmp, format="PNG")
    return target

"""Word- and sentence-to-region attention of the local alignment, as heat maps over the scan.

For one image and one text, with the image's projected regions ``v_r`` (the word or sentence map,
L2-normalised) and the text's projected units ``w_k``, the local alignment attends over the regions
with ``alpha_kr`` (see :func:`velvet.losses.local_alignment.local_similarity`), in the way the
model's config says (``local_attention``, the one its losses trained with):

- ``regions``: ``alpha_kr = softmax_r(temp1 * <v_r, w_k>)``, which can point at a region;
- ``gloria`` (the method's): ``a_kr = softmax_k <v_r, w_k>`` and ``alpha_kr = softmax_r(temp1 * a_kr)``.

``alpha_k`` over the regions is unit ``k``'s heat map: where the model looks when it reads that
word or sentence. ``mode="similarity"`` gives the plain cosine ``<v_r, w_k>`` instead. Maps are
upsampled trilinearly to the model input's grid (the preprocessed scan) for drawing.

Caveat of the ``gloria`` attention, by construction: ``a_kr`` is a softmax over the text's ``T``
units of a cosine, so ``a_kr <= e^2 / (e^2 + T - 1)`` (0.07 for 100 words) and ``alpha`` can vary
by at most ``exp(temp1 * 0.07) = 1.32`` times over the regions. For long reports that word
attention is nearly uniform whatever the training; :meth:`Grounding.focus` measures it and
``velvet ground`` warns. Sentences (a few units per report) are bounded far less. Models trained
with ``local_attention: regions`` (``velvet-tiny.phantoms``) do not have this limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Grounding", "ground", "unit_heat"]

MODES = ("attention", "similarity")


@dataclass
class Grounding:
    """Heat maps of the units of one text over one scan.

    Attributes:
        units: the words (or sentences) in text order.
        level: ``word`` or ``sentence``.
        mode: ``attention`` or ``similarity``.
        heat: ``(U, H, W, D)`` maps on the model-input grid (attention sums to 1 over regions
            before upsampling; similarity is a cosine).
        regions: ``(U, h, w, d)`` the maps on the model's feature grid.
        image: ``(H, W, D)`` the preprocessed scan in [0, 1] (RAS, the model's input).
        spacing: ``(3,)`` mm per voxel of ``image`` (1 mm when unknown).
    """

    units: list[str]
    level: str
    mode: str
    heat: torch.Tensor
    regions: torch.Tensor
    image: torch.Tensor
    spacing: tuple[float, float, float]

    def find(self, unit: str) -> list[int]:
        """Indices of the units equal to ``unit`` (case-insensitive)."""
        return [i for i, u in enumerate(self.units) if u.lower() == unit.lower()]

    def focus(self, index: int) -> float:
        """How far unit ``index``'s attention is from uniform: ``1 - entropy / log(R)`` in [0, 1].

        0 means the attention is spread evenly over all ``R`` regions (the model does not point
        anywhere); only ``attention`` maps are distributions, ``similarity`` maps give NaN.
        """
        if self.mode != "attention":
            return math.nan
        p = self.regions[index].flatten().double().clamp_min(1e-300)
        return float(1 - (-(p * p.log()).sum()) / math.log(p.numel()))

    def peak_region(self, index: int) -> tuple[slice, slice, slice]:
        """The hottest feature-grid region of unit ``index`` as a box of the model-input grid.

        The attention lives on the feature grid (e.g. 8^3 cells for a 32^3 input); this is the
        part of the scan that one cell covers, the resolution at which the model can point.
        """
        cells = tuple(self.regions.shape[1:])
        flat = int(torch.argmax(self.regions[index]))
        cell = (flat // (cells[1] * cells[2]), (flat // cells[2]) % cells[1], flat % cells[2])
        size = tuple(self.heat.shape[1:])
        return tuple(slice(c * n // m, (c + 1) * n // m) for c, n, m in zip(cell, size, cells, strict=True))  # type: ignore[return-value]

    def peak(self, index: int) -> tuple[int, int, int]:
        """Centre voxel (model-input grid) of unit ``index``'s hottest region (:meth:`peak_region`).

        The hottest cell, not the maximum of the smoothed map: trilinear upsampling can move the
        smoothed maximum towards a cluster of warm cells, away from the one the model attends most.
        """
        box = self.peak_region(index)
        return tuple((b.start + b.stop - 1) // 2 for b in box)  # type: ignore[return-value]


def unit_heat(
    regions: torch.Tensor,
    units: torch.Tensor,
    unit_mask: torch.Tensor,
    *,
    temp1: float = 4.0,
    mode: str = "attention",
    attention: str = "gloria",
) -> torch.Tensor:
    """``(U, R)`` heat of each valid unit over the regions of one image.

    Args:
        regions: ``(R, E)`` projected regions.
        units: ``(T, E)`` projected units; unit_mask: ``(T,)`` bool valid units (U of them).
        temp1: the attention sharpness of the local loss.
        mode: ``attention`` (alpha of the loss) or ``similarity`` (cosine).
        attention: the loss's attention, ``gloria`` or ``regions`` (module docstring).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    v = F.normalize(regions.float(), dim=-1)
    w = F.normalize(units.float(), dim=-1)
    dots = w @ v.T  # (T, R)
    if mode == "similarity":
        return dots[unit_mask]
    if attention == "regions":
        return (temp1 * dots[unit_mask]).softmax(dim=1)  # over regions, per unit
    if attention != "gloria":
        raise ValueError(f"attention must be 'gloria' or 'regions', got {attention!r}")
    a = dots.masked_fill(~unit_mask[:, None], float("-inf")).softmax(dim=0)  # over units, per region
    return (temp1 * a[unit_mask]).softmax(dim=1)  # over regions, per unit


@torch.no_grad()
def ground(
    model: Any,
    scan: Any,
    text: str,
    *,
    level: str = "word",
    mode: str = "attention",
    preprocess: bool | None = None,
) -> Grounding:
    """Where each word (or sentence) of ``text`` points in ``scan``.

    Args:
        model: a :class:`~velvet.models.velvet.VelvetModel` with a ``word`` (or ``sentence``)
            projection, or a name / folder to load.
        scan: a file path, DICOM folder, Volume or tensor (see :meth:`VelvetModel.encode_volume`).
        text: report text.
        level: ``word`` or ``sentence``.
        mode: ``attention`` or ``similarity`` (module docstring).
        preprocess: for tensors, whether they hold raw scanner values.

    Returns:
        a :class:`Grounding`.
    """
    from velvet.models.inference import prepare_volumes

    if isinstance(model, str):
        from velvet.models.pretrained import from_pretrained

        model = from_pretrained(model)
    if level not in ("word", "sentence"):
        raise ValueError(f"level must be 'word' or 'sentence', got {level!r}")
    if f"image_{level}" not in model.heads:
        raise ValueError(
            f"this model has no {level}-level alignment (levels {list(model.config.levels)}): grounding needs a "
            f"model pretrained with itc_{level}, e.g. velvet-tiny.phantoms"
        )
    if model.tokenizer is None:
        raise RuntimeError("the model has no tokenizer (load it with from_pretrained)")
    model.eval()
    device = next(model.parameters()).device
    image = prepare_volumes(scan, model.preprocess, preprocess=preprocess)[:1]  # (1, 1, H, W, D)
    spacing = _spacing(image)
    image = (image.as_tensor() if hasattr(image, "as_tensor") else image).float().to(device)
    out = model.encode_image(image)
    index = model.config.word_level if level == "word" else model.config.sentence_level
    grid = tuple(out["maps"][index].shape[2:])
    regions = model.image_regions(out["maps"], level)[0]  # (R, E)
    batch = model.tokenizer([text])
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    encoded = model.encode_text(batch)
    units, mask = model.text_units(encoded, level)
    mask = mask[0].bool()
    cfg = model.config  # the attention the model's local losses trained with
    heat = unit_heat(
        regions, units[0], mask, temp1=cfg.local_temperatures[0], mode=mode, attention=cfg.local_attention
    )  # (U, R)
    coarse = heat.view(-1, *grid)
    fine = F.interpolate(coarse[:, None], size=tuple(image.shape[2:]), mode="trilinear", align_corners=False)[
        :, 0
    ]
    if level == "word":
        names = model.tokenizer.words_from_pieces(batch, 0)
    else:
        names = model.tokenizer.sentences(text)
    names = names[: int(mask.sum())]
    if len(names) != int(mask.sum()):
        raise RuntimeError(
            f"{len(names)} {level}s in the text but {int(mask.sum())} {level} units from the model"
        )
    return Grounding(names, level, mode, fine.cpu(), coarse.cpu(), image[0, 0].cpu(), spacing)


def _spacing(image: Any) -> tuple[float, float, float]:
    affine = getattr(image, "affine", None)
    if affine is None:
        return (1.0, 1.0, 1.0)
    a = torch.as_tensor(affine, dtype=torch.float64)
    a = a[0] if a.ndim == 3 else a
    return tuple(float(x) for x in a[:3, :3].norm(dim=0))  # type: ignore[return-value]

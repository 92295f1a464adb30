"""M3D-CLIP / MONAI 3D ViT checkpoints -> :class:`~velvet.models.vision.vit.ViTEncoder3D` (key ``"vit." + k``).

M3D-CLIP's vision tower is a copy of MONAI's ``ViT`` (``vision_encoder.*``, with
``pos_embed="perceptron"``, ``classification=True`` and no classification head); its checkpoint also
holds ``language_encoder.*`` (a BERT), ``mm_vision_proj.*``, ``mm_language_proj.*`` and ``logit_scale``.
The ViT is found by the prefix of its ``patch_embedding.position_embeddings`` key, so M3D-CLIP
(``vision_encoder.``), M3D-LaMed (``...vision_tower.vision_tower.``) and a bare MONAI ``ViT`` all work.
Everything outside that prefix, MONAI's ``classification_head.*`` and the unused
``blocks.<i>.norm_cross_attn.*`` are dropped and reported.

Patch embedding, both of MONAI's ``proj_type`` layouts, converted to the target's:

* ``"conv"``: ``patch_embeddings.weight`` ``(E, C, p1, p2, p3)``;
* ``"perceptron"``: ``patch_embeddings.1.weight`` ``(E, p1 * p2 * p3 * C)``, the ``nn.Linear`` after
  MONAI's ``rearrange("b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)")``, so the input features are
  ordered ``(p1, p2, p3, c)`` with ``c`` fastest: ``conv = linear.reshape(E, p1, p2, p3, C).permute(0, 4, 1, 2, 3)``
  and back ``linear = conv.permute(0, 2, 3, 4, 1).reshape(E, -1)``. Both compute the same patch tokens
  in the same ``(h w d)`` order, so outputs are unchanged.

Axis order: velvet volumes are ``(H, W, D)``; M3D-CLIP's are ``(D, H, W)`` (``img_size=(32, 256, 256)``,
``patch_size=(4, 16, 16)``). Pass ``source_axes="DHW"`` for such a checkpoint: the patch kernel's spatial
axes and the position-embedding grid are permuted to ``(H, W, D)``, so the encoder computes on an
``(H, W, D)`` volume exactly what the checkpoint computed on its ``(D, H, W)`` transpose (tokens in
velvet's ``(h w d)`` order). Without it, M3D weights would load into a perceptron ViT without any shape
error and scramble every patch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import nn

from velvet.models.convert import (
    ConversionReport,
    WeightsSource,
    find_prefix,
    load_converted,
    read_state_dict,
    split_prefix,
)
from velvet.models.vision.config import ViTConfig
from velvet.models.weights import StateDictDiff, WeightsMismatchError

__all__ = ["convert_vit_state_dict", "load_vit_weights"]

TARGET_PREFIX = "vit."
_AXES = "HWD"
_ANCHOR = "patch_embedding.position_embeddings"
_EXAMPLES = ("vision_encoder.patch_embedding.position_embeddings", "vision_encoder.blocks.0.attn.qkv.weight")
_DROP_INSIDE = re.compile(r"classification_head\..*|blocks\.\d+\.norm_cross_attn\..*")
_POS = "patch_embedding.position_embeddings"
_PATCH = {"conv": "patch_embedding.patch_embeddings.", "perceptron": "patch_embedding.patch_embeddings.1."}


def convert_vit_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    target: nn.Module | ViTConfig,
    *,
    source_axes: str = "HWD",
    prefix: str | None = None,
) -> dict[str, torch.Tensor]:
    """Map a MONAI / M3D-CLIP ViT checkpoint onto :class:`~velvet.models.vision.vit.ViTEncoder3D` keys.

    Args:
        state_dict: the flat state dict (see the module docstring).
        target: the ``ViTEncoder3D`` (or its :class:`~velvet.models.vision.config.ViTConfig`): its
            ``patch_size``, grid, ``in_chans`` and ``proj_type`` decide the patch-embedding layout.
        source_axes: the checkpoint's spatial axis order, a permutation of ``"HWD"``; ``"DHW"`` for M3D-CLIP.
        prefix: the key prefix of the ViT inside the checkpoint; None finds it.

    Returns:
        ``{"vit." + MONAI ViT key: tensor}`` with the patch embedding in the target's layout.

    Raises:
        ValueError: not a ViT layout, or a bad ``source_axes``.
        WeightsMismatchError: the patch kernel or the position grid cannot be the target's.
    """
    return _convert(state_dict, target, source_axes, prefix)[0]


def load_vit_weights(
    model: nn.Module,
    source: WeightsSource,
    *,
    strict: bool = True,
    source_axes: str = "HWD",
    prefix: str | None = None,
) -> ConversionReport:
    """Load an M3D-CLIP (or MONAI ``ViT``) vision encoder into a ``ViTEncoder3D``; nothing may be missing.

    Args:
        model: the target :class:`~velvet.models.vision.vit.ViTEncoder3D` (same width, depth, heads,
            ``qkv_bias``, ``classification`` and token grid as the checkpoint; ``proj_type`` may differ).
        source: a state dict, a checkpoint dict wrapping one, or a ``.safetensors`` / ``.bin`` / ``.pt`` file.
        strict: raise on a missing, unexpected or mismatched key; False loads what fits.
        source_axes, prefix: as in :func:`convert_vit_state_dict`.

    Returns:
        A :class:`~velvet.models.convert.ConversionReport` (the text tower and projections under ``dropped``).

    Raises:
        ValueError: not a ViT layout.
        WeightsMismatchError: the weights do not fit (the message lists each key with both shapes).

    Example:
        >>> enc = create_vision_encoder("vit3d-b16")  # doctest: +SKIP
        >>> load_vit_weights(enc, "M3D-CLIP/model.safetensors", source_axes="DHW")  # doctest: +SKIP
    """
    state_dict, name = read_state_dict(source)
    converted, report = _convert(state_dict, model, source_axes, prefix)
    report.source = name
    return load_converted(model, converted, report, strict=strict)


def _geometry(target: nn.Module | ViTConfig) -> tuple[tuple[int, ...], tuple[int, ...], int, str]:
    """``(patch_size, grid, in_chans, proj_type)`` of the target, in ``(H, W, D)`` order."""
    if isinstance(target, ViTConfig):
        grid = tuple(i // p for i, p in zip(target.img_size, target.patch_size, strict=True))
        return target.patch_size, grid, target.in_chans, target.proj_type
    proj_type = str(target.vit.patch_embedding.proj_type)  # type: ignore[union-attr]
    return tuple(target.patch_size), tuple(target.grid), int(target.in_chans), proj_type  # type: ignore[arg-type]


def _convert(
    state_dict: Mapping[str, torch.Tensor],
    target: nn.Module | ViTConfig,
    source_axes: str,
    prefix: str | None,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    if sorted(source_axes) != sorted(_AXES):
        raise ValueError(f"source_axes must be a permutation of {_AXES!r}, got {source_axes!r}")
    if prefix is None:
        prefix = find_prefix(state_dict, _ANCHOR, layout="MONAI / M3D-CLIP ViT", examples=_EXAMPLES)
    inside, outside = split_prefix(state_dict, prefix)
    report = ConversionReport(source="state dict", prefix=prefix, dropped=outside)
    for key in [k for k in inside if _DROP_INSIDE.fullmatch(k)]:
        del inside[key]
        report.dropped.append(prefix + key)
    report.dropped.sort()
    patch, grid, in_chans, proj_type = _geometry(target)
    perm = tuple(source_axes.index(a) for a in _AXES)  # target axis i is checkpoint axis perm[i]
    _convert_patch_embedding(inside, perm, patch, in_chans, proj_type, report)
    if perm != (0, 1, 2) and _POS in inside:
        inside[_POS] = _permute_grid(inside[_POS], perm, grid)
        report.derived[TARGET_PREFIX + _POS] = f"position grid permuted from {source_axes} to {_AXES}"
    return {TARGET_PREFIX + k: v for k, v in inside.items()}, report


def _convert_patch_embedding(
    inside: dict[str, torch.Tensor],
    perm: tuple[int, ...],
    patch: tuple[int, ...],
    in_chans: int,
    proj_type: str,
    report: ConversionReport,
) -> None:
    """Replace the checkpoint's patch embedding (conv or perceptron) by the target's layout, in place."""
    kind = next((k for k, p in _PATCH.items() if p + "weight" in inside), None)
    if kind is None or (kind == proj_type and perm == (0, 1, 2)):
        return  # nothing to convert (a missing key is reported by the strict load)
    src_patch = tuple(patch[perm.index(j)] for j in range(3))  # the kernel in the checkpoint's axis order
    weight = inside.pop(_PATCH[kind] + "weight")
    hidden = weight.shape[0]
    given_key = TARGET_PREFIX + _PATCH[kind] + "weight"
    if kind == "conv":
        if tuple(weight.shape[1:]) != (in_chans, *src_patch):
            _mismatch(given_key, weight.shape, (hidden, in_chans, *src_patch))
        conv = weight
    else:
        if weight.ndim != 2 or weight.shape[1] != in_chans * math.prod(src_patch):
            _mismatch(given_key, weight.shape, (hidden, in_chans * math.prod(src_patch)))
        conv = weight.reshape(hidden, *src_patch, in_chans).permute(0, 4, 1, 2, 3)  # (E, C, p1, p2, p3)
    conv = conv.permute(0, 1, *(2 + p for p in perm))  # spatial axes in (H, W, D) order
    new = conv if proj_type == "conv" else conv.permute(0, 2, 3, 4, 1).reshape(hidden, -1)
    inside[_PATCH[proj_type] + "weight"] = new.contiguous()
    if _PATCH[kind] + "bias" in inside:
        inside[_PATCH[proj_type] + "bias"] = inside.pop(_PATCH[kind] + "bias")
    report.derived[TARGET_PREFIX + _PATCH[proj_type] + "weight"] = (
        f"{kind} patch kernel {tuple(weight.shape)} -> {proj_type} {tuple(new.shape)}"
        + ("" if perm == (0, 1, 2) else f", spatial axes permuted {perm}")
    )


def _permute_grid(pos: torch.Tensor, perm: tuple[int, ...], grid: tuple[int, ...]) -> torch.Tensor:
    """``(1, N, E)`` position embeddings on the checkpoint's grid order -> the target's ``(h w d)`` order."""
    src_grid = tuple(grid[perm.index(j)] for j in range(3))
    if pos.ndim != 3 or pos.shape[1] != math.prod(grid):
        _mismatch(TARGET_PREFIX + _POS, pos.shape, (1, math.prod(grid), pos.shape[-1]))
    out = pos.reshape(pos.shape[0], *src_grid, pos.shape[-1]).permute(0, *(1 + p for p in perm), 4)
    return out.reshape(pos.shape).contiguous()


def _mismatch(key: str, given: torch.Size | tuple[int, ...], expected: tuple[int, ...]) -> None:
    raise WeightsMismatchError(
        "the checkpoint's ViT does not fit the target's patch grid (check patch_size, img_size, "
        "in_chans and source_axes):",
        StateDictDiff(mismatched={key: (tuple(given), tuple(expected))}),
    )

"""MONAI Swin checkpoints -> :class:`~velvet.models.vision.swin.SwinEncoder3D` (key ``"swin." + k``).

Recognised layouts (the encoder is found by the prefix of its ``patch_embed.proj.weight`` key):

===================================== ============================= =====================================
checkpoint                            prefix                        also in the file (dropped, reported)
===================================== ============================= =====================================
``model_swinvit.pt``, the released    ``module.``                   SSL heads ``rotation_head``,
SwinUNETR self-supervised weights                                   ``contrastive_head``, decoder ``conv``
(``{"state_dict": ...}``)
SSL training checkpoint (``SSLHead``) ``module.swinViT.``           ``module.rotation_head`` ... ``conv``
SwinUNETR (fine-tuned)                ``swinViT.`` / ``swin_vit.``  ``encoder1..10``, ``decoder1..5``, ``out``
DAE weights of MONAI's                ``encoder.``                  ``encoder.mask_token``, ``encoder.norm``,
``filter_swinunetr`` (``{"model": }``)                              the decoder and ``out``
plain MONAI ``SwinTransformer``       none                          (nothing)
===================================== ============================= =====================================

Renames, as MONAI's own loaders apply them: ``mlp.fc1`` / ``mlp.fc2`` -> ``mlp.linear1`` / ``mlp.linear2``
(the names of ``model_swinvit.pt``, mapped by ``SwinTransformerBlock.load_from``) and
``layers<i>.0.0.`` -> ``layers<i>.0.`` (the DAE layout, as ``filter_swinunetr`` does). A missing
``attn.relative_position_index`` (a constant buffer fixed by the window size) is taken from the model.
"""

from __future__ import annotations

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

__all__ = ["convert_swin_state_dict", "load_swin_weights"]

TARGET_PREFIX = "swin."
_ANCHOR = "patch_embed.proj.weight"
_EXAMPLES = (
    "module.patch_embed.proj.weight",
    "module.layers1.0.blocks.0.attn.qkv.weight",
    "swinViT.patch_embed.proj.weight",
)
# Non-encoder keys that share the encoder's prefix: SSLHead's heads and decoder (model_swinvit.pt keeps
# them under "module."), and the DAE encoder's mask token and final norm (dropped by filter_swinunetr).
_DROP_INSIDE = re.compile(
    r"(rotation_head|contrastive_head|rotation_pre|contrastive_pre|conv)\..*|mask_token|norm\.(weight|bias)"
)
_RENAMES = (
    (re.compile(r"\.mlp\.fc([12])\."), r".mlp.linear\1."),
    (re.compile(r"^layers([1-4])\.0\.0\."), r"layers\1.0."),
)
_INDEX = ".attn.relative_position_index"


def convert_swin_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, prefix: str | None = None
) -> dict[str, torch.Tensor]:
    """Map a MONAI Swin checkpoint onto :class:`~velvet.models.vision.swin.SwinEncoder3D` keys.

    Args:
        state_dict: the flat state dict (see the module docstring for the layouts).
        prefix: the key prefix of the Swin inside the checkpoint; None finds it.

    Returns:
        ``{"swin." + MONAI SwinTransformer key: tensor}``; the dropped keys are not included.

    Raises:
        ValueError: not a Swin layout (the message shows some of the keys found).
    """
    return _convert(state_dict, prefix)[0]


def load_swin_weights(
    model: nn.Module, source: WeightsSource, *, strict: bool = True, prefix: str | None = None
) -> ConversionReport:
    """Load MONAI Swin weights (e.g. ``model_swinvit.pt``) into a ``SwinEncoder3D``.

    Nothing of the encoder may be missing except ``attn.relative_position_index`` buffers, which are
    recomputed constants (taken from ``model``); the architecture (embed dim, depths, heads, window)
    must match the checkpoint's: ``swin-tv`` for ``model_swinvit.pt`` (embed 48, depths (2,2,2,2),
    heads (3,6,12,24), window 7).

    Args:
        model: the target :class:`~velvet.models.vision.swin.SwinEncoder3D`.
        source: a state dict, a checkpoint dict wrapping one (``{"state_dict": ...}``) or a file.
        strict: raise on a missing, unexpected or mismatched key; False loads what fits.
        prefix: as in :func:`convert_swin_state_dict`.

    Returns:
        A :class:`~velvet.models.convert.ConversionReport` (the SSL heads under ``dropped``).

    Raises:
        ValueError: not a Swin layout.
        WeightsMismatchError: the weights do not fit (the message lists each key with both shapes).

    Example:
        >>> enc = create_vision_encoder("swin-tv")  # doctest: +SKIP
        >>> load_swin_weights(enc, "pretrained/model_swinvit.pt").dropped[:2]  # doctest: +SKIP
        ['module.contrastive_head.bias', 'module.contrastive_head.weight']
    """
    state_dict, name = read_state_dict(source)
    converted, report = _convert(state_dict, prefix)
    report.source = name
    expected = model.state_dict()
    for key in expected:
        if key.endswith(_INDEX) and key not in converted:
            converted[key] = expected[key]
            report.derived[key] = "constant buffer of the window size, taken from the model"
    return load_converted(model, converted, report, strict=strict)


def _convert(
    state_dict: Mapping[str, torch.Tensor], prefix: str | None
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    if prefix is None:
        prefix = find_prefix(state_dict, _ANCHOR, layout="MONAI Swin (SwinUNETR)", examples=_EXAMPLES)
    inside, outside = split_prefix(state_dict, prefix)
    report = ConversionReport(source="state dict", prefix=prefix, dropped=outside)
    out: dict[str, torch.Tensor] = {}
    for key, value in inside.items():
        if _DROP_INSIDE.fullmatch(key):
            report.dropped.append(prefix + key)
            continue
        new = key
        for pattern, replacement in _RENAMES:
            new = pattern.sub(replacement, new)
        if new != key:
            report.derived[TARGET_PREFIX + new] = f"renamed from {prefix + key}"
        out[TARGET_PREFIX + new] = value
    report.dropped.sort()
    return out, report

"""Load a pretrained Swin encoder into a :class:`~velvet.models.segmentation.SegmentationModel`.

A source is one of

* a velvet pretrained directory or a registered ``<arch>.<tag>`` name: a whole model, a vision
  encoder, or a segmentation model (its fine-tuned encoder);
* a Lightning checkpoint written by ``velvet fit`` of a pretraining recipe (``.ckpt``);
* a MONAI self-supervised ``model_swinvit.pt`` or any SwinUNETR / SwinTransformer state dict
  (``.pt``, ``.pth``, ``.bin``), converted by :func:`velvet.models.convert.convert_swin_state_dict`.

Loading is strict: every encoder weight must be in the source with the model's shape, and nothing
else of the encoder may be left over. A mismatch raises
:class:`~velvet.models.weights.WeightsMismatchError` whose message lists each missing, unexpected
or mismatched key with both shapes. :func:`encoder_config` reads the encoder architecture a source
was trained with, so a recipe need not repeat it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from velvet.models.segmentation import ENCODER_PREFIX
from velvet.models.vision.config import SwinConfig

__all__ = ["encoder_config", "encoder_state", "load_encoder"]

_SWIN = "swin."
_RAW_SUFFIXES = (".pt", ".pth", ".bin")


def _is_ckpt(path: Path) -> bool:
    return path.is_file() and path.suffix == ".ckpt"


def _is_raw(path: Path) -> bool:
    return path.is_file() and path.suffix in _RAW_SUFFIXES


def _pretrained_kind(source: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    from velvet.models.pretrained import _resolve_location, read_pretrained_config

    folder = _resolve_location(source)
    return folder, read_pretrained_config(folder)


def encoder_config(source: str | os.PathLike[str]) -> SwinConfig | None:
    """The Swin architecture a source was trained with; None when the source does not record it
    (a raw MONAI state dict: give the architecture in the recipe).

    Raises:
        ValueError: the source holds a ViT, or is not a velvet source at all.
    """
    from velvet.models.vision.factory import resolve_vision_config

    path = Path(source)
    if _is_raw(path):
        return None
    if _is_ckpt(path):
        from velvet.models.config import VelvetConfig
        from velvet.models.weights import read_weights

        meta = read_weights(path).get("velvet")
        if not isinstance(meta, Mapping) or "model_config" not in meta:
            raise ValueError(f"{path}: not a velvet pretraining checkpoint (no 'velvet' model record)")
        vision: Any = VelvetConfig.from_dict(meta["model_config"]).vision
    else:
        _, config = _pretrained_kind(source)
        kind, arch = config["kind"], config["model"]
        vision = arch["vision"] if kind in ("velvet", "segmentation") else arch
    resolved = resolve_vision_config(vision)
    if not isinstance(resolved, SwinConfig):
        raise ValueError(f"{source}: holds a {resolved.arch} vision encoder; segmentation needs a Swin encoder")
    return resolved


def encoder_state(source: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The encoder weights of a source under plain MONAI ``SwinTransformer`` keys, and a description.

    Raises:
        ValueError: the source holds no Swin encoder.
    """
    path = Path(source)
    if _is_raw(path):
        from velvet.models.convert import read_state_dict
        from velvet.models.convert.swin import convert_swin_state_dict

        raw, name = read_state_dict(path)
        converted = convert_swin_state_dict(raw)
        return {k[len(_SWIN) :]: v for k, v in converted.items()}, f"MONAI Swin weights {name}"
    if _is_ckpt(path):
        from velvet.models.initialize import _velvet_state

        state = _velvet_state(path, "vision")
        what = f"pretraining checkpoint {path}"
    else:
        from velvet.models.pretrained import WEIGHTS_NAME, verify_pretrained_files
        from velvet.models.weights import read_weights

        folder, config = _pretrained_kind(source)
        verify_pretrained_files(folder, config)
        weights = read_weights(folder / WEIGHTS_NAME)
        prefix = {"velvet": "vision.", "vision": "", "segmentation": ENCODER_PREFIX}.get(config["kind"])
        if prefix is None:
            raise ValueError(f"{folder} holds a {config['kind']} model: it has no vision encoder")
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        if config["kind"] == "segmentation":
            state = {_SWIN + k: v for k, v in state.items()}
        what = f"{config['kind']} model {folder}"
    if not any(k.startswith(_SWIN) for k in state):
        raise ValueError(f"{source}: holds no Swin encoder weights ('{_SWIN}*' keys); is it a ViT model?")
    return {k[len(_SWIN) :]: v for k, v in state.items() if k.startswith(_SWIN)}, what


def load_encoder(model: nn.Module, source: str | os.PathLike[str], *, strict: bool = True) -> str:
    """Load a pretrained encoder into ``model.encoder`` (a SegmentationModel's SwinUNETR ``swinViT``).

    Args:
        model: a :class:`~velvet.models.segmentation.SegmentationModel`.
        source: see the module docstring.
        strict: fail on any missing, unexpected or mismatched encoder weight (False loads what fits).

    Returns:
        A one-line summary for logs.

    Raises:
        velvet.models.weights.WeightsMismatchError: the weights do not fit the encoder (the message lists them).
        ValueError: the source holds no Swin encoder.
    """
    from velvet.models.weights import load_state_dict_checked

    state, what = encoder_state(source)
    target: nn.Module = model.encoder  # type: ignore[assignment]
    expected = target.state_dict()
    # relative_position_index is a constant of the window size; sources written by MONAI's SSL code lack it
    for key, value in expected.items():
        if key.endswith("relative_position_index") and key not in state:
            state[key] = value
    load_state_dict_checked(target, state, strict=strict, source=f"encoder weights of {what}")
    return f"encoder from {what}: {len(state)} tensors"

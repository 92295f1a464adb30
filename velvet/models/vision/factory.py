"""Build a vision encoder by preset name, JSON file, dict or config: ``create_vision_encoder``."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from velvet.models.vision.config import (
    SwinConfig,
    ViTConfig,
    get_vision_config,
    list_vision_presets,
    vision_config_from_dict,
)

__all__ = ["build_vision_encoder", "create_vision_encoder", "list_vision_presets", "resolve_vision_config"]

logger = logging.getLogger(__name__)

ConfigSpec = str | os.PathLike[str] | Mapping[str, Any] | SwinConfig | ViTConfig


def resolve_vision_config(spec: ConfigSpec, **overrides: Any) -> SwinConfig | ViTConfig:
    """A config from a preset name, a ``.json`` file, a dict (with ``"arch"`` or ``"preset"``) or a config.

    Overrides set to None are ignored (as timm does), so callers can pass optional CLI values through.

    Raises:
        ValueError: unknown preset, unreadable spec, unknown fields or bad values.
    """
    if isinstance(spec, (SwinConfig, ViTConfig)):
        config = spec
    elif isinstance(spec, Mapping):
        config = vision_config_from_dict(spec)
    elif str(spec).endswith(".json") or Path(spec).is_file():
        try:
            data = json.loads(Path(spec).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{spec}: cannot read a vision encoder config ({err})") from err
        config = vision_config_from_dict(data)
    else:
        config = get_vision_config(str(spec))
    changes = {k: v for k, v in overrides.items() if v is not None}
    return config.replace(**changes) if changes else config


def build_vision_encoder(config: SwinConfig | ViTConfig) -> nn.Module:
    """The encoder module of a config (imports MONAI on first use)."""
    kwargs = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    encoder: nn.Module
    if isinstance(config, SwinConfig):
        from velvet.models.vision.swin import SwinEncoder3D

        encoder = SwinEncoder3D(**kwargs)
    else:
        from velvet.models.vision.vit import ViTEncoder3D

        encoder = ViTEncoder3D(**kwargs)
    encoder.config = config  # save_pretrained stores the architecture from it
    return encoder


def create_vision_encoder(name_or_config: ConfigSpec, **overrides: Any) -> nn.Module:
    """Build a vision encoder that follows :class:`~velvet.models.vision.base.VisionEncoder`.

    Args:
        name_or_config: a preset (see :func:`list_vision_presets`), a JSON file, a dict or a config.
        **overrides: config fields to change, e.g. ``use_checkpoint=True``; None values are ignored.

    Returns:
        A randomly initialised :class:`~velvet.models.vision.swin.SwinEncoder3D` or
        :class:`~velvet.models.vision.vit.ViTEncoder3D`.

    Example:
        >>> enc = create_vision_encoder("swin-tiny")
        >>> enc.feature_dims, enc.embed_dim
        ((24, 48, 96, 192), 192)
    """
    config = resolve_vision_config(name_or_config, **overrides)
    model = build_vision_encoder(config)
    logger.debug("built vision encoder %s: %s", type(model).__name__, config)
    return model

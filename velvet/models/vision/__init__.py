"""3D vision encoders: the Swin encoder (MONAI ``SwinTransformer``) and the ViT baseline (MONAI ``ViT``).

The interface (:class:`VisionEncoder`) and the configs import nothing heavy; the encoder modules (which
import MONAI) load on first access.

Example:
    >>> from velvet.models.vision import create_vision_encoder
    >>> encoder = create_vision_encoder("swin-tiny")
"""

from __future__ import annotations

from velvet._lazy import lazy_exports
from velvet.models.vision.base import VisionEncoder, VisionEncoderOutput
from velvet.models.vision.config import (
    VISION_PRESETS,
    SwinConfig,
    ViTConfig,
    get_vision_config,
    list_vision_presets,
    vision_config_from_dict,
)

_LAZY = {
    "SwinEncoder3D": "velvet.models.vision.swin",
    "ViTEncoder3D": "velvet.models.vision.vit",
    "create_vision_encoder": "velvet.models.vision.factory",
    "build_vision_encoder": "velvet.models.vision.factory",
    "resolve_vision_config": "velvet.models.vision.factory",
    "fuse_window_attention": "velvet.models.vision.window_attention",
    "make_ssl_views": "velvet.models.vision.ssl_views",
    "rotate_views": "velvet.models.vision.ssl_views",
    "cutout": "velvet.models.vision.ssl_views",
}

__all__ = [
    "VISION_PRESETS",
    "SwinConfig",
    "SwinEncoder3D",
    "ViTConfig",
    "ViTEncoder3D",
    "VisionEncoder",
    "VisionEncoderOutput",
    "build_vision_encoder",
    "create_vision_encoder",
    "cutout",
    "fuse_window_attention",
    "get_vision_config",
    "list_vision_presets",
    "make_ssl_views",
    "resolve_vision_config",
    "rotate_views",
    "vision_config_from_dict",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

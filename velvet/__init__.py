"""velvet: 3D volumetric vision-language pretraining for CT (VELVET-Med).

``import velvet`` is deliberately light: heavy dependencies (MONAI, transformers, Lightning) are
imported only when the attribute that needs them is first used (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute", resolved on first access
_LAZY: dict[str, str] = {
    "read_volume": "velvet.data.io:read_volume",
    "Volume": "velvet.data.io:Volume",
    "inspect_volume": "velvet.data.inspect:inspect_volume",
    "PreprocessContract": "velvet.data.contract:PreprocessContract",
    "create_transforms": "velvet.data.transforms:create_transforms",
    "read_manifest": "velvet.data.manifest:read_manifest",
    "TriBertTokenizer": "velvet.data.tokenization:TriBertTokenizer",
    "split_sentences": "velvet.data.reports:split_sentences",
    "VelvetModel": "velvet.models.velvet:VelvetModel",
    "from_pretrained": "velvet.models.pretrained:from_pretrained",
    "save_pretrained": "velvet.models.pretrained:save_pretrained",
    "list_pretrained": "velvet.hub:list_pretrained",
    "load_pretrained": "velvet.hub:load_pretrained",
    "register_pretrained": "velvet.hub:register_pretrained",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'velvet' has no attribute {name!r}")
    module_name, attr = target.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

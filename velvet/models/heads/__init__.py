"""Task heads on top of the encoders: vision SSL heads (:mod:`.vision_ssl`) and the MLM head (:mod:`.mlm`).

Names load on first access, so ``import velvet.models.heads`` imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RotationHead": "velvet.models.heads.vision_ssl",
    "ContrastiveProjection": "velvet.models.heads.vision_ssl",
    "ReconstructionDecoder": "velvet.models.heads.vision_ssl",
    "MLMHead": "velvet.models.heads.mlm",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value

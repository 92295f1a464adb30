"""Task heads on top of the encoders: vision SSL heads (:mod:`.vision_ssl`) and the MLM head (:mod:`.mlm`).

Names load on first access, so ``import velvet.models.heads`` imports nothing heavy.
"""

from __future__ import annotations

from velvet._lazy import lazy_exports

_LAZY = {
    "RotationHead": "velvet.models.heads.vision_ssl",
    "ContrastiveProjection": "velvet.models.heads.vision_ssl",
    "ReconstructionDecoder": "velvet.models.heads.vision_ssl",
    "MLMHead": "velvet.models.heads.mlm",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

"""Pretraining losses of VELVET-Med: parameter-free ``nn.Module``\\ s returning named terms.

Each loss returns ``{"<name>_loss": tensor}``; the task weights and sums the ``*_loss`` terms.
The only learnable piece, the clamped logit scale, is :class:`LogitScale` (owned by the model).
Names are resolved lazily (PEP 562) so ``import velvet.losses`` does not import torch by itself.
"""

from __future__ import annotations

from velvet._lazy import lazy_exports

# public name -> "module:attribute", resolved on first access
_LAZY: dict[str, str] = {
    "ClipLoss": "velvet.losses.contrastive:ClipLoss",
    "LogitScale": "velvet.losses.temperature:LogitScale",
    "LocalAlignmentLoss": "velvet.losses.local_alignment:LocalAlignmentLoss",
    "local_similarity": "velvet.losses.local_alignment:local_similarity",
    "NTXentLoss": "velvet.losses.ntxent:NTXentLoss",
    "VisionSSLLoss": "velvet.losses.vision_ssl:VisionSSLLoss",
    "masked_l1": "velvet.losses.vision_ssl:masked_l1",
    "MLMLoss": "velvet.losses.mlm:MLMLoss",
    "mask_tokens": "velvet.losses.mlm:mask_tokens",
    "ITMLoss": "velvet.losses.itm:ITMLoss",
    "itm_labels": "velvet.losses.itm:itm_labels",
    "sample_hard_negatives": "velvet.losses.itm:sample_hard_negatives",
    "all_gather_with_grad": "velvet.losses.distributed:all_gather_with_grad",
    "all_gather_padded": "velvet.losses.distributed:all_gather_padded",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

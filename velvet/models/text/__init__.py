"""TriBERT, the multi-level text encoder (report / sentence / word levels, optional fusion layers).

The config, mask and pooling helpers import only torch; :class:`TriBert` (which imports transformers'
BERT building blocks) is loaded on first access.
"""

from __future__ import annotations

from velvet._lazy import lazy_exports
from velvet.models.text.config import (
    TEXT_ENCODER_PRESETS,
    TextEncoderConfig,
    list_text_presets,
    text_encoder_config,
)
from velvet.models.text.masks import attention_bias, key_padding_mask, sentence_attention_mask
from velvet.models.text.pooling import PooledText, pool_text

_LAZY = {name: "velvet.models.text.tribert" for name in ("TriBert", "TextOutputs", "load_bert_state_dict")}

__all__ = [
    "TEXT_ENCODER_PRESETS",
    "PooledText",
    "TextEncoderConfig",
    "TextOutputs",
    "TriBert",
    "attention_bias",
    "key_padding_mask",
    "list_text_presets",
    "load_bert_state_dict",
    "pool_text",
    "sentence_attention_mask",
    "text_encoder_config",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

"""Volume-language models: velvet encoders as a soft prompt to a causal LM (VQA, report generation).

Data flow (method.md 6.3): volume -> vision encoder -> visual tokens (pooled maps) -> the bridge
(the question through TriBERT's fusion layers, cross-attending to the visual tokens, and/or the
visual tokens themselves) -> linear projection to the LM width -> ``inputs_embeds`` prefix of a
Hugging Face causal LM (LoRA through ``peft``) -> the answer or the report.
"""

from __future__ import annotations

from velvet._lazy import lazy_exports

_LAZY = {
    "VLMConfig": "velvet.vlm.config:VLMConfig",
    "VolumeLanguageModel": "velvet.vlm.model:VolumeLanguageModel",
    "load_causal_lm": "velvet.vlm.language_model:load_causal_lm",
    "train_lm_tokenizer": "velvet.vlm.language_model:train_lm_tokenizer",
    "apply_lora": "velvet.vlm.lora:apply_lora",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

"""A tiny velvet encoder (with fusion layers) and a tiny Llama-architecture LM, built offline."""

from __future__ import annotations

import pytest
import torch

LLAMA = {
    "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
}  # fmt: skip


@pytest.fixture(scope="module")
def encoder(tokenizer):
    from velvet.models.config import get_model_config
    from velvet.models.velvet import VelvetModel

    torch.manual_seed(0)
    model = VelvetModel(get_model_config("velvet-tiny").for_data(tokenizer=tokenizer)).eval()
    model.tokenizer = tokenizer
    return model


@pytest.fixture(scope="module")
def lm_tokenizer(reports):
    from velvet.vlm.language_model import train_lm_tokenizer

    extra = [
        "Question: Is there a lesion? Options: A. Yes B. No Answer: A. Yes",
        "Write the radiology report.",
    ]
    return train_lm_tokenizer(reports + extra, vocab_size=400)


@pytest.fixture
def make_vlm(encoder, lm_tokenizer):
    """``make_vlm(**VLMConfig fields)``: a fresh model (seeded) around the shared encoder."""
    from velvet.vlm.config import VLMConfig
    from velvet.vlm.language_model import load_causal_lm
    from velvet.vlm.model import VolumeLanguageModel

    def make(**fields):
        import copy

        torch.manual_seed(1)
        lm, tok = load_causal_lm({"config": dict(LLAMA)}, lm_tokenizer)
        fields.setdefault("lm", {"config": dict(LLAMA)})
        # a copy: tests may change its dtype or weights
        return VolumeLanguageModel(copy.deepcopy(encoder), lm, tok, VLMConfig(**fields))

    return make

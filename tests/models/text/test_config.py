"""TextEncoderConfig: presets, round trip, validation."""

from __future__ import annotations

import json

import pytest

from velvet.models.text.config import TextEncoderConfig, list_text_presets, text_encoder_config


def test_presets():
    assert list_text_presets() == ["bt", "bt-mm", "st", "st-mm", "text-tiny"]
    layers = {
        name: (c.num_text_layers, c.num_fusion_layers)
        for name in list_text_presets()
        for c in [text_encoder_config(name, vocab_size=30572)]
    }
    assert layers == {"bt": (12, 0), "st": (6, 0), "bt-mm": (12, 6), "st-mm": (6, 6), "text-tiny": (2, 1)}
    bt = text_encoder_config("bt", vocab_size=30572, pad_token_id=0)
    assert (bt.hidden_size, bt.num_attention_heads, bt.intermediate_size, bt.type_vocab_size) == (
        768,
        6,
        3072,
        51,
    )
    tiny = text_encoder_config("text-tiny", vocab_size=128)
    assert (tiny.hidden_size, tiny.num_attention_heads, tiny.max_position_embeddings) == (32, 2, 64)


def test_vocab_comes_from_the_caller_and_none_overrides_are_ignored():
    cfg = text_encoder_config("st", vocab_size=999, pad_token_id=7, num_fusion_layers=None, hidden_size=None)
    assert (cfg.vocab_size, cfg.pad_token_id, cfg.num_fusion_layers, cfg.hidden_size) == (999, 7, 0, 768)
    with pytest.raises(TypeError):
        text_encoder_config("st")  # type: ignore[call-arg]


def test_round_trip_through_json():
    cfg = text_encoder_config("bt-mm", vocab_size=30572, vision_width=384, attn_implementation="eager")
    again = TextEncoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert cfg.replace(num_text_layers=3).num_text_layers == 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_attention_heads": 5}, "not a multiple"),
        ({"itc_last_n_layers": 13}, "itc_last_n_layers"),
        ({"attn_implementation": "flash"}, "attn_implementation"),
        ({"pad_token_id": 30572}, "pad_token_id"),
        ({"hidden_dropout_prob": 1.0}, "hidden_dropout_prob"),
        ({"type_vocab_size": 1}, "type_vocab_size"),
        ({"num_fusion_layers": -1}, "num_fusion_layers"),
    ],
)
def test_invalid_values(changes, message):
    with pytest.raises(ValueError, match=message):
        text_encoder_config("bt", vocab_size=30572, **changes)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown TextEncoderConfig keys"):
        TextEncoderConfig.from_dict({"vocab_size": 10, "hiden_size": 8})
    with pytest.raises(ValueError, match="choose one of"):
        text_encoder_config("bert-large", vocab_size=10)


def test_bert_configs():
    cfg = text_encoder_config("st-mm", vocab_size=300, attn_implementation="eager")
    text, fusion = cfg.to_bert_config(), cfg.to_bert_config(cross_attention=True)
    assert (text.num_hidden_layers, text.is_decoder, text.vocab_size) == (6, False, 300)
    assert (fusion.num_hidden_layers, fusion.add_cross_attention) == (6, True)
    assert text._attn_implementation == "eager"

"""The tri-level attention mask: equal to a naive loop, and really used by the model."""

from __future__ import annotations

import pytest
import torch

from velvet.models.text.config import text_encoder_config
from velvet.models.text.masks import attention_bias, key_padding_mask, sentence_attention_mask
from velvet.models.text.tribert import TriBert


def naive_mask(sentence_ids, sentence_token_mask, attention_mask):
    batch, length = sentence_ids.shape
    mask = torch.zeros(batch, length, length, dtype=torch.bool)
    for b in range(batch):
        for i in range(length):
            for j in range(length):
                if not attention_mask[b, i]:
                    mask[b, i, j] = i == j
                elif sentence_token_mask[b, i]:
                    mask[b, i, j] = bool(attention_mask[b, j]) and (
                        j == 0 or sentence_ids[b, j] == sentence_ids[b, i]
                    )
                else:
                    mask[b, i, j] = bool(attention_mask[b, j])
    return mask


def test_mask_matches_naive_loop(batch, make_batch):
    for b in (batch, make_batch([[[2, 1], [1], [3]], [[1]]], length=14)):
        args = (b["sentence_ids"], b["sentence_token_mask"], b["attention_mask"])
        fast = sentence_attention_mask(*args)
        assert fast.dtype == torch.bool
        assert torch.equal(fast, naive_mask(*args))
        assert fast.any(-1).all(), "a fully masked row"


def test_attention_bias_formats(batch):
    mask = sentence_attention_mask(
        batch["sentence_ids"], batch["sentence_token_mask"], batch["attention_mask"]
    )
    sdpa = attention_bias(mask, implementation="sdpa", dtype=torch.float32)
    eager = attention_bias(mask, implementation="eager", dtype=torch.bfloat16)
    assert sdpa.shape == eager.shape == (3, 1, *mask.shape[1:])
    assert torch.equal(sdpa[:, 0], mask)
    assert eager.dtype == torch.bfloat16
    assert torch.equal(eager[:, 0] == 0, mask)
    assert (eager[:, 0][~mask] == torch.finfo(torch.bfloat16).min).all()
    with pytest.raises(ValueError, match="implementation"):
        attention_bias(mask, implementation="flash", dtype=torch.float32)


def test_key_padding_mask_never_empty():
    mask = key_padding_mask(torch.tensor([[True, True, False], [False, False, False]]))
    assert mask.shape == (2, 1, 3)
    assert mask[0, 0].tolist() == [True, True, False]
    assert mask[1, 0].all()


def _run(model, b):
    with torch.no_grad():
        return model.forward_text(*(b[k] for k in TriBert.TEXT_KEYS))


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_sentence_token_sees_only_cls_and_its_sentence(make_batch, impl):
    b = make_batch([[[1, 2], [2, 1], [1, 1]]])  # [CLS] [SEN1] a bb [SEN2] cc d [SEN3] e f
    # One text layer: in deeper stacks [SEN_k] legitimately sees other sentences through [CLS] and
    # the word tokens of its own sentence (which attend to everything), as in the reference model.
    cfg = text_encoder_config(
        "text-tiny",
        vocab_size=128,
        num_text_layers=1,
        attn_implementation=impl,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = TriBert(cfg).eval()
    sen1, sen2, word_in_1 = 1, 5, 2
    base = _run(model, b)

    other = {k: v.clone() for k, v in b.items()}
    other["input_ids"][0, 9] = 77 if b["input_ids"][0, 9] != 77 else 78  # a piece of sentence 3
    changed = _run(model, other)
    torch.testing.assert_close(changed[0, sen1], base[0, sen1], atol=1e-6, rtol=0)
    torch.testing.assert_close(changed[0, sen2], base[0, sen2], atol=1e-6, rtol=0)
    assert (changed[0, word_in_1] - base[0, word_in_1]).abs().max() > 1e-4, "word tokens must see everything"
    assert (changed[0, 0] - base[0, 0]).abs().max() > 1e-4, "[CLS] must see everything"

    own = {k: v.clone() for k, v in b.items()}
    own["input_ids"][0, 3] = 77 if b["input_ids"][0, 3] != 77 else 78  # a piece of sentence 1
    changed = _run(model, own)
    assert (changed[0, sen1] - base[0, sen1]).abs().max() > 1e-4
    torch.testing.assert_close(changed[0, sen2], base[0, sen2], atol=1e-6, rtol=0)


def test_plain_mode_has_no_sentence_restriction(make_batch):
    b = make_batch([[[1, 2], [2, 1], [1, 1]]])
    cfg = text_encoder_config(
        "text-tiny",
        vocab_size=128,
        num_text_layers=1,
        sentence_modeling=False,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = TriBert(cfg).eval()
    base = _run(model, b)
    other = {k: v.clone() for k, v in b.items()}
    other["input_ids"][0, 9] = 77 if b["input_ids"][0, 9] != 77 else 78
    assert (_run(model, other)[0, 1] - base[0, 1]).abs().max() > 1e-4

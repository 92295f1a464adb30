"""TriBert: gradients, attention backends, checkpointing, fusion layers, BERT equivalence."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from velvet.models.text.config import text_encoder_config
from velvet.models.text.tribert import TriBert, load_bert_state_dict

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def tiny(**overrides) -> TriBert:
    torch.manual_seed(0)
    return TriBert(text_encoder_config("text-tiny", vocab_size=128, **{**NO_DROPOUT, **overrides}))


def text_args(batch):
    return [batch[k] for k in TriBert.TEXT_KEYS]


def visual(batch_size=3, tokens=5, width=32, seed=1):
    return torch.randn(batch_size, tokens, width, generator=torch.Generator().manual_seed(seed))


def test_shapes_and_every_parameter_gets_a_gradient(batch):
    model = tiny().train()
    out = model.forward_text(*text_args(batch), output_all=True)
    length = batch["input_ids"].shape[1]
    assert out["itc"].shape == (3, length, 32)
    assert len(out["hidden_states"]) == 3
    fused = model.forward_fusion(out["last_hidden_state"], *text_args(batch)[2:], visual())
    assert fused.shape == (3, length, 32)
    pooled = model.pool(out["itc"], batch["word_ids"], *text_args(batch)[3:], batch["attention_mask"])
    gen = torch.Generator().manual_seed(2)
    loss = sum(
        (t * torch.randn(t.shape, generator=gen)).sum() for t in (fused, pooled["sentences"], pooled["words"])
    )
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, no_grad
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # Type 0 is padding: its row stays zero and gets no gradient.
    assert not model.embeddings.token_type_embeddings.weight[0].any()
    assert not model.embeddings.token_type_embeddings.weight.grad[0].any()


def test_eager_equals_sdpa(batch):
    sdpa, eager = tiny(attn_implementation="sdpa").eval(), tiny(attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    visual_mask = torch.ones(3, 5, dtype=torch.bool)
    visual_mask[1, 3:] = False
    with torch.no_grad():
        outs = []
        for model in (sdpa, eager):
            hidden = model.forward_text(*text_args(batch))
            outs += [
                hidden,
                model.forward_fusion(hidden, *text_args(batch)[2:], visual(), visual_mask=visual_mask),
            ]
    torch.testing.assert_close(outs[0], outs[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[1], outs[3], atol=1e-5, rtol=1e-5)


def test_grad_checkpointing_gives_identical_outputs_and_grads(batch):
    model = tiny().train()

    def step():
        model.zero_grad()
        hidden = model.forward_text(*text_args(batch))
        out = model.forward_fusion(hidden, *text_args(batch)[2:], visual())
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_out, plain_grads = step()
    model.set_grad_checkpointing(True)
    ckpt_out, ckpt_grads = step()
    torch.testing.assert_close(ckpt_out, plain_out, atol=0, rtol=0)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, atol=1e-7, rtol=1e-6, msg=name)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_fusion_is_bidirectional_and_uses_visual_tokens(batch, impl):
    model = tiny(attn_implementation=impl).eval()
    hidden = torch.randn(3, batch["input_ids"].shape[1], 32, generator=torch.Generator().manual_seed(3))
    args = text_args(batch)[2:]
    with torch.no_grad():
        base = model.forward_fusion(hidden, *args, visual())
        later = hidden.clone()
        later[2, -1] += 1.0  # the last token of the unpadded report
        changed = model.forward_fusion(later, *args, visual())
        assert (changed[2, 2] - base[2, 2]).abs().max() > 1e-4, "an earlier token must see a later one"
        torch.testing.assert_close(changed[:2], base[:2])

        other_visual = visual()
        other_visual[0, 2] += 1.0
        assert (model.forward_fusion(hidden, *args, other_visual)[0] - base[0]).abs().max() > 1e-4

        # Masking the last visual token is the same as not passing it.
        mask = torch.ones(3, 5, dtype=torch.bool)
        mask[:, -1] = False
        masked = model.forward_fusion(hidden, *args, visual(), visual_mask=mask)
        torch.testing.assert_close(
            masked, model.forward_fusion(hidden, *args, visual()[:, :4]), atol=1e-6, rtol=0
        )


def test_fusion_layer_is_bidirectional_without_a_mask():
    # transformers builds cross-attention layers as decoders (causal self-attention); with no mask SDPA
    # would fall back to is_causal. TriBert's fusion layers must stay bidirectional even then.
    layer = tiny(attn_implementation="sdpa").fusion_layers[0].eval()
    hidden = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(5))
    later = hidden.clone()
    later[:, -1] += 1.0
    with torch.no_grad():
        base, changed = layer(hidden, None, visual(2)), layer(later, None, visual(2))
    assert (changed[:, 0] - base[:, 0]).abs().max() > 1e-4


def test_fusion_with_other_vision_width(batch):
    model = tiny(vision_width=48).eval()
    hidden = model.forward_text(*text_args(batch))
    assert model.forward_fusion(hidden, *text_args(batch)[2:], visual(width=48)).shape == hidden.shape
    with pytest.raises(ValueError, match="vision_width"):
        model.forward_fusion(hidden, *text_args(batch)[2:], visual(width=32))
    with pytest.raises(ValueError, match="num_fusion_layers=0"):
        tiny(num_fusion_layers=0).forward_fusion(hidden, *text_args(batch)[2:], visual())


def test_forward_runs_text_then_fusion(batch):
    model = tiny().eval()
    with torch.no_grad():
        text = model.forward_text(*text_args(batch))
        torch.testing.assert_close(model(*text_args(batch)), text)
        fused = model.forward_fusion(text, *text_args(batch)[2:], visual())
        torch.testing.assert_close(model(*text_args(batch), visual_tokens=visual()), fused)


def test_itc_sums_last_layers_and_inputs_embeds(batch):
    model = tiny(itc_last_n_layers=2).eval()
    with torch.no_grad():
        out = model.forward_text(*text_args(batch), output_all=True)
        torch.testing.assert_close(out["itc"], out["hidden_states"][-1] + out["hidden_states"][-2])
        embeds = model.embeddings.word_embeddings(batch["input_ids"])
        via_embeds = model.forward_text(None, *text_args(batch)[1:], inputs_embeds=embeds)
        torch.testing.assert_close(via_embeds, out["itc"])
    with pytest.raises(ValueError, match="exactly one"):
        model.forward_text(batch["input_ids"], *text_args(batch)[1:], inputs_embeds=embeds)
    with pytest.raises(ValueError, match="sentence_ids"):
        model.forward_text(*text_args(batch)[:3])


def test_no_weight_decay():
    model = tiny()
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert "embeddings.position_embeddings.weight" in names
    assert "text_layers.0.attention.self.query.bias" in names
    assert "text_layers.0.output.LayerNorm.weight" in names
    assert "text_layers.0.attention.self.query.weight" not in names
    assert names <= set(params)
    assert all(params[n].ndim >= 2 for n in set(params) - names)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_reproduces_bert_model(impl):
    torch.manual_seed(0)
    bert_cfg = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    bert = BertModel(bert_cfg).eval()
    with torch.no_grad():  # random everything, LayerNorms included, so no parameter is at a trivial value
        for p in bert.parameters():
            p.normal_(0.0, 0.2)
    model = tiny(sentence_modeling=False, type_vocab_size=2, attn_implementation=impl).eval()
    missing = load_bert_state_dict(model, bert.state_dict())
    assert missing and all(k.startswith("fusion_layers.") for k in missing)

    input_ids = torch.randint(5, 128, (3, 12), generator=torch.Generator().manual_seed(4))
    attention_mask = torch.ones(3, 12, dtype=torch.bool)
    attention_mask[0, 7:] = False
    attention_mask[1, 10:] = False
    input_ids[~attention_mask] = 0
    token_type_ids = torch.zeros_like(input_ids)
    with torch.no_grad():
        expected = bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        got = model.forward_text(input_ids, token_type_ids, attention_mask)
    torch.testing.assert_close(got, expected.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_load_bert_state_dict_rejects_mismatches():
    model = tiny(sentence_modeling=False, type_vocab_size=2)
    state = {k.replace("text_layers.", "encoder.layer."): v for k, v in model.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.startswith("fusion_layers.")}
    with pytest.raises(ValueError, match="no place"):
        load_bert_state_dict(model, {**state, "encoder.layer.5.output.dense.weight": torch.zeros(1)})
    del state["encoder.layer.1.output.dense.weight"]
    with pytest.raises(ValueError, match="missing"):
        load_bert_state_dict(model, state)

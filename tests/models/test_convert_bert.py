"""BERT checkpoints -> TriBERT: keys, vocabulary growth, sentence token types, equal outputs."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from velvet.data.tokenization import TriBertTokenizer
from velvet.data.tokenizer_training import train_wordpiece
from velvet.models.convert import convert_bert_state_dict, load_bert_weights
from velvet.models.text import TriBert, text_encoder_config
from velvet.models.weights import WeightsMismatchError

REPORTS = [
    "The lungs are clear. No pleural effusion is seen.",
    "Heart size is normal. There is a small nodule in the left lower lobe.",
    "No focal consolidation. Mild degenerative changes of the spine.",
    "Stable appearance of the mediastinum. No pneumothorax.",
]
HIDDEN, LAYERS, HEADS = 32, 2, 4


@pytest.fixture(scope="module")
def base_tokenizer(tmp_path_factory):
    """A CXR-BERT-like WordPiece vocabulary: BERT's special tokens, no [SEN_k]."""
    folder = train_wordpiece(
        REPORTS, tmp_path_factory.mktemp("tok") / "wp", vocab_size=120, min_frequency=1, max_sentences=0
    )
    return TriBertTokenizer.from_pretrained(folder, sentence_modeling=False, max_length=64).tokenizer


def _source(cls: type, vocab_size: int, pad_id: int):
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=pad_id,
    )
    model = cls(cfg).eval()
    with torch.no_grad():  # non-trivial embeddings rows (BERT's init leaves token types small but random)
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _tribert(tok: TriBertTokenizer, **overrides) -> TriBert:
    fields = {
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,  # the source's head count: same function, not re-partitioned
        "intermediate_size": 64,
        "type_vocab_size": tok.type_vocab_size,
        "sentence_modeling": tok.sentence_modeling,
        **overrides,
    }
    cfg = text_encoder_config("text-tiny", vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, **fields)
    return TriBert(cfg).eval()


@pytest.mark.parametrize("source_cls", [BertModel, BertForMaskedLM])
def test_plain_text_outputs_match_source_bert(base_tokenizer, source_cls) -> None:
    """Without sentence modelling TriBert (types 1 on real tokens) computes exactly the source BERT (types 0)."""
    tok = TriBertTokenizer(base_tokenizer, sentence_modeling=False, max_length=64)
    source = _source(source_cls, tok.vocab_size, tok.pad_token_id)
    model = _tribert(tok)
    report = load_bert_weights(model, source.state_dict(), cls_token_id=tok.cls_token_id)

    assert report.prefix == ("bert." if source_cls is BertForMaskedLM else "")
    assert report.initialized == sorted(k for k in model.state_dict() if k.startswith("fusion_layers."))
    assert report.initialized and report.skipped == []
    heads = {k.split(".")[0] for k in report.dropped}
    assert heads == ({"cls"} if source_cls is BertForMaskedLM else {"pooler"})

    batch = tok(REPORTS[:3])
    mask = batch["attention_mask"]
    bert = source if source_cls is BertModel else source.bert
    with torch.no_grad():
        expected = bert(
            input_ids=batch["input_ids"],
            attention_mask=mask.long(),
            token_type_ids=torch.zeros_like(mask, dtype=torch.long),
        ).last_hidden_state
        got = model.forward_text(batch["input_ids"], batch["token_type_ids"], mask)
    assert (batch["token_type_ids"][mask] == 1).all()
    # padded positions differ (TriBert's type 0 is a zero padding row); nothing attends to them
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_prefix_is_optional_and_rows_are_expanded(base_tokenizer, tmp_path) -> None:
    """[SEN_k] rows are appended and start as [CLS]; token types 1..K start as type 0, type 0 is zero."""
    tok = TriBertTokenizer(base_tokenizer, sentence_modeling=True, max_sentences=4, max_length=64)
    n_src = len(base_tokenizer)
    assert tok.vocab_size == n_src + 4 and tok.sen_token_ids.min() == n_src
    source = _source(BertForMaskedLM, n_src, tok.pad_token_id).state_dict()
    bare = {k.removeprefix("bert."): v for k, v in source.items() if k.startswith("bert.")}
    torch.save(source, tmp_path / "cxr_bert.bin")

    results = []
    for src in (source, bare, tmp_path / "cxr_bert.bin"):
        model = _tribert(tok)
        load_bert_weights(model, src, cls_token_id=tok.cls_token_id, sen_token_ids=tok.sen_token_ids)
        results.append(model.state_dict())
    for other in results[1:]:
        assert all(
            torch.equal(results[0][k], other[k]) for k in results[0] if not k.startswith("fusion_layers.")
        )

    sd = results[0]
    words, src_words = (
        sd["embeddings.word_embeddings.weight"],
        source["bert.embeddings.word_embeddings.weight"],
    )
    torch.testing.assert_close(words[:n_src], src_words, rtol=0, atol=0)
    for sen_id in tok.sen_token_ids.tolist():
        torch.testing.assert_close(words[sen_id], src_words[tok.cls_token_id], rtol=0, atol=0)
    types, src_types = (
        sd["embeddings.token_type_embeddings.weight"],
        source["bert.embeddings.token_type_embeddings.weight"],
    )
    assert types.shape == (5, HIDDEN) and not types[0].any()
    torch.testing.assert_close(types[1:], src_types[0].expand(4, -1), rtol=0, atol=0)
    torch.testing.assert_close(
        sd["text_layers.1.output.dense.weight"],
        source["bert.encoder.layer.1.output.dense.weight"],
        rtol=0,
        atol=0,
    )
    # the pure mapping gives the same tensors
    mapped = convert_bert_state_dict(
        bare, _tribert(tok), cls_token_id=tok.cls_token_id, sen_token_ids=tok.sen_token_ids
    )
    assert set(mapped) == {k for k in sd if not k.startswith("fusion_layers.")}


def test_hidden_size_mismatch_names_key_and_shapes(base_tokenizer) -> None:
    tok = TriBertTokenizer(base_tokenizer, sentence_modeling=False, max_length=64)
    model = _tribert(tok, hidden_size=48, vision_width=48)
    source = _source(BertModel, tok.vocab_size, tok.pad_token_id)
    with pytest.raises(WeightsMismatchError) as err:
        load_bert_weights(model, source.state_dict(), cls_token_id=tok.cls_token_id)
    n = tok.vocab_size
    assert f"embeddings.word_embeddings.weight: ({n}, 32) vs ({n}, 48)" in str(err.value)
    assert "text_layers.0.attention.self.query.weight" in err.value.diff.mismatched


def test_extra_layers_unknown_rows_and_wrong_layout(base_tokenizer) -> None:
    tok = TriBertTokenizer(base_tokenizer, sentence_modeling=True, max_sentences=4, max_length=64)
    source = _source(BertModel, len(base_tokenizer), tok.pad_token_id).state_dict()
    one_layer = _tribert(tok, num_text_layers=1, num_fusion_layers=0)
    ids = {"cls_token_id": tok.cls_token_id, "sen_token_ids": tok.sen_token_ids}
    with pytest.raises(WeightsMismatchError, match="drop_extra_layers"):
        load_bert_weights(one_layer, source, **ids)
    report = load_bert_weights(one_layer, source, drop_extra_layers=True, **ids)
    assert "encoder.layer.1.output.dense.weight" in report.dropped and report.initialized == []
    with pytest.raises(ValueError, match="not \\[SEN_k\\] tokens"):
        load_bert_weights(_tribert(tok), source, cls_token_id=tok.cls_token_id)
    with pytest.raises(ValueError, match="not a BERT checkpoint.*conv1.weight"):
        load_bert_weights(_tribert(tok), {"conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}, **ids)

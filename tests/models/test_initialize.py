"""init_from: a whole model from a saved one, TriBERT from a BERT folder (vocabulary checked)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

import velvet
from velvet.data.tokenization import TriBertTokenizer
from velvet.data.tokenizer_training import train_wordpiece
from velvet.models.initialize import initialize_from
from velvet.models.weights import WeightsMismatchError

REPORTS = [
    "The lungs are clear. No pleural effusion is seen.",
    "Heart size is normal. There is a small nodule in the left lower lobe.",
    "No focal consolidation. Mild degenerative changes of the spine.",
    "Stable appearance of the mediastinum. No pneumothorax.",
]
TEXT = {"preset": "text-tiny", "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64,
        "max_position_embeddings": 64, "num_fusion_layers": 1, "num_text_layers": 2}


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A CXR-BERT-like folder: config.json (model_type bert), weights and its WordPiece vocabulary."""
    root = tmp_path_factory.mktemp("bert")
    vocab = train_wordpiece(REPORTS, root / "wp", vocab_size=120, min_frequency=1, max_sentences=0)
    hf_tok = TriBertTokenizer.from_pretrained(vocab, sentence_modeling=False, max_length=64).tokenizer
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(hf_tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=hf_tok.pad_token_id)
    bert = BertForMaskedLM(cfg).eval()
    folder = root / "cxr-bert"
    bert.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder, bert


def test_tribert_starts_from_the_bert_folder(bert_dir):
    folder, bert = bert_dir
    tok = TriBertTokenizer.from_pretrained(folder, max_length=64)  # the checkpoint's vocabulary + [SEN_k]
    model = velvet.create_model("velvet-tiny", tokenizer=tok, text=TEXT)
    fusion_before = {k: v.clone() for k, v in model.text.state_dict().items() if "fusion" in k}
    summary = initialize_from(model, folder, part="text", tokenizer=tok)
    assert "text encoder from" in summary
    text = model.text.state_dict()
    source = bert.state_dict()
    # a layer copied one to one, and the word rows of the checkpoint's ids unchanged
    q = next(k for k in text if k.endswith("query.weight") and "fusion" not in k)
    assert any(torch.equal(text[q], v) for k, v in source.items() if k.endswith("layer.0.attention.self.query.weight"))
    words = next(k for k in text if k.endswith("word_embeddings.weight"))
    n = source["bert.embeddings.word_embeddings.weight"].shape[0]
    assert torch.equal(text[words][:n][: tok.cls_token_id], source["bert.embeddings.word_embeddings.weight"][: tok.cls_token_id])
    # [SEN_k] rows are copies of [CLS]; the fusion layers keep their initialisation
    sen = torch.as_tensor(tok.sen_token_ids)
    assert torch.equal(text[words][sen], text[words][tok.cls_token_id].expand(len(sen), -1))
    assert all(torch.equal(text[k], v) for k, v in fusion_before.items())


def test_a_tokenizer_with_other_ids_is_refused(bert_dir, tmp_path):
    # the same words and size with two ids swapped: nothing but the check can tell the rows are wrong
    folder, _ = bert_dir
    other = tmp_path / "swapped"
    shutil.copytree(folder, other)
    spec = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    a, b = [t for t in vocab if t.isalpha()][:2]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    for extra in other.glob("vocab.txt"):
        extra.unlink()
    tok = TriBertTokenizer.from_pretrained(other, max_length=64)
    model = velvet.create_model("velvet-tiny", tokenizer=tok, text=TEXT)
    with pytest.raises(ValueError, match="2 of .* tokens have other ids"):
        initialize_from(model, folder, part="text", tokenizer=tok)


def test_whole_model_and_one_encoder_from_a_saved_model(tmp_path, tokenizer):
    torch.manual_seed(1)
    source = velvet.create_model("velvet-tiny", tokenizer=tokenizer)
    source.save_pretrained(tmp_path / "saved")
    torch.manual_seed(2)
    target = velvet.create_model("velvet-tiny", tokenizer=tokenizer)
    initialize_from(target, tmp_path / "saved", part="vision")
    assert all(torch.equal(a, b) for a, b in zip(target.vision.state_dict().values(), source.vision.state_dict().values(), strict=True))
    assert not torch.equal(target.heads["image_report"].linear.weight, source.heads["image_report"].linear.weight)
    initialize_from(target, tmp_path / "saved")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    # a model with other projection levels does not fit the whole source: a readable diff, not a silent load
    narrow = velvet.create_model("velvet-tiny", tokenizer=tokenizer, levels=["report"])
    with pytest.raises(WeightsMismatchError, match="image_word"):
        initialize_from(narrow, tmp_path / "saved")

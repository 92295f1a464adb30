"""Offline WordPiece training and the ``velvet tokenizer`` command."""

from __future__ import annotations

import json
import logging

import pytest

from velvet.cli.main import main
from velvet.data.tokenization import TriBertTokenizer
from velvet.data.tokenizer_training import BERT_SPECIAL_TOKENS, train_wordpiece

CORPUS = [
    "Trachea and both main bronchi are open. Mediastinal structures are normal.",
    "A 3.5 mm nodule in the right lung. No pleural effusion.",
    "Hepatosteatosis. Cholelithiasis. Hiatal hernia.",
    "Bilateral ground-glass opacities, compatible with viral pneumonia?",
]


def _words(tok: TriBertTokenizer, texts: list[str]) -> list[str]:
    backend = tok.tokenizer.backend_tokenizer
    return [
        w
        for t in texts
        for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(t))
    ]


def test_train_and_load(tmp_path):
    out = train_wordpiece(CORPUS, tmp_path / "tok", vocab_size=200, min_frequency=1, max_sentences=10)
    assert out == tmp_path / "tok" and (out / "tokenizer.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    tok = TriBertTokenizer.from_pretrained(out, max_sentences=10)
    vocab = tok.tokenizer.get_vocab()
    assert [vocab[t] for t in BERT_SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert [vocab[f"[SEN_{k}]"] for k in (1, 10)] == [5, 14]
    assert tok.vocab_size == len(vocab) <= 200  # the [SEN_k] tokens were already there
    # no word of the corpus is unknown
    for word in _words(tok, CORPUS):
        assert tok.tokenizer.unk_token_id not in tok.tokenizer(word, add_special_tokens=False)["input_ids"], (
            word
        )
    # the saved folder is a plain transformers tokenizer too
    from transformers import BertTokenizerFast

    assert BertTokenizerFast.from_pretrained(str(out)).convert_tokens_to_ids("[SEN_1]") == 5


def test_train_skips_empty_reports_and_overwrites(tmp_path, caplog):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "stale.txt").write_text("old", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="velvet.data.tokenizer_training"):
        train_wordpiece([*CORPUS, "", "  \u00a0 ", None], out, vocab_size=150, min_frequency=1)  # type: ignore[list-item]
    assert "on 4 reports (3 empty or unusable skipped)" in caplog.text
    assert not (out / "stale.txt").exists() and (out / "tokenizer.json").is_file()


def test_cased_training_keeps_case(tmp_path):
    out = train_wordpiece(CORPUS, tmp_path / "cased", vocab_size=200, min_frequency=1, lowercase=False)
    tok = TriBertTokenizer.from_pretrained(out)
    assert tok.words_from_pieces(tok(["Hiatal hernia."]), 0) == ["Hiatal", "hernia", "."]


def test_train_errors(tmp_path):
    with pytest.raises(ValueError, match="no report with text"):
        train_wordpiece(["", " "], tmp_path / "a")
    with pytest.raises(ValueError, match="leaves no room"):
        train_wordpiece(CORPUS, tmp_path / "b", vocab_size=40)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------- CLI


def _vocab(folder) -> dict[str, int]:
    return json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]


def test_cli_train_from_csv_column(tmp_path, capsys):
    corpus = tmp_path / "reports.csv"
    corpus.write_text(
        "id,findings\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(CORPUS)), encoding="utf-8"
    )
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--column", "findings", "--vocab-size", "150",
                 "--min-frequency", "1", "--out", str(tmp_path / "tok")]) == 0  # fmt: skip
    assert "wrote tokenizer" in capsys.readouterr().out
    tok = TriBertTokenizer.from_pretrained(tmp_path / "tok")
    unk = tok.tokenizer.unk_token_id
    assert all(
        unk not in tok.tokenizer(w, add_special_tokens=False)["input_ids"] for w in _words(tok, CORPUS)
    )
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--out", str(tmp_path / "x")]) == 1
    assert "no column 'report_text'" in capsys.readouterr().err


def test_cli_train_from_manifest_uses_the_train_split(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    rows = [
        {"id": f"c{i}", "volume": f"v{i}.nii.gz", "split": "train", "report": t} for i, t in enumerate(CORPUS)
    ]
    rows.append({"id": "t0", "volume": "t.nii.gz", "split": "test", "report": "Ψ sign seen."})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["tokenizer", "train", "--corpus", str(manifest), "--vocab-size", "150", "--min-frequency", "1"]
    assert main([*args, "--out", str(tmp_path / "train")]) == 0
    assert main([*args, "--split", "all", "--out", str(tmp_path / "all")]) == 0
    assert "ψ" not in _vocab(tmp_path / "train")  # the test report was not read
    assert "ψ" in _vocab(tmp_path / "all")


def test_cli_train_from_txt_file_and_folder(tmp_path):
    lines = tmp_path / "reports.txt"
    lines.write_text("\n".join(CORPUS) + "\n\n", encoding="utf-8")
    folder = tmp_path / "reports"
    folder.mkdir()
    for i, text in enumerate(CORPUS):
        (folder / f"r{i}.txt").write_text(text.replace(". ", ".\n"), encoding="utf-8")
    for corpus, out in ((lines, "a"), (folder, "b")):
        assert main(["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "150", "--out",
                     str(tmp_path / out)]) == 0  # fmt: skip
        assert "[SEN_1]" in _vocab(tmp_path / out)
    assert (
        main(["tokenizer", "train", "--corpus", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "c")])
        == 1
    )


def test_cli_encode_prints_the_layout(tmp_path, capsys):
    out = train_wordpiece(CORPUS, tmp_path / "tok", vocab_size=200, min_frequency=1)
    assert (
        main(["tokenizer", "encode", "--tokenizer", str(out), "--tokens", "Hiatal hernia. No effusion."]) == 0
    )
    text = capsys.readouterr().out
    assert "(padded to 16), 2 sentence(s), 6 word(s)" in text
    # the pieces of each sentence follow its [SEN_k]; merge them back (the trained vocab may split words)
    s1 = text.split("S1: ")[1].split("\n")[0].replace(" ##", "")
    s2 = text.split("S2: ")[1].split("\n")[0].replace(" ##", "")
    assert s1 == "[SEN_1] hiatal hernia ." and s2 == "[SEN_2] no effusion ."
    assert "words: hiatal | hernia | . | no | effusion | ." in text
    assert main(["tokenizer", "encode", "--tokenizer", str(tmp_path / "missing"), "x"]) == 1
    assert "tokenizer folder does not exist" in capsys.readouterr().err

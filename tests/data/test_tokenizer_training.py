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


def read_rows(corpus) -> list[str]:
    import csv

    with corpus.open(encoding="utf-8", newline="") as fh:
        return [row["report_text"] for row in csv.DictReader(fh)]


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
    out = train_wordpiece(CORPUS, tmp_path / "tok", vocab_size=400, min_frequency=1)
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


# --------------------------------------------------------------------------- determinism

_TRAIN_IN_SUBPROCESS = """
import json, sys
from velvet.data.tokenizer_training import train_wordpiece
texts = json.loads(open(sys.argv[1], encoding="utf-8").read())
train_wordpiece(texts, sys.argv[2], **json.loads(sys.argv[3]))
"""


def _folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _assert_same_files_everywhere(texts, tmp_path, *, processes: int, **options) -> None:
    """Train three times here (each run hashes differently in Rust) and ``processes`` times in
    fresh processes (another PYTHONHASHSEED, one thread): every file is byte-identical."""
    import os
    import subprocess
    import sys

    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(texts), encoding="utf-8")
    runs = [train_wordpiece(texts, tmp_path / f"here{i}", **options) for i in range(3)]
    for i in range(processes):
        out = tmp_path / f"process{i}"
        env = {**os.environ, "PYTHONHASHSEED": str(4242 + i), "RAYON_NUM_THREADS": "1"}
        subprocess.run(
            [sys.executable, "-c", _TRAIN_IN_SUBPROCESS, str(corpus), str(out), json.dumps(options)],
            env=env,
            check=True,
            capture_output=True,
        )
        runs.append(out)
    expected = _folder_bytes(runs[0])
    assert set(expected) == {"tokenizer.json", "tokenizer_config.json"}
    for run in runs[1:]:
        assert _folder_bytes(run) == expected, f"{run.name} differs from {runs[0].name}"


def test_training_is_deterministic(reports, tmp_path):
    # phantom reports, 400 tokens: the unseeded trainer gave a different vocabulary on every run
    _assert_same_files_everywhere(reports, tmp_path, processes=1, vocab_size=400)


def test_training_on_real_reports_is_deterministic(shared_data, tmp_path):
    texts = read_rows(shared_data / "reports" / "ctrate" / "reports_800.csv")[:300]
    _assert_same_files_everywhere(texts, tmp_path, processes=0, vocab_size=2000)


def test_vocabulary_layout(tmp_path):
    from velvet.data.tokenizer_training import SEED_ALPHABET

    out = train_wordpiece(CORPUS, tmp_path / "tok", vocab_size=400, min_frequency=1, max_sentences=3)
    vocab = _vocab(out)
    tokens = sorted(vocab, key=vocab.get)
    assert tokens[:8] == [*BERT_SPECIAL_TOKENS, "[SEN_1]", "[SEN_2]", "[SEN_3]"]
    singles = [t for t in tokens[8:] if len(t) == 1]
    continuing = [t for t in tokens[8:] if len(t) == 3 and t.startswith("##")]
    assert tokens[8 : 8 + len(singles) + len(continuing)] == singles + continuing  # alphabet first
    assert singles == sorted(singles) and continuing == sorted(continuing)  # in code-point order
    assert set(SEED_ALPHABET.lower()) <= set(singles)
    assert "##." not in vocab and "##×" in vocab and "##a" in vocab  # punctuation is never inside a word
    # the alphabet is part of the vocabulary, not added (special) tokens: "##a" in a text stays text
    added = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    assert [t["content"] for t in added] == tokens[:8]


# ------------------------------------------------------------------------- seeded alphabet

ODD_REPORT = "Mass 85×55 mm at 10° with 30% necrosis."


def test_unseen_clinical_symbols_are_not_unknown(tmp_path, capsys):
    assert not set('×°%"±≤²µ') & set("".join(CORPUS))  # the training reports lack them
    out = train_wordpiece(CORPUS, tmp_path / "tok", vocab_size=400, min_frequency=1)
    tok = TriBertTokenizer.from_pretrained(out)
    texts = [ODD_REPORT, 'Lesion "A" of 4±1 mm, SUV ≤ 2.5, area 3 cm², 5µm.']
    batch = tok(texts)
    assert tok.tokenizer.unk_token_id not in batch["input_ids"]
    words = "mass | 85×55 | mm | at | 10° | with | 30 | % | necrosis | ."
    assert tok.words_from_pieces(batch, 0) == words.split(" | ")
    assert main(["tokenizer", "encode", "--tokenizer", str(out), ODD_REPORT]) == 0
    printed = capsys.readouterr().out
    assert "[UNK]" not in printed and f"words: {words}" in printed


def test_a_character_no_token_has_does_not_swallow_its_word(tmp_path):
    out = train_wordpiece(CORPUS, tmp_path / "tok", vocab_size=400, min_frequency=1)
    tok = TriBertTokenizer.from_pretrained(out)
    batch = tok(["Nodule☃lung seen."])  # ☃: in no token of the vocabulary
    assert tok.words_from_pieces(batch, 0) == ["nodule", "[UNK]", "lung", "seen", "."]
    assert tok.sentences(["A☃B"]) == ["A ☃ B"]


# --------------------------------------------------------------------------- vocabulary size


def test_vocabulary_shortfall_is_reported(tmp_path, caplog, capsys):
    from velvet.data.tokenizer_training import train_wordpiece_with_summary

    with caplog.at_level(logging.WARNING, logger="velvet.data.tokenizer_training"):
        result = train_wordpiece_with_summary(CORPUS, tmp_path / "tok", vocab_size=8000, min_frequency=1)
    assert result.vocab_size == len(_vocab(tmp_path / "tok")) < 8000
    short = 8000 - result.vocab_size
    assert f"has {result.vocab_size:,} tokens, {short:,} fewer than the 8,000" in caplog.text
    assert result.size_note and "--min-frequency" in result.size_note
    corpus = tmp_path / "reports.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    out = str(tmp_path / "c")
    args = ["tokenizer", "train", "--corpus", str(corpus), "--min-frequency", "1", "--out", out]
    assert main([*args, "--vocab-size", "8000"]) == 0
    out = capsys.readouterr().out
    assert f"{result.vocab_size:,} tokens from 4 reports" in out and "fewer than the 8,000 asked for" in out
    # a size the corpus fills: no note
    assert main([*args, "--vocab-size", str(result.vocab_size - 5)]) == 0
    out = capsys.readouterr().out
    assert f"{result.vocab_size - 5:,} tokens" in out and "note:" not in out


def test_vocabulary_over_the_requested_size_is_reported(tmp_path, caplog):
    from velvet.data.tokenizer_training import train_wordpiece_with_summary

    with caplog.at_level(logging.WARNING, logger="velvet.data.tokenizer_training"):
        result = train_wordpiece_with_summary(CORPUS, tmp_path / "tok", vocab_size=100, min_frequency=1)
    assert result.vocab_size == result.base_size > 100
    assert "more than the 100 asked for" in caplog.text


# ------------------------------------------------------------------------------ file errors


def test_non_utf8_corpus_names_the_file_and_suggests_encoding(tmp_path, capsys):
    text = "\n".join([*CORPUS, "Größe der Läsion 3 cm."])
    rows = "".join(f'{i},"{t}"\n' for i, t in enumerate(text.split("\n")))
    files = {"reports.csv": "id,report_text\n" + rows, "reports.txt": text}
    for name, content in files.items():  # the odd report is on line 6 of the CSV, 5 of the .txt
        line = 6 if name.endswith(".csv") else 5
        corpus = tmp_path / name
        corpus.write_bytes(content.encode("latin-1"))
        args = ["tokenizer", "train", "--corpus", str(corpus), "--out", str(tmp_path / name[-3:])]
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {corpus}: is not utf-8 text (line {line}, byte 0xf6"), err
        assert "--encoding" in err and "Traceback" not in err
        assert main([*args, "--encoding", "latin-1"]) == 0
        assert "größe" in _vocab(tmp_path / name[-3:]) or "##ß" in _vocab(tmp_path / name[-3:])
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text(CORPUS[0], encoding="utf-8")
    (folder / "b.txt").write_bytes("Größe.".encode("cp1252"))
    args = ["tokenizer", "train", "--corpus", str(folder), "--out", str(tmp_path / "f")]
    assert main(args) == 1
    assert f"error: {folder / 'b.txt'}: is not utf-8 text" in capsys.readouterr().err
    assert main([*args, "--encoding", "nope"]) == 1
    assert "unknown text encoding 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("tokenizer.json", lambda b: b[: len(b) // 2]),  # truncated copy
        ("tokenizer.json", lambda b: b"\xff\xfe" + b),  # not UTF-8
        ("tokenizer.json", lambda b: b'{"version": "1.0"}'),  # JSON, but no tokenizer
        ("tokenizer_config.json", lambda b: b"{"),
    ],
)
def test_damaged_tokenizer_file_is_named(tmp_path, capsys, name, damage):
    from velvet.data.errors import DataError

    out = train_wordpiece(CORPUS, tmp_path / "tok", vocab_size=400, min_frequency=1)
    path = out / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=r"damaged or truncated.*velvet tokenizer train") as info:
        TriBertTokenizer.from_pretrained(out)
    assert info.value.path == str(path)
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "Lungs clear."]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and "Traceback" not in err


# -------------------------------------------------------------------------------- stats CLI


def test_cli_offers_every_truncation_mode():
    from velvet.cli.commands import tokenizer as command
    from velvet.data.tokenization import TRUNCATION_MODES

    assert command.TRUNCATION_MODES == TRUNCATION_MODES


def test_cli_stats_counts_truncated_reports(shared_data, tmp_path, capsys):
    corpus = shared_data / "reports" / "ctrate" / "reports_800.csv"
    out = tmp_path / "tok"
    assert (
        main(["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "3000", "--out", str(out)]) == 0
    )
    capsys.readouterr()
    stats = ["tokenizer", "stats", "--tokenizer", str(out), "--corpus", str(corpus)]
    assert main(stats) == 0
    end = capsys.readouterr().out
    lost = int(end.split("not kept whole: ")[1].split(" ")[0])
    truncated = int(end.split("truncation 'end': ")[1].split(" ")[0])
    assert lost == truncated > 80  # ~15 % of CT-RATE reports are cut, and lose their end
    assert "800 reports" in end and "--truncation middle" in end
    assert main([*stats, "--truncation", "middle"]) == 0
    middle = capsys.readouterr().out
    assert "not kept whole: 0 (0.0%)" in middle and f"truncation 'middle': {truncated} " in middle
    long_report = next(r for r in read_rows(corpus) if len(r) > 4000)
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "--truncation", "middle", long_report]) == 0
    assert "truncated (middle): kept " in capsys.readouterr().out

"""The TriBERT layout: hand-checked ids, a per-sample loop reference, the attention mask, edge cases."""

from __future__ import annotations

import csv
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from velvet.data.attention_mask import sentence_attention_mask
from velvet.data.errors import ReportError
from velvet.data.sentence_encoder import report_digest
from velvet.data.tokenization import TriBertTokenizer
from velvet.data.tokenization_layout import kept_sentences
from velvet.data.tokenizer_training import train_wordpiece

KEYS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "sentence_ids",
    "sentence_token_mask",
    "word_ids",
    "special_tokens_mask",
    "num_sentences",
    "num_words",
)
CORPUS = [
    "Lungs are clear. Heart is normal.",
    "Lungs are clear. No effusion is seen. Heart is normal.",
    "A nodule of 3.5 cm is seen in the right lung. The liver is normal.",
    "No nodule. No effusion. Lungs are clear.",
    "Segments " + " ".join(str(i) for i in range(60)) + ".",
] * 3
# text that exercises the normalisers: accents, case, symbols, CJK, long words split into pieces
ODD_REPORTS = [
    "Größe des Ödems 3×4 cm, µ-Wert erhöht. Naïve café LESION.",
    "肺 nodule seen. Ünusual\u00a0spacing  here.",
    "Pneumothoracoabdominalis extraordinarily elongated wording. Short.",
]


def _train(directory: Path, texts: list[str], **kwargs) -> Path:
    return train_wordpiece(texts, directory, **{"vocab_size": 300, "min_frequency": 1, **kwargs})


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("tok") / "small", CORPUS)


@pytest.fixture(scope="module")
def real_reports(shared_data) -> list[str]:
    with (shared_data / "reports" / "ctrate" / "reports_800.csv").open(encoding="utf-8", newline="") as fh:
        return [row["report_text"] for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def real_dir(real_reports, tmp_path_factory) -> Path:
    return train_wordpiece(real_reports, tmp_path_factory.mktemp("tok") / "ctrate", vocab_size=4000)


# --------------------------------------------------------------------------- loop reference


def _middle_fit(costs: list[int], budget: int) -> list[int]:
    """Indices kept by "middle" truncation: first, last, second, second-last, ... while they fit."""
    n = len(costs)
    order = sorted(range(n), key=lambda i: min(2 * i, 2 * (n - 1 - i) + 1))
    kept, total = [], 0
    for position, i in enumerate(order):
        if position > 0 and total + costs[i] > budget:
            break
        kept.append(i)
        total += costs[i]
    return sorted(kept)


def reference_rows(tok: TriBertTokenizer, reports, seed: int) -> tuple[list[list[tuple]], list[dict]]:
    """Per-sample loops over the spec, using the HF tokenizer's own word ids.

    Returns the rows (one tuple per token: id, type, sentence, word, is [SEN_k], is special) and,
    per report, what truncation took: truncated, last sentence lost, pieces and sentences lost.
    """
    hf = tok.tokenizer
    middle = tok.truncation == "middle"
    rows, details = [], []
    for report in reports:
        sentences = tok.sentences(report)
        encoded = [hf(s, add_special_tokens=False) for s in sentences]
        encoded = [e for e in encoded if e["input_ids"]]  # text the normaliser empties is no sentence
        total = sum(len(e["input_ids"]) for e in encoded)
        count = len(encoded)
        if not tok.sentence_modeling:
            if middle:
                keep = _middle_fit([len(e["input_ids"]) for e in encoded], tok.max_length - 2)
            else:
                keep = list(range(count))
            row, words_before = [(tok.cls_token_id, 1, 0, -1, False, True)], 0
            for i in keep:
                ids, words = encoded[i]["input_ids"], encoded[i].word_ids()
                row += [(t, 1, 1, words_before + w, False, False) for t, w in zip(ids, words, strict=True)]
                words_before += max(words) + 1
            fed = len(row) - 1
            row = row[: tok.max_length - 1] + [(tok.sep_token_id, 1, 0, -1, False, True)]
            kept_pieces = len(row) - 2
            # a sentence is lost when none of its pieces is kept
            starts = np.cumsum([0] + [len(encoded[i]["input_ids"]) for i in keep])[:-1]
            kept_count = int((starts < kept_pieces).sum())
            last_whole = keep[-1] == count - 1 and kept_pieces == fed
        else:
            keep = list(range(count))
            if count > tok.max_sentences:
                key = report_digest(report)
                if middle and tok.max_sentences >= 2:
                    inner = kept_sentences(count - 2, tok.max_sentences - 2, seed, key) + 1
                    keep = [0, *inner.tolist(), count - 1]
                else:
                    keep = kept_sentences(count, tok.max_sentences, seed, key).tolist()
            if middle:
                costs = [min(len(encoded[i]["input_ids"]), tok.max_sentence_tokens) + 1 for i in keep]
                if 1 + sum(costs) > tok.max_length:
                    keep = [keep[j] for j in _middle_fit(costs, tok.max_length - 1)]
            row = [(tok.cls_token_id, 1, 0, -1, False, True)]
            word = -1
            for k, i in enumerate(keep, start=1):
                ids = encoded[i]["input_ids"][: tok.max_sentence_tokens]
                words = encoded[i].word_ids()[: tok.max_sentence_tokens]
                row.append((int(tok.sen_token_ids[k - 1]), k, k, -1, True, True))
                previous = None
                for t, w in zip(ids, words, strict=True):
                    if w != previous:
                        word, previous = word + 1, w
                    row.append((t, k, k, word, False, False))
            fed = sum(1 for t in row if not t[5])
            row = row[: tok.max_length]
            if row[-1][4]:
                row.pop()
            kept_pieces = sum(1 for t in row if not t[5])
            kept_count = len({t[2] for t in row if not t[5]})
            last = encoded[count - 1]["input_ids"]
            last_whole = keep[-1] == count - 1 and kept_pieces == fed and len(last) <= tok.max_sentence_tokens
        rows.append(row)
        details.append(
            {
                "truncated": kept_pieces < total,
                "last_sentence_lost": not last_whole,
                "lost_pieces": total - kept_pieces,
                "lost_sentences": count - kept_count,
                "pieces": total,
                "sentences": count,
            }
        )
    return rows, details


def reference_batch(tok: TriBertTokenizer, reports, seed: int) -> dict[str, torch.Tensor]:
    """The batch of :func:`reference_rows`, padded as the tokenizer pads."""
    rows, _ = reference_rows(tok, reports, seed)
    longest = max(len(r) for r in rows)
    width = min(-(-longest // tok.pad_to_multiple_of) * tok.pad_to_multiple_of, tok.max_length)
    pad = (tok.pad_token_id, 0, -1, -1, False, True)
    out: dict[str, list] = {k: [] for k in KEYS}
    for row in rows:
        full = row + [pad] * (width - len(row))
        out["input_ids"].append([t[0] for t in full])
        out["token_type_ids"].append([t[1] for t in full])
        out["sentence_ids"].append([t[2] for t in full])
        out["word_ids"].append([t[3] for t in full])
        out["sentence_token_mask"].append([t[4] for t in full])
        out["special_tokens_mask"].append([t[5] for t in full])
        out["attention_mask"].append([i < len(row) for i in range(width)])
        out["num_sentences"].append(max(t[2] for t in row) if tok.sentence_modeling else 1)
        out["num_words"].append(max(t[3] for t in row) + 1)
    dtypes = {
        "attention_mask": torch.bool,
        "sentence_token_mask": torch.bool,
        "special_tokens_mask": torch.bool,
    }
    return {k: torch.tensor(v, dtype=dtypes.get(k, torch.long)) for k, v in out.items()}


def assert_batches_equal(actual, expected) -> None:
    assert set(actual) == set(KEYS)
    for key in KEYS:
        assert actual[key].dtype == expected[key].dtype, key
        assert torch.equal(actual[key], expected[key]), key


def naive_mask(sentence_ids, sentence_token_mask, attention_mask) -> torch.Tensor:
    sid, sen, real = sentence_ids.tolist(), sentence_token_mask.tolist(), attention_mask.tolist()
    batch, length = len(sid), len(sid[0])
    out = [[[False] * length for _ in range(length)] for _ in range(batch)]
    for b in range(batch):
        for i in range(length):
            for j in range(length):
                if not real[b][i]:
                    out[b][i][j] = i == j  # padding rows: themselves only
                elif real[b][j]:
                    out[b][i][j] = (j == 0 or sid[b][i] == sid[b][j]) if sen[b][i] else True
    return torch.tensor(out)


# ------------------------------------------------------------------------------- hand-checked


def test_hand_checked_two_sentence_layout(small_dir):
    tok = TriBertTokenizer.from_pretrained(small_dir)
    words = ["lungs", "are", "clear", ".", "heart", "is", "normal", "."]
    ids = tok.tokenizer.convert_tokens_to_ids(words)
    assert tok.tokenizer.unk_token_id not in ids  # each word is one piece in this vocabulary
    cls, pad = tok.cls_token_id, tok.pad_token_id
    sen1, sen2 = tok.tokenizer.convert_tokens_to_ids(["[SEN_1]", "[SEN_2]"])
    batch = tok(["Lungs are clear. Heart is normal."])
    # 11 tokens, padded to 16 (a multiple of 8)
    assert batch["input_ids"].tolist() == [[cls, sen1, *ids[:4], sen2, *ids[4:], *[pad] * 5]]
    assert batch["token_type_ids"].tolist() == [[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0]]
    assert batch["sentence_ids"].tolist() == [[0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, -1, -1, -1, -1, -1]]
    assert batch["word_ids"].tolist() == [[-1, -1, 0, 1, 2, 3, -1, 4, 5, 6, 7, -1, -1, -1, -1, -1]]
    assert batch["attention_mask"].tolist() == [[True] * 11 + [False] * 5]
    assert batch["sentence_token_mask"].tolist() == [[i in (1, 6) for i in range(16)]]
    assert batch["special_tokens_mask"].tolist() == [[i in (0, 1, 6) or i >= 11 for i in range(16)]]
    assert batch["num_sentences"].tolist() == [2] and batch["num_words"].tolist() == [8]
    assert tok.words_from_pieces(batch, 0) == words


def test_word_pieces_merge_into_one_word(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "nod", "##ule", "##s", "seen", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = TriBertTokenizer.from_pretrained(tmp_path, pad_to_multiple_of=1)
    batch = tok(["Nodules seen."])
    assert tok.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist()) == [
        "[CLS]",
        "[SEN_1]",
        "nod",
        "##ule",
        "##s",
        "seen",
        ".",
    ]
    assert batch["word_ids"].tolist() == [[-1, -1, 0, 0, 0, 1, 2]]
    assert batch["num_words"].tolist() == [3]
    assert tok.words_from_pieces(batch, 0) == ["nodules", "seen", "."]


# ---------------------------------------------------------------------------- loop reference


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"max_length": 24, "max_sentences": 3, "max_sentence_tokens": 4},
        {"max_length": 13, "pad_to_multiple_of": 1},
        {"sentence_modeling": False},
        {"sentence_modeling": False, "max_length": 9},
        {"truncation": "middle"},
        {"truncation": "middle", "max_length": 24, "max_sentences": 3, "max_sentence_tokens": 4},
        {"truncation": "middle", "max_length": 13, "pad_to_multiple_of": 1},
        {"truncation": "middle", "max_length": 5, "max_sentences": 2},  # first sentence alone too long
        {"truncation": "middle", "sentence_modeling": False, "max_length": 9},
        {"truncation": "middle", "sentence_modeling": False, "max_length": 4},
    ],
)
def test_batch_equals_loop_reference(small_dir, options):
    tok = TriBertTokenizer.from_pretrained(small_dir, **options)
    reports = [
        *CORPUS[:5],
        *ODD_REPORTS,
        ["Lungs are clear.", "  Heart is normal. ", "No effusion"],  # already split
        ["Lungs are clear.", "\u0301\u0301", "Heart is normal."],  # a sentence the normaliser empties
        " ".join(f"Nodule {i} is seen." for i in range(8)),
    ]
    assert_batches_equal(tok(reports, seed=7), reference_batch(tok, reports, seed=7))


def test_real_batches_equal_loop_reference(real_dir, real_reports):
    splitter = TriBertTokenizer.from_pretrained(real_dir)
    many = [r for r in real_reports if len(splitter.sentences(r)) > 50]
    assert many  # the real corpus has reports over the sentence limit
    reports = real_reports[:40] + many[:4]
    for options in (
        {},
        {"sentence_modeling": False},
        {"max_length": 256, "max_sentence_tokens": 16},
        {"truncation": "middle"},
        {"truncation": "middle", "sentence_modeling": False},
        {"truncation": "middle", "max_length": 256, "max_sentence_tokens": 16},
    ):
        tok = TriBertTokenizer.from_pretrained(real_dir, **options)
        assert_batches_equal(tok(reports, seed=3), reference_batch(tok, reports, seed=3))


def test_attention_mask_equals_naive_reference(small_dir):
    tok = TriBertTokenizer.from_pretrained(small_dir, max_length=40)
    batch = tok([*CORPUS[:3], "Short."])
    mask = sentence_attention_mask(
        batch["sentence_ids"], batch["sentence_token_mask"], batch["attention_mask"]
    )
    width = batch["input_ids"].shape[1]
    assert mask.dtype == torch.bool and mask.shape == (4, width, width)
    assert torch.equal(
        mask, naive_mask(batch["sentence_ids"], batch["sentence_token_mask"], batch["attention_mask"])
    )
    assert torch.equal(tok.attention_mask(batch), mask)
    assert mask.any(dim=-1).all()  # no all-masked row, padding rows included
    # a [SEN_2] row sees [CLS] and its own sentence only
    sen2 = int(torch.nonzero(batch["sentence_token_mask"][0])[1])
    visible = torch.nonzero(mask[0, sen2]).flatten().tolist()
    assert visible == [0] + torch.nonzero(batch["sentence_ids"][0] == 2).flatten().tolist()


def test_attention_mask_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must all be"):
        sentence_attention_mask(
            torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 5, dtype=torch.bool), torch.ones(2, 4)
        )


# ---------------------------------------------------------------------------- length limits


def test_full_length_without_padding(small_dir):
    text = "Lungs are clear. Heart is normal."
    tok = TriBertTokenizer.from_pretrained(small_dir, max_length=11)  # exactly the layout length
    batch = tok([text, text])
    assert batch["input_ids"].shape == (2, 11)
    assert batch["attention_mask"].all()
    assert batch["num_sentences"].tolist() == [2, 2] and batch["num_words"].tolist() == [8, 8]
    assert batch["word_ids"][0, -1] == 7 and not batch["special_tokens_mask"][0, -1]


def test_truncation_never_leaves_a_dangling_sentence_token(small_dir):
    text = "Lungs are clear. Heart is normal."
    # [CLS] [SEN_1] lungs are clear . [SEN_2] -> the last [SEN_2] is cut too
    batch = TriBertTokenizer.from_pretrained(small_dir, max_length=7, pad_to_multiple_of=1)([text])
    assert batch["input_ids"].shape == (1, 6)
    assert batch["num_sentences"].tolist() == [1] and batch["sentence_token_mask"].sum() == 1
    batch = TriBertTokenizer.from_pretrained(small_dir, max_length=8, pad_to_multiple_of=1)([text])
    assert batch["input_ids"].shape == (1, 8) and batch["num_sentences"].tolist() == [2]
    assert batch["num_words"].tolist() == [5]


def test_long_real_report_fills_the_window(real_dir, real_reports):
    tok = TriBertTokenizer.from_pretrained(real_dir)
    batch = tok(real_reports[:64])
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == 512 and (lengths == 512).any() and (lengths < 512).any()
    full = torch.nonzero(lengths == 512).flatten()
    assert not batch["sentence_token_mask"][full, -1].any()
    assert (batch["word_ids"][full, -1] >= 0).all()


# ------------------------------------------------------------------------- sentence dropping


def _numbers(tok: TriBertTokenizer, batch, index: int) -> list[int]:
    return [int(w) for w in tok.words_from_pieces(batch, index) if w.isdigit()]


def test_dropping_keeps_order_and_is_seeded(small_dir):
    report = " ".join(f"Nodule {i} is seen." for i in range(60))
    tok = TriBertTokenizer.from_pretrained(small_dir, seed=0)
    batch = tok([report])
    kept = _numbers(tok, batch, 0)
    assert batch["num_sentences"].tolist() == [50] and len(kept) == 50
    assert kept == sorted(kept) and set(kept) <= set(range(60))
    # same seed, new instance (and the report cache off): same sentences
    again = TriBertTokenizer.from_pretrained(small_dir, seed=0, cache_size=0)([report])
    assert torch.equal(again["input_ids"], batch["input_ids"])
    # the call's seed overrides the tokenizer's; different seeds drop different sentences
    by_seed = {seed: tuple(_numbers(tok, tok([report], seed=seed), 0)) for seed in range(5)}
    assert len(set(by_seed.values())) > 1
    other = TriBertTokenizer.from_pretrained(small_dir, seed=3)
    assert tuple(_numbers(other, other([report]), 0)) == by_seed[3]


def test_dropping_is_the_same_in_another_process():
    key = report_digest("some report text")
    here = kept_sentences(70, 50, 11, key).tolist()
    code = (
        "import sys; from velvet.data.tokenization_layout import kept_sentences; "
        f"print(kept_sentences(70, 50, 11, {key!r}).tolist())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == str(here)


# ------------------------------------------------------------------- without sentence modelling


def test_plain_layout(small_dir):
    tok = TriBertTokenizer.from_pretrained(
        small_dir, sentence_modeling=False, max_length=8, pad_to_multiple_of=1
    )
    assert tok.type_vocab_size == 2
    batch = tok(["Lungs are clear. Heart is normal.", "No nodule."])
    tokens = tok.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert tokens == ["[CLS]", "lungs", "are", "clear", ".", "heart", "is", "[SEP]"]  # truncated, [SEP] kept
    assert batch["token_type_ids"].tolist() == [[1] * 8, [1] * 5 + [0] * 3]
    assert batch["sentence_ids"].tolist() == [[0, 1, 1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 0, -1, -1, -1]]
    assert batch["word_ids"].tolist() == [[-1, 0, 1, 2, 3, 4, 5, -1], [-1, 0, 1, 2, -1, -1, -1, -1]]
    assert not batch["sentence_token_mask"].any()
    assert batch["num_sentences"].tolist() == [1, 1] and batch["num_words"].tolist() == [6, 3]


# ---------------------------------------------------------------------------------- truncation


def test_middle_truncation_keeps_both_ends(small_dir):
    report = " ".join(f"Nodule {i} is seen." for i in range(8))  # 6 tokens per sentence with [SEN_k]
    end = TriBertTokenizer.from_pretrained(small_dir, max_length=26)
    middle = TriBertTokenizer.from_pretrained(small_dir, max_length=26, truncation="middle")
    assert _numbers(end, end([report]), 0) == [0, 1, 2, 3]  # the 5th sentence is cut to 1 piece: "nodule"
    batch = middle([report])
    assert _numbers(middle, batch, 0) == [0, 1, 6, 7]  # whole sentences, first and last ones kept
    assert batch["num_sentences"].tolist() == [4] and batch["attention_mask"].sum() == 25
    one_sentence = report.replace(".", "", 7)
    assert middle([one_sentence])["num_sentences"].tolist() == [1]  # cut at its end
    # a short report is untouched
    assert_batches_equal(middle(CORPUS[:4]), end(CORPUS[:4]))


def test_middle_sentence_dropping_keeps_first_and_last(small_dir):
    report = " ".join(f"Nodule {i} is seen." for i in range(60))
    tok = TriBertTokenizer.from_pretrained(small_dir, max_sentences=10, max_length=512, truncation="middle")
    for seed in range(5):
        kept = _numbers(tok, tok([report], seed=seed), 0)
        assert len(kept) == 10 and kept[0] == 0 and kept[-1] == 59 and kept == sorted(kept)


@pytest.mark.parametrize(
    "options",
    [
        {"max_length": 24, "max_sentences": 3, "max_sentence_tokens": 4},
        {"max_length": 13},
        {"sentence_modeling": False, "max_length": 9},
        {"truncation": "middle", "max_length": 24, "max_sentences": 3, "max_sentence_tokens": 4},
        {"truncation": "middle", "max_length": 13},
        {"truncation": "middle", "sentence_modeling": False, "max_length": 9},
    ],
)
def test_truncation_stats_equal_loop_reference(small_dir, options):
    tok = TriBertTokenizer.from_pretrained(small_dir, **options)
    reports = [*CORPUS[:5], *ODD_REPORTS, " ".join(f"Nodule {i} is seen." for i in range(8)), "No effusion."]
    stats = tok.truncation_stats(reports, batch_size=4, seed=5)
    _, details = reference_rows(tok, reports, seed=5)
    for field in ("truncated", "last_sentence_lost", "lost_pieces", "lost_sentences", "pieces", "sentences"):
        assert getattr(stats, field) == sum(int(d[field]) for d in details), field
    assert stats.truncated_indices == tuple(i for i, d in enumerate(details) if d["truncated"])
    assert stats.reports == len(reports) and stats.skipped == 0 and stats.truncation == tok.truncation
    assert 0 < stats.truncated < len(reports)
    assert f"truncation {tok.truncation!r}: {stats.truncated}" in str(stats)


def test_truncation_stats_of_real_reports(real_dir, real_reports):
    end = TriBertTokenizer.from_pretrained(real_dir).truncation_stats(real_reports)
    middle = TriBertTokenizer.from_pretrained(real_dir, truncation="middle").truncation_stats(real_reports)
    # ~15 % of CT-RATE reports do not fit: cut at the end they lose their last sentence (the impression)
    assert 0.1 * len(real_reports) < end.truncated == end.last_sentence_lost == end.over_length
    assert end.over_sentences > 0
    assert middle.truncated == end.truncated and middle.last_sentence_lost == 0


def test_truncation_stats_skip_empty_reports(small_dir):
    tok = TriBertTokenizer.from_pretrained(small_dir, max_length=8)
    stats = tok.truncation_stats(["Lungs are clear. Heart is normal.", "  ", "Short."], batch_size=8)
    assert (stats.reports, stats.skipped, stats.skipped_indices) == (2, 1, (1,))
    assert stats.truncated_indices == (0,) and "(1 empty ones skipped)" in str(stats)


def test_truncation_option(small_dir, tmp_path):
    with pytest.raises(ValueError, match="truncation must be one of"):
        TriBertTokenizer.from_pretrained(small_dir, truncation="start")
    tok = TriBertTokenizer.from_pretrained(small_dir, truncation="middle", max_length=26)
    assert tok.config()["truncation"] == "middle" and "truncation=middle" in repr(tok)
    again = TriBertTokenizer.from_pretrained(tok.save_pretrained(tmp_path / "saved"), **tok.config())
    report = " ".join(f"Nodule {i} is seen." for i in range(8))
    assert_batches_equal(again([report]), tok([report]))
    assert_batches_equal(pickle.loads(pickle.dumps(tok))([report]), tok([report]))


# ------------------------------------------------------------------------- vocabulary handling


def _write_vocab(folder: Path, specials: dict[int, str], size: int = 30_522) -> Path:
    words = ["lungs", "are", "clear", ".", "heart", "normal"]
    entries = [specials.get(i) for i in range(size)]
    free = iter(i for i in range(size) if entries[i] is None)
    for word in words:
        entries[next(free)] = word
    entries = [e if e is not None else f"tok{i}" for i, e in enumerate(entries)]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(entries) + "\n", encoding="utf-8")
    return folder


def test_cxr_bert_size_vocabulary(tmp_path):
    folder = _write_vocab(tmp_path / "cxr", {0: "[PAD]", 1: "[UNK]", 2: "[CLS]", 3: "[SEP]", 4: "[MASK]"})
    tok = TriBertTokenizer.from_pretrained(folder)
    assert tok.vocab_size == 30_572 and tok.type_vocab_size == 51
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 2, 3, 4)
    assert tok.sen_token_ids.tolist() == list(range(30_522, 30_572))
    batch = tok(["Lungs are clear. Heart normal."])
    assert (
        batch["input_ids"][0, :2].tolist() == [2, 30_522]
        and tok.tokenizer.unk_token_id not in batch["input_ids"]
    )
    plain = TriBertTokenizer.from_pretrained(folder, sentence_modeling=False)
    assert plain.vocab_size == 30_522  # no [SEN_k] without sentence modelling


def test_special_ids_are_read_from_the_vocabulary(tmp_path):
    folder = _write_vocab(
        tmp_path / "bert", {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    )
    tok = TriBertTokenizer.from_pretrained(folder, max_sentences=5)
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 101, 102, 103)
    assert tok.vocab_size == 30_527 and tok.type_vocab_size == 6
    assert tok(["Lungs are clear."])["input_ids"][0, :2].tolist() == [101, 30_522]


def test_literal_special_token_text_stays_text(tmp_path):
    for lowercase in (True, False):
        folder = _train(
            tmp_path / f"tok{lowercase}", [*CORPUS, "Marker [SEP] and [SEN_3] here."], lowercase=lowercase
        )
        tok = TriBertTokenizer.from_pretrained(folder, pad_to_multiple_of=1)
        batch = tok(["Marker [SEP] and [SEN_3] here."])
        assert batch["sentence_token_mask"].sum() == 1 and batch["num_sentences"].tolist() == [1]
        words = tok.words_from_pieces(batch, 0)
        sep = "sep" if lowercase else "SEP"
        assert words[:4] == ["marker" if lowercase else "Marker", "[", sep, "]"]
        assert tok.sep_token_id not in batch["input_ids"][0].tolist()


# ---------------------------------------------------------------------------- state and errors


def test_caches_do_not_change_results(small_dir):
    reports = [*CORPUS, *ODD_REPORTS, " ".join(f"Nodule {i} is seen." for i in range(60))]
    cached = TriBertTokenizer.from_pretrained(small_dir)
    uncached = TriBertTokenizer.from_pretrained(small_dir, cache_size=0)
    first = cached(reports, seed=1)
    assert_batches_equal(cached(reports, seed=1), first)  # warm caches
    assert_batches_equal(uncached(reports, seed=1), first)
    assert not torch.equal(cached(reports, seed=2)["input_ids"], first["input_ids"])  # dropping still varies


def test_pickle_and_save_round_trip(small_dir, tmp_path):
    tok = TriBertTokenizer.from_pretrained(small_dir, max_sentences=7)
    expected = tok(CORPUS[:3])
    assert_batches_equal(pickle.loads(pickle.dumps(tok))(CORPUS[:3]), expected)
    saved = tok.save_pretrained(tmp_path / "saved")
    again = TriBertTokenizer.from_pretrained(saved, max_sentences=7)
    assert again.vocab_size == tok.vocab_size
    assert_batches_equal(again(CORPUS[:3]), expected)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_construction_errors(tmp_path, small_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TriBertTokenizer.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor vocab.txt"):
        TriBertTokenizer.from_pretrained(tmp_path / "empty")
    with pytest.raises(ValueError, match="max_length"):
        TriBertTokenizer.from_pretrained(small_dir, max_length=2)
    with pytest.raises(ValueError, match="max_sentences"):
        TriBertTokenizer.from_pretrained(small_dir, max_sentences=0)


def test_call_errors(small_dir):
    tok = TriBertTokenizer.from_pretrained(small_dir)
    with pytest.raises(TypeError, match="wrap a single report"):
        tok("Lungs are clear.")  # type: ignore[arg-type]
    with pytest.raises(ReportError, match=r"^case_2: report is empty"):
        tok(["Lungs are clear.", "  "], sources=["case_1", "case_2"])
    with pytest.raises(ReportError, match="no non-empty sentence"):
        tok([["", " "]])
    with pytest.raises(ReportError, match=r"^reports\[1\]: report has no token left"):
        tok(["Lungs are clear.", ["\u0301\u0301"]])
    with pytest.raises(ValueError, match="sources"):
        tok(["a"], sources=["x", "y"])


# ---------------------------------------------------------------------------------- real data


def test_all_real_reports_decode_to_their_words(real_dir, real_reports):
    # no per-sentence cut here (a few real sentences exceed 200 pieces; the loop reference covers it)
    tok = TriBertTokenizer.from_pretrained(real_dir, max_sentence_tokens=512)
    backend = tok.tokenizer.backend_tokenizer
    truncated = 0
    for start in range(0, len(real_reports), 64):
        chunk = real_reports[start : start + 64]
        batch = tok(chunk)
        assert (batch["num_sentences"] >= 1).all()
        assert tok.tokenizer.unk_token_id not in batch["input_ids"]
        for index, report in enumerate(chunk):
            sentences = tok.sentences(report)
            if len(sentences) > tok.max_sentences:
                continue  # dropping: checked above
            expected = [
                word
                for s in sentences
                for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(s))
            ]
            words = tok.words_from_pieces(batch, index)
            assert len(words) == int(batch["num_words"][index])
            # at the cap, or one short of it when a trailing [SEN_k] was cut
            if int(batch["attention_mask"][index].sum()) < tok.max_length - 1:
                assert words == expected
                assert int(batch["num_sentences"][index]) == len(sentences)
            else:  # cut at the end: a prefix, the last word possibly cut inside
                truncated += 1
                assert words[:-1] == expected[: len(words) - 1]
                assert expected[len(words) - 1].startswith(words[-1])
    assert truncated > 0

"""Hand-built TriBERT batches (no tokenizer): known layouts of sentences and multi-piece words."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

VOCAB = 128
PAD, CLS, SEP = 0, 2, 3
SEN_BASE = 4  # [SEN_k] = SEN_BASE + k, k = 1..50
FIRST_WORD_ID = 60  # word pieces are drawn from 60..127

# A report is a list of sentences; a sentence is a list of words; a word is its number of pieces.
Layout = Sequence[Sequence[int]]


def build_text_batch(
    reports: Sequence[Layout], *, length: int | None = None, seed: int = 0, sentence_modeling: bool = True
) -> dict[str, torch.Tensor]:
    """A :class:`velvet.types.TextBatch` for the given layouts, padded to ``length`` (default: the longest).

    With ``sentence_modeling=False`` the layout is ``[CLS] pieces... [SEP] [PAD]...`` (sentences joined),
    type id 1 and sentence id 1 on every real token after ``[CLS]``.
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for report in reports:
        ids, types, sents, is_sen, words = [CLS], [1], [0], [False], [-1]
        word = 0
        for k, sentence in enumerate(report, start=1):
            if sentence_modeling:
                (
                    ids.append(SEN_BASE + k),
                    types.append(k),
                    sents.append(k),
                    is_sen.append(True),
                    words.append(-1),
                )
            for pieces in sentence:
                for _ in range(pieces):
                    ids.append(int(torch.randint(FIRST_WORD_ID, VOCAB, (1,), generator=gen)))
                    types.append(k if sentence_modeling else 1)
                    sents.append(k if sentence_modeling else 1)
                    is_sen.append(False)
                    words.append(word)
                word += 1
        if not sentence_modeling:
            ids.append(SEP), types.append(1), sents.append(1), is_sen.append(False), words.append(-1)
        rows.append((ids, types, sents, is_sen, words, len(report), word))
    length = length or max(len(r[0]) for r in rows)
    batch: dict[str, list] = {
        k: [] for k in ("input_ids", "token_type_ids", "sentence_ids", "sentence_token_mask")
    }
    batch.update(word_ids=[], attention_mask=[], num_sentences=[], num_words=[])
    for ids, types, sents, is_sen, words, n_sent, n_word in rows:
        pad = length - len(ids)
        assert pad >= 0, "layout longer than length"
        batch["input_ids"].append(ids + [PAD] * pad)
        batch["token_type_ids"].append(types + [0] * pad)
        batch["sentence_ids"].append(sents + [-1] * pad)
        batch["sentence_token_mask"].append(is_sen + [False] * pad)
        batch["word_ids"].append(words + [-1] * pad)
        batch["attention_mask"].append([True] * len(ids) + [False] * pad)
        batch["num_sentences"].append(n_sent)
        batch["num_words"].append(n_word)
    out = {k: torch.tensor(v) for k, v in batch.items()}
    out["special_tokens_mask"] = out["word_ids"] < 0
    return out


# Three reports: multi-piece words, different sentence/word counts; the third is the longest,
# so it has no padding at all (the edge case the reference gets wrong).
LAYOUTS: list[Layout] = [
    [[1, 2, 1], [3, 1]],
    [[2]],
    [[1, 1, 2], [1], [2, 1, 1, 3]],
]


@pytest.fixture
def make_batch() -> Callable[..., dict[str, torch.Tensor]]:
    """The :func:`build_text_batch` function."""
    return build_text_batch


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """The :data:`LAYOUTS` batch (B=3, no padding on the last report)."""
    return build_text_batch(LAYOUTS)

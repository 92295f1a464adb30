"""Prompt layout, answer parsing and LM token layouts by hand."""

from __future__ import annotations

import pytest
import torch

from velvet.vlm.lm_batch import IGNORE, generation_batch, training_batch
from velvet.vlm.prompts import closed_target, parse_choice, prompt_text


@pytest.mark.parametrize(
    ("text", "choices", "expected"),
    [
        ("B. No", ["Yes", "No"], 1),
        ("(A) yes", ["Yes", "No"], 0),
        ("no", ["Yes", "No"], 1),
        ("The lesion is in the left kidney.", ["liver", "left kidney", "right kidney", "spleen"], 1),
        ("liver and spleen", ["liver", "left kidney", "right kidney", "spleen"], None),  # two options named
        ("E. maybe", ["Yes", "No"], None),  # a letter that is not an option, and no option text
        ("", ["Yes", "No"], None),
        ("left", ["left", "right", "bilateral", "none"], 0),
    ],
)
def test_parse_choice(text, choices, expected):
    assert parse_choice(text, choices) == expected


def test_prompt_layout():
    assert prompt_text("Is it?", ["Yes", "No"]) == "Question: Is it?\nOptions: A. Yes B. No\nAnswer:"
    assert prompt_text("Why?") == "Question: Why?\nAnswer:"
    assert prompt_text("Why?", with_question=False) == "Answer:"
    assert prompt_text(None).endswith("\nReport:")
    assert closed_target(["x", "y", "z"], 2) == "C. z"


class _Tok:
    """Whitespace tokenizer with fixed ids: enough to check layouts by hand."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[10 + len(w) for w in t.split()] for t in texts]}


def test_training_batch_labels_only_the_target_and_eos():
    b = training_batch(
        _Tok(), ["a bb ccc", "dddd"], ["x yy", "zzz"], max_prompt_tokens=2, max_answer_tokens=2
    )
    # row 0: BOS + last 2 prompt tokens (the start is cut) + 1 target token (limit 2 incl. EOS) + EOS
    assert b["input_ids"][0].tolist() == [1, 12, 13, 11, 2]
    assert b["labels"][0].tolist() == [IGNORE, IGNORE, IGNORE, 11, 2]
    assert b["input_ids"][1].tolist() == [1, 14, 13, 2, 0]
    assert b["labels"][1].tolist() == [IGNORE, IGNORE, 13, 2, IGNORE]
    assert b["attention_mask"].tolist() == [[True] * 5, [True] * 4 + [False]]


def test_generation_batch_is_left_padded():
    g = generation_batch(_Tok(), ["a bb", "ccc"], max_prompt_tokens=8)
    assert g["input_ids"].tolist() == [[1, 11, 12], [0, 1, 13]]
    assert torch.equal(g["attention_mask"], torch.tensor([[True, True, True], [False, True, True]]))

"""Fixtures for the pretraining tests: a small vocabulary and real phantom report batches."""

from __future__ import annotations

import pytest

from velvet.data.phantoms import PhantomConfig, sample_case
from velvet.data.tokenization import TriBertTokenizer
from velvet.data.tokenizer_training import train_wordpiece


@pytest.fixture(scope="session")
def reports() -> list[str]:
    cfg = PhantomConfig(n_cases=64, n_val=0, n_test=0)
    return [sample_case(cfg, i).report for i in range(64)]


@pytest.fixture(scope="session")
def tokenizer(reports, tmp_path_factory) -> TriBertTokenizer:
    folder = train_wordpiece(reports, tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=300)
    return TriBertTokenizer.from_pretrained(folder, max_length=128)

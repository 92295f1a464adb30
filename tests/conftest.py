"""Shared fixtures: the real-data folder, offline hub settings, deterministic torch threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never touch a model hub from the tests: a hub call fails fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_PROJECT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$VELVET_TEST_DATA`` if set, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("VELVET_TEST_DATA")
    return Path(env) if env else _PROJECT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test files; the test is skipped (with the reason) when they are absent."""
    root = shared_data_dir()
    if not (root / "README.md").is_file():
        pytest.skip(f"real test data not found at {root} (set VELVET_TEST_DATA to its folder)")
    return root


@pytest.fixture(scope="session")
def reports() -> list[str]:
    """64 phantom reports (real report structure, generated locally)."""
    from velvet.data.phantoms import PhantomConfig, sample_case

    cfg = PhantomConfig(n_cases=64, n_val=0, n_test=0)
    return [sample_case(cfg, i).report for i in range(64)]


@pytest.fixture(scope="session")
def tokenizer(reports, tmp_path_factory):
    """A TriBERT tokenizer on a 300-token WordPiece vocabulary trained offline on ``reports``."""
    from velvet.data.tokenization import TriBertTokenizer
    from velvet.data.tokenizer_training import train_wordpiece

    folder = train_wordpiece(reports, tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=300)
    return TriBertTokenizer.from_pretrained(folder, max_length=128)

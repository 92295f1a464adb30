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

"""Fixtures for the model-format tests: a tiny model and a few phantom volumes (the vocabulary is tests/conftest.py's)."""

from __future__ import annotations

import pytest
import torch

from velvet.data.contract import PreprocessContract
from velvet.data.phantoms import PhantomConfig

PREPROCESS = {"preset": "ct_rate", "spacing": [12, 12, 12], "spatial_size": [32, 32, 32]}


@pytest.fixture
def tiny_model(tokenizer):
    from velvet.models.config import get_model_config
    from velvet.models.velvet import VelvetModel

    torch.manual_seed(0)
    model = VelvetModel(get_model_config("velvet-tiny").for_tokenizer(tokenizer)).eval()
    model.tokenizer = tokenizer
    model.preprocess = PreprocessContract.resolve(PREPROCESS)
    return model


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    from velvet.data.phantoms.generate import generate_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    config = PhantomConfig(n_cases=5, n_val=0, n_test=0, shape=(40, 40, 32), spacing=(10, 10, 10))
    return generate_phantoms(out / "data", config, progress=False).parent

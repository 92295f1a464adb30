"""Fixtures for the evaluation tests: a random tiny model saved with its tokenizer, a labelled phantom set."""

from __future__ import annotations

import pytest
import torch

from velvet.data.contract import PreprocessContract
from velvet.data.phantoms import PhantomConfig

PREPROCESS = {"preset": "ct_rate", "spacing": [12, 12, 12], "spatial_size": [32, 32, 32]}


@pytest.fixture(scope="session")
def phantom_manifest(tmp_path_factory):
    """24 small phantoms: 8 train, 8 val, 8 test, with the 11 finding labels."""
    from velvet.data.phantoms.generate import generate_phantoms

    config = PhantomConfig(n_cases=24, n_val=8, n_test=8, seed=5, shape=(40, 40, 32), spacing=(10, 10, 10))
    return generate_phantoms(tmp_path_factory.mktemp("eval_phantoms") / "data", config, progress=False)


@pytest.fixture(scope="session")
def model_dir(tokenizer, tmp_path_factory):
    """A random velvet-tiny (report, sentence and word heads) saved with tokenizer and contract."""
    from velvet.models.config import get_model_config
    from velvet.models.velvet import VelvetModel

    torch.manual_seed(0)
    model = VelvetModel(get_model_config("velvet-tiny").for_tokenizer(tokenizer)).eval()
    folder = tmp_path_factory.mktemp("eval_model") / "model"
    model.save_pretrained(folder, tokenizer=tokenizer, preprocess=PreprocessContract.resolve(PREPROCESS))
    return folder


@pytest.fixture
def model(model_dir):
    from velvet.models.velvet import VelvetModel

    return VelvetModel.from_pretrained(model_dir).eval()

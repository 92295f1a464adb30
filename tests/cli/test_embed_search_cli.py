"""``velvet embed`` then ``velvet search``: batched embedding, skips, ranking, JSON."""

from __future__ import annotations

import json

import pytest
import torch

from velvet.cli.main import main
from velvet.data.contract import PreprocessContract
from velvet.data.phantoms import PhantomConfig
from velvet.data.phantoms.generate import generate_phantoms
from velvet.data.tokenization import TriBertTokenizer
from velvet.data.tokenizer_training import train_wordpiece
from velvet.index.store import read_index


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from velvet.data.manifest import read_manifest
    from velvet.models.config import get_model_config
    from velvet.models.velvet import VelvetModel

    root = tmp_path_factory.mktemp("embed")
    config = PhantomConfig(n_cases=5, n_val=0, n_test=0, shape=(40, 40, 32), spacing=(10, 10, 10))
    manifest = generate_phantoms(root / "data", config, progress=False)
    records = read_manifest(manifest)
    reports = [r.report for r in records]
    tokenizer = TriBertTokenizer.from_pretrained(train_wordpiece(reports * 4, root / "tok", vocab_size=200), max_length=128)
    torch.manual_seed(0)
    model = VelvetModel(get_model_config("velvet-tiny").for_tokenizer(tokenizer))
    model.save_pretrained(
        root / "model",
        tokenizer=tokenizer,
        preprocess=PreprocessContract.resolve({"preset": "ct_rate", "spacing": [12, 12, 12], "spatial_size": [32, 32, 32]}),
    )
    return root, [str(r.volume) for r in records], reports


def test_embed_skips_bad_files_and_search_ranks_by_similarity(setup, tmp_path, capsys):
    root, files, reports = setup
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a volume")
    index_path = tmp_path / "index.safetensors"
    code = main(["embed", "--model", str(root / "model"), "--out", str(index_path), "--batch-size", "2", *files, str(bad)])
    captured = capsys.readouterr()
    assert code == 1  # one file skipped
    assert "skipped:" in captured.err and "broken.nii.gz" in captured.err
    assert "embedded 5 volume(s), skipped 1" in captured.out
    index = read_index(index_path)
    assert index.embeddings.shape[0] == 5 and [p.rsplit("/", 1)[-1] for p in index.paths] == [f.rsplit("/", 1)[-1] for f in files]

    from velvet.models.velvet import VelvetModel

    model = VelvetModel.from_pretrained(root / "model")
    torch.testing.assert_close(index.embeddings, model.encode_volume(files))  # batching changes nothing

    assert main(["search", "--index", str(index_path), "--top-k", "3", "--json", reports[0]]) == 0
    result = json.loads(capsys.readouterr().out)
    sims = model.similarity(index.embeddings, [reports[0]])[:, 0]
    expected = sims.argsort(descending=True)[:3].tolist()
    assert [r["path"] for r in result["results"]] == [index.paths[i] for i in expected]
    scores = [r["score"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(float(sims.max()), abs=1e-5)

    assert main(["search", "--index", str(index_path), reports[1], reports[2]]) == 0
    text = capsys.readouterr().out
    assert text.count("query:") == 2 and text.count("  1  ") == 2


def test_embed_with_nothing_readable_writes_nothing(setup, tmp_path, capsys):
    root, _, _ = setup
    out = tmp_path / "index.safetensors"
    assert main(["embed", "--model", str(root / "model"), "--out", str(out), str(tmp_path / "missing.nii.gz")]) == 1
    assert "none of the 1 files" in capsys.readouterr().err and not out.exists()


def test_search_errors(setup, tmp_path, capsys):
    assert main(["search", "--index", str(tmp_path / "none.safetensors"), "query"]) == 1
    assert "no such index file" in capsys.readouterr().err
    assert main(["embed", "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "i.safetensors"), "x.nii.gz"]) == 1
    assert "cannot load model" in capsys.readouterr().err

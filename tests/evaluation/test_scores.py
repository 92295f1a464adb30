"""Which tensors meet in the evaluation scores: each checked against a per-pair computation."""

from __future__ import annotations

import pytest
import torch

from velvet.evaluation.embeddings import compute_features
from velvet.evaluation.findings import FindingSet
from velvet.evaluation.scores import level_scores, multi_level_scores
from velvet.evaluation.text import encode_texts
from velvet.evaluation.zeroshot import zero_shot, zero_shot_scores
from velvet.losses.local_alignment import local_similarity
from velvet.models.inference import prepare_volumes

TEXTS = [
    "There is a small amount of ascites.",
    "The liver is enlarged. A 30 mm hypodense lesion is present in the right hepatic lobe. No pleural effusion.",
    "Cardiomegaly is present.",
    "No focal liver lesion. The lungs are clear.",
    "Splenomegaly (15 cm).",
]


def _one_image(model, path):
    """Features of one volume straight from the model (no batching, no cache)."""
    out = model.encode_image(prepare_volumes(path, model.preprocess))
    return {
        "embedding": out["embedding"][0],
        "word_regions": model.image_regions(out["maps"], "word")[0],
        "sentence_regions": model.image_regions(out["maps"], "sentence")[0],
    }


def _one_text(model, text, level):
    encoded = model.encode_text(model.tokenizer([text]))
    if level == "report":
        return encoded["embedding"][0]
    units, mask = model.text_units(encoded, level)
    return units[0][mask[0].bool()]  # only the valid units: no padding at all


def _pair(model, image, text_unit, level):
    if level == "report":
        return float(model.logit_scale()) * float(image["embedding"] @ text_unit)
    regions = image[f"{level}_regions"][None]
    return float(
        local_similarity(regions, text_unit[None], torch.ones(1, text_unit.shape[0], dtype=torch.bool))
    )


@torch.no_grad()
def test_encode_texts_batches_and_pads_without_changing_units(model):
    one = encode_texts(model, TEXTS, ("report", "word", "sentence"), batch_size=64)
    small = encode_texts(model, TEXTS, ("report", "word", "sentence"), batch_size=2)
    torch.testing.assert_close(one["embedding"], small["embedding"], atol=1e-5, rtol=1e-5)
    for level in ("word", "sentence"):
        for i, text in enumerate(TEXTS):
            expected = _one_text(model, text, level)
            got = small[level][i][small[f"{level}_mask"][i]]
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_multi_level_scores_equal_per_pair_scores(model, phantom_manifest):
    from velvet.data.manifest import read_manifest

    records = read_manifest(phantom_manifest).split("test")[:4]
    feats = compute_features(model, records, ("embedding", "word_regions", "sentence_regions"), batch_size=3)
    text = encode_texts(model, TEXTS, ("report", "word", "sentence"), batch_size=2)
    weights = {"report": 1.0, "sentence": 0.5, "word": 0.25}
    got = multi_level_scores(model, feats, text, weights, chunk_size=3)
    images = [_one_image(model, r.volume) for r in records]
    for i, image in enumerate(images):
        torch.testing.assert_close(feats["embedding"][i], image["embedding"], atol=1e-4, rtol=1e-3)
        for j, t in enumerate(TEXTS):
            expected = sum(w * _pair(model, image, _one_text(model, t, lv), lv) for lv, w in weights.items())
            assert float(got[i, j]) == pytest.approx(expected, rel=1e-4, abs=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("level", ["report", "word"])
def test_zero_shot_scores_follow_the_pair_softmax_rule(model, phantom_manifest, level):
    from velvet.data.manifest import read_manifest

    records = read_manifest(phantom_manifest).split("test")[:3]
    fs = FindingSet.from_dict(
        {"name": "t", "findings": [
            {"name": "Ascites", "positive": ["There is ascites.", "Moderate ascites is present."], "negative": ["No ascites."]},
            {"name": "Cardiomegaly", "positive": ["The heart is enlarged."], "negative": ["Heart size is normal.", "The heart is not enlarged."]},
        ]}
    )  # fmt: skip
    feature = "embedding" if level == "report" else "word_regions"
    feats = compute_features(model, records, (feature,))
    got = zero_shot_scores(model, feats, fs, level=level)
    for i, r in enumerate(records):
        image = _one_image(model, r.volume)
        for f, finding in enumerate(fs.findings):
            pos = sum(_pair(model, image, _one_text(model, p, level), level) for p in finding.positive) / len(
                finding.positive
            )
            neg = sum(_pair(model, image, _one_text(model, q, level), level) for q in finding.negative) / len(
                finding.negative
            )
            assert float(got[i, f]) == pytest.approx(float(torch.sigmoid(torch.tensor(pos - neg))), abs=1e-5)
    # the one-liner gives the same numbers from file paths
    one = zero_shot(model, [r.volume for r in records], fs, level=level)
    torch.testing.assert_close(torch.stack(list(one.values()), 1), got.float(), atol=1e-5, rtol=1e-5)


def test_zero_shot_one_liner_takes_label_strings(model, phantom_manifest):
    from velvet.data.manifest import read_manifest

    records = read_manifest(phantom_manifest).split("test")[:2]
    scores = zero_shot(model, [r.volume for r in records], ["pleural effusion", "pneumothorax"])
    assert list(scores) == ["pleural effusion", "pneumothorax"]
    assert all(v.shape == (2,) and bool(((v > 0) & (v < 1)).all()) for v in scores.values())
    # a label a built-in set knows keeps its curated prompts; an unknown one uses the templates
    fs = FindingSet.from_labels(["pleural effusion", "pneumothorax"])
    assert "No pleural effusion." in fs.findings[0].negative
    assert fs.findings[1].positive == ("pneumothorax.",) and fs.findings[1].negative == ("No pneumothorax.",)
    with pytest.raises(ValueError, match="negative prompts"):
        zero_shot(model, [records[0].volume], FindingSet.from_labels(["x"], negative=()), rule="pair_softmax")


def test_level_scores_refuse_unknown_level(model):
    with pytest.raises(ValueError, match="unknown level"):
        level_scores(model, {}, {}, "organ")


def test_outputs_are_plain_tensors(model, phantom_manifest):
    from velvet.data.manifest import read_manifest

    records = read_manifest(phantom_manifest).split("test")[:1]
    scores = zero_shot(model, [records[0].volume], ["ascites"])
    assert type(scores["ascites"]) is torch.Tensor
    feats = compute_features(model, records, ("embedding",))
    assert type(feats["embedding"]) is torch.Tensor

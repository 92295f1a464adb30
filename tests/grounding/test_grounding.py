"""Grounding: the attention formula, the picture, and that the shipped model points at lesions."""

from __future__ import annotations

import json
import math

import pytest
import torch

from velvet.cli.main import main
from velvet.grounding.attention import unit_heat

LESION_NOUNS = ("lesion", "cyst", "focus", "nodule", "mass", "granuloma")


def test_unit_heat_equals_the_loss_attention_by_loops():
    g = torch.Generator().manual_seed(0)
    regions, units = torch.randn(7, 5, generator=g), torch.randn(4, 5, generator=g)
    mask = torch.tensor([True, True, False, True])
    got = unit_heat(regions, units, mask, temp1=4.0)
    v = [r / r.norm() for r in regions]
    w = [u / u.norm() for u, m in zip(units, mask, strict=True) if m]
    expected = torch.zeros(len(w), len(v))
    for k in range(len(w)):
        # a_kr: softmax over the valid units of <v_r, w_k>; alpha_kr: softmax over regions of temp1 * a_kr
        a = [
            math.exp(float(v[r] @ w[k])) / sum(math.exp(float(v[r] @ w[j])) for j in range(len(w)))
            for r in range(len(v))
        ]
        z = sum(math.exp(4.0 * x) for x in a)
        expected[k] = torch.tensor([math.exp(4.0 * x) / z for x in a])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    sim = unit_heat(regions, units, mask, mode="similarity")
    torch.testing.assert_close(sim[2], torch.stack([vv @ w[2] for vv in v]), atol=1e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def shipped():
    from velvet.models.pretrained import from_pretrained

    return from_pretrained("velvet-tiny.phantoms").eval()


@pytest.fixture(scope="module")
def lesion_cases(tmp_path_factory):
    """Phantoms drawn like the training data (another seed), each with at least one lesion."""
    from velvet.data.manifest import read_manifest
    from velvet.data.phantoms import PhantomConfig
    from velvet.data.phantoms.generate import generate_phantoms

    config = PhantomConfig(
        n_cases=24, n_val=0, n_test=0, seed=77, shape=(64, 64, 48), spacing=(6.0, 6.0, 6.67)
    )
    manifest = generate_phantoms(tmp_path_factory.mktemp("ground") / "data", config, progress=False)
    classes = json.loads((manifest.parent / "classes.json").read_text(encoding="utf-8"))
    lesion_id = int(next(k for k, v in classes.items() if v == "lesion"))
    return [r for r in read_manifest(manifest) if any(n in r.report.lower() for n in LESION_NOUNS)], lesion_id


@pytest.mark.xfail(
    strict=True,
    reason=(
        "velvet-tiny.phantoms does not localise words, and the method's attention cannot on ~100-word reports: "
        "a_kr = softmax over the T words of a cosine is at most e / (e + (T-1)/e) = 0.07, so alpha = "
        "softmax_r(4 a_kr) varies by at most e^0.28 = 1.32x over the 512 regions (measured focus 1e-4); "
        "benchmarks/evaluation_phantoms.py: 1 of 83 test lesions, chance 0.012. The opt-in "
        "local_attention='regions' gives peaked maps but still 0 of 32 (6 of 8 epochs), and 2 of 85 at a 64^3 input "
        "(8 epochs; the encoder does not learn the lesions: probe AUROC 0.5-0.7); 1 of 83 after 22 epochs and 0 of 83 "
        "with vis_ssl (16 epochs). A linear probe on the word-level cells finds lesions in their host organs at "
        "AUROC 0.555 trained, 0.591 untrained, 0.666 from the cell's position alone: no lesion information where "
        "the words look; none shipped. "
        "Strict: this test must pass once a model that localises ships."
    ),
)
def test_the_lesion_word_points_inside_the_lesion(shipped, lesion_cases):
    from velvet.data.cache import UncachedVolumes
    from velvet.data.phantoms.parse import lesion_words
    from velvet.grounding.attention import ground

    records, lesion_id = lesion_cases
    source = UncachedVolumes(shipped.preprocess, label_map=True)
    hits, tried = 0, 0
    for record in records:
        label = source.get_or_create(record)["label_map"][0]
        if not bool((label == lesion_id).any()):
            continue  # every lesion lost in the resize: nothing to point at
        result = ground(shipped, record.volume, record.report)
        stated = lesion_words(result.units)  # "cyst" in "a 24 mm cyst", not "lesion" in "no liver lesion"
        if not stated:
            continue
        index = stated[0]
        tried += 1
        # the attention lives on the feature grid: its hottest cell must cover lesion voxels
        hits += int(bool((label[result.peak_region(index)] == lesion_id).any()))
    assert tried >= 10
    assert hits / tried > 0.5, f"the lesion word's hottest region holds a lesion in {hits} of {tried} cases"


def test_focus_is_zero_for_uniform_and_one_for_a_single_region():
    from velvet.grounding.attention import Grounding

    regions = torch.stack([torch.full((2, 2, 2), 1 / 8), torch.eye(8)[3].view(2, 2, 2)])
    g = Grounding(["a", "b"], "word", "attention", regions, regions, torch.zeros(2, 2, 2), (1.0, 1.0, 1.0))
    assert g.focus(0) == pytest.approx(0.0, abs=1e-9) and g.focus(1) == pytest.approx(1.0, abs=1e-9)
    assert g.peak_region(1) == (slice(0, 1), slice(1, 2), slice(1, 2)) and g.peak(1) == (0, 1, 1)


def test_ground_cli_writes_png_and_peaks(tmp_path, lesion_cases, capsys):
    records, _ = lesion_cases
    record = records[0]
    noun = next(n for n in LESION_NOUNS if n in record.report.lower().split())
    out, peaks = tmp_path / "g.png", tmp_path / "g.json"
    code = main(["ground", "--model", "velvet-tiny.phantoms", str(record.volume), record.report,
                 "--out", str(out), "--words", noun, "--json", str(peaks)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    from PIL import Image

    with Image.open(out) as im:
        assert im.width > 300 and im.height > 150
    data = json.loads(peaks.read_text(encoding="utf-8"))
    assert data["units"][0]["unit"] == noun and len(data["units"][0]["peak_voxel"]) == 3
    assert 0 <= data["units"][0]["focus"] <= 1
    assert (
        main(
            [
                "ground",
                "--model",
                "velvet-tiny.phantoms",
                str(record.volume),
                "No ascites.",
                "--out",
                str(out),
                "--words",
                "spleen",
            ]
        )
        == 1
    )
    assert "not among the text's words" in capsys.readouterr().err


def test_ground_refuses_a_model_without_word_alignment(tmp_path, lesion_cases, tokenizer, capsys):
    from velvet.data.contract import PreprocessContract
    from velvet.models.config import get_model_config
    from velvet.models.velvet import VelvetModel

    records, _ = lesion_cases
    model = VelvetModel(get_model_config("velvet-tiny").for_tokenizer(tokenizer).replace(levels=("report",)))
    model.save_pretrained(
        tmp_path / "m", tokenizer=tokenizer, preprocess=PreprocessContract.resolve("ct_rate")
    )
    assert (
        main(
            [
                "ground",
                "--model",
                str(tmp_path / "m"),
                str(records[0].volume),
                "x",
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 1
    )
    assert "no word-level alignment" in capsys.readouterr().err

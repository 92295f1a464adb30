"""``velvet evaluate``: result fields, determinism, the embedding cache, CT-RATE-shaped data, the probe."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from velvet.cli.main import main
from velvet.data.manifest import read_manifest, write_manifest

PROVENANCE = {
    "model", "model_sha256", "contract_fingerprint", "contract", "manifest", "manifest_sha256",
    "velvet_version", "torch_version", "wall_time_s",
}  # fmt: skip
TOP = {
    "format",
    "protocol",
    "protocol_version",
    "split",
    "n",
    "seed",
    "settings",
    "metric_definitions",
    "provenance",
    "metrics",
}


def _run(tmp_path, name, *args):
    out = tmp_path / f"{name}.json"
    code = main(["evaluate", *args, "--out", str(out)])
    assert code == 0
    return json.loads(out.read_text(encoding="utf-8"))


def _without_wall_time(result):
    result = json.loads(json.dumps(result))
    result["provenance"].pop("wall_time_s")
    return result


def test_retrieval_result_fields_and_naive_recall(tmp_path, model_dir, model, phantom_manifest, capsys):
    result = _run(tmp_path, "r", "retrieval", "--model", str(model_dir), "--manifest", str(phantom_manifest))
    assert set(result) >= TOP and set(result["provenance"]) >= PROVENANCE
    assert (
        result["protocol"] == "retrieval"
        and result["split"] == "test"
        and result["n"] == result["gallery_size"] == 8
    )
    assert "ties" in result["metric_definitions"]["recall"]
    assert (tmp_path / "r_similarity.png").stat().st_size > 0
    assert result["provenance"]["contract_fingerprint"] == model.preprocess.fingerprint()
    # naive recall: embed each case alone, rank with ties counted against the model
    records = read_manifest(phantom_manifest).split("test")
    with torch.no_grad():
        img = torch.cat([model.encode_volume(r.volume) for r in records])
        txt = torch.cat([model.encode_text([r.report]) for r in records])
    sim = (img @ txt.T).tolist()
    for k in (1, 5):
        hits = sum(sum(s >= row[i] - 1e-6 for s in row) <= k for i, row in enumerate(sim))
        assert result["metrics"][f"recall@{k}_i2t"] == pytest.approx(hits / len(sim))
    assert "recall@1_i2t" in capsys.readouterr().out


def test_same_seed_same_json_and_the_cache_is_reused(tmp_path, model_dir, phantom_manifest, monkeypatch):
    args = ["phantoms-zeroshot", "--model", str(model_dir), "--manifest", str(phantom_manifest),
            "--cache-dir", str(tmp_path / "cache"), "--set", "bootstrap=50"]  # fmt: skip
    first = _run(tmp_path, "a", *args)
    assert list((tmp_path / "cache").glob("*.safetensors"))
    # second run: every feature must come from the cache, no volume is read or encoded
    from velvet.models.velvet import VelvetModel

    def refuse(*_a, **_k):
        raise AssertionError("encode_image called although every feature is cached")

    monkeypatch.setattr(VelvetModel, "encode_image", refuse)
    second = _run(tmp_path, "b", *args)
    assert _without_wall_time(first) == _without_wall_time(second)
    # another seed: the same point estimates, other bootstrap draws
    other = _run(tmp_path, "c", *args, "--seed", "1")
    assert other["metrics"]["macro"]["f1"] == first["metrics"]["macro"]["f1"]
    assert other["metrics"]["macro"]["f1_ci"] != first["metrics"]["macro"]["f1_ci"]


def test_zeroshot_result_reports_every_finding_with_intervals(tmp_path, model_dir, phantom_manifest):
    result = _run(
        tmp_path, "z", "phantoms-zeroshot", "--model", str(model_dir), "--manifest", str(phantom_manifest),
        "--set", "bootstrap=100",
    )  # fmt: skip
    assert result["threshold_choice"].startswith("Youden")
    assert len(result["per_finding"]) == 11
    for name, row in result["per_finding"].items():
        if row["auroc"] is None:  # one class absent in 8 test cases: undefined, listed, never 1.0
            assert name in result["undefined_auroc"]
            continue
        assert 0 <= row["auroc"] <= 1 and len(row["auroc_ci"]) == 2
    assert "Mann-Whitney" in result["metric_definitions"]["auroc"]
    assert "case-level" in result["metric_definitions"]["confidence_interval"]


def test_ctrate_zeroshot_on_a_ctrate_shaped_manifest(tmp_path, model_dir, phantom_manifest, shared_data):
    """Real CT-RATE report texts with their 18 labels; phantom volumes stand in for the scans."""
    rows = list(csv.DictReader((shared_data / "reports/ctrate/reports_800.csv").open(encoding="utf-8")))
    labels = [k for k in rows[0] if k not in ("AccessionNo", "report_text")]
    assert len(labels) == 18
    # cases with findings and without, so most labels have both classes
    chosen = sorted(rows, key=lambda r: -sum(int(r[k]) for k in labels))[:6] + rows[:6]
    volumes = [r.volume for r in read_manifest(phantom_manifest)][:12]
    from velvet.data.manifest import ManifestRecord

    records = [
        # CT-RATE ids: valid_<patient>_<scan>_<reconstruction>; here 6 scans with 2 reconstructions each
        ManifestRecord(id=f"valid_{i // 2}_a_{i % 2 + 1}", volume=v, split="val", report=r["report_text"],
                       labels={k: float(r[k]) for k in labels})
        for i, (r, v) in enumerate(zip(chosen, volumes, strict=True))
    ]  # fmt: skip
    manifest = write_manifest(records, tmp_path / "ctrate" / "manifest.csv")
    result = _run(
        tmp_path,
        "ct",
        "ctrate-zeroshot",
        "--model",
        str(model_dir),
        "--manifest",
        str(manifest),
        "--set",
        "bootstrap=50",
    )
    assert result["split"] == "val" and result["n"] == 12
    assert [f["name"] for f in result["finding_set"]["findings"]] == labels  # CT-CLIP's order
    assert set(result["per_finding"]) == set(labels)
    assert result["threshold_choice"] == "fixed at 0.5"
    prompts = result["finding_set"]["findings"][9]
    assert prompts == {"name": "Lung nodule", "positive": ["Lung nodule."], "negative": ["not Lung nodule."]}
    for name in result["undefined_auroc"]:
        assert result["per_finding"][name]["auroc"] is None
    defined = [r["auroc"] for r in result["per_finding"].values() if r["auroc"] is not None]
    assert defined and result["metrics"]["macro"]["auroc"] == pytest.approx(sum(defined) / len(defined))
    assert result["settings"]["reconstructions"] == "all"
    one = _run(tmp_path, "ct1", "ctrate-zeroshot", "--model", str(model_dir), "--manifest", str(manifest),
               "--set", "bootstrap=10", "--set", "reconstructions=first")  # fmt: skip
    assert one["n"] == 6 and one["settings"]["reconstructions"] == "first"


def test_missing_label_column_is_a_clear_error(tmp_path, model_dir, phantom_manifest, capsys):
    code = main(
        ["evaluate", "ctrate-zeroshot", "--model", str(model_dir), "--manifest", str(phantom_manifest)]
    )
    assert code == 1
    assert "no case of the split has a label for" in capsys.readouterr().err


def test_probe_runs_and_records_the_chosen_strengths(tmp_path, model_dir, phantom_manifest):
    result = _run(
        tmp_path,
        "p",
        "probe",
        "--model",
        str(model_dir),
        "--manifest",
        str(phantom_manifest),
        "--set",
        "bootstrap=20",
    )
    assert result["n_train"] == 8 and result["n_val"] == 8 and result["n"] == 8
    assert result["feature_dim"] > 0 and result["threshold_choice"] == "fixed at 0.5"
    for row in result["per_finding"].values():
        if row.get("auroc") is not None:
            assert row["l2"] in result["settings"]["l2_grid"]
    assert math.isfinite(result["metrics"]["macro"]["auroc"])


def test_unknown_protocol_and_setting(tmp_path, model_dir, phantom_manifest, capsys):
    assert main(["evaluate", "nope", "--model", str(model_dir), "--manifest", str(phantom_manifest)]) == 1
    assert "unknown protocol" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "retrieval",
                "--model",
                str(model_dir),
                "--manifest",
                str(phantom_manifest),
                "--set",
                "bogus=1",
            ]
        )
        == 1
    )
    assert "no settings ['bogus']" in capsys.readouterr().err
    assert main(["evaluate", "--list"]) == 0
    assert "ctrate-zeroshot" in capsys.readouterr().out

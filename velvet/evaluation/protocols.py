"""Named evaluation protocols and the one entry point that runs them: :func:`evaluate`.

A protocol fixes every choice that moves its numbers (split, scoring level and rule, prompts,
threshold rule, bootstrap) and has a version that changes whenever one of them does. Settings may
be overridden per run; the result records the settings actually used, so a changed choice is
visible in the JSON. Protocols:

================== =========== ========================================================================
name               kind        what
================== =========== ========================================================================
retrieval          retrieval   image<->report R@1/5/10, mean/median rank on one split (test), report
                               level; ``weights`` adds sentence / word local scores
phantoms-zeroshot  zeroshot    the 11 phantom findings, phantom-grammar prompts, pair softmax,
                               threshold by Youden's J on val, AUROC etc. with 1,000-draw bootstrap CI
ctrate-zeroshot    zeroshot    CT-RATE's 18 findings, ``"{label}."`` / ``"not {label}."``, pair softmax
                               on CT-RATE's validation split, threshold fixed at 0.5 (VLM3D);
                               ``reconstructions``: ``all`` volumes or the ``first`` per scan
zeroshot           zeroshot    any finding set (``finding_set``: a built-in name or a JSON file)
probe              probe       logistic regression per finding on frozen pooled features (train),
                               L2 chosen on val by AUROC, scored on test with bootstrap CI
vqa                vqa         a volume-language model on VQA items: closed accuracy (generated answer
                               parsed, and option log-likelihood), yes/no AUROC, open-answer NLG, per
                               question type beside the majority baseline (:mod:`.generation`)
report             report      generated reports vs the references: NLG metrics, phantom finding F1,
                               vs the "most common report" baseline
================== =========== ========================================================================
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["PROTOCOLS", "Protocol", "evaluate", "get_protocol", "list_protocols"]

RECALL_DEFINITION = (
    "rank = number of gallery items scoring >= the paired item (ties counted against the model); "
    "recall@k = share of queries with rank <= k; i2t: image queries over all reports of the split, t2i the reverse"
)


@dataclass(frozen=True)
class Protocol:
    """A named evaluation with its default settings."""

    name: str
    kind: str
    version: int
    description: str
    settings: Mapping[str, Any] = field(default_factory=dict)


_ZS = {
    "split": "test",
    "level": "report",
    "rule": "pair_softmax",
    "threshold": "val_youden",
    "bootstrap": 1000,
}
PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "retrieval", "retrieval", 1, "image<->report retrieval on the paired split",
            {"split": "test", "weights": {"report": 1.0}, "ks": [1, 5, 10], "png": True},
        ),
        Protocol(
            "phantoms-zeroshot", "zeroshot", 1, "zero-shot classification of the 11 phantom findings",
            {**_ZS, "finding_set": "phantoms"},
        ),
        Protocol(
            "ctrate-zeroshot", "zeroshot", 1,
            "CT-RATE zero-shot classification of 18 findings (CT-CLIP prompts, validation split, threshold 0.5)",
            {**_ZS, "finding_set": "ctrate", "split": "val", "threshold": 0.5, "reconstructions": "all"},
        ),
        Protocol("zeroshot", "zeroshot", 1, "zero-shot classification with any finding set", {**_ZS, "finding_set": None}),
        Protocol(
            "probe", "probe", 1, "linear probe per finding on frozen features",
            {"split": "test", "features": "pooled", "l2_grid": [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0],
             "balanced": True, "threshold": 0.5, "bootstrap": 1000, "findings": None},
        ),
        Protocol(
            "vqa", "vqa", 1, "VQA with a volume-language model: closed accuracy, yes/no AUROC, open NLG",
            {"split": "test", "items": None, "kinds": ["closed", "open"], "max_items": None, "expert": None,
             "generation": {"num_beams": 1, "do_sample": False, "max_new_tokens": 32}},
        ),
        Protocol(
            "report", "report", 1, "report generation: NLG metrics and finding F1 against the most common report",
            {"split": "test", "max_items": None, "findings": "auto", "expert": None,
             "generation": {"num_beams": 1, "do_sample": False, "max_new_tokens": 200, "no_repeat_ngram_size": 0}},
        ),
    )
}  # fmt: skip


def list_protocols() -> list[str]:
    """Names of the protocols."""
    return sorted(PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name`` (ValueError naming the known ones otherwise)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {list_protocols()}")
    return PROTOCOLS[name]


def _labels(records: list[Any], names: list[str], manifest: Any) -> torch.Tensor:
    """``(N, F)`` labels of the records, NaN = unknown; a finding no record labels is an error."""
    y = torch.tensor([[r.labels.get(n, math.nan) for n in names] for r in records], dtype=torch.float64)
    unlabelled = [n for i, n in enumerate(names) if bool(torch.isnan(y[:, i]).all())]
    if unlabelled:
        present = sorted({k for r in records for k in r.labels})
        raise ValueError(
            f"{manifest}: no case of the split has a label for {unlabelled} (label:<name> columns); "
            f"labelled findings: {present}"
        )
    return y


def _records(manifest: Any, split: str, path: Any, reconstructions: str = "all") -> list[Any]:
    records = manifest.split(split)
    if not records:
        raise ValueError(f"{path}: the manifest has no {split!r} cases")
    if reconstructions == "first":
        # CT-RATE ids are <split>_<patient>_<scan>_<reconstruction>: keep one volume per scan
        seen: set[str] = set()
        kept = []
        for r in records:
            scan = r.id.rsplit("_", 1)[0]
            if scan not in seen:
                seen.add(scan)
                kept.append(r)
        records = kept
    elif reconstructions != "all":
        raise ValueError(f"reconstructions must be 'all' or 'first', got {reconstructions!r}")
    return records


def _retrieval(
    model: Any, manifest: Any, path: Any, s: dict[str, Any], ctx: dict[str, Any], seed: int, out: Any
) -> dict[str, Any]:
    from velvet.evaluation.embeddings import compute_features
    from velvet.evaluation.scores import local_settings, multi_level_scores
    from velvet.evaluation.text import encode_texts
    from velvet.metrics.retrieval import retrieval_metrics, retrieval_ranks

    records = _records(manifest, s["split"], path)
    weights = {k: float(v) for k, v in s["weights"].items() if float(v)}
    levels = list(weights)
    features = [("embedding" if lv == "report" else f"{lv}_regions") for lv in levels]
    image = compute_features(model, records, features, **ctx)
    reports = [r.load_report() or "" for r in records]
    empty = [r.id for r, t in zip(records, reports, strict=True) if not t.strip()]
    if empty:
        raise ValueError(f"{path}: cases without a report cannot be retrieved: {empty[:5]}")
    text = encode_texts(model, reports, levels)
    sim = multi_level_scores(model, image, text, weights)
    metrics = retrieval_metrics(sim, ks=tuple(s["ks"]))
    ranks_i2t = retrieval_ranks(sim)
    result = {
        "n": len(records),
        "gallery_size": len(records),
        "metrics": metrics,
        "chance": {f"recall@{k}": min(1.0, k / len(records)) for k in s["ks"]},
        "metric_definitions": {
            "recall": RECALL_DEFINITION,
            "score": "sum over levels of weight * level score; report = logit_scale * cosine, sentence/word = "
            "the local alignment score with the model's local settings (local_score)",
            "local_score": local_settings(model),
            "median_rank": "the middle rank (mean of the two middle ranks for an even count)",
        },
        "worst_cases_i2t": [
            {"id": records[i].id, "rank": int(ranks_i2t[i])}
            for i in torch.argsort(ranks_i2t, descending=True, stable=True)[:5].tolist()
        ],
    }
    if s.get("png") and out is not None:
        from velvet.evaluation.plots import save_similarity_png

        png = Path(out).with_name(Path(out).stem + "_similarity.png")
        save_similarity_png(sim, png, title=f"retrieval {s['split']} N={len(records)} levels={levels}")
        result["similarity_png"] = png.name
    return result


def _zeroshot(
    model: Any, manifest: Any, path: Any, s: dict[str, Any], ctx: dict[str, Any], seed: int, out: Any
) -> dict[str, Any]:
    from velvet.evaluation.classification_report import choose_thresholds, classification_report
    from velvet.evaluation.embeddings import compute_features
    from velvet.evaluation.findings import load_finding_set
    from velvet.evaluation.scores import local_settings
    from velvet.evaluation.zeroshot import zero_shot_scores

    if not s.get("finding_set"):
        raise ValueError(
            "protocol 'zeroshot' needs finding_set (a built-in name such as 'phantoms' or a JSON file)"
        )
    finding_set = load_finding_set(s["finding_set"])
    names = finding_set.names
    feature = "embedding" if s["level"] == "report" else f"{s['level']}_regions"

    def scores_of(split: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        records = _records(manifest, split, path, s.get("reconstructions", "all"))
        image = compute_features(model, records, [feature], desc=f"embedding {split}", **ctx)
        scores = zero_shot_scores(model, image, finding_set, level=s["level"], rule=s["rule"])
        return scores.double(), _labels(records, names, path), len(records)

    scores, labels, n = scores_of(s["split"])
    val_scores = val_labels = None
    if s["threshold"] == "val_youden":
        if s["split"] == "val":
            raise ValueError(
                "threshold 'val_youden' cannot be chosen on the split being scored (val); fix a number"
            )
        val_scores, val_labels, _ = scores_of("val")
    thresholds, how = choose_thresholds(s["threshold"], val_scores, val_labels, names)
    report = classification_report(
        scores, labels, names, thresholds, n_resamples=int(s["bootstrap"]), seed=seed
    )
    return {
        "n": n,
        "finding_set": finding_set.to_dict(),
        "threshold_choice": how,
        "metrics": {"macro": report["macro"]},
        "per_finding": report["per_finding"],
        "undefined_auroc": report["undefined_auroc"],
        "metric_definitions": {
            **_classification_definitions(s),
            **({"local_score": local_settings(model)} if s["level"] != "report" else {}),
        },
    }


def _probe(
    model: Any, manifest: Any, path: Any, s: dict[str, Any], ctx: dict[str, Any], seed: int, out: Any
) -> dict[str, Any]:
    from velvet.evaluation.classification_report import choose_thresholds, classification_report
    from velvet.evaluation.embeddings import compute_features
    from velvet.evaluation.probe import LinearProbe

    names = s.get("findings") or sorted({k for r in manifest for k in r.labels})
    if not names:
        raise ValueError(f"{path}: the manifest has no finding labels (label:<name> columns) to probe")
    data = {}
    for split in ("train", "val", s["split"]):
        if split not in data:
            records = _records(manifest, split, path)
            x = compute_features(model, records, [s["features"]], desc=f"embedding {split}", **ctx)[
                s["features"]
            ]
            data[split] = (x, _labels(records, names, path))
    probe = LinearProbe.fit(*data["train"], *data["val"], l2_grid=s["l2_grid"], balanced=bool(s["balanced"]))
    x, y = data[s["split"]]
    scores = probe.predict_proba(x)
    thresholds, how = choose_thresholds(
        s["threshold"], probe.predict_proba(data["val"][0]), data["val"][1], names
    )
    report = classification_report(scores, y, names, thresholds, n_resamples=int(s["bootstrap"]), seed=seed)
    for i, name in enumerate(names):
        if "auroc" in report["per_finding"][name]:
            report["per_finding"][name]["l2"] = probe.l2[i]
            report["per_finding"][name]["val_auroc"] = probe.val_auroc[i]
    return {
        "n": len(y),
        "n_train": len(data["train"][1]),
        "n_val": len(data["val"][1]),
        "feature_dim": int(x.shape[1]),
        "threshold_choice": how,
        "metrics": {"macro": report["macro"]},
        "per_finding": report["per_finding"],
        "undefined_auroc": report["undefined_auroc"],
        "metric_definitions": {
            **_classification_definitions(s),
            "probe": "standardised features; L2 logistic regression per finding (L-BFGS), class-balanced BCE "
            "when balanced; L2 strength per finding by validation AUROC (ties: stronger)",
        },
    }


def _classification_definitions(s: Mapping[str, Any]) -> dict[str, Any]:
    from velvet.metrics.bootstrap import BOOTSTRAP_DEFINITION
    from velvet.metrics.classification import CLASSIFICATION_DEFINITIONS

    out = dict(CLASSIFICATION_DEFINITIONS)
    out["confidence_interval"] = f"95 %, {s['bootstrap']} draws: {BOOTSTRAP_DEFINITION}"
    if "rule" in s:
        out["zero_shot_score"] = (
            "pair_softmax: sigmoid(mean positive-prompt logit - mean negative-prompt logit) = softmax over the pair"
            if s["rule"] == "pair_softmax"
            else "positive: mean positive-prompt logit (a ranking score, not a probability)"
        )
    return out


def _vqa(*args: Any) -> dict[str, Any]:
    from velvet.evaluation.generation import run_vqa

    return run_vqa(*args)


def _report(*args: Any) -> dict[str, Any]:
    from velvet.evaluation.generation import run_report

    return run_report(*args)


_RUNNERS = {"retrieval": _retrieval, "zeroshot": _zeroshot, "probe": _probe, "vqa": _vqa, "report": _report}
_GENERATIVE = ("vqa", "report")


def evaluate(
    protocol: str,
    model: Any,
    manifest: str | os.PathLike[str],
    *,
    split: str | None = None,
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    volume_cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    progress: bool | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Run a protocol and return (and optionally write) its result.

    Args:
        protocol: a name from :func:`list_protocols`.
        model: a :class:`~velvet.models.velvet.VelvetModel` or a name / folder to load; for ``vqa``
            and ``report``, a :class:`~velvet.vlm.model.VolumeLanguageModel` or its ``.ckpt``.
        manifest: the manifest file (labels as ``label:<name>`` columns).
        split: override the protocol's split.
        out: write the result JSON here (and pictures beside it).
        seed: bootstrap seed.
        settings: overrides of the protocol's settings (recorded in the result).
        cache_dir: embedding cache folder (None: no cache).
        volume_cache_dir: preprocessed-volume cache to read from and fill.
        batch_size: volumes per forward pass.
        progress: progress bars (None: on a terminal only).
        model_name: how to name an in-memory model in the provenance (a loaded name is recorded as given).

    Returns:
        The result dict (see :mod:`velvet.evaluation.provenance` for the common fields).
    """
    from velvet.data.manifest import read_manifest
    from velvet.evaluation.provenance import RESULT_FORMAT, provenance, write_result

    start = time.perf_counter()
    spec = get_protocol(protocol)
    unknown = sorted(set(settings or {}) - set(spec.settings))
    if unknown:
        raise ValueError(
            f"protocol {protocol!r} has no settings {unknown}; its settings: {sorted(spec.settings)}"
        )
    s = copy.deepcopy(dict(spec.settings))
    s.update(copy.deepcopy(dict(settings or {})))
    if split is not None:
        s["split"] = split
    if not isinstance(model, torch.nn.Module):
        model_name = str(model)
        if spec.kind in _GENERATIVE:
            from velvet.vlm.load import load_vlm

            model = load_vlm(model)
        else:
            from velvet.models.velvet import VelvetModel

            model = VelvetModel.from_pretrained(model)
    if (spec.kind in _GENERATIVE) != hasattr(model, "lm_tokenizer"):
        need = "a volume-language model (a VLMTask checkpoint)" if spec.kind in _GENERATIVE else "a velvet model"
        raise ValueError(f"protocol {protocol!r} evaluates {need}")
    manifest_data = read_manifest(manifest)
    ctx = {
        "cache_dir": cache_dir,
        "volume_cache_dir": volume_cache_dir,
        "batch_size": batch_size,
        "progress": progress,
    }
    body = _RUNNERS[spec.kind](model, manifest_data, manifest, s, ctx, seed, out)
    result = {
        "format": RESULT_FORMAT,
        "protocol": spec.name,
        "protocol_version": spec.version,
        "protocol_description": spec.description,
        "split": s["split"],
        "seed": seed,
        "settings": s,
        **body,
    }
    result["provenance"] = provenance(
        model, model_name=model_name, manifest=manifest, wall_time_s=time.perf_counter() - start
    )
    if out is not None:
        write_result(result, out)
    return result

"""Evaluation: named protocols (retrieval, zero-shot, linear probe) with results you can compare.

``velvet.evaluation.evaluate("phantoms-zeroshot", model, "manifest.csv", out="results.json")`` runs a
protocol (:mod:`velvet.evaluation.protocols`); :func:`zero_shot` classifies findings in scans from
text prompts. Every result records the protocol version, its settings, metric definitions and the
provenance of model, contract and data (:mod:`velvet.evaluation.provenance`).
"""

from __future__ import annotations

from velvet._lazy import lazy_exports

_LAZY = {
    "evaluate": "velvet.evaluation.protocols:evaluate",
    "list_protocols": "velvet.evaluation.protocols:list_protocols",
    "get_protocol": "velvet.evaluation.protocols:get_protocol",
    "zero_shot": "velvet.evaluation.zeroshot:zero_shot",
    "FindingSet": "velvet.evaluation.findings:FindingSet",
    "load_finding_set": "velvet.evaluation.findings:load_finding_set",
    "list_finding_sets": "velvet.evaluation.findings:list_finding_sets",
    "compute_features": "velvet.evaluation.embeddings:compute_features",
    "LinearProbe": "velvet.evaluation.probe:LinearProbe",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

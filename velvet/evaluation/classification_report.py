"""Per-finding and macro classification metrics with bootstrap intervals, for zero-shot and probes.

Thresholds are chosen by the caller (fixed, or Youden's J on a validation split) and recorded.
Unknown labels (NaN) are left out per finding. The bootstrap resamples cases (rows) once for all
findings, so the macro interval is that of the macro mean over the same draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from velvet.metrics.bootstrap import bootstrap_indices, percentile_interval
from velvet.metrics.classification import binary_metrics, known, youden_threshold

__all__ = ["CI_METRICS", "choose_thresholds", "classification_report"]

CI_METRICS = ("auroc", "balanced_accuracy", "f1", "precision", "recall")


def choose_thresholds(
    rule: str | float, scores: torch.Tensor | None, labels: torch.Tensor | None, names: Sequence[str]
) -> tuple[torch.Tensor, str]:
    """One threshold per finding: a fixed number, or ``"val_youden"`` from validation scores.

    Returns:
        ``(F,)`` thresholds and a sentence saying how they were chosen. A finding whose validation
        split lacks a class falls back to 0.5 and the sentence names it.
    """
    if not isinstance(rule, str):
        return torch.full((len(names),), float(rule), dtype=torch.float64), f"fixed at {float(rule)}"
    if rule != "val_youden":
        raise ValueError(f"threshold must be a number or 'val_youden', got {rule!r}")
    if scores is None or labels is None:
        raise ValueError("threshold 'val_youden' needs validation scores and labels")
    out, fallback = [], []
    for f, name in enumerate(names):
        s, y = known(scores[:, f], labels[:, f])
        if y.numel() and 0 < int(y.sum()) < y.numel():
            out.append(youden_threshold(s, y))
        else:
            out.append(0.5)
            fallback.append(name)
    how = "Youden's J on the validation split"
    if fallback:
        how += f"; 0.5 for {fallback} (a class is absent from validation)"
    return torch.tensor(out, dtype=torch.float64), how


def _per_finding(
    scores: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor
) -> list[dict[str, float] | None]:
    rows: list[dict[str, float] | None] = []
    for f in range(scores.shape[1]):
        s, y = known(scores[:, f], labels[:, f])
        rows.append(binary_metrics(s, y, float(thresholds[f])) if y.numel() else None)
    return rows


def _macro(rows: list[dict[str, float] | None], metric: str) -> float:
    values = [r[metric] for r in rows if r is not None and math.isfinite(r[metric])]
    return sum(values) / len(values) if values else math.nan


def classification_report(
    scores: torch.Tensor,
    labels: torch.Tensor,
    names: Sequence[str],
    thresholds: torch.Tensor,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Metrics of ``(N, F)`` scores against ``(N, F)`` labels (0/1, NaN unknown).

    Returns:
        ``per_finding``: name -> metrics of :func:`~velvet.metrics.classification.binary_metrics`
        plus ``<metric>_ci`` ``[low, high]`` for :data:`CI_METRICS`; ``macro``: the mean of each
        metric over findings where it is defined, with intervals; ``undefined_auroc``: findings
        whose AUROC is undefined (one class absent) and left out of the macro mean.
    """
    if scores.shape != labels.shape or scores.ndim != 2 or scores.shape[1] != len(names):
        raise ValueError(
            f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must be (N, {len(names)})"
        )
    rows = _per_finding(scores, labels, thresholds)
    draws = bootstrap_indices(scores.shape[0], n_resamples, seed) if n_resamples else None
    boot: dict[str, torch.Tensor] = {}
    if draws is not None:
        values = torch.full((len(CI_METRICS), draws.shape[0], len(names) + 1), math.nan, dtype=torch.float64)
        for r, idx in enumerate(draws):
            sampled = _per_finding(scores[idx], labels[idx], thresholds)
            for m, metric in enumerate(CI_METRICS):
                for f, row in enumerate(sampled):
                    if row is not None:
                        values[m, r, f] = row[metric]
                values[m, r, -1] = _macro(sampled, metric)
        boot = {metric: values[m] for m, metric in enumerate(CI_METRICS)}
    per_finding: dict[str, Any] = {}
    for f, name in enumerate(names):
        row = rows[f]
        if row is None:
            per_finding[name] = {"n": 0.0, "note": "no case with a known label"}
            continue
        entry: dict[str, Any] = dict(row)
        for metric in CI_METRICS if boot else ():
            low, high, n_valid = percentile_interval(boot[metric][:, f], level)
            entry[f"{metric}_ci"] = [low, high]
            if metric == "auroc":
                entry["auroc_ci_valid_draws"] = n_valid
        per_finding[name] = entry
    macro: dict[str, Any] = {metric: _macro(rows, metric) for metric in CI_METRICS}
    for metric in CI_METRICS if boot else ():
        low, high, _ = percentile_interval(boot[metric][:, -1], level)
        macro[f"{metric}_ci"] = [low, high]
    undefined = [n for n, r in zip(names, rows, strict=True) if r is None or not math.isfinite(r["auroc"])]
    return {"per_finding": per_finding, "macro": macro, "undefined_auroc": undefined}

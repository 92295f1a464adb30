"""The clinical finding F1 of generated phantom reports: both sides read by the same report reader.

:func:`velvet.data.phantoms.parse.findings_from_report` turns each report into the 11 phantom labels;
this module compares them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from velvet.data.phantoms.findings import LABEL_NAMES
from velvet.data.phantoms.parse import findings_from_report

__all__ = ["FINDING_F1_DEFINITION", "finding_f1", "finding_f1_from_labels"]

FINDING_F1_DEFINITION = (
    "Clinical finding F1 of generated vs reference phantom reports: both are read by the same "
    "rule-based reader (velvet.data.phantoms.parse.findings_from_report) into the 11 binary labels "
    "of velvet.data.phantoms.findings.LABEL_NAMES. Per label, TP/FP/FN are summed over cases; "
    "precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN), each NaN when its "
    "denominator is 0. Micro: the same formulas on TP/FP/FN summed over labels and cases. Macro F1: "
    "the unweighted mean of the per-label F1 over the labels with at least one positive reference or "
    "prediction (2TP+FP+FN > 0; listed in 'macro_labels'); NaN if there is none. Example-based F1: "
    "per case 2|P & R|/(|P|+|R|) of the predicted and reference positive-label sets, 1.0 when both "
    "are empty (a correctly normal report), averaged over cases."
)


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def finding_f1_from_labels(
    predictions: Sequence[Mapping[str, bool | int]], references: Sequence[Mapping[str, bool | int]]
) -> dict[str, Any]:
    """Per-label, micro, macro and example-based F1 of predicted vs reference finding labels.

    See :data:`FINDING_F1_DEFINITION` for the exact definitions and the NaN conventions.

    Args:
        predictions: one label dict per case, keyed by exactly the
            :data:`~velvet.data.phantoms.findings.LABEL_NAMES` (values bool or 0/1).
        references: the reference label dicts, same length and keys.

    Returns:
        ``per_label`` (label -> ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``,
        ``support`` = reference positives), ``micro_precision``, ``micro_recall``, ``micro_f1``,
        ``macro_f1``, ``macro_labels`` (the labels the macro mean covers), ``example_f1``,
        ``n_cases`` and ``definition``.

    Raises:
        ValueError: empty inputs, different lengths, or a dict whose keys are not the labels.
    """
    if len(predictions) == 0 or len(references) == 0:
        raise ValueError("finding F1 needs at least one case")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    expected = set(LABEL_NAMES)
    for kind, rows in (("prediction", predictions), ("reference", references)):
        for i, row in enumerate(rows):
            if set(row) != expected:
                missing, extra = sorted(expected - set(row)), sorted(set(row) - expected)
                raise ValueError(f"{kind} {i} has missing labels {missing} / unknown labels {extra}")

    counts = {name: [0, 0, 0] for name in LABEL_NAMES}  # tp, fp, fn
    example_f1 = 0.0
    for pred, ref in zip(predictions, references, strict=True):
        p = {name for name in LABEL_NAMES if pred[name]}
        r = {name for name in LABEL_NAMES if ref[name]}
        for name in p & r:
            counts[name][0] += 1
        for name in p - r:
            counts[name][1] += 1
        for name in r - p:
            counts[name][2] += 1
        # a case that both call normal agrees perfectly
        example_f1 += 2 * len(p & r) / (len(p) + len(r)) if p or r else 1.0

    per_label = {}
    for name, (tp, fp, fn) in counts.items():
        per_label[name] = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "support": tp + fn,
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        }
    tp, fp, fn = (sum(c[k] for c in counts.values()) for k in range(3))
    macro_labels = [name for name, (t, f, n) in counts.items() if t + f + n > 0]
    macro = (
        sum(per_label[name]["f1"] for name in macro_labels) / len(macro_labels) if macro_labels else math.nan
    )
    return {
        "per_label": per_label,
        "micro_precision": _ratio(tp, tp + fp),
        "micro_recall": _ratio(tp, tp + fn),
        "micro_f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "macro_f1": macro,
        "macro_labels": macro_labels,
        "example_f1": example_f1 / len(references),
        "n_cases": len(references),
        "definition": FINDING_F1_DEFINITION,
    }


def finding_f1(generated: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Clinical finding F1 of generated phantom reports against their reference reports.

    Both sides are read by :func:`findings_from_report`, then scored by
    :func:`finding_f1_from_labels` (see :data:`FINDING_F1_DEFINITION`).

    Args:
        generated: one generated report per case.
        references: the reference reports, in the same order.

    Returns:
        The dict of :func:`finding_f1_from_labels`.

    Raises:
        ValueError: empty lists or lists of different lengths.
        TypeError: a report is not a string.
    """
    if len(generated) == 0 or len(references) == 0:
        raise ValueError("finding F1 needs at least one case")
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated reports but {len(references)} references")
    return finding_f1_from_labels(
        [findings_from_report(t) for t in generated], [findings_from_report(t) for t in references]
    )

"""Write segmentation results: a per-class table and per-case rows as CSV, everything as JSON.

``results.json`` records the summary, the per-class table, every case, the metric definitions and
the settings that shape the numbers (spacing, ROI, overlap, NSD tolerance, contract), so a number
can always be traced to how it was measured. Files appear atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from velvet.metrics.segmentation import SegmentationMetrics

__all__ = ["write_segmentation_results"]


def _num(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else round(float(v), 6)


def _write(path: Path, text: str) -> None:
    from velvet.utils.atomic import atomic_write

    atomic_write(path, text)


def write_segmentation_results(
    metrics: SegmentationMetrics,
    directory: str | os.PathLike[str],
    *,
    settings: Mapping[str, Any],
    definitions: Mapping[str, str],
) -> Path:
    """Write ``per_class.csv``, ``per_case.csv`` and ``results.json`` into ``directory``.

    Args:
        metrics: the scored cases.
        directory: output folder (created).
        settings: how the numbers were measured (JSON-ready).
        definitions: metric definitions (:data:`velvet.metrics.segmentation.METRIC_DEFINITIONS`).

    Returns:
        The path of ``results.json``. Missing values (class not scored) are empty cells / null.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = metrics.per_class()
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["class", "dice", "nsd", "hd95_mm", "cases_scored", "hd95_undefined"])
    for r in rows:
        writer.writerow([r["class"], *("" if _num(r[k]) is None else _num(r[k]) for k in ("dice", "nsd", "hd95")), r["n"], r["hd95_undefined"]])
    _write(out / "per_class.csv", table.getvalue())
    names = list(metrics.class_names[1:])
    cases = io.StringIO()
    writer = csv.writer(cases, lineterminator="\n")
    writer.writerow(["case", "spacing_mm", *(f"{m}:{n}" for m in ("dice", "nsd", "hd95") for n in names)])
    case_rows = []
    for c in metrics.cases:
        values = {m: [_num(v) for v in getattr(c, m)] for m in ("dice", "nsd", "hd95")}
        writer.writerow([c.case_id, "x".join(f"{s:g}" for s in c.spacing), *("" if v is None else v for m in ("dice", "nsd", "hd95") for v in values[m])])
        case_rows.append({"case": c.case_id, "spacing_mm": list(c.spacing), **values})
    _write(out / "per_case.csv", cases.getvalue())
    summary = metrics.summary()
    result = {
        "task": "segmentation",
        "classes": list(metrics.class_names),
        "summary": {k: _num(v) for k, v in summary.items()},
        "per_class": [{**r, **{k: _num(r[k]) for k in ("dice", "nsd", "hd95")}} for r in rows],
        "cases": case_rows,
        "metric_definitions": dict(definitions),
        "settings": dict(settings),
    }
    _write(out / "results.json", json.dumps(result, indent=2) + "\n")
    return out / "results.json"

"""What every evaluation result records, so that two numbers can be compared (or shown not to be).

A result JSON is ``{"protocol", "protocol_version", "split", "n", "seed", "settings",
"metric_definitions", "provenance": {...}, "metrics": {...}, ...}``. The provenance holds the model
(its name or folder and the sha256 of its weights), the preprocessing contract (fingerprint and
full settings), the manifest (path and sha256), velvet's and torch's versions, and the wall time.
Everything but ``wall_time_s`` is a function of the inputs and the seed, so two runs with one seed
give identical JSON apart from that field.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from velvet.utils.atomic import atomic_path

__all__ = ["RESULT_FORMAT", "jsonable", "provenance", "write_result"]

RESULT_FORMAT = "velvet-evaluation"


def provenance(
    model: Any, *, model_name: str | None, manifest: str | os.PathLike[str] | None, wall_time_s: float
) -> dict[str, Any]:
    """The provenance block of a result.

    Args:
        model: the evaluated :class:`~velvet.models.velvet.VelvetModel`.
        model_name: how the user named it (registry name or folder), or None for an in-memory model.
        manifest: the manifest file evaluated on, or None.
        wall_time_s: seconds the evaluation took.
    """
    import torch

    import velvet
    from velvet.evaluation.embeddings import model_fingerprint
    from velvet.utils.hashing import sha256_file

    contract = model.preprocess
    return {
        "model": model_name,
        "model_sha256": model_fingerprint(model),
        "model_weights_hash": "sha256 over the state dict (names, dtypes, shapes, bytes in name order)",
        "contract_fingerprint": None if contract is None else contract.fingerprint(),
        "contract": None if contract is None else contract.to_dict(),
        "manifest": None if manifest is None else Path(manifest).name,
        "manifest_sha256": None if manifest is None else sha256_file(manifest),
        "velvet_version": velvet.__version__,
        "torch_version": torch.__version__,
        "wall_time_s": round(float(wall_time_s), 3),
    }


def jsonable(value: Any) -> Any:
    """Plain JSON values: tensors to lists, tuples to lists, NaN and infinities to None."""
    import numpy as np
    import torch

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def write_result(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a result JSON atomically (sorted keys, NaN written as null) and return its path."""
    target = Path(path)
    text = json.dumps(jsonable(result), indent=2, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target

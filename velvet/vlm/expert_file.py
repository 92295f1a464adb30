"""Expert lines for a whole manifest, written once and read by training, evaluation and ``velvet expert``.

``expert.jsonl`` holds one line per case::

    {"case_id": "phantom_00007", "text": "Segmentation: liver 1650 mL 52 HU, ...", "findings": {...},
     "source": "segmentation model runs/seg_expert"}

The findings come from a velvet segmentation model run on each scan (:func:`segment_file`, label
map on the scan's own grid) or, as an upper bound and for data that has them, from the manifest's
own label maps (``source="labels"``). The file is written atomically; a case that cannot be read
stops the run with the file and case named.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from velvet.data.errors import DataError

__all__ = ["DEFAULT_ORGANS", "expert_for_scan", "read_expert", "write_expert"]

# what the phantom reports and questions talk about (volumes for size findings, HU for attenuation)
DEFAULT_ORGANS = ("liver", "spleen", "kidney_right", "kidney_left", "heart", "ascites")


def _findings(
    labels: np.ndarray, affine: np.ndarray, image: np.ndarray, names: Sequence[str], **kw: Any
) -> dict:
    from velvet.vlm.expert import expert_findings

    return expert_findings(labels, None, dict(enumerate(names)), affine=affine, image=image, **kw)


def expert_for_scan(
    seg_model: Any,
    scan: str | os.PathLike[str],
    *,
    device: str = "cpu",
    overlap: float | None = None,
    min_lesion_voxels: int = 2,
) -> dict[str, Any]:
    """The findings of one scan by a segmentation model (label map on the scan's own grid).

    Args:
        seg_model: a :class:`~velvet.models.segmentation.SegmentationModel` (``load_segmentation_model``).
        scan: a volume file or DICOM folder.
        device: where the model runs.
        overlap: sliding-window overlap (None: the model's own).
        min_lesion_voxels: smaller predicted lesion components are noise and left out.
    """
    from velvet.segmentation.inference import segment_file

    res = segment_file(seg_model, scan, device=device, overlap=overlap)
    return _findings(res.labels, res.affine, res.image, res.class_names, min_lesion_voxels=min_lesion_voxels)


def _findings_from_labels(record: Any, names: Sequence[str]) -> dict[str, Any]:
    from velvet.data.transforms import IMAGE_KEY, LABEL_KEY, LoadVolumed

    data = {IMAGE_KEY: record.volume, LABEL_KEY: record.label_map, "case_id": record.id}
    if getattr(record, "label_geometry", None):
        data["label_geometry"] = record.label_geometry
    loaded = LoadVolumed([IMAGE_KEY, LABEL_KEY])(data)
    image = loaded[IMAGE_KEY]
    labels = np.asarray(loaded[LABEL_KEY].as_tensor()[0]).astype(np.int64)
    return _findings(labels, np.asarray(image.affine, np.float64), np.asarray(image.as_tensor()[0]), names)


def write_expert(
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    seg_model: Any = None,
    seg_model_name: str | None = None,
    organs: Sequence[str] | None = DEFAULT_ORGANS,
    splits: Iterable[str] | None = None,
    device: str = "cpu",
    overlap: float | None = None,
    progress: bool | None = None,
) -> int:
    """Write ``expert.jsonl`` for the cases of a manifest.

    Args:
        manifest: the manifest CSV.
        out: the JSONL to write.
        seg_model: a segmentation model; None reads the manifest's label maps (``classes.json``
            beside it names the classes).
        seg_model_name: how the source is recorded (a path or registry name).
        organs: organs listed in the text (:func:`~velvet.vlm.expert.expert_text`); None: all.
        splits: only these splits (None: every case).
        device: where the segmentation model runs.
        overlap: its sliding-window overlap (None: the model's own).
        progress: a progress bar (None: when stderr is a terminal).

    Returns:
        The number of cases written.

    Raises:
        DataError: a case without a label map (``seg_model`` None), or a scan that cannot be read.
    """
    import sys

    from tqdm.auto import tqdm

    from velvet.data.atomic import atomic_path
    from velvet.data.manifest import read_manifest
    from velvet.vlm.expert import expert_text

    path = Path(manifest)
    records = list(read_manifest(path, require_report=False).records)
    if splits is not None:
        keep = set(splits)
        records = [r for r in records if r.split in keep]
    if seg_model is None:
        from velvet.data.classes import CLASSES_FILE, read_class_names

        classes = path.parent / CLASSES_FILE
        if not classes.is_file():
            raise DataError(classes, "expert findings from label maps need the manifest's classes.json")
        names = read_class_names(classes)
        source = "labels"
        missing = [r.id for r in records if r.label_map is None]
        if missing:
            raise DataError(path, f"{len(missing)} case(s) have no label map, e.g. {missing[:3]}")
    else:
        source = f"segmentation model {seg_model_name or type(seg_model).__name__}"
    lines = []
    bar = tqdm(records, desc="expert", unit="case",
               disable=not (sys.stderr.isatty() if progress is None else progress))  # fmt: skip
    for r in bar:
        try:
            if seg_model is None:
                findings = _findings_from_labels(r, names)
            else:
                findings = expert_for_scan(seg_model, r.volume, device=device, overlap=overlap)
        except DataError:
            raise
        except (OSError, ValueError, RuntimeError) as exc:
            raise DataError(r.volume, f"case {r.id!r}: expert findings failed: {exc}") from exc
        text = expert_text(findings, organs)
        lines.append(json.dumps({"case_id": r.id, "text": text, "findings": findings, "source": source}))
    with atomic_path(Path(out)) as tmp:
        Path(tmp).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def read_expert(path: str | os.PathLike[str], case_ids: Iterable[str] | None = None) -> dict[str, str]:
    """Case id -> expert line of an ``expert.jsonl``.

    Args:
        path: the file.
        case_ids: cases that must be present (an error lists the missing ones).

    Raises:
        DataError: the file is missing, a line is not JSON or lacks ``case_id`` / ``text`` (line
            named), a case appears twice, or a required case is absent.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "expert file not found (write it with `velvet expert`)")
    texts: dict[str, str] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(p, f"line {n}: not JSON ({exc.msg})") from exc
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("case_id"), str)
            or not isinstance(row.get("text"), str)
        ):
            raise DataError(p, f"line {n}: needs string fields 'case_id' and 'text'")
        if row["case_id"] in texts:
            raise DataError(p, f"line {n}: case {row['case_id']!r} appears twice")
        texts[row["case_id"]] = row["text"]
    if case_ids is not None:
        missing = sorted(set(case_ids) - set(texts))
        if missing:
            raise DataError(p, f"no expert line for {len(missing)} case(s), e.g. {missing[:3]}")
    return texts


def expert_source(path: str | os.PathLike[str]) -> str:
    """The ``source`` of an expert file's first line (recorded in results)."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            return str(json.loads(line).get("source", "unknown"))
    return "empty"

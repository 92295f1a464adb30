"""Write a phantom data set to a folder, resumably and deterministically.

Layout of ``out_dir``::

    phantoms.json            generator version + config (written first: claims the folder)
    volumes/<id>.nii.gz      CT-like volume, HU, config dtype (int16 by default)
    labels/<id>.nii.gz       uint8 segmentation label map on the same grid
    classes.json             label map id -> class name
    findings.jsonl           one line per case: id, split, labels, structured findings
    vqa.jsonl                question-answer items (see velvet.data.phantoms.vqa)
    manifest.csv             id, volume, split, report, label_map, label:<name> (written last)

Every file is written atomically, so a killed run leaves complete files plus ``.tmp-*``
leftovers; a re-run removes the leftovers, renders only missing cases and rewrites the tables.
A finished folder is left untouched (no-op). A folder written with another config or generator
version is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from velvet.data.atomic import atomic_path, remove_stale_temporaries, save_nifti
from velvet.data.errors import DataError
from velvet.data.manifest import ManifestRecord, write_manifest
from velvet.data.phantoms.anatomy import CLASS_NAMES
from velvet.data.phantoms.case import CaseSpec, render_case, sample_case
from velvet.data.phantoms.config import GENERATOR_VERSION, PhantomConfig
from velvet.data.phantoms.findings import LABEL_NAMES

__all__ = ["MANIFEST_NAME", "generate_phantoms"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
_INFO, _CLASSES, _VQA, _FINDINGS = "phantoms.json", "classes.json", "vqa.jsonl", "findings.jsonl"
_TABLES = (_CLASSES, _FINDINGS, _VQA, MANIFEST_NAME)


def _paths(out: Path, config: PhantomConfig, index: int) -> tuple[Path, Path]:
    name = config.case_id(index) + (".nii.gz" if config.compress else ".nii")
    return out / "volumes" / name, out / "labels" / name


def _info(config: PhantomConfig) -> dict[str, Any]:
    return {
        "generator": "velvet.data.phantoms",
        "version": GENERATOR_VERSION,
        "config": config.to_dict(),
        "label_names": list(LABEL_NAMES),
        "classes": {str(k): v for k, v in CLASS_NAMES.items()},
    }


def generate_phantoms(
    out_dir: str | os.PathLike[str],
    config: PhantomConfig,
    *,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Generate (or finish generating) a phantom data set.

    Args:
        out_dir: output folder (created if needed).
        config: what to generate.
        workers: processes rendering cases in parallel (1: in this process). Workers are
            started with ``spawn``, so a script calling this with ``workers > 1`` needs the usual
            ``if __name__ == "__main__":`` guard.
        progress: show a tqdm progress bar.
        overwrite: replace a phantom set of another config in ``out_dir`` (only the generator's
            own files are removed).

    Returns:
        The path of ``manifest.csv``.

    Raises:
        DataError: ``out_dir`` holds phantoms of another config / version, or a data set that
            the generator did not write, and ``overwrite`` is False.
        ValueError: ``workers < 1``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    _claim_folder(out, config, overwrite)
    manifest = out / MANIFEST_NAME
    todo = [i for i in range(config.n_cases) if not all(p.exists() for p in _paths(out, config, i))]
    if not todo and all((out / name).exists() for name in _TABLES):
        logger.info("phantom set %s is complete (%d cases); nothing to do", out, config.n_cases)
        return manifest

    specs = [sample_case(config, i) for i in range(config.n_cases)]
    if todo:
        logger.info("rendering %d of %d phantom cases into %s", len(todo), config.n_cases, out)
        _render_all(out, config, todo, specs, workers, progress)
    _write_tables(out, config, specs)
    logger.info("phantom set written: %s", manifest)
    return manifest


def _claim_folder(out: Path, config: PhantomConfig, overwrite: bool) -> None:
    """Check that ``out`` is empty or ours with the same config; write ``phantoms.json``."""
    info_path = out / _INFO
    wanted = _info(config)
    if info_path.exists():
        try:
            found = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(info_path, f"cannot read the phantom set description ({exc})") from None
        same = found.get("version") == wanted["version"] and found.get("config") == wanted["config"]
        if same:
            remove_stale_temporaries(out)
            return
        if not overwrite:
            raise DataError(
                info_path,
                "folder holds phantoms of another config or generator version "
                f"({_describe_difference(found, wanted)}); use another folder or overwrite=True (--overwrite)",
            )
    elif any((out / name).exists() for name in (*_TABLES, "volumes", "labels")) and not overwrite:
        raise DataError(
            out, "folder holds a data set that the phantom generator did not write; use an empty folder"
        )
    if out.exists():
        _remove_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(info_path) as tmp:
        tmp.write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")


def _describe_difference(found: dict[str, Any], wanted: dict[str, Any]) -> str:
    if found.get("version") != wanted["version"]:
        return f"version {found.get('version')!r} != {wanted['version']!r}"
    old = found.get("config") or {}
    diffs = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in wanted["config"].items() if old.get(k) != v]
    return ", ".join(diffs) or "config differs"


def _remove_outputs(out: Path) -> None:
    """Delete the generator's own files (never anything else) from ``out``."""
    remove_stale_temporaries(out)
    for name in (*_TABLES, _INFO):
        (out / name).unlink(missing_ok=True)
    for sub in ("volumes", "labels"):
        for p in (out / sub).glob("phantom_*.nii*"):
            p.unlink()


def _render_all(
    out: Path, config: PhantomConfig, todo: list[int], specs: list[CaseSpec], workers: int, progress: bool
) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="phantoms", unit="case", disable=not progress)
    try:
        if workers == 1 or len(todo) == 1:
            for i in todo:
                _write_case(out, config, i, specs[i])
                bar.update(1)
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: never fork a parent that may hold torch / OpenMP threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_write_chunk, str(out), config, chunk) for chunk in _chunks(todo, workers)]
            for future in as_completed(futures):
                bar.update(future.result())
    finally:
        bar.close()


def _chunks(todo: list[int], workers: int) -> Iterable[list[int]]:
    """Small interleaved chunks: balanced work, frequent progress updates, little pickling."""
    size = max(1, min(16, len(todo) // (4 * workers)))
    return (todo[k : k + size] for k in range(0, len(todo), size))


def _write_chunk(out: str, config: PhantomConfig, indices: list[int]) -> int:
    for i in indices:
        _write_case(Path(out), config, i, None)
    return len(indices)


def _write_case(out: Path, config: PhantomConfig, index: int, spec: CaseSpec | None) -> None:
    case = render_case(config, index, spec)
    volume_path, label_path = _paths(out, config, index)
    save_nifti(case.label_map, case.affine, label_path)
    save_nifti(case.volume, case.affine, volume_path)


def _write_tables(out: Path, config: PhantomConfig, specs: list[CaseSpec]) -> None:
    _write_text(out / _CLASSES, json.dumps({str(k): v for k, v in CLASS_NAMES.items()}, indent=2) + "\n")
    findings = (
        json.dumps({"id": s.case_id, "split": s.split, "labels": s.labels, "findings": s.findings.to_dict()})
        for s in specs
    )
    _write_text(out / _FINDINGS, "".join(line + "\n" for line in findings))
    _write_text(out / _VQA, "".join(json.dumps(item) + "\n" for s in specs for item in s.vqa))
    records = []
    for s in specs:
        volume_path, label_path = _paths(out, config, s.index)
        records.append(
            ManifestRecord(
                id=s.case_id,
                volume=str(volume_path),
                split=s.split,
                report=s.report,
                label_map=str(label_path),
                labels={k: float(v) for k, v in s.labels.items()},
            )
        )
    write_manifest(records, out / MANIFEST_NAME)  # last: its presence means the set is complete


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")

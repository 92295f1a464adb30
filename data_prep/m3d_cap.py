"""Convert a raw M3D-Cap tree (slice images + ``text.txt``) into NIfTI volumes and a velvet manifest.

Input (the unzipped hub archives; see ``data_prep/m3d_cap.md``)::

    <root>/ct_case/[ct_case_NN/]<case>/<Series_Name>/<int>.png|jpeg|jpg
    <root>/ct_case/[ct_case_NN/]<case>/text.txt          (also ct_quizze/...)

Output under ``--out``::

    volumes/<source>-<case>-<series>.nii.gz   uint8, shape (H/2, W/2, D)
    reports/<source>-<case>.txt               the case's cleaned report, one per case
    manifest.csv, skipped.csv                 id, volume, split, report_file; what was left out and why

Volumes follow the VELVET-Med reference (slices of the most common size ordered by integer name,
H and W halved, identity affine, z spacing 0.5 when D >= 96); splits are by *case*. Run
``python data_prep/m3d_cap.py ROOT --out OUT`` or ``python -m data_prep.m3d_cap ...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from data_prep._common import (
    MANIFEST_NAME,
    SKIPPED_NAME,
    Skips,
    add_common_arguments,
    configure_logging,
    is_junk,
    parse_fraction,
    prepare_output,
    run_main,
    run_parallel,
    safe_name,
    seeded_split,
    write_text_atomic,
)
from velvet.data.atomic import save_nifti
from velvet.data.manifest import ManifestRecord, write_manifest

__all__ = [
    "SeriesResult",
    "SeriesTask",
    "clean_report",
    "convert_m3d_cap",
    "convert_series",
    "discover",
    "halve",
    "main",
    "read_grey_slice",
]

logger = logging.getLogger("data_prep.m3d_cap")  # not "__main__" when run as a script

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
# ct_case, ct_quizze and their unzipped chunks ct_case_00, ct_quizze_12 ...
_SOURCE_RE = re.compile(r"^(ct_case|ct_quizze)(?:_\d+)?$")
DEEP_SERIES = 96  # depth from which the reference stores a z spacing of 0.5 mm
TextMode = Literal["full", "findings"]
# Radiopaedia section labels in text.txt (the reference strips exactly these words)
_LABEL_RE = re.compile(r"\b(Title|presentation|patient|Age|Gender|study_findings|discussion)\s*:")
# ITU-R BT.601 luma, as OpenCV's BGR2GRAY (used by the reference) and PIL's convert("L")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class SeriesTask:
    """One series to convert (picklable, for worker processes)."""

    series_id: str
    case_id: str
    folder: str
    volume: str
    depth_threshold: int
    overwrite: bool = False


@dataclass
class SeriesResult:
    """What became of one series: ``converted`` now, ``reused`` (complete file of an earlier run)
    or ``skipped`` (with ``reason``/``detail``); ``shape`` is ``(H/2, W/2, D)``; ``dropped`` counts
    slices left out, by reason."""

    series_id: str
    case_id: str
    status: Literal["converted", "reused", "skipped"]
    shape: tuple[int, int, int] | None = None
    reason: str = ""
    detail: str = ""
    dropped: Counter[str] = field(default_factory=Counter)


# ---------------------------------------------------------------------------------------- report


def _tidy(text: str) -> str:
    """NFC, NBSP/tabs to spaces, spaces collapsed, each line stripped, empty lines dropped."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = (re.sub(r"[ \t\u00a0\u2009\u202f]+", " ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def clean_report(text: str, *, mode: TextMode = "full") -> str:
    """Clean a case's ``text.txt``.

    Args:
        text: the raw file content.
        mode: ``full`` keeps every section with the labels (``Title:``, ``presentation:``,
            ``patient:``, ``Age:``, ``Gender:``, ``study_findings:``, ``discussion:``) removed, as the
            VELVET-Med reference's sentence splitter does. ``findings`` keeps the ``study_findings``
            section, else ``discussion``, else everything (M3D's caption rule; M3D keeps the text after
            the label up to the end, this stops at the next label).

    Returns:
        One line per non-empty input line (line breaks kept for the sentence splitter); ``""`` if
        nothing is left.
    """
    if mode not in ("full", "findings"):
        raise ValueError(f"mode must be 'full' or 'findings', got {mode!r}")
    if mode == "findings":
        parts = _LABEL_RE.split(text)  # [before, label, content, label, content, ...]
        sections = {parts[i]: parts[i + 1] for i in range(len(parts) - 2, 0, -2)}  # first occurrence wins
        for label in ("study_findings", "discussion"):
            body = _tidy(_LABEL_RE.sub(" ", sections.get(label, "")))
            if len(re.sub(r"\s", "", body)) >= 5:  # M3D's "too short" rule
                return body
    return _tidy(_LABEL_RE.sub(" ", text))


# ------------------------------------------------------------------------------------- discovery


def _source_of(case_dir: Path, root: Path) -> str:
    """``ct_case`` / ``ct_quizze`` from the nearest matching ancestor folder, else ``""``."""
    folder = case_dir.parent
    while True:
        match = _SOURCE_RE.match(folder.name)
        if match:
            return match.group(1)
        if folder == root or folder == folder.parent:
            return ""
        folder = folder.parent


@dataclass
class _Case:
    case_id: str
    folder: Path
    series: dict[str, Path] = field(default_factory=dict)


def discover(root: Path, skips: Skips) -> dict[str, _Case]:
    """Find every folder that holds slice images; its parent folder is the case.

    Returns:
        case id -> case, each with its series (safe name -> folder), in sorted order.
    """
    cases: dict[str, _Case] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
        if not any(not is_junk(f) and Path(f).suffix.lower() in IMAGE_SUFFIXES for f in filenames):
            continue
        series_dir = Path(dirpath)
        case_dir = series_dir.parent
        source = _source_of(case_dir, root)
        case_id = f"{source}-{safe_name(case_dir.name)}" if source else safe_name(case_dir.name)
        case = cases.setdefault(case_id, _Case(case_id, case_dir))
        if case.folder != case_dir:
            skips.add(series_dir, "duplicate case id", f"{case_id} is also {case.folder}")
            continue
        series = safe_name(series_dir.name)
        if series in case.series:
            skips.add(series_dir, "series name collides after transliteration", str(case.series[series]))
            continue
        case.series[series] = series_dir
    return dict(sorted(cases.items()))


# ------------------------------------------------------------------------------------ one series


def _slice_files(folder: Path, dropped: Counter[str]) -> list[Path]:
    """Slice images of a series ordered by integer stem (``2`` before ``10``)."""
    numbered: list[tuple[int, str, Path]] = []
    for p in folder.iterdir():
        if is_junk(p.name) or p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            continue
        try:
            numbered.append((int(p.stem), p.name, p))
        except ValueError:
            dropped["file name is not an integer"] += 1
    return [p for _, _, p in sorted(numbered)]


def _slice_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from the image header, without decoding the pixels; None when unreadable."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    size = reader.GetSize()
    if len(size) != 2:
        return None
    return int(size[1]), int(size[0])


def read_grey_slice(path: Path) -> np.ndarray:
    """Decode one slice image to 8-bit grey.

    Returns:
        ``(H, W)`` uint8. RGB(A) becomes BT.601 luma (as OpenCV and PIL), grey + alpha keeps the grey.

    Raises:
        ValueError: the file cannot be decoded or is not an 8-bit image.
    """
    import SimpleITK as sitk

    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as exc:
        raise ValueError("unreadable image") from exc
    if array.dtype != np.uint8:
        raise ValueError("not an 8-bit image")
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        grey = array[..., :3].astype(np.float32) @ _LUMA
        array = np.floor(grey + 0.5).clip(0, 255).astype(np.uint8)
    elif array.ndim == 3 and array.shape[-1] in (1, 2):
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError("not a 2D image")
    return array


def halve(image: np.ndarray) -> np.ndarray:
    """Downsample an ``(H, W)`` uint8 slice by 2 in each axis to ``(H // 2, W // 2)``.

    The mean of each 2x2 block, rounded half up. This equals the reference's
    ``F.interpolate(scale_factor=0.5, mode="bilinear", align_corners=False)``: at that factor every
    output sample lies midway between two input rows and two input columns. An odd last row or
    column is dropped, as the reference's output size ``floor(H / 2)`` does.
    """
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:h, :w].astype(np.uint16).reshape(h // 2, 2, w // 2, 2)
    return ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)


def _existing_shape(path: Path) -> tuple[int, int, int] | None:
    """Shape of a volume left by an earlier run, or None if it is absent or not a 3D uint8 NIfTI."""
    if not path.is_file():
        return None
    import nibabel as nib

    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
        ok = len(shape) == 3 and img.get_data_dtype() == np.uint8
    except Exception:  # any unreadable header means "not complete": convert it again
        return None
    return shape if ok else None  # type: ignore[return-value]


def convert_series(task: SeriesTask) -> SeriesResult:
    """Convert one series folder into ``task.volume`` (or reuse a complete earlier output).

    Returns:
        The outcome; a series is skipped when fewer than ``task.depth_threshold`` usable slices of
        its most common size remain, or when its slices are smaller than 2x2.
    """
    result = SeriesResult(task.series_id, task.case_id, "skipped")
    out = Path(task.volume)
    shape = None if task.overwrite else _existing_shape(out)
    if shape is not None:
        if shape[2] < task.depth_threshold:
            result.reason, result.detail = "depth below threshold", f"{shape[2]} < {task.depth_threshold}"
            return result
        result.status, result.shape = "reused", shape
        return result
    files = _slice_files(Path(task.folder), result.dropped)
    sizes = [_slice_size(p) for p in files]
    result.dropped["unreadable image"] += sum(s is None for s in sizes)
    counts = Counter(s for s in sizes if s is not None)
    if not counts:
        result.reason = "no readable slices"
        result.detail = ", ".join(f"{n} {why}" for why, n in result.dropped.items() if n)
        return result
    modal, depth = counts.most_common(1)[0]
    result.dropped["not the series' most common size"] += sum(counts.values()) - depth
    if depth < task.depth_threshold:  # decide before decoding anything
        result.reason, result.detail = "depth below threshold", f"{depth} < {task.depth_threshold}"
        return result
    if min(modal) < 2:
        result.reason, result.detail = "slices smaller than 2x2", f"{modal[0]}x{modal[1]}"
        return result
    halves = []
    for path, size in zip(files, sizes, strict=True):
        if size != modal:
            continue
        try:
            image = read_grey_slice(path)
        except ValueError as exc:
            result.dropped[str(exc)] += 1
            continue
        if image.shape != modal:  # header and pixels disagree: treat as an odd-size slice
            result.dropped["not the series' most common size"] += 1
            continue
        halves.append(halve(image))
    if len(halves) < task.depth_threshold:
        result.reason, result.detail = "depth below threshold", f"{len(halves)} < {task.depth_threshold}"
        return result
    volume = np.stack(halves, axis=-1)  # (H/2, W/2, D)
    affine = np.eye(4)
    if volume.shape[2] >= DEEP_SERIES:
        affine[2, 2] = 0.5
    save_nifti(volume, affine, out, dtype=np.uint8)
    result.status, result.shape = "converted", tuple(volume.shape)  # type: ignore[assignment]
    result.dropped = +result.dropped  # drop zero counts
    return result


# ---------------------------------------------------------------------------------------- driver


def _read_reports(
    cases: dict[str, _Case], text: TextMode, skips: Skips
) -> tuple[dict[str, str], Counter[str]]:
    """Cleaned report text per case; cases without a usable text.txt are skipped (all their series)."""
    reports: dict[str, str] = {}
    notes: Counter[str] = Counter()
    for case in cases.values():
        path = case.folder / "text.txt"
        if not path.is_file():
            skips.add(case.folder, "no text.txt in the case folder", f"{len(case.series)} series")
            continue
        raw = path.read_bytes()
        try:
            content = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            content = raw.decode("utf-8", errors="replace")
            notes["text.txt with invalid UTF-8 bytes (replaced)"] += 1
        cleaned = clean_report(content, mode=text)
        if not cleaned:
            skips.add(path, "empty report", f"{len(case.series)} series")
            continue
        reports[case.case_id] = cleaned
    return reports, notes


def convert_m3d_cap(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    depth_threshold: int = 48,
    val_fraction: float = 0.05,
    seed: int = 1,
    workers: int = 1,
    max_cases: int | None = None,
    text: TextMode = "full",
    overwrite: bool = False,
) -> Path:
    """Convert a raw M3D-Cap tree; see the module docstring for the layout.

    Args:
        root: folder holding ``ct_case`` / ``ct_quizze`` (or one of them, or a chunk of one).
        out: output folder.
        depth_threshold: keep series with at least this many usable slices (reference: 48).
        val_fraction: fraction of *cases* held out as ``val`` (seeded shuffle).
        seed: shuffle seed (reference: 1).
        workers: processes converting series in parallel.
        max_cases: convert only the first N cases in sorted order (for trial runs).
        text: ``full`` (all sections, labels removed) or ``findings`` (M3D's caption text).
        overwrite: convert again even where a complete volume exists.

    Returns:
        The manifest path (``out/manifest.csv``).

    Raises:
        NotADirectoryError: ``root`` is not a folder.
        FileNotFoundError: no slice images were found under ``root``.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: M3D-Cap root is not a folder")
    out = prepare_output(out)
    manifest_path = out / MANIFEST_NAME
    manifest_path.unlink(missing_ok=True)  # its presence must mean "this run finished"
    skips = Skips()
    cases = discover(root, skips)
    if not cases:
        raise FileNotFoundError(f"{root}: no folder with .png/.jpeg/.jpg slice images found")
    if max_cases is not None:
        cases = dict(list(cases.items())[:max_cases])
    reports, notes = _read_reports(cases, text, skips)
    tasks = [
        SeriesTask(
            series_id=f"{case_id}-{name}",
            case_id=case_id,
            folder=str(folder),
            volume=str(out / "volumes" / f"{case_id}-{name}.nii.gz"),
            depth_threshold=depth_threshold,
            overwrite=overwrite,
        )
        for case_id in reports
        for name, folder in cases[case_id].series.items()
    ]
    logger.info("%d cases with reports, %d series to convert under %s", len(reports), len(tasks), root)
    results = run_parallel(convert_series, tasks, workers=workers, desc="M3D-Cap series", unit="series")
    results.sort(key=lambda r: r.series_id)
    return _finish(out, results, reports, skips, notes, val_fraction=val_fraction, seed=seed)


def _finish(
    out: Path,
    results: list[SeriesResult],
    reports: dict[str, str],
    skips: Skips,
    notes: Counter[str],
    *,
    val_fraction: float,
    seed: int,
) -> Path:
    """Write the reports of the kept cases, ``skipped.csv`` and, last, the manifest."""
    kept = [r for r in results if r.status != "skipped"]
    for r in results:
        if r.status == "skipped":
            skips.add(r.series_id, r.reason, r.detail)
        else:
            notes.update({f"slices left out of kept series: {k}": v for k, v in r.dropped.items()})
    notes["volumes reused from an earlier run"] = sum(r.status == "reused" for r in kept)
    split_of = seeded_split((r.case_id for r in kept), {"val": val_fraction}, seed=seed)
    for case_id in sorted({r.case_id for r in kept}):
        write_text_atomic(out / "reports" / f"{case_id}.txt", reports[case_id])
    records = [
        ManifestRecord(
            id=r.series_id,
            volume=str(out / "volumes" / f"{r.series_id}.nii.gz"),
            split=split_of[r.case_id],  # type: ignore[arg-type]
            report_file=str(out / "reports" / f"{r.case_id}.txt"),
        )
        for r in kept
    ]
    skips.write_csv(out / SKIPPED_NAME)
    skips.log_summary(logger, len(records), "series", notes)
    manifest_path = out / MANIFEST_NAME
    if not records:
        logger.warning("no series was converted; writing no manifest")
        return manifest_path
    write_manifest(records, manifest_path)
    n_val = sum(r.split == "val" for r in records)
    logger.info("wrote %s: %d train / %d val series", manifest_path, len(records) - n_val, n_val)
    return manifest_path


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of this converter."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.m3d_cap",
        description="Convert raw M3D-Cap slice images + text.txt into NIfTI volumes and a velvet manifest.",
    )
    parser.add_argument("root", type=Path, help="folder holding ct_case/ and/or ct_quizze/")
    add_common_arguments(parser)
    parser.add_argument("--depth-threshold", type=int, default=48, help="minimum usable slices (default 48)")
    parser.add_argument("--val-fraction", type=parse_fraction, default=0.05, help="held-out cases (0.05)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--max-cases", type=int, default=None, help="only the first N cases (trial runs)")
    parser.add_argument("--text", choices=["full", "findings"], default="full", help="report text (full)")
    parser.add_argument("--overwrite", action="store_true", help="convert again even where outputs exist")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    kwargs = vars(build_parser().parse_args(argv))  # dests are convert_m3d_cap's parameter names
    configure_logging(kwargs.pop("log_level"))
    return run_main(lambda: convert_m3d_cap(**kwargs))


if __name__ == "__main__":
    sys.exit(main())

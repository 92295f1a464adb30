"""Convert 3D-RAD question files (VQA on CT-RATE volumes) into a velvet ``vqa.jsonl``.

Input: the 3D-RAD QA folder (see ``data_prep/rad3d.md``)::

    <root>/{train,test}/Task<N>_<Name>/<Subtask name>.csv      e.g. test/Task4_Existence_Detection/Lung nodule.csv

and, optionally, the manifest that ``data_prep/ct_rate.py`` wrote for CT-RATE (``--ctrate-manifest``):
3D-RAD's ``test_<P>_<s>_<r>`` volumes are CT-RATE's ``valid_<P>_<s>_<r>``, train volumes keep their
name, and ct_rate ids are the file names without ``.nii.gz``.

Output under ``--out``: ``vqa.jsonl`` (one item per row, written last) and ``skipped.csv``. Splits:
3D-RAD test -> ``test``; 3D-RAD train -> the CT-RATE manifest's split of the volume (``train`` or
``val``) when a manifest is given, else ``train`` with a seeded ``--val-fraction`` of the *patients*
held out as ``val``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep._common import (
    SKIPPED_NAME,
    Skips,
    add_common_arguments,
    configure_logging,
    is_junk,
    parse_fraction,
    prepare_output,
    run_main,
    safe_name,
    seeded_split,
)
from velvet.data.manifest import ManifestRecord, read_manifest
from velvet.data.vqa import VQA_NAME, VQAItem, write_vqa
from velvet.data.vqa_3drad import RadRow, ctrate_volume_name, read_3drad_csv

__all__ = ["convert_rad3d", "main"]

logger = logging.getLogger("data_prep.rad3d")  # not "__main__" when run as a script

_PARTS = ("train", "test")
_SUFFIX = ".nii.gz"


def _question_files(root: Path) -> list[tuple[Path, str | None]]:
    """``(csv, part)`` for every CSV under ``root``; ``part`` is the nearest ``train``/``test`` folder."""
    if root.is_file():
        files = [root]
        base = root.parent
    else:
        files = sorted(
            p
            for p in root.rglob("*.csv")
            if p.is_file() and not any(is_junk(part) for part in p.relative_to(root).parts)
        )
        base = root
    out = []
    for f in files:
        # root itself may be the train/ or test/ folder: look at its name too
        folders = [base.name, *f.relative_to(base).parts[:-1]]
        part = next((d.lower() for d in reversed(folders) if d.lower() in _PARTS), None)
        out.append((f, part))
    return out


def _part_of_volume(ctrate_name: str) -> str:
    """3D-RAD part of a CT-RATE volume: its validation volumes are 3D-RAD's test."""
    return "test" if ctrate_name.startswith("valid_") else "train"


def _index_manifest(path: Path) -> dict[str, ManifestRecord]:
    """CT-RATE file name -> record, by id (``valid_1_a_1``) and by volume file name."""
    manifest = read_manifest(path, check_files=False, require_report=False)
    index: dict[str, ManifestRecord] = {}
    for r in manifest:
        index.setdefault(os.path.basename(r.volume), r)
        index.setdefault(r.id + _SUFFIX, r)
    logger.info("CT-RATE manifest %s: %d volumes", path, len(manifest))
    return index


def _resolve(
    rows: list[tuple[RadRow, str | None]],
    records: dict[str, ManifestRecord] | None,
    skips: Skips,
    notes: Counter[str],
) -> list[tuple[RadRow, str, str, ManifestRecord | None]]:
    """``(row, part, CT-RATE name, record)`` per usable row; the others are skipped and counted."""
    exists: dict[str, bool] = {}
    kept = []
    for row, folder_part in rows:
        where = f"{row.file}:{row.line}"
        try:
            name = ctrate_volume_name(row.volume_name)
        except ValueError as exc:
            skips.add(where, "unrecognised VolumeName", str(exc))
            continue
        part = _part_of_volume(name)
        if folder_part is not None and folder_part != part:
            skips.add(where, "VolumeName prefix disagrees with the train/test folder", row.volume_name)
            continue
        record = None
        if records is not None:
            record = records.get(name)
            if record is None:
                skips.add(where, "volume not in the CT-RATE manifest", name)
                continue
            if record.volume not in exists:
                exists[record.volume] = os.path.exists(record.volume)
            if not exists[record.volume]:
                skips.add(where, "volume in the CT-RATE manifest but missing on disk", record.volume)
                continue
            if (record.split == "test") != (part == "test"):
                # CT-RATE valid is velvet's test; anything else means the manifest is not ct_rate's
                skips.add(where, "CT-RATE manifest split disagrees with 3D-RAD's", f"{name}: {record.split}")
                continue
        if row.answer_index is not None and row.choices[row.answer_index] != row.answer:
            notes["closed answers differing from the option text in case or a final '.' (option kept)"] += 1
        kept.append((row, part, name, record))
    return kept


def _items(
    kept: list[tuple[RadRow, str, str, ManifestRecord | None]],
    split_of_patient: dict[str, str],
    skips: Skips,
) -> Iterator[VQAItem]:
    seen: set[str] = set()
    for row, part, name, record in kept:
        item_id = f"3drad-{part}-task{row.task}-{safe_name(row.file.stem)}-{row.line}"
        if item_id in seen:
            skips.add(f"{row.file}:{row.line}", "duplicate item (the same file found twice?)", item_id)
            continue
        seen.add(item_id)
        if part == "test":
            split = "test"
        elif record is not None:
            split = record.split  # VQA val/train follow the patients of pretraining's split
        else:
            split = split_of_patient[name.split("_")[1]]
        answer = row.answer if row.answer_index is None else row.choices[row.answer_index]
        yield VQAItem(
            id=item_id,
            question=row.question,
            answer=answer,
            kind=row.kind,
            choices=row.choices,
            answer_index=row.answer_index,
            question_type=row.question_type,
            volume=Path(record.volume) if record is not None else None,
            case_id=name[: -len(_SUFFIX)],
            split=split,
            source="3d-rad",
        )


def convert_rad3d(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    ctrate_manifest: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.0,
    seed: int = 1,
) -> Path:
    """Write ``out/vqa.jsonl`` for 3D-RAD question files; see the module docstring.

    Args:
        root: the 3D-RAD folder (CSV files at any depth under ``train/`` / ``test/``), or one CSV.
            Files outside a ``train``/``test`` folder take the part from their ``VolumeName``.
        out: output folder.
        ctrate_manifest: the CT-RATE manifest of ``data_prep/ct_rate.py``; items then carry their
            volume path, rows whose volume it lacks are skipped, and train rows take its split.
        val_fraction: without a manifest, the fraction of 3D-RAD train *patients* held out as ``val``.
        seed: shuffle seed of that split.

    Returns:
        The ``vqa.jsonl`` path (absent when no row was usable).

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no CSV.
        ValueError: ``val_fraction`` given together with a manifest (the manifest decides ``val``).
        DataError: a malformed 3D-RAD file (names the file, line and volume) or manifest.
    """
    root, out = Path(root), Path(out)
    if not root.exists():
        raise FileNotFoundError(f"{root}: 3D-RAD folder does not exist")
    if ctrate_manifest is not None and val_fraction > 0:
        raise ValueError(
            "give --val-fraction only without --ctrate-manifest: the manifest's val patients are used"
        )
    files = _question_files(root)
    if not files:
        raise FileNotFoundError(f"{root}: no 3D-RAD .csv file found")
    out = prepare_output(out)
    (out / VQA_NAME).unlink(missing_ok=True)  # its presence must mean "this run finished"
    rows = [(row, part) for f, part in files for row in read_3drad_csv(f)]
    logger.info("%d rows in %d 3D-RAD files under %s", len(rows), len(files), root)
    records = _index_manifest(Path(ctrate_manifest)) if ctrate_manifest is not None else None
    skips, notes = Skips(), Counter[str]()
    kept = _resolve(rows, records, skips, notes)
    patients = [name.split("_")[1] for _, part, name, _ in kept if part == "train"]
    split_of_patient = seeded_split(patients, {"val": val_fraction}, seed=seed)
    items = list(_items(kept, split_of_patient, skips))
    skips.write_csv(out / SKIPPED_NAME)
    skips.log_summary(logger, len(items), "questions", notes)
    path = out / VQA_NAME
    if not items:
        logger.warning("no question was usable; writing no %s", VQA_NAME)
        return path
    for key, count in sorted(Counter((i.split, i.kind) for i in items).items()):
        logger.info("  %-5s %-6s %7d", *key, count)
    return write_vqa(items, path)  # last: its presence means the conversion finished


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of this converter."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.rad3d",
        description="Convert 3D-RAD question CSVs (VQA on CT-RATE volumes) into a velvet vqa.jsonl.",
    )
    parser.add_argument("root", type=Path, help="3D-RAD folder (train/ and/or test/ with Task*/ *.csv)")
    add_common_arguments(parser)
    parser.add_argument(
        "--ctrate-manifest",
        type=Path,
        default=None,
        help="manifest.csv of data_prep/ct_rate.py: resolves volumes and the train/val split",
    )
    parser.add_argument(
        "--val-fraction",
        type=parse_fraction,
        default=0.0,
        help="without --ctrate-manifest: train patients held out as val (default 0)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    kwargs = vars(build_parser().parse_args(argv))  # dests are convert_rad3d's parameter names
    configure_logging(kwargs.pop("log_level"))
    return run_main(lambda: convert_rad3d(**kwargs))


if __name__ == "__main__":
    sys.exit(main())

"""``velvet inspect PATH [PATH ...] [--json]``: what is in a volume file, and is it CT in HU?

Prints, for each file or DICOM folder, its format, shape, spacing, orientation, dtype, intensity
range and the CT check, with ``warning:`` lines (non-uniform DICOM spacing, intensities that are
not Hounsfield units). A path that cannot be read prints ``error: <path>: <problem>`` on stderr,
the others are still inspected, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register the ``inspect`` subcommand."""
    parser = subparsers.add_parser(
        "inspect",
        help="summarise volume files (shape, spacing, orientation, intensities, CT check)",
        description="Summarise volume files or DICOM folders: geometry, intensities and whether "
        "they look like CT in Hounsfield units.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="NIfTI/NRRD/MHA/DICOM file or DICOM folder")
    parser.add_argument(
        "--json", action="store_true", help="print JSON (one object, or a list for several paths)"
    )
    parser.add_argument(
        "--series-uid", default=None, help="DICOM series to read from a folder holding several"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Inspect every path; returns 1 if any could not be read, else 0."""
    import json

    from velvet.data.errors import DataError
    from velvet.data.inspect import format_inspection, inspect_volume

    results: list[dict[str, Any]] = []
    failed = False
    for path in args.paths:
        try:
            info = inspect_volume(path, series_uid=getattr(args, "series_uid", None))
        except DataError as exc:
            failed = True
            print(f"error: {exc}", file=sys.stderr)
            results.append({"path": exc.path, "error": exc.problem})
            continue
        if not args.json:
            if any("error" not in r for r in results):
                print()  # a blank line between files
            print(format_inspection(info))
        results.append(info)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return 1 if failed else 0

"""``velvet ground --model M SCAN "report text" --out ground.png``: where each word points in the scan.

Draws, for each chosen word (``--words``; default: the words that are not stop words, numbers or
punctuation, at most ``--max-units``) or sentence (``--level sentence``), the model's word-to-region
attention of the local alignment over three slices through its peak. Needs a model pretrained with
word- (or sentence-) level alignment, such as ``velvet-tiny.phantoms``. ``--json`` also writes each
unit's peak voxel (model-input grid), heat maximum and focus (1 - entropy / log regions: 0 =
uniform attention); a warning says when every drawn map is nearly uniform.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

# below this focus (1 - entropy / log R) an attention map is indistinguishable from uniform
FLAT_FOCUS = 0.01


def add_parser(subparsers: Any) -> None:
    """Register the ``ground`` subcommand."""
    parser = subparsers.add_parser(
        "ground",
        help="draw where each word or sentence of a report points in a scan (PNG)",
        description="Word/sentence-to-region attention of the local alignment, drawn over the scan.",
    )
    parser.add_argument("scan", help="volume file or DICOM folder")
    parser.add_argument("text", help="report text (quote it)")
    parser.add_argument(
        "--model", required=True, help="pretrained folder or registered name (e.g. velvet-tiny.phantoms)"
    )
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--level", choices=("word", "sentence"), default="word", help="unit (default word)")
    parser.add_argument(
        "--mode", choices=("attention", "similarity"), default="attention", help="heat (default attention)"
    )
    parser.add_argument(
        "--words", default=None, help="comma-separated words to draw (default: content words)"
    )
    parser.add_argument("--max-units", type=int, default=8, help="at most this many rows (default 8)")
    parser.add_argument("--json", default=None, help="also write peaks per unit to this JSON file")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Ground the text; exit 1 with a message on a bad model, scan or word list."""
    from velvet.data.errors import DataError
    from velvet.grounding.attention import ground
    from velvet.grounding.draw import default_units, save_grounding_png
    from velvet.models.velvet import VelvetModel

    try:
        model = VelvetModel.from_pretrained(args.model, map_location=args.device)
        result = ground(model, args.scan, args.text, level=args.level, mode=args.mode)
        if args.words:
            wanted = [w.strip() for w in args.words.split(",") if w.strip()]
            units = [i for w in wanted for i in result.find(w)]
            missing = [w for w in wanted if not result.find(w)]
            if missing:
                raise ValueError(f"{missing} not among the text's words {result.units}")
        else:
            units = default_units(result, args.max_units)
        units = units[: args.max_units]
        out = save_grounding_png(result, args.out, units)
    except (DataError, OSError, ValueError, RuntimeError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    focus = [result.focus(i) for i in units]
    if args.mode == "attention" and focus and max(focus) < FLAT_FOCUS:
        print(
            f"warning: the attention of every drawn {args.level} is nearly uniform over the regions (focus "
            f"{max(focus):.4f} at most, 0 = uniform): this model does not point anywhere; the heat shows noise",
            file=sys.stderr,
        )
    if args.json:
        peaks = [
            {
                "unit": result.units[i],
                "index": i,
                "peak_voxel": list(result.peak(i)),
                "heat_max": float(result.heat[i].max()),
                "focus": result.focus(i),
            }
            for i in units
        ]
        Path(args.json).write_text(
            json.dumps({"level": result.level, "mode": result.mode, "units": peaks}, indent=2) + "\n",
            encoding="utf-8",
        )
    print(f"grounded {len(units)} {args.level}(s) -> {out}")
    return 0

"""``velvet expert --manifest F --out expert.jsonl (--seg-model RUN | --from-labels)``: expert lines.

Runs a velvet segmentation model on every scan of a manifest (or reads the manifest's own label
maps, with ``--from-labels``) and writes each case's findings (organ volumes in mL and mean HU,
pleural effusion by side, lesions with size, organ, side and HU) and their one-line text to a JSONL
that VQA / report-generation training and ``velvet evaluate vqa|report`` put into the LM prompt
(a model trained with ``vlm.expert_prompt: true``).

Exit status: 0 on success, 1 when the model or a case cannot be used (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register the ``expert`` subcommand."""
    parser = subparsers.add_parser(
        "expert",
        help="write the expert-knowledge lines (segmentation findings as text) of a manifest's scans",
        description="Segment every scan of a manifest (or read its label maps) and write expert.jsonl.",
    )
    parser.add_argument("--manifest", required=True, help="the manifest CSV / JSONL")
    parser.add_argument("--out", required=True, help="the expert.jsonl to write")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--seg-model",
        help="segmentation model: a pretrained directory, a .ckpt of the segmentation task, or its run folder",
    )
    source.add_argument(
        "--from-labels",
        action="store_true",
        help="use the manifest's label maps (an upper bound of a segmentation)",
    )
    parser.add_argument("--split", action="append", help="only this split (repeatable; default all)")
    parser.add_argument(
        "--organs", default=None, help="comma-separated organs listed in the text (default: the phantom set)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--overlap",
        type=float,
        default=None,
        help="sliding-window overlap (default: the model's; 0 is fastest)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the file; see the module docstring for the exit status."""
    from velvet.data.errors import DataError
    from velvet.vlm.expert_file import DEFAULT_ORGANS, write_expert

    seg_model = None
    if args.seg_model:
        from velvet.segmentation.inference import load_segmentation_model

        try:
            seg_model = load_segmentation_model(args.seg_model, map_location=args.device)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            print(f"error: cannot load segmentation model {args.seg_model}: {exc}", file=sys.stderr)
            return 1
    organs = [o.strip() for o in args.organs.split(",")] if args.organs else list(DEFAULT_ORGANS)
    try:
        n = write_expert(
            args.manifest, args.out, seg_model=seg_model, seg_model_name=args.seg_model, organs=organs,
            splits=args.split, device=args.device, overlap=args.overlap,
        )  # fmt: skip
    except (DataError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{n} cases -> {args.out}")
    return 0

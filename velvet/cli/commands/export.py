"""``velvet export CKPT OUTDIR``: a training checkpoint to a pretrained-model directory.

A volume-language model checkpoint (``recipes/vqa``, ``recipes/report_gen``) becomes a folder that
``velvet generate`` and ``velvet evaluate vqa|report`` load; ``--merge-lora`` folds the LoRA
adapters into the LM's weights (default: they stay separate tensors, declared in ``vlm.json``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export a `velvet fit` checkpoint as a pretrained model (safetensors + config + tokenizer)",
        description="Export a pretraining checkpoint (.ckpt) to a directory that "
        "VelvetModel.from_pretrained, `velvet embed` and `velvet search` load, or a segmentation "
        "checkpoint to one that `velvet segment` and velvet.from_pretrained load.",
    )
    parser.add_argument("checkpoint", help="the .ckpt file written by `velvet fit`")
    parser.add_argument("out", help="output directory (replaced atomically if it exists)")
    parser.add_argument(
        "--tokenizer", default=None, help="the run's tokenizer folder, if the checkpoint has none"
    )
    parser.add_argument(
        "--merge-lora", action="store_true", help="volume-language models: fold LoRA into the LM weights"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export; returns 1 with a message on stderr when the checkpoint cannot be exported."""
    from velvet.models.export import export_checkpoint
    from velvet.vlm.load import is_vlm_checkpoint, load_vlm, save_vlm

    try:
        if is_vlm_checkpoint(args.checkpoint):
            model = load_vlm(args.checkpoint)
            out = save_vlm(model, args.out, merge_lora=args.merge_lora, encoder_source=str(args.checkpoint))
        else:
            out = export_checkpoint(args.checkpoint, args.out, tokenizer_dir=args.tokenizer)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"exported {args.checkpoint} -> {out}")
    return 0

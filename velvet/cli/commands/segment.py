"""``velvet segment --model RUN_OR_DIR SCAN --out seg.nii.gz [--overlay seg.png]``: segment a scan.

The scan (NIfTI, NRRD, MHA or a DICOM folder) is preprocessed by the model's contract, segmented by
sliding windows (progress bar on a terminal) and the label map is written on the scan's **own grid
and header**, so it overlays the scan in any viewer; ``seg.json`` beside it names the classes and
gives each structure's volume in mL. ``--overlay`` draws axial, coronal and sagittal slices.

Exit status: 0 on success, 1 when the model or the scan cannot be used (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register the ``segment`` subcommand."""
    parser = subparsers.add_parser(
        "segment",
        help="segment a CT scan with a trained segmentation model",
        description="Segment a scan; the label map is written on the scan's own grid and header.",
    )
    parser.add_argument("scan", help="volume file (NIfTI, NRRD, MHA) or DICOM folder")
    parser.add_argument(
        "--model", required=True,
        help="segmentation model: a pretrained directory, a .ckpt of the segmentation task, or its run folder",
    )
    parser.add_argument("--out", required=True, help="label map to write (.nii.gz); seg.json is written beside it")
    parser.add_argument("--overlay", help="also draw axial/coronal/sagittal overlays into this PNG")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap (default: the model's)")
    parser.add_argument("--sw-batch-size", type=int, help="windows per forward pass (default: the model's)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPU)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Segment the scan; see the module docstring for the exit status."""
    from velvet.data.errors import DataError
    from velvet.segmentation.inference import load_segmentation_model, segment_file
    from velvet.segmentation.output import write_segmentation

    try:
        model = load_segmentation_model(args.model, map_location=args.device)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        print(f"error: cannot load segmentation model {args.model}: {exc}", file=sys.stderr)
        return 1
    try:
        result = segment_file(
            model, args.scan, device=args.device, overlap=args.overlap, sw_batch_size=args.sw_batch_size,
            progress=sys.stderr.isatty(), autocast=args.bf16,
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        out, sidecar = write_segmentation(result, args.out, metadata={"model": str(args.model)})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} and {sidecar}")
    if args.overlay:
        from velvet.segmentation.overlay import save_overlay

        print(f"wrote {save_overlay(args.overlay, result.image, result.labels, result.affine, result.class_names)}")
    found = {k: v for k, v in result.volumes_ml.items() if v > 0}
    for name, ml in sorted(found.items(), key=lambda kv: -kv[1]):
        print(f"  {name}: {ml:.1f} mL")
    return 0

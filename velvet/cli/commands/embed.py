"""``velvet embed --model NAME_OR_DIR FILES... --out index.safetensors``: embed volumes for search.

Each file (NIfTI, NRRD, MHA, or a DICOM folder) goes through the model's preprocessing contract
and the image encoder, in batches. Unreadable files are skipped: each is reported on stderr with
its problem, the count is printed at the end, and the exit status is 1 if any was skipped (0 if
all were embedded). Nothing is written when no file could be embedded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register the ``embed`` subcommand."""
    parser = subparsers.add_parser(
        "embed",
        help="embed CT volumes with a pretrained model into a searchable index",
        description="Embed volume files or DICOM folders into an index file for `velvet search`.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="volume files or DICOM folders")
    parser.add_argument("--model", required=True, help="pretrained directory or registered '<arch>.<tag>' name")
    parser.add_argument("--out", required=True, help="index file to write (.safetensors)")
    parser.add_argument("--batch-size", type=int, default=4, help="volumes per forward pass (default 4)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(func=run)


def _model_reference(name: str) -> str:
    path = Path(name)
    return str(path.resolve()) if path.exists() else name


def run(args: argparse.Namespace) -> int:
    """Embed the files; see the module docstring for skips and the exit status."""
    import torch
    from tqdm import tqdm

    from velvet.data.errors import DataError
    from velvet.index.store import EmbeddingIndex, write_index
    from velvet.models.inference import prepare_volumes
    from velvet.models.velvet import VelvetModel

    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        model = VelvetModel.from_pretrained(args.model, map_location=args.device)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
        return 1
    if model.preprocess is None:
        print(f"error: {args.model} stores no preprocessing contract; cannot read files for it", file=sys.stderr)
        return 1
    kept: list[str] = []
    chunks: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []
    skipped = 0

    def flush() -> None:
        if pending:
            with torch.no_grad():
                chunks.append(model.encode_image(torch.cat(pending).to(args.device))["embedding"].cpu())
            pending.clear()

    import warnings

    from velvet.data.errors import NotCTWarning

    not_ct = 0
    for path in tqdm(args.files, desc="embedding", unit="vol", disable=not sys.stderr.isatty()):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", NotCTWarning)
                pending.append(prepare_volumes(path, model.preprocess))
        except (DataError, OSError, ValueError) as exc:  # VELVET_CT_CHECK=strict refuses non-CT here
            skipped += 1
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        finally:
            for w in caught:
                if issubclass(w.category, NotCTWarning):
                    print(f"warning: {w.message}", file=sys.stderr)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        not_ct += any(issubclass(w.category, NotCTWarning) for w in caught)
        kept.append(str(Path(path).resolve()))
        if len(pending) == args.batch_size:
            flush()
    flush()
    if not kept:
        print(f"error: none of the {len(args.files)} files could be embedded; nothing written", file=sys.stderr)
        return 1
    index = EmbeddingIndex(
        torch.cat(chunks), kept, _model_reference(args.model), {"preprocess": model.preprocess.to_dict()}
    )
    out = write_index(index, args.out)
    tail = f", {not_ct} embedded despite intensities unlike the contract's input" if not_ct else ""
    print(f"embedded {len(kept)} volume(s), skipped {skipped}{tail} -> {out}")
    return 1 if skipped else 0

"""``velvet phantoms``: write the synthetic CT phantom data set (volumes, label maps, reports, VQA)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "add_parser", "run"]


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three integers like 96,96,64, got {text!r}") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers (mm) like 4,4,5, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``velvet phantoms`` (shared with ``data_prep/phantoms.py``)."""
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=200, help="number of cases (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default: %(default)s)")
    parser.add_argument("--shape", type=_ints, default=(96, 96, 64), help="voxels H,W,D (default: 96,96,64)")
    parser.add_argument(
        "--spacing", type=_floats, default=(4.0, 4.0, 5.0), help="voxel size in mm (default: 4,4,5)"
    )
    parser.add_argument("--n-val", type=int, default=50, help="validation cases (default: %(default)s)")
    parser.add_argument("--n-test", type=int, default=100, help="test cases (default: %(default)s)")
    parser.add_argument(
        "--dtype",
        default="int16",
        choices=("int16", "int32", "float32"),
        help="volume dtype (default: int16)",
    )
    parser.add_argument("--noise-hu", type=float, default=12.0, help="CT noise sigma in HU (default: 12)")
    parser.add_argument("--no-compress", action="store_true", help="write .nii instead of .nii.gz")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: %(default)s)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a phantom set of another config in --out"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantoms",
        help="generate the synthetic CT phantom data set",
        description="Write N synthetic CT volumes (NIfTI, HU) with reports, label maps, finding labels, "
        "VQA items and a manifest. Case i depends only on (seed, i); re-running finishes or skips.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the phantoms described by ``args``; prints the manifest path. Returns the exit code."""
    from velvet.data.errors import DataError
    from velvet.data.phantoms import PhantomConfig, generate_phantoms

    try:
        config = PhantomConfig(
            n_cases=args.n,
            seed=args.seed,
            shape=args.shape,
            spacing=args.spacing,
            n_val=args.n_val,
            n_test=args.n_test,
            dtype=args.dtype,
            compress=not args.no_compress,
            noise_hu=args.noise_hu,
        )
        manifest = generate_phantoms(
            args.out, config, workers=args.workers, progress=not args.no_progress, overwrite=args.overwrite
        )
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(manifest)
    return 0

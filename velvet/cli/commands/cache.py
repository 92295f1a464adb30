"""``velvet cache warm|info``: fill or describe the preprocessed-volume cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="fill or describe the preprocessed-volume cache")
    sub = parser.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    warm = sub.add_parser("warm", help="preprocess every volume of a manifest into the cache (progress bar)")
    warm.add_argument("manifest", help="manifest file (.csv or .jsonl)")
    warm.add_argument(
        "--preprocess",
        default="ct_rate",
        help="contract: a preset name or a JSON file (default: %(default)s)",
    )
    warm.add_argument("--cache-dir", default=None, help="cache folder (default: $VELVET_CACHE/volumes)")
    warm.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    warm.add_argument("--split", action="append", choices=("train", "val", "test"), help="only these splits")
    warm.add_argument("--label-maps", action="store_true", help="also cache segmentation label maps")
    warm.set_defaults(func=run_warm)

    info = sub.add_parser("info", help="count and size the cache entries")
    info.add_argument("--cache-dir", default=None, help="cache folder (default: $VELVET_CACHE/volumes)")
    info.set_defaults(func=run_info)


def run_warm(args: argparse.Namespace) -> int:
    from velvet.data.cache import VolumeCache
    from velvet.data.contract import PreprocessContract
    from velvet.data.errors import DataError
    from velvet.data.manifest import read_manifest

    try:
        manifest = read_manifest(args.manifest)
        contract = PreprocessContract.resolve(args.preprocess)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    records = [r for r in manifest if not args.split or r.split in args.split]
    cache = VolumeCache(args.cache_dir, contract, label_map=args.label_maps)
    import warnings

    from velvet.data.errors import NotCTWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotCTWarning)  # listed below, once per case
        report = cache.warm(records, workers=args.workers)
    print(
        f"cache {cache.root} ({contract.name}): {report.created} created, {report.cached} already cached, "
        f"{len(report.failures)} failed, {len(report.not_ct)} not matching the contract's intensities"
    )
    for _, message in report.not_ct:
        print(f"warning: {message}", file=sys.stderr)
    for _, message in report.failures:
        print(f"error: {message}", file=sys.stderr)
    return 1 if report.failures else 0


def run_info(args: argparse.Namespace) -> int:
    from velvet.data.cache import cache_stats, default_cache_dir

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    # stale temporaries of killed writers are removed first and never counted as volumes
    print(cache_stats(root, clean=True))
    return 0

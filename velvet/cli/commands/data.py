"""``velvet data check``: run a recipe's data pipeline end to end and report what it produces."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``data`` subcommand (``data check``)."""
    parser = subparsers.add_parser("data", help="check a recipe's data pipeline")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser(
        "check",
        help="prepare (phantoms, tokenizer, cache) and iterate a recipe's data, printing batch shapes and speed",
    )
    check.add_argument(
        "--config",
        required=True,
        help="a recipe YAML with a `data:` section (read as `velvet fit --config` reads it: includes too)",
    )
    check.add_argument("--split", default="train", choices=("train", "val", "test"))
    check.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    check.set_defaults(func=run_check)


def read_data_section(config_path: str | Path) -> tuple[str, dict[str, Any]]:
    """The DataModule of a recipe, read as ``velvet fit --config`` reads it.

    Sections given as file paths (``data: shared/data_m3d_cap.yaml``) are loaded relative to the
    file that names them, and the DataModule's defaults are filled in.

    Args:
        config_path: the recipe YAML.

    Returns:
        ``(class_path, init_args)`` of the ``data:`` section.

    Raises:
        ValueError: the recipe cannot be read or has no ``data:`` section; the message names the file.
    """
    from velvet.cli.lightning import read_recipe

    data = read_recipe(config_path).get("data")
    if data is None:
        raise ValueError(f"{config_path}: no `data:` section")
    init_args = data.get("init_args")
    return str(data.class_path), init_args.clone(with_meta=False).as_dict() if init_args is not None else {}


def run_check(args: argparse.Namespace) -> int:
    """Prepare the recipe's data, iterate one split and print what it produced; 1 on an input error."""
    from velvet.data.datamodule import VelvetDataModule
    from velvet.data.errors import DataError

    try:
        class_path, init_args = read_data_section(args.config)
        module_name, _, class_name = class_path.rpartition(".")
        data_class = getattr(importlib.import_module(module_name), class_name)
        if not (isinstance(data_class, type) and issubclass(data_class, VelvetDataModule)):
            raise ValueError(f"{args.config}: `data check` runs VelvetDataModule recipes, not {class_path}")
        dm = data_class(**init_args)
        start = time.perf_counter()
        dm.prepare_data()
        dm.setup("fit")
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    prepared = time.perf_counter() - start
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    print(f"prepared in {prepared:.1f} s: manifest {dm.manifest_path} splits {sizes}")
    print(
        f"preprocessing: {dm.contract.name} -> {dm.contract.spatial_size}; tokenizer vocab {dm.tokenizer.vocab_size}"
    )
    print(f"reports: {len(dm.bad_reports)} bad (left out under on_error: skip)")
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[
        args.split
    ]()
    start, n_samples, n_batches, skipped = time.perf_counter(), 0, 0, 0
    for batch in loader:
        if batch is None:
            continue
        if n_batches == 0:
            for key, value in batch.items():
                if hasattr(value, "shape"):
                    desc = f"{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
                else:
                    desc = f"list[{len(value)}]" if isinstance(value, list) else repr(value)
                print(f"  {key:20s} {desc}")
        n_batches += 1
        n_samples += batch["image"].shape[0]
        skipped += batch["num_skipped"]
        if args.max_batches and n_batches >= args.max_batches:
            break
    elapsed = time.perf_counter() - start
    print(
        f"{args.split}: {n_batches} batches, {n_samples} samples in {elapsed:.2f} s "
        f"({n_samples / max(elapsed, 1e-9):.1f} samples/s), {skipped} skipped"
    )
    return 0

"""Entry point of the ``velvet`` console script.

``velvet fit|validate|test ...`` go to the LightningCLI (imported only then, it costs seconds);
every other subcommand is a light argparse command from :mod:`velvet.cli.commands`. ``velvet
predict`` is not offered (no velvet task has a predict step): it points to ``velvet embed``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from velvet import __version__

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")
PREDICT_MESSAGE = (
    "velvet: `predict` is not offered (the pretraining task has no predict step); to write embeddings "
    "use `velvet embed --model MODEL_DIR FILES... --out index.safetensors` (see `velvet embed --help`)"
)
# module names under velvet.cli.commands, in the order `velvet --help` lists them
COMMAND_MODULES: tuple[str, ...] = (
    "inspect",
    "phantoms",
    "tokenizer",
    "cache",
    "data",
    "export",
    "embed",
    "search",
    "segment",
    "expert",
    "evaluate",
    "ground",
    "generate",
)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for the light subcommands (the Lightning ones are listed in the help)."""
    parser = argparse.ArgumentParser(
        prog="velvet",
        description="3D CT vision-language pretraining. Training subcommands: "
        + ", ".join(LIGHTNING_SUBCOMMANDS)
        + " (run `velvet fit --help`).",
    )
    parser.add_argument("--version", action="version", version=f"velvet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"velvet.cli.commands.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``velvet`` command.

    Args:
        argv: the arguments after ``velvet``; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The process exit status (2 for a usage error, such as ``velvet predict``).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "predict":
        print(PREDICT_MESSAGE, file=sys.stderr)
        return 2
    if args_list and args_list[0] in LIGHTNING_SUBCOMMANDS:
        from velvet.cli.lightning import run_lightning_cli

        run_lightning_cli(args_list)
        return 0
    parser = build_parser()
    args = parser.parse_args(args_list)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Generate the synthetic CT phantom data set (the same as ``velvet phantoms``).

Run ``python data_prep/phantoms.py --out OUT [--n 200] [--seed 0] [--shape 96,96,64]
[--spacing 4,4,5] [--n-val 50] [--n-test 100] [--workers 1]``; the manifest path is printed.
See :mod:`velvet.data.phantoms` for the layout of ``OUT``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from velvet.cli.commands.phantoms import add_arguments, run

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and generate; returns the exit status."""
    parser = argparse.ArgumentParser(prog="data_prep/phantoms.py", description=__doc__.split("\n")[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""Shared pieces of the ``data_prep`` converters: arguments, logging, seeded splits, skip accounting.

Every converter follows the same contract:

- it writes into one output folder (``--out``), removing stale ``.tmp-*`` files of a killed run first;
- every file it writes appears atomically (:mod:`velvet.data.atomic`), so a re-run after a kill skips
  the outputs that exist and redoes the rest;
- an input it cannot use is *skipped and counted*, never silently dropped: the skips are logged in a
  summary grouped by reason and listed in ``skipped.csv`` beside the manifest;
- the manifest is written last, so its presence means the conversion finished.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import random
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from velvet.data.atomic import atomic_path, remove_stale_temporaries
from velvet.data.errors import DataError

__all__ = [
    "CSV_FIELD_LIMIT",
    "DEFAULT_ENCODING",
    "MANIFEST_NAME",
    "SKIPPED_NAME",
    "Skips",
    "add_common_arguments",
    "configure_logging",
    "is_junk",
    "open_csv",
    "parse_fraction",
    "prepare_output",
    "progress",
    "run_main",
    "run_parallel",
    "safe_name",
    "seeded_split",
    "write_text_atomic",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
SKIPPED_NAME = "skipped.csv"
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Skips:
    """Inputs a converter could not use, grouped by reason.

    Attributes:
        items: ``(item, reason, detail)`` in the order they were met. ``reason`` is a short fixed
            phrase (the grouping key); ``detail`` carries the specifics (sizes, paths).
    """

    items: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, item: str | os.PathLike[str], reason: str, detail: str = "") -> None:
        """Record one skipped input (logged at DEBUG; the summary is logged by :meth:`log_summary`)."""
        self.items.append((os.fspath(item), reason, detail))
        logger.debug("skipped %s: %s%s", os.fspath(item), reason, f" ({detail})" if detail else "")

    def __len__(self) -> int:
        return len(self.items)

    def by_reason(self) -> Counter[str]:
        """How many inputs were skipped for each reason."""
        return Counter(reason for _, reason, _ in self.items)

    def log_summary(
        self, log: logging.Logger, converted: int, what: str, notes: Mapping[str, int] | None = None
    ) -> None:
        """Log ``converted N <what>, skipped M`` and one line per reason (and per extra note)."""
        log.info("converted %d %s, skipped %d", converted, what, len(self))
        for reason, count in self.by_reason().most_common():
            log.info("  skipped %6d: %s", count, reason)
        for note, count in (notes or {}).items():
            if count:
                log.info("  note    %6d: %s", count, note)

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write ``item,reason,detail`` rows atomically (a header-only file when nothing was skipped)."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["item", "reason", "detail"])
        writer.writerows(self.items)
        return write_text_atomic(path, buf.getvalue())


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text through a temporary sibling, so the file is complete or absent.

    A file that already holds exactly ``text`` is left untouched (a re-run rewrites nothing).
    """
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return path


# reports can be long (a 100k-word report is ~700 kB): the csv module's default field limit is 128 kB
CSV_FIELD_LIMIT = 2**31 - 1  # the largest a C long holds everywhere (sys.maxsize overflows on Windows)
DEFAULT_ENCODING = "utf-8-sig"  # UTF-8, a leading byte-order mark allowed


@contextmanager
def open_csv(
    path: str | os.PathLike[str], *, encoding: str = DEFAULT_ENCODING, options: str = "--encoding"
) -> Iterator[io.TextIOWrapper]:
    """Open a CSV for :mod:`csv` reading; a decoding or CSV error in the block names the file and line.

    The csv field size limit is raised (:data:`CSV_FIELD_LIMIT`) so that long reports are read.

    Args:
        path: the CSV file.
        encoding: its text encoding (a converter's ``--encoding``).
        options: the converter options a reader may need, named in the error (``"--encoding"``,
            ``"--encoding/--delimiter"``).

    Yields:
        The open text file (``newline=""``, as :mod:`csv` wants).

    Raises:
        DataError: ``path:line: ...`` for bytes that are not ``encoding`` text, or a malformed CSV.
    """
    path = Path(path)
    csv.field_size_limit(CSV_FIELD_LIMIT)
    with path.open(encoding=encoding, newline="") as fh:
        lines = _LineCounter(fh)
        try:
            yield lines  # type: ignore[misc]
        except UnicodeDecodeError as exc:
            line = _line_of_bad_byte(path, encoding)
            raise DataError(
                f"{path}:{line}" if line else path,
                f"not {encoding} text ({exc.reason}); check {options} (e.g. --encoding latin-1 or cp1252)",
            ) from None
        except csv.Error as exc:
            raise DataError(
                f"{path}:{lines.line}", f"cannot be read as CSV ({exc}); check {options}"
            ) from None


class _LineCounter:
    """A file iterator that counts the physical lines handed to :mod:`csv` (for error messages)."""

    def __init__(self, fh: io.TextIOWrapper) -> None:
        self._fh = fh
        self.line = 0

    def __iter__(self) -> _LineCounter:
        return self

    def __next__(self) -> str:
        text = next(self._fh)
        self.line += 1
        return text


def _line_of_bad_byte(path: Path, encoding: str) -> int | None:
    """The 1-based line of the first byte that does not decode (None when it all decodes)."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1
    return None


def is_junk(name: str) -> bool:
    """macOS AppleDouble files (``._x``), hidden files and folders, zip ``__MACOSX`` folders."""
    return name.startswith(".") or name == "__MACOSX"


def safe_name(name: str) -> str:
    """A file-name-safe ASCII version of a name (``Pöschl`` -> ``Poschl``, ``a b`` -> ``a_b``)."""
    ascii_name = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    return re.sub(r"[^A-Za-z0-9._-]", "_", ascii_name)


def seeded_split(
    groups: Iterable[str],
    fractions: Mapping[str, float],
    *,
    seed: int,
) -> dict[str, str]:
    """Assign whole groups (cases, patients) to splits with a seeded shuffle.

    The unique groups are sorted, shuffled with ``random.Random(seed)`` and cut in order: first
    the held-out splits named in ``fractions`` (each gets ``round(n * fraction)`` groups, at
    least one when its fraction is positive and there are two or more groups), the rest ``train``.
    The result depends only on the set of groups and the seed, not on input order.

    Args:
        groups: group ids (duplicates are fine).
        fractions: held-out split name -> fraction of groups, e.g. ``{"val": 0.05}``.
        seed: shuffle seed.

    Returns:
        group id -> split name.

    Raises:
        ValueError: a fraction outside ``[0, 1)`` or held-out fractions summing to 1 or more.
    """
    for name, frac in fractions.items():
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} fraction must be in [0, 1), got {frac}")
    if sum(fractions.values()) >= 1.0:
        raise ValueError(f"held-out fractions {dict(fractions)} leave nothing for train")
    order = sorted(set(groups))
    random.Random(seed).shuffle(order)
    n = len(order)
    assignment: dict[str, str] = {}
    start = 0
    for name, frac in fractions.items():
        count = round(n * frac)
        if frac > 0 and count == 0 and n >= 2:
            count = 1  # tiny trial runs still get a non-empty held-out split
        count = min(count, max(n - 1 - start, 0))  # keep at least one training group
        for g in order[start : start + count]:
            assignment[g] = name
        start += count
    for g in order[start:]:
        assignment[g] = "train"
    return assignment


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it"
) -> Iterator[T]:
    """A tqdm progress bar on stderr (hidden when stderr is not a terminal, e.g. in CI logs)."""
    from tqdm import tqdm

    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, disable=None, dynamic_ncols=True))


def run_parallel(
    func: Callable[[T], R], tasks: Sequence[T], *, workers: int = 1, desc: str = "", unit: str = "it"
) -> list[R]:
    """``[func(t) for t in tasks]`` with a progress bar, in ``workers`` processes when above 1.

    Results come back in completion order when parallel; sort them if order matters. ``func`` and
    the tasks must be picklable (a module-level function and plain data).
    """
    if workers <= 1:
        return [func(t) for t in progress(tasks, total=len(tasks), desc=desc, unit=unit)]
    import multiprocessing

    with multiprocessing.Pool(workers) as pool:
        results = pool.imap_unordered(func, tasks, chunksize=1)
        return list(progress(results, total=len(tasks), desc=desc, unit=unit))


def prepare_output(out: str | os.PathLike[str]) -> Path:
    """Create the output folder and remove the ``.tmp-*`` leftovers of a killed earlier run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temporaries(out)
    if removed:
        logger.info("removed %d stale temporary file(s) of an interrupted run under %s", removed, out)
    return out


def add_common_arguments(parser: argparse.ArgumentParser, *, seed: int = 1) -> None:
    """``--out``, ``--seed`` and ``--log-level``, shared by every converter."""
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder (manifest.csv is written there)"
    )
    parser.add_argument("--seed", type=int, default=seed, help=f"split shuffle seed (default {seed})")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG also lists every skipped input",
    )


def configure_logging(level: str) -> None:
    """Plain ``LEVEL name: message`` lines on stderr."""
    logging.basicConfig(level=getattr(logging, level), format="%(levelname)s %(name)s: %(message)s")


def run_main(func: Callable[[], object]) -> int:
    """Run a converter body for ``main()``: bad input becomes one line on stderr and exit code 2."""
    try:
        func()
    except (DataError, ValueError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def parse_fraction(text: str) -> float:
    """argparse type for a fraction in ``[0, 1)``."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"fraction must be in [0, 1), got {text}")
    return value

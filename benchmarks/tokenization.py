"""Reports per second of the TriBERT tokenisation on the 800 real CT-RATE reports, on one core.

Usage::

    python benchmarks/tokenization.py [--reports reports_800.csv] [--tokenizer DIR] [--repeats 5]

One core, explicitly: ``RAYON_NUM_THREADS=1`` and ``TOKENIZERS_PARALLELISM=false`` are set before
``tokenizers`` is imported (its Rust thread pool reads them once, on first use; the second makes
``encode_batch`` sequential), and ``torch.set_num_threads(1)``. Without ``--tokenizer`` a
WordPiece vocabulary is trained on the reports first (as the reference figure did, ~4k tokens).

Rows (median of ``--repeats`` passes over all reports, in batches of 1, 8 and 64):

- ``velvet, no cache``: clean + split + encode + layout, caches disabled (``cache_size=0``);
- ``velvet, first pass``: a fresh tokenizer with its caches: only repeated sentences are reused
  (an epoch-1 figure);
- ``velvet, cached``: the same reports again (epoch 2 and later: only sentence dropping and the
  layout run);
- ``clean + split only`` and ``HF fast, plain``: the HF tokenizer's own ``__call__`` on the raw
  text (``[CLS] ... [SEP]``, padding, truncation to 512), for comparison.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import csv
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BATCH_SIZES = (1, 8, 64)


def _default_reports() -> Path:
    root = os.environ.get("VELVET_TEST_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "reports" / "ctrate" / "reports_800.csv"


def _passes(
    run: Callable[[list[str]], object], reports: list[str], batch: int, repeats: int
) -> tuple[float, float]:
    """Median reports/s of ``repeats`` passes in batches of ``batch``: by wall clock and by CPU time.

    Both are single-threaded here; the CPU-time rate is what an idle core gives when other
    processes share the machine.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(reports), batch):
            run(reports[i : i + batch])
        wall.append(len(reports) / (time.perf_counter() - start))
        cpu.append(len(reports) / max(time.process_time() - start_cpu, 1e-9))
    return statistics.median(wall), statistics.median(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--reports", type=Path, default=_default_reports(), help="CSV with a report_text column"
    )
    parser.add_argument("--column", default="report_text")
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder (default: train one)")
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import tokenizers
    import torch
    import transformers

    import velvet
    from velvet.data.reports import clean_report, split_cleaned
    from velvet.data.tokenization import TriBertTokenizer
    from velvet.data.tokenizer_training import train_wordpiece

    torch.set_num_threads(1)
    if not args.reports.is_file():
        print(f"reports not found: {args.reports} (pass --reports or set VELVET_TEST_DATA)", file=sys.stderr)
        return 2
    with args.reports.open(encoding="utf-8", newline="") as fh:
        reports = [row[args.column] for row in csv.DictReader(fh)]

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
        f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}, velvet {velvet.__version__}"
    )
    print(
        f"cpu: {_cpu_name()}; torch threads {torch.get_num_threads()}; RAYON_NUM_THREADS="
        f"{os.environ['RAYON_NUM_THREADS']}; TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.tokenizer
        if folder is None:
            folder = train_wordpiece(reports, Path(tmp) / "tok", vocab_size=args.vocab_size)
        probe = TriBertTokenizer.from_pretrained(folder)
        lengths = probe(reports)["attention_mask"].sum(1)
        print(
            f"{len(reports)} reports, vocab {probe.vocab_size}, layout tokens: median "
            f"{int(lengths.median())}, {float((lengths > 256).float().mean()) * 100:.0f}% > 256, "
            f"{int((lengths == probe.max_length).sum())} at the 512 cap"
        )
        hf = probe.tokenizer
        print(f"reports/s, median of {args.repeats} passes, wall clock (CPU time)")
        print(f"{'':<34}" + "".join(f"{'batch ' + str(b):>20}" for b in BATCH_SIZES))
        rows: dict[str, list[tuple[float, float]]] = {}
        for batch in BATCH_SIZES:
            uncached = TriBertTokenizer.from_pretrained(folder, cache_size=0)
            rows.setdefault("velvet, no cache", []).append(_passes(uncached, reports, batch, args.repeats))
            first = []
            for _ in range(args.repeats):
                fresh = TriBertTokenizer.from_pretrained(folder)
                first.append(_passes(fresh, reports, batch, 1))
            rows.setdefault("velvet, first pass (caches on)", []).append(
                (statistics.median(f[0] for f in first), statistics.median(f[1] for f in first))
            )
            rows.setdefault("velvet, cached (epoch >= 2)", []).append(
                _passes(fresh, reports, batch, args.repeats)
            )
            rows.setdefault("clean + split only", []).append(
                _passes(lambda b: [split_cleaned(clean_report(r)) for r in b], reports, batch, args.repeats)
            )
            rows.setdefault("HF fast, plain [CLS] .. [SEP]", []).append(
                _passes(
                    lambda b: hf(b, truncation=True, max_length=512, padding=True),
                    reports,
                    batch,
                    args.repeats,
                )
            )
        for name, values in rows.items():
            print(f"{name:<34}" + "".join(f"{f'{w:,.0f} ({c:,.0f})':>20}" for w, c in values))
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())

"""``velvet tokenizer train|encode``: build a WordPiece vocabulary offline, and see the TriBERT layout.

``velvet tokenizer train --corpus FILE --out DIR [--column report_text] [--vocab-size 8000]``
trains on one of:

- a velvet manifest (``.csv`` with ``id,volume,split`` columns, or ``.jsonl``): the reports of the
  ``train`` split (``--split all`` for every row);
- any other ``.csv``: the column ``--column`` (default ``report_text``), one report per row;
- a ``.txt`` file: one report per line (put multi-line reports in a folder instead);
- a folder: every ``*.txt`` file below it is one report.

``velvet tokenizer encode --tokenizer DIR "report text" [...]`` prints each report's layout: one
line per sentence (``[SEN_k]`` and its pieces), the merged words, and with ``--tokens`` one row
per token (position, piece, token type, sentence id, word id).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "read_corpus", "run"]

_MANIFEST_COLUMNS = {"id", "volume", "split"}


def add_parser(subparsers: Any) -> None:
    """Register the ``tokenizer`` subcommand and its ``train`` / ``encode`` actions."""
    parser = subparsers.add_parser(
        "tokenizer",
        help="train a WordPiece vocabulary on reports, or show how reports are tokenised",
        description="Train a BERT WordPiece vocabulary offline, or print the TriBERT layout of reports.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    train = actions.add_parser("train", help="train a WordPiece vocabulary on a report corpus")
    train.add_argument(
        "--corpus", required=True, type=Path, help="manifest, CSV, .txt file or folder of .txt"
    )
    train.add_argument("--out", required=True, type=Path, help="tokenizer folder to write")
    train.add_argument(
        "--column", default="report_text", help="report column of a plain CSV (default %(default)s)"
    )
    train.add_argument(
        "--split",
        default="train",
        choices=("train", "val", "test", "all"),
        help="manifest split (default %(default)s)",
    )
    train.add_argument("--vocab-size", type=int, default=8000, help="vocabulary size (default %(default)s)")
    train.add_argument("--min-frequency", type=int, default=2, help="least merge count (default %(default)s)")
    train.add_argument(
        "--max-sentences", type=int, default=50, help="[SEN_k] tokens to reserve (default %(default)s)"
    )
    train.add_argument(
        "--cased", action="store_true", help="keep case (default: lower-case, as uncased BERT)"
    )
    train.set_defaults(func=run_train)

    encode = actions.add_parser("encode", help="print the TriBERT layout of reports")
    encode.add_argument("--tokenizer", required=True, type=Path, help="tokenizer folder")
    encode.add_argument("texts", nargs="+", metavar="TEXT", help="report text(s)")
    encode.add_argument(
        "--max-length", type=int, default=512, help="sequence length cap (default %(default)s)"
    )
    encode.add_argument("--no-sentence-modeling", action="store_true", help="plain [CLS] ... [SEP] layout")
    encode.add_argument("--tokens", action="store_true", help="also print one row per token")
    encode.set_defaults(func=run_encode)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action (argparse sets ``func`` to it directly)."""
    return run_encode(args) if getattr(args, "action", None) == "encode" else run_train(args)


def read_corpus(path: Path, *, column: str = "report_text", split: str = "train") -> Iterator[str]:
    """The reports of a corpus file or folder (the formats of the module docstring), lazily.

    The path, its type and a CSV's column are checked now; the reports are read while iterating.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: an empty folder, a CSV without the column, or an unknown file type.
    """
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise ValueError(f"{path}: folder holds no .txt report")
        return (file.read_text(encoding="utf-8") for file in files)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or (suffix == ".csv" and set(_csv_header(path)) >= _MANIFEST_COLUMNS):
        return _manifest_reports(path, split)
    if suffix == ".csv":
        header = _csv_header(path)
        if column not in header:
            raise ValueError(f"{path}: no column {column!r} (columns: {header}); use --column")
        return _csv_column(path, column)
    if suffix == ".txt":
        return _lines(path)
    raise ValueError(f"{path}: corpus must be a .csv, .jsonl, .txt file or a folder of .txt files")


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as fh:
        yield from (line for line in fh if line.strip())


def _csv_header(path: Path) -> list[str]:
    import csv

    with path.open(encoding="utf-8-sig", newline="") as fh:
        return next(csv.reader(fh), [])


def _csv_column(path: Path, column: str) -> Iterator[str]:
    import csv

    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            for row in reader:
                yield row[column] or ""
        except csv.Error as exc:
            raise ValueError(f"{path}:{reader.line_num}: unreadable CSV ({exc})") from None


def _manifest_reports(path: Path, split: str) -> Iterator[str]:
    from velvet.data.manifest import read_manifest

    manifest = read_manifest(path, check_files=False)  # volumes are not needed to train a vocabulary
    records = manifest.records if split == "all" else manifest.split(split)  # type: ignore[arg-type]
    if not records:
        raise ValueError(f"{path}: manifest has no {split!r} rows")
    return (record.load_report() or "" for record in records)


def run_train(args: argparse.Namespace) -> int:
    """Train and save a vocabulary; returns 0, or 1 with ``error: ...`` on stderr."""
    from velvet.data.errors import DataError
    from velvet.data.tokenizer_training import train_wordpiece

    try:
        texts = read_corpus(args.corpus, column=args.column, split=args.split)
        out = train_wordpiece(
            texts,
            args.out,
            vocab_size=args.vocab_size,
            min_frequency=args.min_frequency,
            lowercase=not args.cased,
            max_sentences=args.max_sentences,
        )
    except (DataError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote tokenizer to {out}")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    """Print the layout of each text; returns 0, or 1 with ``error: ...`` on stderr."""
    from velvet.data.errors import DataError
    from velvet.data.tokenization import TriBertTokenizer

    try:
        tok = TriBertTokenizer.from_pretrained(
            args.tokenizer, max_length=args.max_length, sentence_modeling=not args.no_sentence_modeling
        )
        batch = tok(args.texts, sources=[f"text {i + 1}" for i in range(len(args.texts))])
    except (DataError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for index in range(len(args.texts)):
        if index:
            print()
        print(format_layout(tok, batch, index, tokens=args.tokens))
    return 0


def format_layout(tok: Any, batch: Any, index: int, *, tokens: bool = False) -> str:
    """Human-readable layout of sample ``index``: sentences with their pieces, words, counts."""
    length = int(batch["attention_mask"][index].sum())
    ids = batch["input_ids"][index, :length].tolist()
    pieces = tok.tokenizer.convert_ids_to_tokens(ids)
    sentence_ids = batch["sentence_ids"][index, :length].tolist()
    lines = [
        f"report {index + 1}: {length} tokens (padded to {batch['input_ids'].shape[1]}), "
        f"{int(batch['num_sentences'][index])} sentence(s), {int(batch['num_words'][index])} word(s)"
    ]
    current, row = None, []
    for piece, sentence in zip(pieces, sentence_ids, strict=True):
        if sentence != current and row:
            lines.append(f"  S{current}: " + " ".join(row))
            row = []
        current = sentence
        row.append(piece)
    if row:
        lines.append(f"  S{current}: " + " ".join(row))
    lines.append("  words: " + " | ".join(tok.words_from_pieces(batch, index)))
    if tokens:
        lines.append("  pos  piece                type  sent  word")
        for pos, piece in enumerate(pieces):
            lines.append(
                f"  {pos:>3}  {piece:<20} {int(batch['token_type_ids'][index, pos]):>4}  "
                f"{sentence_ids[pos]:>4}  {int(batch['word_ids'][index, pos]):>4}"
            )
    return "\n".join(lines)

"""``velvet tokenizer train|encode|stats``: build a WordPiece vocabulary offline, see the TriBERT layout.

``velvet tokenizer train --corpus FILE --out DIR [--column report_text] [--vocab-size 8000]``
trains on one of:

- a velvet manifest (``.csv`` with ``id,volume,split`` columns, or ``.jsonl``): the reports of the
  ``train`` split (``--split all`` for every row);
- any other ``.csv``: the column ``--column`` (default ``report_text``), one report per row;
- a ``.txt`` file: one report per line (put multi-line reports in a folder instead);
- a folder: every ``*.txt`` file below it is one report.

Files are read as UTF-8 unless ``--encoding`` says otherwise. Training is deterministic (the same
corpus and options give byte-identical files); a vocabulary that is not ``--vocab-size`` tokens
(a corpus too small for that many merges) is reported in the summary line.

``velvet tokenizer encode --tokenizer DIR "report text" [...]`` prints each report's layout: one
line per sentence (``[SEN_k]`` and its pieces), the merged words, what truncation cut (when it
cut something), and with ``--tokens`` one row per token (position, piece, token type, sentence id,
word id).

``velvet tokenizer stats --tokenizer DIR --corpus FILE`` counts the reports of a corpus (any
format above) that lose text to the length limits, and whether their last sentence (the
impression) survives, under ``--truncation end`` (default) or ``middle``.
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
    _add_corpus_options(train, split="train")
    train.add_argument("--out", required=True, type=Path, help="tokenizer folder to write")
    train.add_argument("--vocab-size", type=int, default=8000, help="vocabulary size (default %(default)s)")
    train.add_argument("--min-frequency", type=int, default=2, help="least merge count (default %(default)s)")
    train.add_argument(
        "--max-sentences", type=int, default=50, help="[SEN_k] tokens to reserve (default %(default)s)"
    )
    train.add_argument(
        "--cased", action="store_true", help="keep case (default: lower-case, as uncased BERT)"
    )
    _add_encoding(train)
    train.set_defaults(func=run_train)

    encode = actions.add_parser("encode", help="print the TriBERT layout of reports")
    encode.add_argument("--tokenizer", required=True, type=Path, help="tokenizer folder")
    encode.add_argument("texts", nargs="+", metavar="TEXT", help="report text(s)")
    _add_layout_options(encode)
    encode.add_argument("--tokens", action="store_true", help="also print one row per token")
    encode.set_defaults(func=run_encode)

    stats = actions.add_parser(
        "stats", help="count the reports of a corpus that lose text to the length limits"
    )
    stats.add_argument("--tokenizer", required=True, type=Path, help="tokenizer folder")
    _add_corpus_options(stats, split="all")
    _add_encoding(stats)
    _add_layout_options(stats)
    stats.set_defaults(func=run_stats)
    parser.set_defaults(func=run)


def _add_corpus_options(parser: argparse.ArgumentParser, *, split: str) -> None:
    parser.add_argument(
        "--corpus", required=True, type=Path, help="manifest, CSV, .txt file or folder of .txt"
    )
    parser.add_argument(
        "--column", default="report_text", help="report column of a plain CSV (default %(default)s)"
    )
    parser.add_argument(
        "--split",
        default=split,
        choices=("train", "val", "test", "all"),
        help="manifest split (default %(default)s)",
    )


def _add_encoding(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoding",
        default="utf-8",
        help="text encoding of the corpus files, e.g. latin-1 or cp1252 (default %(default)s)",
    )


# velvet.data.tokenization.TRUNCATION_MODES, spelled out: importing it (torch) would slow every command
TRUNCATION_MODES = ("end", "middle")


def _add_layout_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-length", type=int, default=512, help="sequence length cap (default %(default)s)"
    )
    parser.add_argument(
        "--max-sentences", type=int, default=50, help="sentences kept per report (default %(default)s)"
    )
    parser.add_argument(
        "--truncation",
        default="end",
        choices=TRUNCATION_MODES,
        help="what a long report loses: its end, or its middle sentences so that the first and last "
        "(the impression) survive (default %(default)s)",
    )
    parser.add_argument("--no-sentence-modeling", action="store_true", help="plain [CLS] ... [SEP] layout")


def _load_tokenizer(args: argparse.Namespace) -> Any:
    from velvet.data.tokenization import TriBertTokenizer

    return TriBertTokenizer.from_pretrained(
        args.tokenizer,
        max_length=args.max_length,
        max_sentences=args.max_sentences,
        truncation=args.truncation,
        sentence_modeling=not args.no_sentence_modeling,
    )


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action (argparse sets ``func`` to it directly)."""
    actions = {"encode": run_encode, "stats": run_stats}
    return actions.get(str(getattr(args, "action", "")), run_train)(args)


def read_corpus(
    path: Path, *, column: str = "report_text", split: str = "train", encoding: str = "utf-8"
) -> Iterator[str]:
    """The reports of a corpus file or folder (the formats of the module docstring), lazily.

    The path, its type, the encoding's name and a CSV's column are checked now; the reports are
    read while iterating.

    Args:
        path: the corpus.
        column: the report column of a plain CSV.
        split: the manifest split (``"all"`` for every row).
        encoding: text encoding of CSV/TXT files (a manifest's reports are always UTF-8).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: an empty folder, a CSV without the column, an unknown file type or encoding.
        DataError: while iterating, a file that is not text in ``encoding`` (the message names
            the file and the line, and suggests ``--encoding``).
    """
    import codecs

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown text encoding {encoding!r} (try utf-8, latin-1 or cp1252)") from None
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise ValueError(f"{path}: folder holds no .txt report")
        return (_read_text(file, encoding) for file in files)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or (suffix == ".csv" and set(_csv_header(path, encoding)) >= _MANIFEST_COLUMNS):
        return _manifest_reports(path, split)
    if suffix == ".csv":
        header = _csv_header(path, encoding)
        if column not in header:
            raise ValueError(f"{path}: no column {column!r} (columns: {header}); use --column")
        return _csv_column(path, column, encoding)
    if suffix == ".txt":
        return _lines(path, encoding)
    raise ValueError(f"{path}: corpus must be a .csv, .jsonl, .txt file or a folder of .txt files")


def _decode_error(path: Path, encoding: str, exc: UnicodeDecodeError) -> Exception:
    """A :class:`DataError` naming the file, the line and the byte that is not ``encoding`` text."""
    from velvet.data.errors import DataError

    where = f"byte 0x{exc.object[exc.start]:02x}" if exc.start < len(exc.object) else "a truncated character"
    try:  # the offset in the exception is relative to a read buffer: find the place in the file
        path.read_bytes().decode(encoding)
    except UnicodeDecodeError as full:
        data = full.object
        line = data.count(b"\n", 0, full.start) + 1
        where = f"line {line}, byte 0x{data[full.start]:02x} at offset {full.start}"
    except OSError:
        pass
    return DataError(
        path,
        f"is not {encoding} text ({where}: {exc.reason}); pass the file's encoding with --encoding "
        "(e.g. --encoding cp1252 or --encoding latin-1), or convert the file to UTF-8",
    )


def _read_text(path: Path, encoding: str) -> str:
    try:
        return path.read_text(encoding=_csv_encoding(encoding))
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc) from None


def _csv_encoding(encoding: str) -> str:
    """``utf-8-sig`` for UTF-8 (a BOM is dropped), else the encoding as given."""
    import codecs

    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _lines(path: Path, encoding: str = "utf-8") -> Iterator[str]:
    try:
        with path.open(encoding=_csv_encoding(encoding)) as fh:
            yield from (line for line in fh if line.strip())
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc) from None


def _csv_header(path: Path, encoding: str = "utf-8") -> list[str]:
    import csv

    try:
        with path.open(encoding=_csv_encoding(encoding), newline="") as fh:
            return next(csv.reader(fh), [])
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc) from None


def _csv_column(path: Path, column: str, encoding: str = "utf-8") -> Iterator[str]:
    import csv

    try:
        with path.open(encoding=_csv_encoding(encoding), newline="") as fh:
            reader = csv.DictReader(fh)
            try:
                for row in reader:
                    yield row[column] or ""
            except csv.Error as exc:
                raise ValueError(f"{path}:{reader.line_num}: unreadable CSV ({exc})") from None
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc) from None


def _manifest_reports(path: Path, split: str) -> Iterator[str]:
    from velvet.data.manifest import read_manifest

    manifest = read_manifest(path, check_files=False)  # volumes are not needed to train a vocabulary
    records = manifest.records if split == "all" else manifest.split(split)  # type: ignore[arg-type]
    if not records:
        raise ValueError(f"{path}: manifest has no {split!r} rows")
    return (record.load_report() or "" for record in records)


def run_train(args: argparse.Namespace) -> int:
    """Train and save a vocabulary; returns 0, or 1 with ``error: ...`` on stderr.

    The summary line gives the vocabulary size, and says so when it is not ``--vocab-size``.
    """
    from velvet.data.errors import DataError
    from velvet.data.tokenizer_training import train_wordpiece_with_summary

    try:
        texts = read_corpus(
            args.corpus, column=args.column, split=args.split, encoding=getattr(args, "encoding", "utf-8")
        )
        result = train_wordpiece_with_summary(
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
    print(
        f"wrote tokenizer to {result.path}: {result.vocab_size:,} tokens from {result.reports:,} reports"
        + (f" ({result.skipped:,} empty skipped)" if result.skipped else "")
    )
    if result.size_note:
        print(f"note: {result.size_note}")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    """Print the layout of each text; returns 0, or 1 with ``error: ...`` on stderr."""
    from velvet.data.errors import DataError

    try:
        tok = _load_tokenizer(args)
        sources = [f"text {i + 1}" for i in range(len(args.texts))]
        batch = tok(args.texts, sources=sources)
        stats = [tok.truncation_stats([text]) for text in args.texts]
    except (DataError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for index in range(len(args.texts)):
        if index:
            print()
        print(format_layout(tok, batch, index, tokens=args.tokens))
        if stats[index].truncated:
            print(format_truncation(stats[index]))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    """Print the truncation statistics of a corpus; returns 0, or 1 with ``error: ...`` on stderr."""
    from velvet.data.errors import DataError

    try:
        tok = _load_tokenizer(args)
        reports = list(read_corpus(args.corpus, column=args.column, split=args.split, encoding=args.encoding))
        if not reports:
            raise ValueError(f"{args.corpus}: corpus holds no report")
        stats = tok.truncation_stats(reports)
    except (DataError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.corpus}:")
    print(stats)
    if stats.last_sentence_lost and tok.truncation == "end":
        print("hint: --truncation middle keeps the first and last sentences of long reports")
    return 0


def format_truncation(stats: Any) -> str:
    """One line on what truncation took from a single report (its :class:`TruncationStats`)."""
    kept_pieces = stats.pieces - stats.lost_pieces
    kept_sentences = stats.sentences - stats.lost_sentences
    line = (
        f"  truncated ({stats.truncation}): kept {kept_pieces} of {stats.pieces} pieces and "
        f"{kept_sentences} of {stats.sentences} sentence(s)"
    )
    return line + (
        "; the last sentence is lost" if stats.last_sentence_lost else "; the last sentence is whole"
    )


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
    current: int | None = None
    row: list[str] = []
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

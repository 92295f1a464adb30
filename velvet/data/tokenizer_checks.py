"""Checks of a tokenizer folder and of TriBERT tokenizer options, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from velvet.data.errors import DataError

__all__ = ["TOKENIZER_FILES", "check_positive", "check_wordpiece", "load_error"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def load_error(folder: Path, exc: Exception) -> DataError:
    """A :class:`DataError` naming the damaged file of a tokenizer folder that failed to load."""
    advice = (
        "the file is damaged or truncated (an interrupted copy or write?): copy the tokenizer folder again, "
        "or re-create it with `velvet tokenizer train`"
    )
    for name in TOKENIZER_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            return DataError(path, f"is not UTF-8 text (byte {err.start}); {advice}")
        except json.JSONDecodeError as err:
            where = f"line {err.lineno}, column {err.colno}: {err.msg}"
            return DataError(path, f"is not valid JSON ({where}); {advice}")
        if name == "tokenizer.json":
            from tokenizers import Tokenizer

            try:
                Tokenizer.from_str(json.dumps(data))
            except Exception as err:
                return DataError(path, f"is not a Hugging Face tokenizers file ({err}); {advice}")
    vocab = folder / "vocab.txt"
    if vocab.is_file():
        try:
            vocab.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            return DataError(vocab, f"is not UTF-8 text (byte {err.start}); {advice}")
    return DataError(folder, f"the tokenizer cannot be loaded ({type(exc).__name__}: {exc})")


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be positive, got {value}")


def check_wordpiece(tokenizer: Any) -> Any:
    from tokenizers.models import WordPiece

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"a fast (Rust-backed) tokenizer is required, got {type(tokenizer).__name__}")
    if not isinstance(backend.model, WordPiece):
        raise ValueError(f"a WordPiece tokenizer is required, got a {type(backend.model).__name__} model")
    for name in ("cls_token_id", "sep_token_id", "pad_token_id", "mask_token_id"):
        if getattr(tokenizer, name, None) is None:
            raise ValueError(
                f"the tokenizer has no {name[:-3]} ([CLS], [SEP], [PAD] and [MASK] are required)"
            )
    if len(tokenizer) <= 5:
        raise ValueError(f"the tokenizer has only {len(tokenizer)} tokens: its vocabulary was not loaded")
    return tokenizer

"""Reports -> the TriBERT token layout (method.md 2.3), vectorised over the batch.

With sentence modelling a report becomes ``[CLS] [SEN_1] w w ... [SEN_2] w ... [PAD] ...``:
``token_type_ids`` and ``sentence_ids`` carry the sentence index, ``word_ids`` number the merged
words (a word = a pre-tokenizer word: BERT isolates punctuation, so ``,`` is a word). Without it,
the plain ``[CLS] pieces [SEP]`` layout of the joined sentences. The keys are those of
:class:`velvet.types.TextBatch`.

Speed: the reference tokenises sentence by sentence with the slow Python tokenizer and merges
words in a per-token loop (58 reports/s). Here all sentences of a batch are encoded in one call
to the Rust tokenizer, with caches (:mod:`velvet.data.sentence_encoder`), and the layout is numpy
offset arithmetic on the flat piece array (:mod:`velvet.data.tokenization_layout`).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from velvet.data.attention_mask import sentence_attention_mask
from velvet.data.errors import ReportError
from velvet.data.reports import clean_report, normalize_text, split_cleaned
from velvet.data.sentence_encoder import SentenceEncoder
from velvet.data.tokenization_layout import build_plain_layout, build_sentence_layout, gather_sentences
from velvet.types import TextBatch
from velvet.utils.atomic import save_directory_atomically  # re-exported: models.pretrained imports it

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["TriBertTokenizer", "save_directory_atomically", "sentence_attention_mask"]

logger = logging.getLogger(__name__)


class TriBertTokenizer:
    """Tokenise reports into the TriBERT layout with a fast BERT WordPiece tokenizer.

    Args:
        tokenizer: a Hugging Face fast WordPiece tokenizer (e.g. ``BertTokenizerFast``). It is
            copied; with sentence modelling, ``[SEN_1]``..``[SEN_K]`` are added to the copy as
            special tokens where missing (a 30,522-token CXR-BERT vocab becomes 30,572).
        max_length: longest sequence ``L`` (the reference pads every report to 512).
        max_sentences: ``K``, the most sentences kept per report; extra ones are dropped at
            random (seeded, order kept).
        max_sentence_tokens: word pieces kept per sentence, its ``[SEN_k]`` not counted (the
            reference's ``max_len_sentence`` also counted the dropped ``[CLS]``/``[SEP]``).
        sentence_modeling: the ``[SEN_k]`` layout (True) or plain ``[CLS] ... [SEP]`` (False:
            type id 1 on real tokens, ``sentence_ids`` 1 on pieces and 0 on ``[CLS]``/``[SEP]``,
            ``num_sentences`` 1, no sentence dropping or per-sentence cut).
        pad_to_multiple_of: batches are padded to the longest report rounded up to this
            (capped at ``max_length``); 1 pads to the longest exactly.
        seed: default seed of sentence dropping (a call's ``seed`` overrides it).
        cache_size: reports whose encodings are cached (16x as many sentences); 0 disables.

    Attributes:
        tokenizer: the (copied) Hugging Face tokenizer, ``[SEN_k]`` included.
        sen_token_ids: ``(K,)`` int64 ids of ``[SEN_1]``..``[SEN_K]`` (empty without sentence modelling).

    Reports longer than ``max_length`` lose their end; a ``[SEN_k]`` left last is cut too, so
    every kept sentence has at least one piece.

    Example:
        >>> tok = TriBertTokenizer.from_pretrained("tokenizers/ctrate-8k")  # doctest: +SKIP
        >>> batch = tok(["Lungs are clear. No effusion."])  # doctest: +SKIP
        >>> batch["input_ids"].shape  # doctest: +SKIP
        torch.Size([1, 16])
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerFast,
        *,
        max_length: int = 512,
        max_sentences: int = 50,
        max_sentence_tokens: int = 200,
        sentence_modeling: bool = True,
        pad_to_multiple_of: int | None = 8,
        seed: int = 0,
        cache_size: int = 20_000,
    ) -> None:
        if max_length < 3:  # [CLS] [SEN_1] w, or [CLS] w [SEP]
            raise ValueError(f"max_length must be at least 3, got {max_length}")
        _check_positive(max_sentences=max_sentences, max_sentence_tokens=max_sentence_tokens)
        _check_positive(pad_to_multiple_of=pad_to_multiple_of or 1)
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.max_length = int(max_length)
        self.max_sentences = int(max_sentences)
        self.max_sentence_tokens = int(max_sentence_tokens)
        self.sentence_modeling = bool(sentence_modeling)
        self.pad_to_multiple_of = int(pad_to_multiple_of or 1)
        self.seed = int(seed)
        self.cache_size = int(cache_size)
        self.tokenizer = _check_wordpiece(copy.deepcopy(tokenizer))
        self.sen_tokens = (
            [f"[SEN_{k}]" for k in range(1, self.max_sentences + 1)] if sentence_modeling else []
        )
        self._add_sentence_tokens()
        self._encoder = SentenceEncoder(self.tokenizer, cache_size=self.cache_size)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **options: Any) -> TriBertTokenizer:
        """Load a local tokenizer folder (``tokenizer.json`` or a BERT ``vocab.txt``); never downloads.

        Args:
            path: the folder, e.g. one written by :func:`velvet.data.tokenizer_training.train_wordpiece`
                or a CXR-BERT checkpoint folder.
            **options: the keyword arguments of :class:`TriBertTokenizer`.

        Raises:
            FileNotFoundError: the folder or its tokenizer files do not exist.
            ValueError: the files are not a WordPiece tokenizer with ``[CLS]``/``[SEP]``/``[PAD]``/``[MASK]``.
        """
        from transformers import BertTokenizerFast

        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: tokenizer folder does not exist (velvet loads tokenizers from local folders "
                "only; train one with `velvet tokenizer train` or point to a CXR-BERT folder)"
            )
        if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.txt").is_file():
            # transformers would silently build a 5-token vocabulary from an empty folder
            raise FileNotFoundError(f"{folder}: neither tokenizer.json nor vocab.txt found in the folder")
        tokenizer = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        return cls(tokenizer, **options)

    def _add_sentence_tokens(self) -> None:
        vocab = self.tokenizer.get_vocab()
        missing = [t for t in self.sen_tokens if t not in vocab]
        if missing:
            self.tokenizer.add_special_tokens(
                {"additional_special_tokens": missing}, replace_extra_special_tokens=False
            )
        ids = self.tokenizer.convert_tokens_to_ids(self.sen_tokens)
        self.sen_token_ids = torch.tensor(ids, dtype=torch.long)
        self._sen_ids = np.asarray(ids, dtype=np.int64)
        # read once: the tokenizer's attribute lookups are slow enough to show in a profile
        self._special_ids = {
            n: int(getattr(self.tokenizer, f"{n}_token_id")) for n in ("pad", "cls", "sep", "mask")
        }

    # ------------------------------------------------------------------ properties

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (the embedding table's rows)."""
        return len(self.tokenizer)

    @property
    def type_vocab_size(self) -> int:
        """Token-type ids in use: ``max_sentences + 1`` with sentence modelling, else 2."""
        return self.max_sentences + 1 if self.sentence_modeling else 2

    @property
    def pad_token_id(self) -> int:
        return self._special_ids["pad"]

    @property
    def cls_token_id(self) -> int:
        return self._special_ids["cls"]

    @property
    def sep_token_id(self) -> int:
        return self._special_ids["sep"]

    @property
    def mask_token_id(self) -> int:
        return self._special_ids["mask"]

    def config(self) -> dict[str, Any]:
        """The layout options, to store beside a checkpoint (the vocabulary is saved separately)."""
        return {
            "max_length": self.max_length,
            "max_sentences": self.max_sentences,
            "max_sentence_tokens": self.max_sentence_tokens,
            "sentence_modeling": self.sentence_modeling,
            "pad_to_multiple_of": self.pad_to_multiple_of,
            "seed": self.seed,
        }

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write the vocabulary (with the ``[SEN_k]`` tokens) atomically; returns the folder."""
        return save_directory_atomically(self.tokenizer.save_pretrained, directory)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"TriBertTokenizer(vocab_size={self.vocab_size}, {options})"

    # ------------------------------------------------------------------ tokenisation

    def __call__(
        self,
        reports: Sequence[str] | Sequence[Sequence[str]],
        *,
        seed: int | None = None,
        sources: Sequence[str] | None = None,
    ) -> TextBatch:
        """Tokenise a batch of reports.

        Args:
            reports: B reports; a string is cleaned and split with :mod:`velvet.data.reports`,
                a list of strings is taken as the report's sentences.
            seed: seed of sentence dropping (default: the tokenizer's); the same (seed, report)
                always keeps the same sentences, in any process.
            sources: B names for error messages (case ids); default ``"reports[i]"``.

        Returns:
            A :class:`~velvet.types.TextBatch` of ``(B, L)`` / ``(B,)`` tensors.

        Raises:
            ReportError: a report is empty (or has no letter/digit) or is implausibly long.
            TypeError: ``reports`` is a single string, or holds something else than text.
        """
        if isinstance(reports, str):
            raise TypeError("reports must be a sequence of reports; wrap a single report in a list")
        if len(reports) == 0:
            raise ValueError("reports is empty")
        if sources is not None and len(sources) != len(reports):
            raise ValueError(f"got {len(sources)} sources for {len(reports)} reports")
        names = list(sources) if sources is not None else [f"reports[{i}]" for i in range(len(reports))]
        encoded = self._encoder.encode_reports(reports, self._split, names)
        seed = self.seed if seed is None else int(seed)
        if self.sentence_modeling:
            ids, lengths, counts = gather_sentences(encoded, self.max_sentences, seed)
            arrays = build_sentence_layout(
                ids,
                lengths,
                counts,
                sen_token_ids=self._sen_ids,
                cls_token_id=self.cls_token_id,
                pad_token_id=self.pad_token_id,
                is_continuation=self._encoder.is_continuation,
                max_length=self.max_length,
                max_sentence_tokens=self.max_sentence_tokens,
                pad_to_multiple_of=self.pad_to_multiple_of,
            )
        else:
            ids, _, _ = gather_sentences(encoded, None, seed)
            per_report = np.array([int(e[1].sum()) for e in encoded], dtype=np.int64)
            arrays = build_plain_layout(
                ids,
                per_report,
                cls_token_id=self.cls_token_id,
                sep_token_id=self.sep_token_id,
                pad_token_id=self.pad_token_id,
                is_continuation=self._encoder.is_continuation,
                max_length=self.max_length,
                pad_to_multiple_of=self.pad_to_multiple_of,
            )
        return {key: torch.from_numpy(value) for key, value in arrays.items()}  # type: ignore[return-value]

    def attention_mask(self, batch: TextBatch) -> torch.Tensor:
        """The ``(B, L, L)`` bool sentence attention mask of a batch (see :func:`sentence_attention_mask`)."""
        return sentence_attention_mask(
            batch["sentence_ids"], batch["sentence_token_mask"], batch["attention_mask"]
        )

    def sentences(self, report: str | Sequence[str], *, source: str = "report") -> list[str]:
        """The sentences a report is tokenised as (cleaned and split, or the given list, normalised)."""
        if isinstance(report, str):
            return split_cleaned(clean_report(report, source=source))
        if not all(isinstance(s, str) for s in report):
            raise TypeError(f"{source}: a report given as a list must hold strings (sentences)")
        sentences = [t for t in (normalize_text(s) for s in report) if t]
        if not sentences:
            raise ReportError(source, "report has no non-empty sentence")
        return [s.replace("\n", " ") for s in sentences]

    def _split(self, report: str | Sequence[str], source: str) -> list[str]:
        return self.sentences(report, source=source)

    # ------------------------------------------------------------------ inspection

    def words_from_pieces(self, batch: TextBatch, index: int) -> list[str]:
        """The merged words of sample ``index``: its pieces grouped by ``word_ids``, ``##`` removed."""
        ids = batch["input_ids"][index].tolist()
        word_ids = batch["word_ids"][index].tolist()
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        prefix = self.tokenizer.backend_tokenizer.model.continuing_subword_prefix
        words: list[str] = []
        previous = -1
        for token, word in zip(tokens, word_ids, strict=True):
            if word < 0:
                continue
            piece = token[len(prefix) :] if token.startswith(prefix) and len(token) > len(prefix) else token
            if word == previous:
                words[-1] += piece
            else:
                words.append(piece)
                previous = word
        return words


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be positive, got {value}")


def _check_wordpiece(tokenizer: Any) -> Any:
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

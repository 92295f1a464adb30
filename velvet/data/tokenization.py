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

Truncation: a report longer than ``max_length`` tokens (or with more than ``max_sentences``
sentences) loses part of its text. ``truncation="end"`` (the default, the reference behaviour) cuts
the end, which in CT-RATE and most radiology reports is the impression; ``truncation="middle"``
keeps whole sentences from both ends and drops the middle ones, so the first and last sentences
survive. :meth:`TriBertTokenizer.truncation_stats` counts what a data set loses either way
(``velvet tokenizer stats`` prints it).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from velvet.data.attention_mask import sentence_attention_mask
from velvet.data.errors import ReportError
from velvet.data.reports import clean_report, normalize_text, split_cleaned
from velvet.data.sentence_encoder import SentenceEncoder
from velvet.data.tokenization_layout import build_plain_layout, build_sentence_layout
from velvet.data.tokenizer_checks import check_positive, check_wordpiece, load_error
from velvet.data.truncation import Truncation, TruncationStats, fit_whole_sentences, gather_sentences_kept
from velvet.types import TextBatch
from velvet.utils.atomic import save_directory_atomically  # re-exported for older imports

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "TRUNCATION_MODES",
    "TriBertTokenizer",
    "TruncationStats",
    "save_directory_atomically",
    "sentence_attention_mask",
]

logger = logging.getLogger(__name__)

#: ``"end"``: keep the start of a report, cut its end; ``"middle"``: keep whole sentences from both
#: ends (first, last, second, second-last, ...) and drop the middle ones.
TRUNCATION_MODES = ("end", "middle")


class TriBertTokenizer:
    """Tokenise reports into the TriBERT layout with a fast BERT WordPiece tokenizer.

    Args:
        tokenizer: a Hugging Face fast WordPiece tokenizer (e.g. ``BertTokenizerFast``). It is
            copied; with sentence modelling, ``[SEN_1]``..``[SEN_K]`` are added to the copy as
            special tokens where missing (a 30,522-token CXR-BERT vocab becomes 30,572).
        max_length: longest sequence ``L`` (the reference pads every report to 512).
        max_sentences: ``K``, the most sentences kept per report; extra ones are dropped at
            random (seeded, order kept; with ``truncation="middle"`` the first and last sentences
            are always kept and the others drawn from the middle ones).
        max_sentence_tokens: word pieces kept per sentence, its ``[SEN_k]`` not counted (the
            reference's ``max_len_sentence`` also counted the dropped ``[CLS]``/``[SEP]``).
        sentence_modeling: the ``[SEN_k]`` layout (True) or plain ``[CLS] ... [SEP]`` (False:
            type id 1 on real tokens, ``sentence_ids`` 1 on pieces and 0 on ``[CLS]``/``[SEP]``,
            ``num_sentences`` 1, no sentence dropping or per-sentence cut).
        pad_to_multiple_of: batches are padded to the longest report rounded up to this
            (capped at ``max_length``); 1 pads to the longest exactly.
        seed: default seed of sentence dropping (a call's ``seed`` overrides it).
        cache_size: reports whose encodings are cached (16x as many sentences); 0 disables.
        truncation: what a report longer than ``max_length`` loses (:data:`TRUNCATION_MODES`).
            ``"end"`` (default, as the reference): its end, the impression of a radiology
            report. ``"middle"``: whole sentences from the middle; sentences are kept
            alternately from the start and the end (first, last, second, second-last, ...)
            while they fit, so the first and the last sentences survive. The first sentence is
            always kept (cut at its end if it alone is too long).

    Attributes:
        tokenizer: the (copied) Hugging Face tokenizer, ``[SEN_k]`` included.
        sen_token_ids: ``(K,)`` int64 ids of ``[SEN_1]``..``[SEN_K]`` (empty without sentence modelling).

    Reports longer than ``max_length`` lose their end (or their middle sentences, see
    ``truncation``); a ``[SEN_k]`` left last is cut too, so every kept sentence has at least one
    piece. :meth:`truncation_stats` counts how many reports of a data set lose text.

    Characters that no token of the vocabulary contains (say ``☃`` with a vocabulary trained
    without it) are made words of their own before tokenisation, so they become one ``[UNK]``
    instead of turning the whole word around them into ``[UNK]``.

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
        truncation: str = "end",
    ) -> None:
        if max_length < 3:  # [CLS] [SEN_1] w, or [CLS] w [SEP]
            raise ValueError(f"max_length must be at least 3, got {max_length}")
        check_positive(max_sentences=max_sentences, max_sentence_tokens=max_sentence_tokens)
        check_positive(pad_to_multiple_of=pad_to_multiple_of or 1)
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        if truncation not in TRUNCATION_MODES:
            raise ValueError(f"truncation must be one of {TRUNCATION_MODES}, got {truncation!r}")
        self.max_length = int(max_length)
        self.max_sentences = int(max_sentences)
        self.max_sentence_tokens = int(max_sentence_tokens)
        self.sentence_modeling = bool(sentence_modeling)
        self.pad_to_multiple_of = int(pad_to_multiple_of or 1)
        self.seed = int(seed)
        self.cache_size = int(cache_size)
        self.truncation = truncation
        self.tokenizer = check_wordpiece(copy.deepcopy(tokenizer))
        self.sen_tokens = (
            [f"[SEN_{k}]" for k in range(1, self.max_sentences + 1)] if sentence_modeling else []
        )
        self._add_sentence_tokens()
        self._encoder = SentenceEncoder(self.tokenizer, cache_size=self.cache_size)
        self._init_spelling()

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
            DataError: a file of the folder is damaged (not JSON, not UTF-8, not a tokenizer);
                the message names the file.
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
        try:
            tokenizer = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # JSONDecodeError, UnicodeDecodeError, the Rust parser's Exception
            raise load_error(folder, exc) from None
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
            "truncation": self.truncation,
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
        arrays, _ = self._encode(reports, seed=seed, sources=sources)
        return {key: torch.from_numpy(value) for key, value in arrays.items()}  # type: ignore[return-value]

    def truncation_stats(
        self,
        reports: Sequence[str] | Sequence[Sequence[str]],
        *,
        batch_size: int = 256,
        seed: int | None = None,
    ) -> TruncationStats:
        """Count the reports that lose text to the length limits, as :meth:`__call__` would cut them.

        Reports that cannot be tokenised (empty ones) are counted in ``skipped`` and left out.

        Args:
            reports: the reports of a data set (strings or sentence lists).
            batch_size: reports tokenised at once.
            seed: seed of sentence dropping (default: the tokenizer's).

        Returns:
            A :class:`TruncationStats`; ``str(stats)`` is a one-paragraph summary.

        Example:
            >>> tok.truncation_stats(reports).truncated  # doctest: +SKIP
            120
        """
        if isinstance(reports, str):
            raise TypeError("reports must be a sequence of reports; wrap a single report in a list")
        step = max(1, int(batch_size))
        totals = dict.fromkeys(Truncation._fields, 0)
        truncated: list[int] = []
        skipped: list[int] = []

        def info(indices: list[int]) -> Truncation:
            _, found = self._encode([reports[i] for i in indices], seed=seed, sources=None, with_info=True)
            assert found is not None
            return found

        for start in range(0, len(reports), step):
            chunk = list(range(start, min(start + step, len(reports))))
            try:
                parts = [(chunk, info(chunk))]
            except ReportError:  # an empty report in the chunk: find it, keep the others
                parts = []
                for i in chunk:
                    try:
                        parts.append(([i], info([i])))
                    except ReportError:
                        skipped.append(i)
            for indices, found in parts:
                for field in Truncation._fields:
                    totals[field] += int(getattr(found, field).sum())
                truncated.extend(np.asarray(indices)[found.truncated].tolist())
        return TruncationStats(
            **totals,
            skipped=len(skipped),
            truncated_indices=tuple(truncated),
            skipped_indices=tuple(skipped),
            max_length=self.max_length,
            max_sentences=self.max_sentences if self.sentence_modeling else None,
            max_sentence_tokens=self.max_sentence_tokens if self.sentence_modeling else None,
            truncation=self.truncation,
        )

    def _encode(
        self,
        reports: Sequence[str] | Sequence[Sequence[str]],
        *,
        seed: int | None,
        sources: Sequence[str] | None,
        with_info: bool = False,
    ) -> tuple[dict[str, np.ndarray], Truncation | None]:
        """The layout arrays of a batch and, ``with_info``, per report what truncation took from it."""
        if isinstance(reports, str):
            raise TypeError("reports must be a sequence of reports; wrap a single report in a list")
        if len(reports) == 0:
            raise ValueError("reports is empty")
        if sources is not None and len(sources) != len(reports):
            raise ValueError(f"got {len(sources)} sources for {len(reports)} reports")
        names = list(sources) if sources is not None else [f"reports[{i}]" for i in range(len(reports))]
        encoded = self._encoder.encode_reports(reports, self._split, names)
        seed = self.seed if seed is None else int(seed)
        keep_ends = self.truncation == "middle"
        batch = len(encoded)
        if self.sentence_modeling:
            ids, lengths, counts, last_selected = gather_sentences_kept(encoded, self.max_sentences, seed, keep_ends)
            costs, budget = np.minimum(lengths, self.max_sentence_tokens) + 1, self.max_length - 1
        else:
            ids, lengths, counts, last_selected = gather_sentences_kept(encoded, None, seed, keep_ends)
            costs, budget = lengths, self.max_length - 2
        last_fits = np.ones(batch, dtype=bool)
        if keep_ends:
            report_of_sentence = np.repeat(np.arange(batch), counts)
            if (np.bincount(report_of_sentence, weights=costs, minlength=batch) > budget).any():
                keep = fit_whole_sentences(costs, counts, budget)
                last_fits = keep[np.cumsum(counts) - 1]
                ids = ids[np.repeat(keep, lengths)]
                lengths = lengths[keep]
                counts = np.bincount(report_of_sentence[keep], minlength=batch)
        if self.sentence_modeling:
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
            per_report = np.bincount(np.repeat(np.arange(batch), counts), weights=lengths, minlength=batch)
            arrays = build_plain_layout(
                ids,
                per_report.astype(np.int64),
                cls_token_id=self.cls_token_id,
                sep_token_id=self.sep_token_id,
                pad_token_id=self.pad_token_id,
                is_continuation=self._encoder.is_continuation,
                max_length=self.max_length,
                pad_to_multiple_of=self.pad_to_multiple_of,
            )
        if not with_info:
            return arrays, None
        return arrays, self._truncation_info(encoded, arrays, lengths, counts, last_selected & last_fits)

    def _truncation_info(
        self,
        encoded: Sequence[tuple[np.ndarray, np.ndarray, bytes]],
        arrays: dict[str, np.ndarray],
        lengths: np.ndarray,
        counts: np.ndarray,
        last_chosen: np.ndarray,
    ) -> Truncation:
        """What truncation took from each report (vectorised over the batch).

        Args:
            encoded: the reports' encodings before any cut.
            arrays: the layout built from them.
            lengths, counts: pieces per sentence and sentences per report that went into the layout.
            last_chosen: ``(B,)`` whether each report's last sentence went into the layout.
        """
        batch = len(encoded)
        cap = self.max_sentence_tokens if self.sentence_modeling else None
        all_lengths = np.concatenate([e[1] for e in encoded])
        n_sentences = np.fromiter((len(e[1]) for e in encoded), dtype=np.int64, count=batch)
        first_of_all = np.cumsum(n_sentences) - n_sentences
        report_of_all = np.repeat(np.arange(batch), n_sentences)
        n_pieces = np.bincount(report_of_all, weights=all_lengths, minlength=batch).astype(np.int64)
        if cap is not None:
            capped = np.bincount(report_of_all, weights=np.minimum(all_lengths, cap), minlength=batch)
            full = 1 + n_sentences + capped.astype(np.int64)
            fed_lengths = np.minimum(lengths, cap)
        else:
            full = n_pieces + 2
            fed_lengths = lengths
        report_of_fed = np.repeat(np.arange(batch), counts)
        fed = np.bincount(report_of_fed, weights=fed_lengths, minlength=batch).astype(np.int64)
        kept = (arrays["attention_mask"] & ~arrays["special_tokens_mask"]).sum(axis=1)
        # a sentence that went in is (at least partly) kept when it starts before the cut
        starts = np.cumsum(fed_lengths) - fed_lengths
        starts -= starts[np.cumsum(counts) - counts][report_of_fed]
        kept_sentences_ = np.bincount(report_of_fed[starts < kept[report_of_fed]], minlength=batch)
        # the last sentence is whole when it went in, nothing was cut at the end, and no cap applied
        last_whole = last_chosen & (kept == fed)
        over_sentences = long_sentences = np.zeros(batch, dtype=bool)
        if cap is not None:
            last_whole &= all_lengths[first_of_all + n_sentences - 1] <= cap
            over_sentences = n_sentences > self.max_sentences
            long_sentences = np.maximum.reduceat(all_lengths, first_of_all) > cap
        return Truncation(
            reports=np.ones(batch, dtype=np.int64),
            truncated=kept < n_pieces,
            over_length=full > self.max_length,
            over_sentences=over_sentences,
            long_sentences=long_sentences,
            last_sentence_lost=~last_whole,
            sentences=n_sentences,
            lost_sentences=n_sentences - kept_sentences_,
            pieces=n_pieces,
            lost_pieces=n_pieces - kept,
        )

    def attention_mask(self, batch: TextBatch) -> torch.Tensor:
        """The ``(B, L, L)`` bool sentence attention mask of a batch (see :func:`sentence_attention_mask`)."""
        return sentence_attention_mask(
            batch["sentence_ids"], batch["sentence_token_mask"], batch["attention_mask"]
        )

    def sentences(self, report: str | Sequence[str], *, source: str = "report") -> list[str]:
        """The sentences a report is tokenised as (cleaned and split, or the given list, normalised).

        A character that no token of the vocabulary contains gets a space on both sides (it
        becomes one ``[UNK]`` word instead of making its whole word ``[UNK]``).
        """
        if isinstance(report, str):
            sentences = split_cleaned(clean_report(report, source=source))
            return sentences if report.isascii() else [self._isolate_unspellable(s) for s in sentences]
        if not all(isinstance(s, str) for s in report):
            raise TypeError(f"{source}: a report given as a list must hold strings (sentences)")
        sentences = [t for t in (normalize_text(s) for s in report) if t]
        if not sentences:
            raise ReportError(source, "report has no non-empty sentence")
        return [self._isolate_unspellable(s.replace("\n", " ")) for s in sentences]

    def _init_spelling(self) -> None:
        """The characters the vocabulary can spell (those of its tokens, ``##`` removed)."""
        prefix = self.tokenizer.backend_tokenizer.model.continuing_subword_prefix
        tokens = (t[len(prefix) :] if t.startswith(prefix) else t for t in self.tokenizer.get_vocab())
        self._vocab_chars = frozenset("".join(tokens))
        self._spellable: dict[str, bool] = {}

    def _isolate_unspellable(self, sentence: str) -> str:
        """``sentence`` with spaces around the characters no token contains (ASCII is left alone)."""
        if sentence.isascii():
            return sentence
        unknown = []
        for char in set(sentence):
            ok = self._spellable.get(char)
            if ok is None:
                normalizer = self.tokenizer.backend_tokenizer.normalizer
                normalized = normalizer.normalize_str(char) if normalizer is not None else char
                ok = char.isascii() or all(c.isspace() or c in self._vocab_chars for c in normalized)
                self._spellable[char] = ok
            if not ok:
                unknown.append(char)
        if not unknown:
            return sentence
        pattern = "[" + "".join(re.escape(c) for c in sorted(unknown)) + "]"
        return re.sub(pattern, lambda m: f" {m.group()} ", sentence).strip()

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

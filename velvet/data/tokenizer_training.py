"""Train a BERT WordPiece vocabulary on a report corpus, offline, with the ``tokenizers`` library.

The result is a folder that ``BertTokenizerFast.from_pretrained`` and
:meth:`velvet.data.tokenization.TriBertTokenizer.from_pretrained` load. It is built from the
``tokenizers`` object (``BertTokenizerFast(tokenizer_object=...)``): in transformers 5,
``BertTokenizerFast(vocab_file=...)`` silently ignores the file and gives a 5-token vocabulary.

Determinism: the same corpus and options give byte-identical files on every run and machine. The
``tokenizers`` WordPiece trainer (a BPE trainer underneath) is not deterministic by itself: it
gives the ``##c`` pieces of the alphabet their ids in the iteration order of a Rust ``HashMap``
(randomly seeded in every process), and merges of equal count are ranked by those ids, so every
run learns a slightly different vocabulary (``TOKENIZERS_PARALLELISM`` and the corpus order make no
difference). Here every single-character piece, ``c`` and ``##c``, is handed to the trainer up
front in code-point order, so all ids, and with them the tie-breaking, are fixed before it runs.

Alphabet: every printable ASCII character and the clinical symbols of :data:`CLINICAL_SYMBOLS`
(``° × µ ± ≤ ≥ ² ³ →`` ...) are in the vocabulary, as a word start and as a ``##`` continuation,
whether the corpus has them or not, besides every character of the corpus. So ``85×55`` or
``10°`` never become ``[UNK]`` because the training reports happened to lack ``×`` or ``°``.
"""

from __future__ import annotations

import logging
import os
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from velvet.data.errors import ReportError
from velvet.data.reports import clean_report
from velvet.utils.atomic import save_directory_atomically

__all__ = [
    "BERT_SPECIAL_TOKENS",
    "CLINICAL_SYMBOLS",
    "SEED_ALPHABET",
    "WordPieceTraining",
    "train_wordpiece",
    "train_wordpiece_with_summary",
]

logger = logging.getLogger(__name__)

# ids 0..4 in this order, as in BERT vocabularies ([PAD] = 0 is what padding_idx assumes)
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

#: Symbols of measurements and report shorthand, always in a trained vocabulary (``µ`` is the micro
#: sign, ``μ`` the Greek letter: reports use both for micrometres).
CLINICAL_SYMBOLS = "°×µμ±≤≥²³→"
#: The characters every trained vocabulary holds: printable ASCII (no space) and the clinical symbols.
SEED_ALPHABET = "".join(chr(c) for c in range(0x21, 0x7F)) + CLINICAL_SYMBOLS

_PREFIX = "##"
_MAX_INPUT_CHARS_PER_WORD = 100  # the WordPiece default: longer words are [UNK]


@dataclass(frozen=True)
class WordPieceTraining:
    """What :func:`train_wordpiece_with_summary` did.

    Attributes:
        path: the tokenizer folder written.
        vocab_size: tokens in the vocabulary (special tokens included).
        requested_vocab_size: the ``vocab_size`` asked for.
        base_size: special tokens plus the single-character alphabet (``c`` and ``##c``): the
            least a vocabulary of this corpus can have.
        min_frequency: the least count of a merge that was allowed.
        reports: reports trained on.
        skipped: empty or unusable reports left out.
    """

    path: Path
    vocab_size: int
    requested_vocab_size: int
    base_size: int
    min_frequency: int
    reports: int
    skipped: int

    @property
    def size_note(self) -> str | None:
        """Why the vocabulary is not ``requested_vocab_size`` tokens, with what to do; None when it is."""
        if self.vocab_size < self.requested_vocab_size:
            return (
                f"the vocabulary has {self.vocab_size:,} tokens, {self.requested_vocab_size - self.vocab_size:,} "
                f"fewer than the {self.requested_vocab_size:,} asked for: the {self.reports:,} report(s) hold no "
                f"more merges seen at least {self.min_frequency} times. Train on more reports, lower the "
                f"minimum frequency (--min-frequency), or ask for {self.vocab_size:,} tokens"
            )
        if self.vocab_size > self.requested_vocab_size:
            return (
                f"the vocabulary has {self.vocab_size:,} tokens, more than the {self.requested_vocab_size:,} "
                f"asked for: the special tokens and the single-character alphabet alone take "
                f"{self.base_size:,}. Ask for a larger vocabulary (--vocab-size)"
            )
        return None


def train_wordpiece(
    texts: Iterable[str],
    out_dir: str | os.PathLike[str],
    *,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = True,
    max_sentences: int = 50,
) -> Path:
    """Train a WordPiece vocabulary on reports and save it as a BERT tokenizer folder.

    See :func:`train_wordpiece_with_summary` (same arguments); this returns only the folder.

    Returns:
        ``out_dir`` as a Path.
    """
    return train_wordpiece_with_summary(
        texts,
        out_dir,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        lowercase=lowercase,
        max_sentences=max_sentences,
    ).path


def train_wordpiece_with_summary(
    texts: Iterable[str],
    out_dir: str | os.PathLike[str],
    *,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = True,
    max_sentences: int = 50,
) -> WordPieceTraining:
    """Train a WordPiece vocabulary on reports, save it as a BERT tokenizer folder, say how it went.

    Reports are cleaned with :func:`~velvet.data.reports.clean_report`; empty ones are skipped
    and counted in the log. The special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` take ids 0-4
    and ``[SEN_1]``..``[SEN_{max_sentences}]`` the next ones, then the single characters (the
    corpus's and :data:`SEED_ALPHABET`, normalised, in code-point order), their ``##`` forms,
    and the learnt merges in the order learnt. The result is deterministic: the same reports and
    options give byte-identical files in any process (module docstring). The folder is written
    atomically (a temporary folder renamed into place; an existing folder is replaced).

    A vocabulary that is not ``vocab_size`` tokens (a corpus too small for that many merges, or a
    size below the alphabet) is logged as a warning, and described by the result's ``size_note``.

    Args:
        texts: the reports (any iterable; read once and held in memory while training).
        out_dir: the folder to write.
        vocab_size: target vocabulary size, special tokens included.
        min_frequency: the least count of a merge to be learnt.
        lowercase: lower-case (and strip accents) in the normaliser, as uncased BERT does.
        max_sentences: how many ``[SEN_k]`` tokens to reserve.

    Returns:
        A :class:`WordPieceTraining` (the folder, the vocabulary size, the counts).

    Raises:
        ValueError: no report with text, or a vocabulary too small for the special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    specials = [*BERT_SPECIAL_TOKENS, *(f"[SEN_{k}]" for k in range(1, max_sentences + 1))]
    if vocab_size <= len(specials):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beside {len(specials)} special tokens")
    counts = {"used": 0, "skipped": 0}
    reports = list(_cleaned(texts, counts))
    if not reports:
        raise ValueError(f"no report with text to train a tokenizer on ({counts['skipped']} empty)")
    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pieces = _alphabet_pieces(reports, normalizer)
    base = [*specials, *(p for p in pieces if p not in specials)]

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix=_PREFIX))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=base,  # fixes the ids of the alphabet before the trainer numbers them at random
        continuing_subword_prefix=_PREFIX,
        show_progress=False,
    )
    backend.train_from_iterator(reports, trainer=trainer, length=len(reports))
    del reports
    vocab = backend.get_vocab(with_added_tokens=False)
    # the alphabet went in as "special tokens" only to fix its ids: rebuild the tokenizer from the
    # vocabulary so that only the real special tokens are added tokens (a literal "##a" stays text)
    tokenizer_object = Tokenizer(
        models.WordPiece(
            vocab,
            unk_token="[UNK]",
            continuing_subword_prefix=_PREFIX,
            max_input_chars_per_word=_MAX_INPUT_CHARS_PER_WORD,
        )
    )
    tokenizer_object.normalizer = normalizer
    tokenizer_object.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer_object.decoder = decoders.WordPiece(prefix=_PREFIX)
    tokenizer_object.add_special_tokens(specials)
    result = WordPieceTraining(
        path=Path(out_dir),
        vocab_size=len(vocab),
        requested_vocab_size=vocab_size,
        base_size=len(base),
        min_frequency=min_frequency,
        reports=counts["used"],
        skipped=counts["skipped"],
    )
    logger.info(
        "trained a WordPiece vocabulary of %d tokens on %d reports (%d empty or unusable skipped)",
        result.vocab_size,
        result.reports,
        result.skipped,
    )
    if result.size_note:
        logger.warning("%s", result.size_note)
    tokenizer = BertTokenizerFast(
        tokenizer_object=tokenizer_object,
        do_lower_case=lowercase,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    save_directory_atomically(tokenizer.save_pretrained, out_dir)
    return result


def _alphabet_pieces(reports: list[str], normalizer: object) -> list[str]:
    """The single-character pieces, ``c`` then ``##c``, each group in code-point order.

    The characters are those of the reports and :data:`SEED_ALPHABET`, after the normaliser
    (lower-casing, accent stripping); whitespace is left out. ASCII punctuation gets no ``##``
    form: the BERT pre-tokenizer always makes it a word of its own.
    """
    chars: set[str] = set(SEED_ALPHABET)
    for report in reports:
        chars.update(report)
    # BertNormalizer works character by character, so one call on all characters gives each one's form
    normalized = normalizer.normalize_str("".join(sorted(chars)))  # type: ignore[attr-defined]
    alphabet = sorted({c for c in normalized if not c.isspace()})
    continuing = [f"{_PREFIX}{c}" for c in alphabet if c not in string.punctuation]
    return [*alphabet, *continuing]


def _cleaned(texts: Iterable[str], counts: dict[str, int]) -> Iterator[str]:
    for i, text in enumerate(texts):
        try:
            cleaned = clean_report(text or "", source=f"report {i}")
        except ReportError as exc:
            counts["skipped"] += 1
            logger.debug("skipping: %s", exc)
            continue
        counts["used"] += 1
        yield cleaned

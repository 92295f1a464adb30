"""Train a BERT WordPiece vocabulary on a report corpus, offline, with the ``tokenizers`` library.

The result is a folder that ``BertTokenizerFast.from_pretrained`` and
:meth:`velvet.data.tokenization.TriBertTokenizer.from_pretrained` load. It is built from the
``tokenizers`` object (``BertTokenizerFast(tokenizer_object=...)``): in transformers 5,
``BertTokenizerFast(vocab_file=...)`` silently ignores the file and gives a 5-token vocabulary.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from velvet.data.errors import ReportError
from velvet.data.reports import clean_report
from velvet.data.tokenization import save_directory_atomically

__all__ = ["BERT_SPECIAL_TOKENS", "train_wordpiece"]

logger = logging.getLogger(__name__)

# ids 0..4 in this order, as in BERT vocabularies ([PAD] = 0 is what padding_idx assumes)
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


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

    Reports are cleaned with :func:`~velvet.data.reports.clean_report`; empty ones are skipped
    and counted in the log. The special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` take ids 0-4
    and ``[SEN_1]``..``[SEN_{max_sentences}]`` the next ones. Every character of the corpus is
    in the alphabet, so no word of the corpus becomes ``[UNK]``. The folder is written
    atomically (a temporary folder renamed into place; an existing folder is replaced).

    Args:
        texts: the reports (any iterable; read once).
        out_dir: the folder to write.
        vocab_size: target vocabulary size, special tokens included.
        min_frequency: the least count of a merge to be learnt.
        lowercase: lower-case (and strip accents) in the normaliser, as uncased BERT does.
        max_sentences: how many ``[SEN_k]`` tokens to reserve.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: no report with text, or a vocabulary too small for the special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    specials = [*BERT_SPECIAL_TOKENS, *(f"[SEN_{k}]" for k in range(1, max_sentences + 1))]
    if vocab_size <= len(specials):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beside {len(specials)} special tokens")
    counts = {"used": 0, "skipped": 0}
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    backend.train_from_iterator(_cleaned(texts, counts), trainer=trainer)
    if counts["used"] == 0:
        raise ValueError(f"no report with text to train a tokenizer on ({counts['skipped']} empty)")
    logger.info(
        "trained a WordPiece vocabulary of %d tokens on %d reports (%d empty or unusable skipped)",
        backend.get_vocab_size(),
        counts["used"],
        counts["skipped"],
    )
    tokenizer = BertTokenizerFast(
        tokenizer_object=backend,
        do_lower_case=lowercase,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    return save_directory_atomically(tokenizer.save_pretrained, out_dir)


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

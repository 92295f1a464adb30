"""Word-piece ids of report sentences: one call to the Rust tokenizer per batch, plus caches.

The engine under :class:`velvet.data.tokenization.TriBertTokenizer`; it produces flat numpy ids,
the layout is built elsewhere (:mod:`velvet.data.tokenization_layout`). Measured on the CT-RATE
reports, what makes it fast:

- sentences are joined with a separator token, ~64 per string: creating one ``Encoding`` per
  sentence costs more than tokenising it;
- text is normalised in Python (``str.lower`` for printable ASCII, exactly what
  ``BertNormalizer`` does to it; the backend's own normaliser otherwise) and the Rust side runs
  without its Unicode normaliser;
- encodings are cached per sentence (reports repeat template sentences) and per report (the
  same reports come back every epoch). Both caches are bounded; sentence dropping happens
  after them, so a cached report still drops different sentences under a different seed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from velvet.data.errors import ReportError

__all__ = ["SentenceEncoder", "report_digest"]

_SEPARATED_CHUNK = 64  # sentences per joined string handed to the Rust tokenizer

Encoded = tuple[np.ndarray, np.ndarray, bytes]  # (piece ids (P_b,), pieces per sentence (S_b,), digest)


def report_digest(report: str | Sequence[str]) -> bytes:
    """Content key of a report: stable across processes (unlike ``hash``), 16 bytes in the caches."""
    text = report if isinstance(report, str) else "\x1f".join(report) + "\x1f"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _BoundedCache(dict):
    """A dict that forgets its oldest half when it grows past ``capacity`` (0: stores nothing)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, key: Any, value: Any) -> None:
        if self.capacity <= 0:
            return
        if len(self) >= self.capacity:
            for old in list(self)[: max(1, len(self) // 2)]:  # dicts keep insertion order
                del self[old]
        self[key] = value


class SentenceEncoder:
    """Encode sentences with a Hugging Face fast WordPiece tokenizer, exactly as it would.

    Args:
        tokenizer: the fast tokenizer (its special tokens already added).
        cache_size: reports whose encodings are kept (and 16x as many sentences); 0 disables.

    Attributes:
        is_continuation: ``(V,)`` bool, True for ids of ``##`` pieces (they do not start a word).
    """

    def __init__(self, tokenizer: Any, *, cache_size: int) -> None:
        from tokenizers import Tokenizer
        from tokenizers.normalizers import BertNormalizer

        backend = tokenizer.backend_tokenizer
        normalizer = backend.normalizer
        self.cache_size = cache_size
        self._encoder = Tokenizer.from_str(backend.to_str())
        self._encoder.normalizer = None
        self._encoder.no_truncation()
        self._encoder.no_padding()
        # printable ASCII needs only lower-casing (or nothing) under BertNormalizer; other text,
        # or other normalisers, go through the backend's own normaliser
        self._ascii_lower: bool | None = None
        if normalizer is None:
            self._ascii_lower = False
        elif isinstance(normalizer, BertNormalizer):
            self._ascii_lower = bool(normalizer.lowercase)
        self._normalize_str: Callable[[str], str] = normalizer.normalize_str if normalizer else str
        prefix = backend.model.continuing_subword_prefix
        self.is_continuation = np.zeros(len(tokenizer), dtype=bool)
        for token, index in tokenizer.get_vocab().items():
            if token.startswith(prefix) and len(token) > len(prefix):
                self.is_continuation[index] = True
        # literal special-token text in a report ("[SEP]") must stay text: a space after its
        # opening bracket gives the pre-tokens the text has without the added-token match
        added = [t.content for t in backend.get_added_tokens_decoder().values()]
        breakable = sorted((t for t in added if t and not t[0].isalnum()), key=len, reverse=True)
        self._special_text = re.compile("|".join(map(re.escape, breakable))) if breakable else None
        self._sep_id = int(tokenizer.sep_token_id)
        self._separator = tokenizer.sep_token if tokenizer.sep_token in breakable else None
        if self._separator is not None:
            probe = self._encoder.encode(f"a {self._separator} b", add_special_tokens=False).ids
            if probe.count(self._sep_id) != 1:
                self._separator = None  # not matched as one token: one Encoding per sentence
        self._clear_caches()

    def _clear_caches(self) -> None:
        self._reports = _BoundedCache(self.cache_size)
        self._sentences = _BoundedCache(16 * self.cache_size)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: do not ship the caches
        state = self.__dict__.copy()
        state["_reports"] = state["_sentences"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._clear_caches()

    def encode_reports(
        self,
        reports: Sequence[str] | Sequence[Sequence[str]],
        split: Callable[[Any, str], list[str]],
        sources: Sequence[str],
    ) -> list[Encoded]:
        """Per report: (piece ids of all its sentences, pieces per sentence, content digest).

        Sentences without any piece (text the normaliser removes, e.g. only accents) are left out.

        Args:
            reports: the reports (strings or sentence lists).
            split: ``split(report, source) -> sentences`` for reports not in the cache.
            sources: names for error messages.

        Raises:
            ReportError: from ``split``, or a report whose text the normaliser removes entirely.
        """
        out: list[Any] = [None] * len(reports)
        todo: list[tuple[int, bytes, list[str]]] = []
        for i, report in enumerate(reports):
            key = report_digest(report)
            hit = self._reports.get(key)
            if hit is not None:
                out[i] = (*hit, key)
            else:
                todo.append((i, key, split(report, sources[i])))
        if not todo:
            return out
        cache = self._sentences
        missing = list(dict.fromkeys(s for _, _, sents in todo for s in sents if s not in cache))
        fresh = dict(zip(missing, self.encode_sentences(missing), strict=True))
        for i, key, sents in todo:
            pieces = [fresh[s] if s in fresh else cache[s] for s in sents]
            lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
            if not lengths.all():  # text the normaliser removes entirely is no sentence
                lengths = lengths[lengths > 0]
                if not len(lengths):
                    raise ReportError(
                        sources[i], "report has no token left after the tokenizer's normalisation"
                    )
            entry = (np.concatenate(pieces), lengths)
            self._reports.put(key, entry)
            out[i] = (*entry, key)
        for sentence, ids in fresh.items():
            cache.put(sentence, ids)
        return out

    def encode_sentences(self, sentences: list[str]) -> list[np.ndarray]:
        """Piece ids (int64) of each sentence, from ONE call to the Rust tokenizer (no cache)."""
        if not sentences:
            return []
        texts = [self._prepare(s) for s in sentences]
        if self._separator is None:
            encodings = self._encoder.encode_batch_fast(texts, add_special_tokens=False)
            return [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        sep = f" {self._separator} "
        joined = [
            sep.join(texts[i : i + _SEPARATED_CHUNK]) + sep for i in range(0, len(texts), _SEPARATED_CHUNK)
        ]
        encodings = self._encoder.encode_batch_fast(joined, add_special_tokens=False)
        ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])
        ends = np.flatnonzero(ids == self._sep_id)
        if len(ends) != len(texts):  # cannot happen once special text is disarmed; never guess
            raise RuntimeError(f"separator count {len(ends)} != sentence count {len(texts)}")
        starts = np.concatenate(([0], ends[:-1] + 1))
        return [ids[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]

    def _prepare(self, sentence: str) -> str:
        """What the normaliser-free encoder is given: normalised, special-token text disarmed."""
        if self._ascii_lower is not None and sentence.isascii() and sentence.isprintable():
            text = sentence.lower() if self._ascii_lower else sentence
        else:
            text = self._normalize_str(sentence)
        if self._special_text is not None and self._special_text.search(text):
            text = self._special_text.sub(lambda m: f"{m.group()[0]} {m.group()[1:]}", text)
        return text

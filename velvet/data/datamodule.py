"""The pretraining DataModule: manifest (or generated phantoms) -> cached volumes + tokenised reports.

On top of :class:`~velvet.data.datamodule_base.ManifestDataModule` (manifest, cache, splits,
loaders, skip policy, augmentation): ``prepare_data`` trains the WordPiece vocabulary once per
machine if no tokenizer is given; ``setup`` loads the tokenizer on every rank; batches are tokenised
whole in the collator.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from velvet.data.collate import VolumeReportCollator
from velvet.data.datamodule_base import EpochSeededSampler, ManifestDataModule
from velvet.data.dataset import ErrorPolicy
from velvet.data.manifest import Manifest

__all__ = ["EpochSeededSampler", "VelvetDataModule"]

logger = logging.getLogger(__name__)


class VelvetDataModule(ManifestDataModule):
    """Volumes and reports from a manifest, for pretraining and evaluation.

    Args:
        manifest, phantoms, data_dir, preprocess, batch_size, eval_batch_size, num_workers,
            cache_dir, warm_cache, on_error, label_maps, augment, seed: see
            :class:`~velvet.data.datamodule_base.ManifestDataModule`.
        tokenizer: a local tokenizer folder (a velvet vocabulary, or a BERT / CXR-BERT folder whose
            vocabulary is used with ``[SEN_k]`` added). None trains a WordPiece vocabulary on the
            train reports (once; kept in ``data_dir``).
        tokenizer_options: extra :class:`~velvet.data.tokenization.TriBertTokenizer` options
            (``max_length``, ``max_sentences``, ``sentence_modeling`` ...). The model takes the
            token facts from here (:meth:`velvet.models.config.VelvetConfig.for_data`).
        vocab_size: size of a vocabulary trained here.
    """

    def __init__(
        self,
        manifest: str | None = None,
        *,
        phantoms: dict[str, Any] | None = None,
        data_dir: str = "runs/data",
        preprocess: str | dict[str, Any] = "ct_rate",
        tokenizer: str | None = None,
        tokenizer_options: dict[str, Any] | None = None,
        vocab_size: int = 4000,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        cache_dir: str | None = None,
        warm_cache: bool = True,
        on_error: ErrorPolicy = "raise",
        label_maps: bool = False,
        augment: list[dict[str, Any]] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            manifest,
            phantoms=phantoms,
            data_dir=data_dir,
            preprocess=preprocess,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            cache_dir=cache_dir,
            warm_cache=warm_cache,
            on_error=on_error,
            label_maps=label_maps,
            augment=augment,
            require_report=True,
            seed=seed,
        )
        self.save_hyperparameters()
        self.tokenizer_path = tokenizer
        self.tokenizer_options = dict(tokenizer_options or {})
        self.vocab_size = vocab_size
        self.tokenizer: Any = None
        self.tokenizer_dir: str | None = None

    def prepare_task_data(self, manifest: Manifest) -> None:
        if self.tokenizer_path is None:
            self._train_tokenizer(manifest)

    def _tokenizer_dir(self, manifest: Manifest) -> Path:
        # keyed by the training corpus and size, so a changed manifest never reuses a stale vocab
        h = hashlib.sha256(f"{self.vocab_size}".encode())
        for text in self._train_reports(manifest):
            h.update(text.encode() + b"\0")
        return self.data_dir / f"tokenizer-{h.hexdigest()[:12]}"

    def _train_reports(self, manifest: Manifest) -> Iterator[str]:
        # the raw training reports, less those check_reports found unusable (on_error="skip")
        for r in manifest.split("train"):
            if r.id not in self.bad_reports:
                yield r.load_report() or ""

    def _train_tokenizer(self, manifest: Manifest) -> Path:
        from velvet.data.tokenizer_training import train_wordpiece

        out = self._tokenizer_dir(manifest)
        if not out.exists():
            train_wordpiece(self._train_reports(manifest), out, vocab_size=self.vocab_size)
        return out

    def setup_task(self, manifest: Manifest) -> None:
        from velvet.data.tokenization import TriBertTokenizer

        self.tokenizer_dir = self.tokenizer_path or str(self._tokenizer_dir(manifest))
        self.tokenizer = TriBertTokenizer.from_pretrained(self.tokenizer_dir, seed=self.seed, **self.tokenizer_options)

    def collate_fn(self) -> Any:
        return VolumeReportCollator(self.tokenizer, seed=self.seed)

"""Image features of manifest records, computed once and cached per (model, contract, file).

Every protocol starts from the same per-volume features: the report-level ``embedding`` ``(E,)``,
the encoder's ``pooled`` top map ``(C,)`` (what a linear probe reads) and, when a protocol scores
words or sentences against regions, the projected ``word_regions`` / ``sentence_regions``
``(R, E)``. They are stored in one safetensors file per model and contract,
``<cache_dir>/<model hash>-<contract hash>.safetensors``, each tensor named
``<file identity>.<feature>``. The file identity hashes the volume's bytes (a DICOM folder's
files and names; memoised by stat signature) and the record's spacing/rescale overrides, so a
renamed file hits the cache and an edited one does not. The file is rewritten atomically after new
entries are computed; protocols run one after another reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from velvet.utils.atomic import atomic_path
from velvet.utils.hashing import sha256_text

__all__ = [
    "FEATURES",
    "EmbeddingCache",
    "compute_features",
    "file_identity",
    "image_features",
    "model_fingerprint",
]

logger = logging.getLogger(__name__)

FEATURES = ("embedding", "pooled", "word_regions", "sentence_regions")
CACHE_FORMAT = "velvet-embeddings"
CACHE_VERSION = 1


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the model's state dict: names, dtypes, shapes and bytes, in name order.

    Identical weights give the identical hash whatever file or device they came from.
    """
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def file_identity(record: Any, memo_dir: str | os.PathLike[str] | None = None) -> str:
    """Content identity of a manifest record's volume (plus its spacing / rescale overrides)."""
    from velvet.data.cache import content_digest

    payload = {
        "volume": content_digest(record.volume, memo_dir),
        "spacing": getattr(record, "spacing", None),
        "rescale": getattr(record, "rescale", None),
    }
    return sha256_text(json.dumps(payload, sort_keys=True))


class EmbeddingCache:
    """The features of one model under one contract, in one safetensors file.

    Args:
        root: cache folder.
        model_hash: :func:`model_fingerprint` of the model.
        contract_hash: the preprocessing contract's ``fingerprint()``.
    """

    def __init__(self, root: str | os.PathLike[str], model_hash: str, contract_hash: str) -> None:
        self.root = Path(root)
        self.model_hash = model_hash
        self.contract_hash = contract_hash
        self.path = self.root / f"{model_hash[:16]}-{contract_hash[:16]}.safetensors"
        self.memo_dir = self.root / "digests"
        self._entries: dict[str, dict[str, torch.Tensor]] | None = None
        self._dirty = False

    def _load(self) -> dict[str, dict[str, torch.Tensor]]:
        if self._entries is not None:
            return self._entries
        from safetensors import SafetensorError, safe_open

        entries: dict[str, dict[str, torch.Tensor]] = {}
        if self.path.exists():
            try:
                with safe_open(str(self.path), framework="pt") as fh:
                    meta = fh.metadata() or {}
                    if meta.get("model") != self.model_hash or meta.get("contract") != self.contract_hash:
                        raise ValueError("written for another model or contract")
                    for name in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                        key, _, feature = name.partition(".")
                        entries.setdefault(key, {})[feature] = fh.get_tensor(name)
            except (SafetensorError, OSError, ValueError) as err:
                # a damaged cache costs a recomputation, never a wrong feature
                logger.warning("embedding cache %s is unusable (%s): recomputing", self.path, err)
                entries = {}
        self._entries = entries
        return entries

    def get(self, key: str, features: Sequence[str]) -> dict[str, torch.Tensor] | None:
        """The cached features of ``key`` if all of ``features`` are there, else None."""
        entry = self._load().get(key)
        if entry is None or any(f not in entry for f in features):
            return None
        return {f: entry[f] for f in features}

    def put(self, key: str, values: dict[str, torch.Tensor]) -> None:
        """Remember features of ``key`` (written by :meth:`save`)."""
        self._load().setdefault(key, {}).update({k: v.detach().cpu().contiguous() for k, v in values.items()})
        self._dirty = True

    def save(self) -> None:
        """Write the file atomically if anything was added."""
        if not self._dirty:
            return
        from safetensors.torch import save_file

        tensors = {f"{key}.{name}": t for key, entry in self._load().items() for name, t in entry.items()}
        meta = {
            "format": CACHE_FORMAT,
            "format_version": str(CACHE_VERSION),
            "model": self.model_hash,
            "contract": self.contract_hash,
        }
        with atomic_path(self.path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        self._dirty = False


def image_features(model: Any, image: torch.Tensor, features: Sequence[str]) -> dict[str, torch.Tensor]:
    """The requested :data:`FEATURES` of a ``(B, 1, H, W, D)`` model-input batch, one encoder pass.

    ``<level>_regions`` are the level's vision map projected into the shared space, ``(B, R, E)``.
    """
    out = model.encode_image(image)
    result: dict[str, torch.Tensor] = {}
    if "embedding" in features:
        result["embedding"] = out["embedding"]
    if "pooled" in features:
        result["pooled"] = out["pooled"]
    for level in ("word", "sentence"):
        if f"{level}_regions" in features:
            result[f"{level}_regions"] = model.image_regions(out["maps"], level)
    return result


@torch.no_grad()
def compute_features(
    model: Any,
    records: Sequence[Any],
    features: Sequence[str] = ("embedding",),
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    volume_cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    progress: bool | None = None,
    desc: str = "embedding",
) -> dict[str, torch.Tensor]:
    """Features of every record's volume, stacked in record order, from the cache where possible.

    Args:
        model: a :class:`~velvet.models.velvet.VelvetModel` with a ``preprocess`` contract; run in
            eval mode on its own device.
        records: manifest records (``volume``, ``spacing``, ``rescale``, ``id``).
        features: subset of :data:`FEATURES`.
        cache_dir: the embedding cache folder (None: no cache).
        volume_cache_dir: a :class:`~velvet.data.cache.VolumeCache` folder of preprocessed volumes
            to read from and fill (e.g. the training run's cache); None preprocesses each file.
        batch_size: volumes per forward pass.
        progress: show a progress bar (None: only on a terminal).
        desc: the progress bar's label.

    Returns:
        ``feature -> (N, ...)`` float32 CPU tensors.

    Raises:
        velvet.data.errors.DataError: an unreadable volume (the error names the file and case).
    """
    from tqdm import tqdm

    from velvet.data.cache import UncachedVolumes, VolumeCache

    unknown = sorted(set(features) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown features {unknown}; known: {list(FEATURES)}")
    if model.preprocess is None:
        raise RuntimeError("the model has no preprocessing contract (load it with from_pretrained)")
    model.eval()
    device = next(model.parameters()).device
    contract = model.preprocess
    cache = EmbeddingCache(cache_dir, model_fingerprint(model), contract.fingerprint()) if cache_dir else None
    source = VolumeCache(volume_cache_dir, contract) if volume_cache_dir else UncachedVolumes(contract)
    rows: list[dict[str, torch.Tensor] | None] = [None] * len(records)
    keys: list[str | None] = [None] * len(records)
    todo: list[int] = []
    for i, record in enumerate(records):
        if cache is not None:
            keys[i] = file_identity(record, cache.memo_dir)
            rows[i] = cache.get(keys[i], features)  # type: ignore[arg-type]
        if rows[i] is None:
            todo.append(i)
    bar = tqdm(
        total=len(todo),
        desc=desc,
        unit="vol",
        disable=(not sys.stderr.isatty()) if progress is None else not progress,
    )
    try:
        for start in range(0, len(todo), batch_size):
            part = todo[start : start + batch_size]
            image = torch.stack(
                [torch.as_tensor(source.get_or_create(records[i])["image"]).float() for i in part]
            )
            values = image_features(model, image.to(device), features)
            for j, i in enumerate(part):
                rows[i] = {k: v[j].float().cpu() for k, v in values.items()}
                if cache is not None:
                    cache.put(keys[i], rows[i])  # type: ignore[arg-type]
            bar.update(len(part))
    finally:
        bar.close()
        if cache is not None:
            cache.save()  # keep what was computed, even when a later file fails
    if not records:
        raise ValueError("no records to embed")
    return {f: torch.stack([row[f] for row in rows]) for f in features}  # type: ignore[index]

"""An embedding index file: one safetensors file with the embeddings and what produced them.

The tensor ``embeddings`` ``(N, E)`` holds L2-normalised image embeddings; the metadata holds the
``paths`` (JSON list, row order), the ``model`` that produced them (a directory or registry name,
so a search encodes its query with the same model), and the format version. Written to a temporary
file and renamed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from velvet.utils.atomic import atomic_path

__all__ = ["EmbeddingIndex", "read_index", "write_index"]

INDEX_FORMAT = "velvet-index"
INDEX_VERSION = 1


@dataclass
class EmbeddingIndex:
    """Embeddings ``(N, E)``, the ``N`` source paths, and the producing model."""

    embeddings: torch.Tensor
    paths: list[str]
    model: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.paths):
            raise ValueError(
                f"index needs (N, E) embeddings for N paths, got {tuple(self.embeddings.shape)} and {len(self.paths)} paths"
            )

    def search(self, queries: torch.Tensor, top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k rows per query by cosine similarity.

        Args:
            queries: ``(Q, E)`` L2-normalised query embeddings.
            top_k: results per query (capped at ``N``).

        Returns:
            ``scores`` and ``indices``, both ``(Q, k)``, best first.
        """
        if queries.shape[-1] != self.embeddings.shape[1]:
            raise ValueError(
                f"query width {queries.shape[-1]} does not match the index's {self.embeddings.shape[1]} (another model?)"
            )
        sims = queries.float() @ self.embeddings.float().T
        k = min(top_k, sims.shape[1])
        return sims.topk(k, dim=1)


def write_index(index: EmbeddingIndex, path: str | os.PathLike[str]) -> Path:
    """Write ``index`` to a ``.safetensors`` file atomically."""
    from safetensors.torch import save_file

    target = Path(path)
    metadata = {
        "format": INDEX_FORMAT,
        "format_version": str(INDEX_VERSION),
        "paths": json.dumps(index.paths),
        "model": index.model,
        "extra": json.dumps(index.metadata),
    }
    with atomic_path(target) as tmp:
        save_file({"embeddings": index.embeddings.detach().cpu().contiguous()}, str(tmp), metadata=metadata)
    return target


def read_index(path: str | os.PathLike[str]) -> EmbeddingIndex:
    """Read an index written by :func:`write_index`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a velvet index.
    """
    from safetensors import SafetensorError, safe_open

    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such index file")
    try:
        with safe_open(str(source), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != INDEX_FORMAT or "embeddings" not in fh.keys():  # noqa: SIM118 (safe_open has no __contains__)
                raise ValueError(f"{source}: not a velvet embedding index (write one with `velvet embed`)")
            embeddings = fh.get_tensor("embeddings")
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{source}: unreadable index file ({err})") from err
    if int(meta.get("format_version", "0")) > INDEX_VERSION:
        raise ValueError(f"{source}: index format {meta['format_version']} is newer than this velvet reads")
    return EmbeddingIndex(
        embeddings=embeddings,
        paths=json.loads(meta["paths"]),
        model=meta.get("model", ""),
        metadata=json.loads(meta.get("extra", "{}")),
    )

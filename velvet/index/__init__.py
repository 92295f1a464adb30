"""Embedding indexes: volumes embedded by a model, searchable by report text."""

from velvet.index.store import EmbeddingIndex, read_index, write_index

__all__ = ["EmbeddingIndex", "read_index", "write_index"]

"""Segmentation class maps: names of label ids, reading ``classes.json``, selecting a subset.

A class map lists every class of a label map, background (id 0) first. Converters and the phantom
generator write it as ``classes.json`` beside the manifest (``{"0": "background", "1": "liver", ...}``).
:class:`ClassMap` keeps the dataset's names and, when a recipe selects a subset, the lookup table
that maps every dataset id to its new id (1..K in the order selected; the others become 0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CLASSES_FILE", "ClassMap", "read_class_names"]

CLASSES_FILE = "classes.json"


def read_class_names(source: str | os.PathLike[str] | Mapping[str, Any] | Sequence[str]) -> list[str]:
    """Class names by id from a ``classes.json`` file, an ``{id: name}`` mapping or a list.

    Raises:
        FileNotFoundError: no such file.
        ValueError: ids that are not 0..K-1 without gaps, duplicate names, or fewer than 2 classes.
    """
    where = "class map"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no class map (a JSON {{\"0\": \"background\", \"1\": ...}})")
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if isinstance(source, Mapping) and "labels" in source and isinstance(source["labels"], Mapping):
            source = source["labels"]  # a decathlon dataset.json
    if isinstance(source, Mapping):
        try:
            ids = {int(k): str(v) for k, v in source.items()}
        except (TypeError, ValueError):
            raise ValueError(f"{where}: class ids must be integers, got {sorted(source)}") from None
        if sorted(ids) != list(range(len(ids))):
            raise ValueError(f"{where}: class ids must be 0..{len(ids) - 1} without gaps, got {sorted(ids)}")
        names = [ids[i] for i in range(len(ids))]
    else:
        names = [str(n) for n in source]
    if len(names) < 2:
        raise ValueError(f"{where}: needs background and at least one class, got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: duplicate class names in {names}")
    return names


@dataclass(frozen=True)
class ClassMap:
    """The dataset's classes and the classes a model learns.

    Attributes:
        source_names: the dataset's class names by id (background first).
        names: the classes learned, background first (the dataset's, or background + the selection).
        lut: ``(len(source_names),)`` int64 table: dataset id -> learned id.
    """

    source_names: tuple[str, ...]
    names: tuple[str, ...]
    lut: np.ndarray

    @classmethod
    def create(cls, source_names: Sequence[str], select: Sequence[str] | None = None) -> ClassMap:
        """All classes, or background + ``select`` (ids 1..K in that order).

        Raises:
            ValueError: a selected name the dataset does not have (the message lists the known ones).
        """
        source = tuple(source_names)
        if not select:
            return cls(source, source, np.arange(len(source), dtype=np.int64))
        unknown = [s for s in select if s not in source[1:]]
        if unknown:
            raise ValueError(f"unknown class(es) {unknown}; the data has {list(source[1:])}")
        if len(set(select)) != len(select):
            raise ValueError(f"select_classes has duplicates: {list(select)}")
        lut = np.zeros(len(source), dtype=np.int64)
        for new, name in enumerate(select, start=1):
            lut[source.index(name)] = new
        return cls(source, (source[0], *select), lut)

    @property
    def identity(self) -> bool:
        return self.names == self.source_names

    def apply(self, labels: Any, *, where: str = "label map") -> Any:
        """Check dataset ids and map them to learned ids (a torch tensor or numpy array of ints).

        Raises:
            ValueError: a label id outside the dataset's classes (the message says which and where).
        """
        import torch

        high, low = int(labels.max()), int(labels.min())
        if low < 0 or high >= len(self.source_names):
            bad = low if low < 0 else high
            raise ValueError(
                f"{where}: label id {bad} is not one of the {len(self.source_names)} classes "
                f"(0..{len(self.source_names) - 1}) of the class map"
            )
        if self.identity:
            return labels
        if isinstance(labels, torch.Tensor):
            return torch.as_tensor(self.lut, device=labels.device)[labels.long()].to(labels.dtype)
        return self.lut[labels].astype(labels.dtype)

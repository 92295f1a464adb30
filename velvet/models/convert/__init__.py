"""Converters from third-party checkpoints to velvet encoders, loaded strictly with a readable diff.

=========================================== ================================= ==========================
source checkpoint                           velvet target                     entry point
=========================================== ================================= ==========================
BERT / CXR-BERT (``BertModel``,             :class:`~velvet.models.text.      :func:`load_bert_weights`
``BertForMaskedLM``, M3D-CLIP's text tower) tribert.TriBert` (text layers)
MONAI SwinUNETR self-supervised weights     :class:`~velvet.models.vision.    :func:`load_swin_weights`
(``model_swinvit.pt``), SwinUNETR, DAE      swin.SwinEncoder3D`
M3D-CLIP / MONAI 3D ViT                     :class:`~velvet.models.vision.    :func:`load_vit_weights`
                                            vit.ViTEncoder3D`
=========================================== ================================= ==========================

Each converter is a pure mapping ``convert_<x>_state_dict(...) -> dict[str, Tensor]`` plus a
``load_<x>_weights(model, source, *, strict=True) -> ConversionReport`` that reads a file (safetensors,
or a pickle through ``torch.load(weights_only=True)``), converts, and loads with
:func:`~velvet.models.weights.load_state_dict_checked`. The encoder inside a checkpoint is found by the
prefix of one anchor key (e.g. ``...patch_embed.proj.weight``), so wrapper prefixes (``module.``,
``bert.``, ``swinViT.``, ``vision_encoder.``) need no option; keys outside that prefix (other towers,
heads, decoders) are dropped and listed in the report.

This module is light: the converters (which import torch, MONAI and transformers) load on first access.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from velvet._lazy import lazy_exports

if TYPE_CHECKING:
    import torch
    from torch import nn

    from velvet.models.weights import StateDictDiff

__all__ = [
    "ConversionReport",
    "convert_bert_state_dict",
    "convert_swin_state_dict",
    "convert_vit_state_dict",
    "load_bert_weights",
    "load_swin_weights",
    "load_vit_weights",
]

logger = logging.getLogger(__name__)

WeightsSource = Mapping[str, Any] | str | os.PathLike[str]

# Checkpoint wrappers whose value is the state dict: MONAI SSL ({"state_dict": ...}), Lightning,
# the DAE weights MONAI's `filter_swinunetr` documents ({"model": ...}).
_WRAPPER_KEYS = ("state_dict", "model", "module", "net")

_LAZY = {
    "convert_bert_state_dict": "velvet.models.convert.bert",
    "load_bert_weights": "velvet.models.convert.bert",
    "convert_swin_state_dict": "velvet.models.convert.swin",
    "load_swin_weights": "velvet.models.convert.swin",
    "convert_vit_state_dict": "velvet.models.convert.vit",
    "load_vit_weights": "velvet.models.convert.vit",
}


@dataclass
class ConversionReport:
    """What a conversion did besides copying tensors one to one.

    Attributes:
        source: the file name, or ``"state dict"``.
        prefix: the key prefix of the encoder inside the checkpoint (``""`` when there is none).
        dropped: source keys (as named in the checkpoint) with no place in the target: the documented
            drops of the converter (heads, decoders, other towers, pooler).
        initialized: target keys the checkpoint did not provide, left at the model's initialisation
            (the converter's documented new parts; with ``strict=False`` also whatever was missing).
        derived: target key -> how it was built when not copied unchanged (expanded, reshaped, renamed).
        skipped: with ``strict=False``, converted keys that did not fit the model and were not loaded.
    """

    source: str
    prefix: str
    dropped: list[str] = field(default_factory=list)
    initialized: list[str] = field(default_factory=list)
    derived: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{self.source} (prefix {self.prefix!r}): {len(self.dropped)} source keys dropped, "
            f"{len(self.initialized)} target keys newly initialised, {len(self.derived)} derived, "
            f"{len(self.skipped)} skipped"
        )


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


# ---------------------------------------------------------------- helpers shared by the converters


def read_state_dict(source: WeightsSource) -> tuple[dict[str, torch.Tensor], str]:
    """The flat ``name -> tensor`` mapping of a checkpoint, and a name for messages.

    Args:
        source: a state dict, a checkpoint dict wrapping one under ``state_dict`` / ``model`` /
            ``module`` / ``net``, or a path to such a file (read with
            :func:`~velvet.models.weights.read_weights`: safetensors, or ``torch.load(weights_only=True)``).

    Raises:
        ValueError: an unreadable file, or a mapping that is not (a wrapper of) a state dict.
    """
    import torch

    from velvet.models.weights import read_weights

    if isinstance(source, str | os.PathLike):
        data: Mapping[str, Any] = read_weights(source)
        name = os.fspath(source)
    elif isinstance(source, Mapping):
        data, name = source, "state dict"
    else:
        raise TypeError(f"source must be a state dict or a path, got {type(source).__name__}")
    while not all(isinstance(v, torch.Tensor) for v in data.values()):
        inner = next((k for k in _WRAPPER_KEYS if isinstance(data.get(k), Mapping)), None)
        if inner is None:
            bad = next(k for k, v in data.items() if not isinstance(v, torch.Tensor))
            raise ValueError(
                f"{name}: expected a state dict of tensors (or one wrapped under {list(_WRAPPER_KEYS)}), "
                f"but key {bad!r} holds a {type(data[bad]).__name__}; top-level keys: {_few(data)}"
            )
        data = data[inner]
    return dict(data), name


def find_prefix(keys: Iterable[str], anchor: str, *, layout: str, examples: Iterable[str]) -> str:
    """The prefix ``p`` such that ``p + anchor`` is a key, e.g. ``"module.swinViT."``.

    Raises:
        ValueError: no key ends with ``anchor`` (wrong layout: the message shows the expected layout
            and some of the keys found), or several prefixes do (ambiguous: pass ``prefix=``).
    """
    keys = list(keys)
    prefixes = sorted(k[: -len(anchor)] for k in keys if k == anchor or k.endswith("." + anchor))
    if not prefixes:
        raise ValueError(
            f"not a {layout} checkpoint: expected a key ending in {anchor!r} (e.g. {list(examples)}); "
            f"found {len(keys)} keys such as {_few(keys)}"
        )
    if len(prefixes) > 1:
        raise ValueError(f"several {layout} encoders in the checkpoint (prefixes {prefixes}); pass prefix=")
    return prefixes[0]


def split_prefix(
    state_dict: Mapping[str, torch.Tensor], prefix: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(keys under prefix with the prefix removed, the other keys)``.

    Raises:
        ValueError: no key starts with ``prefix``.
    """
    inside = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not inside:
        raise ValueError(f"no key starts with prefix {prefix!r}; keys such as {_few(state_dict)}")
    return inside, sorted(k for k in state_dict if not k.startswith(prefix))


def load_converted(
    model: nn.Module,
    converted: Mapping[str, torch.Tensor],
    report: ConversionReport,
    *,
    strict: bool,
    allowed_missing: Iterable[str] = (),
) -> ConversionReport:
    """Load ``converted`` with :func:`~velvet.models.weights.load_state_dict_checked` and finish ``report``.

    Args:
        allowed_missing: target key prefixes that may be absent even when strict (documented new parts).

    Raises:
        WeightsMismatchError: when ``strict`` and a key is missing, unexpected or of another shape.
    """
    from velvet.models.weights import load_state_dict_checked

    diff: StateDictDiff = load_state_dict_checked(
        model, converted, strict=strict, ignore_missing=tuple(allowed_missing), source=report.source
    )
    report.initialized = sorted(k for k in model.state_dict() if k not in converted)
    report.skipped = sorted({*diff.unexpected, *diff.mismatched})
    if diff:
        logger.warning(
            "loaded %s non-strictly into %s:\n%s", report.source, type(model).__name__, diff.format()
        )
    logger.info("%s", report.summary())
    return report


def _few(keys: Iterable[str], n: int = 6) -> list[str]:
    keys = list(keys)
    return keys[:n] + ([f"... ({len(keys) - n} more)"] if len(keys) > n else [])

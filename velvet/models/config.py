"""Named VELVET architectures, stored as data (``velvet/models/configs/*.json``).

A :class:`VelvetConfig` says which encoders to build (by preset name plus overrides, or full
field dicts) and which objective heads exist. Tokenizer facts (vocabulary size, padding id,
number of sentence types) are not part of a preset: :meth:`VelvetConfig.for_tokenizer` fills them
in when the model is built, and the resolved config is what checkpoints store.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "OBJECTIVES",
    "VelvetConfig",
    "add_model_config",
    "get_model_config",
    "list_models",
]

# every pretraining objective; a model builds the heads of the ones it lists
OBJECTIVES = ("itc_report", "itc_sentence", "itc_word", "vis_ssl", "txt_mlm", "itm", "mm_mlm")
_NEEDS_FUSION = ("itm", "mm_mlm")


@dataclass(frozen=True)
class VelvetConfig:
    """Architecture of a :class:`~velvet.models.velvet.VelvetModel`.

    Attributes:
        name: the architecture name (``velvet-btsv`` ...).
        vision: vision encoder: ``{"preset": "swin-sv", **overrides}`` or a full config dict with ``"arch"``.
        text: text encoder: ``{"preset": "bt-mm", **overrides}`` or full ``TextEncoderConfig`` fields.
        objectives: objectives whose heads are built (subset of :data:`OBJECTIVES`).
        embed_dim: width of the shared image-text spaces (512 in the paper).
        init_temperature: initial contrastive temperature (0.07; learnable, log-parameterised).
        max_logit_scale: clamp of 1 / temperature (100).
        sentence_level: index of the vision map aligned with sentences (-2: "middle", 6^3 at 96^3 input).
        word_level: index of the vision map aligned with words (-3: "bottom", 12^3).
        ssl_embed_dim: width of the vision-SSL contrastive projection (512).
        projection_norm: ``"none"`` (the reference's plain linear projections) or ``"batch"``
            (batch-standardised projections, which keep contrastive training from scratch out of
            the all-embeddings-equal solution; see :class:`~velvet.models.heads.projection.ProjectionHead`).
    """

    name: str = "custom"
    vision: dict[str, Any] = field(default_factory=lambda: {"preset": "swin-sv"})
    text: dict[str, Any] = field(default_factory=lambda: {"preset": "bt-mm"})
    objectives: tuple[str, ...] = OBJECTIVES
    embed_dim: int = 512
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    sentence_level: int = -2
    word_level: int = -3
    ssl_embed_dim: int = 512
    projection_norm: str = "none"

    def __post_init__(self) -> None:
        objectives = tuple(self.objectives)
        unknown = sorted(set(objectives) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown}; known: {list(OBJECTIVES)}")
        if not objectives:
            raise ValueError("a model needs at least one objective")
        if "itm" in objectives and "itc_report" not in objectives:
            raise ValueError(
                "itm samples hard negatives from the report-level similarities: add 'itc_report'"
            )
        object.__setattr__(self, "objectives", tuple(o for o in OBJECTIVES if o in objectives))
        object.__setattr__(self, "vision", dict(self.vision))
        object.__setattr__(self, "text", dict(self.text))
        if self.projection_norm not in ("none", "batch"):
            raise ValueError(f"projection_norm must be 'none' or 'batch', got {self.projection_norm!r}")
        if self.embed_dim < 1 or not 0 < self.init_temperature < 1 or self.max_logit_scale <= 1:
            raise ValueError("embed_dim must be >= 1, init_temperature in (0, 1), max_logit_scale > 1")

    @property
    def needs_fusion(self) -> bool:
        """Whether any objective runs the fusion (cross-attention) layers."""
        return any(o in self.objectives for o in _NEEDS_FUSION)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["objectives"] = list(self.objectives)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VelvetConfig:
        """Build from a dict; ``{"preset": name, **overrides}`` starts from a registered config."""
        data = dict(data)
        preset = data.pop("preset", None)
        base = get_model_config(preset).to_dict() if preset else {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s) {unknown}; known: {sorted(known)}")
        merged = {**base, **data}
        # nested encoder overrides merge into the preset's instead of replacing it
        for key in ("vision", "text"):
            if preset and key in data and "preset" not in data[key] and "arch" not in data[key]:
                merged[key] = {**base[key], **data[key]}
        return cls(**merged)

    def replace(self, **changes: Any) -> VelvetConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def for_tokenizer(self, tokenizer: Any) -> VelvetConfig:
        """Resolve the text encoder against a tokenizer (vocabulary, ids, sentence types, length).

        Args:
            tokenizer: a :class:`~velvet.data.tokenization.TriBertTokenizer`.

        Raises:
            ValueError: the tokenizer and the text config disagree on sentence modelling, or the
                tokenizer makes sequences longer than the position embeddings.
        """
        from velvet.models.text.config import TextEncoderConfig, text_encoder_config

        text = dict(self.text)
        preset = text.pop("preset", None)
        facts = {
            "vocab_size": tokenizer.vocab_size,
            "pad_token_id": tokenizer.pad_token_id,
            "type_vocab_size": tokenizer.type_vocab_size,
        }
        if preset is not None:
            resolved = text_encoder_config(preset, **{**text, **facts})
        else:
            resolved = TextEncoderConfig.from_dict({**text, **facts})
        if resolved.sentence_modeling != tokenizer.sentence_modeling:
            raise ValueError(
                f"text encoder sentence_modeling={resolved.sentence_modeling} but the tokenizer has "
                f"sentence_modeling={tokenizer.sentence_modeling}: set both the same"
            )
        if tokenizer.max_length > resolved.max_position_embeddings:
            raise ValueError(
                f"tokenizer max_length {tokenizer.max_length} exceeds the text encoder's "
                f"max_position_embeddings {resolved.max_position_embeddings}"
            )
        return self.replace(text=resolved.to_dict())


# ---------------------------------------------------------------------------------- registry

_CONFIG_DIR = Path(__file__).with_name("configs")
_REGISTRY: dict[str, VelvetConfig] = {}


def _scan() -> None:
    if _REGISTRY:
        return
    for path in sorted(_CONFIG_DIR.glob("*.json")):
        add_model_config(path)


def add_model_config(path: str | os.PathLike[str]) -> str:
    """Register an architecture from a JSON file; returns its name (the file stem if unnamed)."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data.setdefault("name", path.stem)
    config = VelvetConfig.from_dict(data)
    _REGISTRY[config.name] = config
    return config.name


def list_models() -> list[str]:
    """Names of the registered architectures."""
    _scan()
    return sorted(_REGISTRY)


def get_model_config(name: str) -> VelvetConfig:
    """A registered architecture by name.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    _scan()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {list_models()}")
    return _REGISTRY[name]

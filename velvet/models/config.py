"""Named VELVET architectures, stored as data (``velvet/models/configs/*.json``).

A :class:`VelvetConfig` says which encoders to build (by preset name plus overrides, or full
field dicts), which image-text projection levels exist and how wide the shared space is. It names
no training objective: those live on the pretraining side (:mod:`velvet.pretraining.registry`), so
a segmentation or VQA model takes "the encoders" without any pretraining head.

Facts that the data states (vocabulary size, padding id, sentence types, sentence modelling, token
length, input size) are not part of a preset: :meth:`VelvetConfig.for_data` fills them in from the
tokenizer and the preprocessing contract when the model is built, and the resolved config is what
checkpoints store.
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
    "LEVELS",
    "LOCAL_ATTENTIONS",
    "VelvetConfig",
    "upgrade_v1_architecture",
    "add_model_config",
    "get_model_config",
    "list_models",
]

# the image-text alignment levels a model can project into the shared space (method 3)
LEVELS = ("report", "sentence", "word")
# how a local level's word (or sentence) attends over the image regions; see local_similarity
LOCAL_ATTENTIONS = ("gloria", "regions")
# format-v1 architectures named their pretraining objectives; these fields are gone since v2
_V1_FIELDS = ("objectives", "ssl_embed_dim")


@dataclass(frozen=True)
class VelvetConfig:
    """Architecture of a :class:`~velvet.models.velvet.VelvetModel`.

    Attributes:
        name: the architecture name (``velvet-btsv`` ...).
        vision: vision encoder: ``{"preset": "swin-sv", **overrides}`` or a full config dict with ``"arch"``.
        text: text encoder: ``{"preset": "bt-mm", **overrides}`` or full ``TextEncoderConfig`` fields.
        levels: the image-text projection levels built (subset of :data:`LEVELS`): ``report`` (global
            embeddings, retrieval), ``sentence`` and ``word`` (local alignment maps).
        visual_adapter: build the adapter from the top vision map to the fusion layers' width
            (the visual tokens of ITM, vision-conditioned MLM and VQA); None: exactly when the text
            encoder has fusion layers.
        embed_dim: width of the shared image-text spaces (512 in the paper).
        init_temperature: initial contrastive temperature (0.07; learnable, log-parameterised).
        max_logit_scale: clamp of 1 / temperature (100).
        sentence_level: index of the vision map aligned with sentences (-2: "middle", 6^3 at 96^3 input).
        word_level: index of the vision map aligned with words (-3: "bottom", 12^3).
        projection_norm: ``"none"`` (the reference's plain linear projections) or ``"batch"``
            (batch-standardised projections, which keep contrastive training from scratch out of
            the all-embeddings-equal solution; see :class:`~velvet.models.heads.projection.ProjectionHead`).
        local_attention: how a text unit attends over the image regions in the sentence / word
            scores (:func:`~velvet.losses.local_alignment.local_similarity`): ``"gloria"`` (the
            method's: a softmax over the text's units, then over regions; near uniform over regions
            for long texts) or ``"regions"`` (one softmax over regions of the scaled cosine, which
            can point at a region: what grounding needs).
        local_temperatures: ``(temp1, temp2, temp3)`` of the local scores (4, 5, 10): attention
            sharpness, aggregation over units, score scale.
        local_agg: ``"sum"`` or ``"mean"`` aggregation of the local score over the text's units.

    The ``local_*`` fields hold no weights; they live in the architecture so that everything that
    scores or draws with the model (evaluation, zero-shot, grounding) uses what training used.
    """

    name: str = "custom"
    vision: dict[str, Any] = field(default_factory=lambda: {"preset": "swin-sv"})
    text: dict[str, Any] = field(default_factory=lambda: {"preset": "bt-mm"})
    levels: tuple[str, ...] = LEVELS
    visual_adapter: bool | None = None
    embed_dim: int = 512
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    sentence_level: int = -2
    word_level: int = -3
    projection_norm: str = "none"
    local_attention: str = "gloria"
    local_temperatures: tuple[float, float, float] = (4.0, 5.0, 10.0)
    local_agg: str = "sum"

    def __post_init__(self) -> None:
        levels = (self.levels,) if isinstance(self.levels, str) else tuple(self.levels)
        unknown = sorted(set(levels) - set(LEVELS))
        if unknown:
            raise ValueError(f"unknown projection level(s) {unknown}; known: {list(LEVELS)}")
        object.__setattr__(self, "levels", tuple(lv for lv in LEVELS if lv in levels))
        object.__setattr__(self, "vision", dict(self.vision))
        object.__setattr__(self, "text", dict(self.text))
        if self.projection_norm not in ("none", "batch"):
            raise ValueError(f"projection_norm must be 'none' or 'batch', got {self.projection_norm!r}")
        if self.local_attention not in LOCAL_ATTENTIONS:
            raise ValueError(f"local_attention must be one of {LOCAL_ATTENTIONS}, got {self.local_attention!r}")
        if self.local_agg not in ("sum", "mean"):
            raise ValueError(f"local_agg must be 'sum' or 'mean', got {self.local_agg!r}")
        temps = tuple(float(t) for t in self.local_temperatures)
        if len(temps) != 3 or min(temps) <= 0:
            raise ValueError(f"local_temperatures must be three positive numbers, got {self.local_temperatures!r}")
        object.__setattr__(self, "local_temperatures", temps)
        if self.embed_dim < 1 or not 0 < self.init_temperature < 1 or self.max_logit_scale <= 1:
            raise ValueError("embed_dim must be >= 1, init_temperature in (0, 1), max_logit_scale > 1")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["levels"] = list(self.levels)
        d["local_temperatures"] = list(self.local_temperatures)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VelvetConfig:
        """Build from a dict; ``{"preset": name, **overrides}`` starts from a registered config."""
        data = dict(data)
        preset = data.pop("preset", None)
        base = get_model_config(preset).to_dict() if preset else {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if set(unknown) & set(_V1_FIELDS):
            raise ValueError(
                f"model config field(s) {sorted(set(unknown) & set(_V1_FIELDS))} moved out of the architecture: "
                "pretraining objectives are chosen with PretrainTask(objectives=[...]) (and ssl_embed_dim there); "
                "a format-v1 config is converted by velvet.models.config.upgrade_v1_architecture"
            )
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
        """Resolve the text encoder against a tokenizer; see :meth:`for_data`."""
        return self.for_data(tokenizer=tokenizer)

    def for_data(
        self, *, tokenizer: Any = None, input_size: tuple[int, int, int] | None = None, vocab_size: int | None = None
    ) -> VelvetConfig:
        """Fill in the facts the data states, so that each is written in one place only.

        From the tokenizer: vocabulary size, ``[PAD]`` id, number of token types and whether
        sentences are modelled (the tokenizer's ``sentence_modeling`` wins: the text config does not
        repeat it). From the preprocessing contract: the vision input size (``img_size``). Without a
        tokenizer (e.g. :func:`velvet.create_model` for a model whose weights come later), the text
        side gets ``vocab_size`` (default 30,572: BERT's 30,522 pieces plus 50 ``[SEN_k]``) and the
        preset's other values.

        Args:
            tokenizer: a :class:`~velvet.data.tokenization.TriBertTokenizer`, or None.
            input_size: the contract's ``spatial_size`` ``(H, W, D)``, or None to keep the preset's.
            vocab_size: vocabulary size when there is no tokenizer.

        Raises:
            ValueError: the tokenizer makes sequences longer than the position embeddings, or the
                input size does not fit the vision encoder (its config says why).
        """
        from velvet.models.text.config import TextEncoderConfig, text_encoder_config

        text = dict(self.text)
        preset = text.pop("preset", None)
        if tokenizer is not None:
            facts: dict[str, Any] = {
                "vocab_size": tokenizer.vocab_size,
                "pad_token_id": tokenizer.pad_token_id,
                "type_vocab_size": tokenizer.type_vocab_size,
                "sentence_modeling": tokenizer.sentence_modeling,
            }
        else:
            facts = {"vocab_size": text.get("vocab_size") or vocab_size or DEFAULT_VOCAB_SIZE}
        if preset is not None:
            resolved = text_encoder_config(preset, **{**text, **facts})
        else:
            resolved = TextEncoderConfig.from_dict({**text, **facts})
        if tokenizer is not None and tokenizer.max_length > resolved.max_position_embeddings:
            raise ValueError(
                f"tokenizer max_length {tokenizer.max_length} exceeds the text encoder's "
                f"max_position_embeddings {resolved.max_position_embeddings}: shorten the reports "
                "(data tokenizer_options.max_length) or widen the position table"
            )
        config = self.replace(text=resolved.to_dict())
        if input_size is not None:
            from velvet.models.vision.factory import resolve_vision_config

            vision = resolve_vision_config(self.vision).to_dict()
            vision["img_size"] = [int(s) for s in input_size]
            config = config.replace(vision=resolve_vision_config(vision).to_dict())
        return config


DEFAULT_VOCAB_SIZE = 30_572


def upgrade_v1_architecture(data: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Convert a format-v1 architecture dict (which listed objectives) to the current fields.

    v1 built the projection levels and the visual adapter from its objectives; the same model now
    states them directly. The objectives are returned for callers that pretrain on.

    Returns:
        ``(architecture, objectives)``.
    """
    data = dict(data)
    objectives = tuple(data.pop("objectives", ()) or ())
    data.pop("ssl_embed_dim", None)
    if objectives:
        levels = []
        if {"itc_report", "itm"} & set(objectives):
            levels.append("report")
        levels += [lv for lv in ("sentence", "word") if f"itc_{lv}" in objectives]
        data.setdefault("levels", levels)
        data.setdefault("visual_adapter", bool({"itm", "mm_mlm"} & set(objectives)))
    return data, objectives


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

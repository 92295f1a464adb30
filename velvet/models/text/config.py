"""TriBERT configuration: one frozen dataclass and the named presets (method.md section 2).

The vocabulary size and the pad id are never part of a preset: they always come from the tokenizer the
model is built for (CXR-BERT's 30,522 pieces plus 50 ``[SEN_k]`` tokens gives 30,572; a tokenizer
trained on a local corpus gives something else).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import BertConfig

__all__ = ["TEXT_ENCODER_PRESETS", "TextEncoderConfig", "list_text_presets", "text_encoder_config"]

AttnImplementation = Literal["eager", "sdpa"]
_ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


@dataclass(frozen=True)
class TextEncoderConfig:
    """Architecture of a :class:`~velvet.models.text.tribert.TriBert` text encoder.

    Attributes:
        vocab_size: number of token ids (from the tokenizer, ``[SEN_k]`` tokens included).
        hidden_size: width ``E`` of every layer.
        num_text_layers: text-only BERT layers (12 for ``bt``, 6 for ``st``).
        num_fusion_layers: ALBEF-style fusion layers (self-attention, cross-attention to visual tokens,
            FFN) stacked after the text layers; 0 for a text-only encoder.
        num_attention_heads: heads per attention (6 in every reference config: 128-wide heads).
        intermediate_size: FFN width.
        max_position_embeddings: longest sequence ``L``.
        type_vocab_size: token types; type ``k`` is the sentence index (1..50), type 0 is padding.
        hidden_dropout_prob: dropout after embeddings, attention output and FFN.
        attention_probs_dropout_prob: dropout on attention probabilities.
        layer_norm_eps: LayerNorm epsilon.
        pad_token_id: id of ``[PAD]`` (from the tokenizer); its word-embedding row stays zero.
        sentence_modeling: use the tri-level attention mask (``[SEN_k]`` rows see only ``[CLS]`` and
            their own sentence); False gives a plain padding mask and one "sentence" per report.
        vision_width: width ``E_v`` of the visual tokens the fusion layers cross-attend to.
        itc_last_n_layers: the contrastive text output is the sum of the last n text-layer outputs.
        attn_implementation: ``"sdpa"`` (PyTorch fused attention) or ``"eager"`` (explicit softmax).
    """

    vocab_size: int
    hidden_size: int = 768
    num_text_layers: int = 12
    num_fusion_layers: int = 0
    num_attention_heads: int = 6
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 51
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    sentence_modeling: bool = True
    vision_width: int = 768
    itc_last_n_layers: int = 1
    attn_implementation: AttnImplementation = "sdpa"

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "hidden_size", "num_text_layers", "num_attention_heads"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("intermediate_size", "max_position_embeddings", "vision_width"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_fusion_layers < 0:
            problems.append(f"num_fusion_layers must be >= 0, got {self.num_fusion_layers}")
        if self.hidden_size % max(self.num_attention_heads, 1):
            problems.append(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            problems.append(
                f"pad_token_id {self.pad_token_id} is outside the vocabulary [0, {self.vocab_size})"
            )
        if self.type_vocab_size < 2:
            problems.append(f"type_vocab_size must be >= 2 (type 0 is padding), got {self.type_vocab_size}")
        if not 1 <= self.itc_last_n_layers <= self.num_text_layers:
            problems.append(
                f"itc_last_n_layers must be in [1, num_text_layers={self.num_text_layers}], "
                f"got {self.itc_last_n_layers}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.attn_implementation not in _ATTN_IMPLEMENTATIONS:
            problems.append(
                f"attn_implementation must be one of {_ATTN_IMPLEMENTATIONS}, got {self.attn_implementation!r}"
            )
        if problems:
            raise ValueError("invalid TextEncoderConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict (saved beside the weights)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextEncoderConfig:
        """Build a config from :meth:`to_dict` output.

        Raises:
            ValueError: on an unknown key (a typo must not be silently dropped) or an invalid value.
        """
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown TextEncoderConfig keys {unknown}; allowed: {sorted(allowed)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TextEncoderConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_bert_config(self, *, cross_attention: bool = False) -> BertConfig:
        """The ``transformers.BertConfig`` the BERT building blocks are constructed from.

        Args:
            cross_attention: build layers with a cross-attention block. transformers only allows this
                with ``is_decoder=True``, which also makes the self-attention causal; ``TriBert`` turns
                that back off after construction (fusion layers are bidirectional, ALBEF style).
        """
        from transformers import BertConfig

        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_fusion_layers if cross_attention else self.num_text_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act="gelu",
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            layer_norm_eps=self.layer_norm_eps,
            pad_token_id=self.pad_token_id,
            is_decoder=cross_attention,
            add_cross_attention=cross_attention,
            use_cache=False,
            attn_implementation=self.attn_implementation,
        )


# name -> fields other than vocab_size / pad_token_id (those come from the tokenizer).
TEXT_ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    # Bt: the 12 layers initialised from CXR-BERT (method.md 2.1, 1.2).
    "bt": {"num_text_layers": 12},
    # St: 6 text-only layers.
    "st": {"num_text_layers": 6},
    # mmssl variants: 6 randomly initialised fusion layers on top (method.md 2.6).
    "bt-mm": {"num_text_layers": 12, "num_fusion_layers": 6},
    "st-mm": {"num_text_layers": 6, "num_fusion_layers": 6},
    # For tests (built with vocab_size=128): full forward/backward in milliseconds on CPU.
    "text-tiny": {
        "hidden_size": 32,
        "num_text_layers": 2,
        "num_fusion_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "vision_width": 32,
    },
}


def list_text_presets() -> list[str]:
    """Names accepted by :func:`text_encoder_config`."""
    return sorted(TEXT_ENCODER_PRESETS)


def text_encoder_config(
    name: str, *, vocab_size: int, pad_token_id: int = 0, **overrides: Any
) -> TextEncoderConfig:
    """The config of a named preset for a given tokenizer.

    Args:
        name: one of :func:`list_text_presets` (``bt``, ``st``, ``bt-mm``, ``st-mm``, ``text-tiny``).
        vocab_size: the tokenizer's vocabulary size (``len(tokenizer)``).
        pad_token_id: the tokenizer's ``[PAD]`` id.
        **overrides: other fields to change; ``None`` values are ignored (so unset CLI options do not
            override preset values).

    Raises:
        ValueError: unknown preset name or invalid field value.

    Example:
        >>> cfg = text_encoder_config("bt-mm", vocab_size=30572)
        >>> cfg.num_text_layers, cfg.num_fusion_layers
        (12, 6)
    """
    if name not in TEXT_ENCODER_PRESETS:
        raise ValueError(f"unknown text encoder preset {name!r}; choose one of {list_text_presets()}")
    fields = {**TEXT_ENCODER_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return TextEncoderConfig.from_dict({"vocab_size": vocab_size, "pad_token_id": pad_token_id, **fields})

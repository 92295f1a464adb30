"""TriBERT: the multi-level (report / sentence / word) text encoder, with optional fusion layers.

Built from transformers' BERT pieces (``BertEmbeddings``, ``BertLayer``), so BERT checkpoints load
into it key for key (:func:`load_bert_state_dict`). method.md 2 describes the reference model:

- ``text_layers``: BERT encoder layers with the tri-level attention mask (``[SEN_k]`` rows see only
  ``[CLS]`` and their own sentence);
- ``fusion_layers``: ALBEF-style layers: bidirectional self-attention (same mask), cross-attention to
  the visual tokens, FFN.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TypedDict

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer

from velvet.models.text.config import TextEncoderConfig
from velvet.models.text.masks import attention_bias, key_padding_mask, sentence_attention_mask
from velvet.models.text.pooling import PooledText, pool_text

__all__ = ["TextOutputs", "TriBert", "load_bert_state_dict"]

logger = logging.getLogger(__name__)

_INIT_STD = 0.02  # BERT's initializer_range


class TextOutputs(TypedDict):
    """Output of :meth:`TriBert.forward_text` with ``output_all=True``.

    Keys:
        itc: ``(B, L, E)`` sum of the last ``itc_last_n_layers`` text-layer outputs (contrastive input).
        last_hidden_state: ``(B, L, E)`` output of the last text layer (input of MLM and fusion).
        hidden_states: ``num_text_layers + 1`` tensors ``(B, L, E)``: embeddings, then every layer.
    """

    itc: torch.Tensor
    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]


def _fusion_layer(cfg: TextEncoderConfig, layer_idx: int) -> BertLayer:
    """A BERT layer with cross-attention whose self-attention is bidirectional (ALBEF, not causal)."""
    layer = BertLayer(cfg.to_bert_config(cross_attention=True), layer_idx=layer_idx)
    # transformers only builds cross-attention into decoder layers, whose self-attention is causal.
    # SDPA would use is_causal when no mask is passed; turn it off so the layer is always bidirectional.
    layer.attention.self.is_causal = False
    layer.crossattention.self.is_causal = False
    if cfg.vision_width != cfg.hidden_size:
        # ALBEF's `encoder_width`: keys/values are projected from the visual width directly.
        cross = layer.crossattention.self
        cross.key = nn.Linear(cfg.vision_width, cross.all_head_size)
        cross.value = nn.Linear(cfg.vision_width, cross.all_head_size)
    return layer


class TriBert(nn.Module):
    """Multi-level BERT text encoder with optional vision fusion layers.

    Args:
        cfg: the architecture (see :func:`~velvet.models.text.config.text_encoder_config`).

    Example:
        >>> from velvet.models.text import text_encoder_config
        >>> cfg = text_encoder_config("text-tiny", vocab_size=128)
        >>> model = TriBert(cfg)
        >>> hidden = model.forward_text(**{k: batch[k] for k in TriBert.TEXT_KEYS})  # (B, L, E)
        >>> pooled = model.pool(hidden, batch["word_ids"], batch["sentence_ids"],
        ...                     batch["sentence_token_mask"], batch["attention_mask"])
    """

    #: The :class:`~velvet.types.TextBatch` keys :meth:`forward_text` consumes.
    TEXT_KEYS = ("input_ids", "token_type_ids", "attention_mask", "sentence_ids", "sentence_token_mask")

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_dim = cfg.hidden_size
        bert_cfg = cfg.to_bert_config()
        self.embeddings = BertEmbeddings(bert_cfg)
        # Token type = sentence index; type 0 is padding and stays a zero row without gradient.
        self.embeddings.token_type_embeddings = nn.Embedding(
            cfg.type_vocab_size, cfg.hidden_size, padding_idx=0
        )
        self.text_layers = nn.ModuleList(BertLayer(bert_cfg, layer_idx=i) for i in range(cfg.num_text_layers))
        self.fusion_layers = nn.ModuleList(_fusion_layer(cfg, i) for i in range(cfg.num_fusion_layers))
        self.grad_checkpointing = False
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # BERT's initialisation (normal 0.02, zero biases, unit LayerNorm), as BertPreTrainedModel does.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=_INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=_INIT_STD)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ---------------------------------------------------------------- masks
    def text_attention_bias(
        self,
        attention_mask: torch.Tensor,
        sentence_ids: torch.Tensor | None,
        sentence_token_mask: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The 4D self-attention mask of the text and fusion layers.

        Args:
            attention_mask: ``(B, L)`` bool, True on real tokens.
            sentence_ids: ``(B, L)`` int64 (see :class:`~velvet.types.TextBatch`); needed when
                ``cfg.sentence_modeling``.
            sentence_token_mask: ``(B, L)`` bool, True on ``[SEN_k]``; needed when ``cfg.sentence_modeling``.
            dtype: dtype of the hidden states.

        Returns:
            ``(B, 1, L, L)`` (tri-level) or ``(B, 1, 1, L)`` (padding only), bool for SDPA, additive float
            for eager attention.

        Raises:
            ValueError: sentence information missing while ``sentence_modeling`` is on.
        """
        if self.cfg.sentence_modeling:
            if sentence_ids is None or sentence_token_mask is None:
                raise ValueError("sentence_modeling=True needs sentence_ids and sentence_token_mask")
            mask = sentence_attention_mask(sentence_ids, sentence_token_mask, attention_mask)
        else:
            mask = key_padding_mask(attention_mask)
        return attention_bias(mask, implementation=self.cfg.attn_implementation, dtype=dtype)

    def _run_layer(self, layer: BertLayer, hidden: torch.Tensor, *args: torch.Tensor | None) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, hidden, *args, use_reentrant=False)
        return layer(hidden, *args)

    # ---------------------------------------------------------------- forward paths
    def forward_text(
        self,
        input_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        sentence_ids: torch.Tensor | None = None,
        sentence_token_mask: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        output_all: bool = False,
    ) -> torch.Tensor | TextOutputs:
        """Run the embeddings and the text-only layers.

        Args:
            input_ids: ``(B, L)`` int64 token ids (None when ``inputs_embeds`` is given).
            token_type_ids: ``(B, L)`` int64 sentence index 1..S (``[CLS]`` 1, padding 0).
            attention_mask: ``(B, L)`` bool, True on real tokens.
            sentence_ids: ``(B, L)`` int64 sentence index, 0 for ``[CLS]``, -1 for padding.
            sentence_token_mask: ``(B, L)`` bool, True on ``[SEN_k]``.
            inputs_embeds: ``(B, L, E)`` word embeddings to use instead of looking up ``input_ids``
                (positions and token types are still added).
            output_all: return a :class:`TextOutputs` dict instead of the contrastive states only.

        Returns:
            ``(B, L, E)``: the sum of the last ``itc_last_n_layers`` layer outputs (method.md 2.5), or
            a :class:`TextOutputs` dict when ``output_all``.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        hidden = self.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds
        )
        bias = self.text_attention_bias(attention_mask, sentence_ids, sentence_token_mask, hidden.dtype)
        states = [hidden]
        for layer in self.text_layers:
            hidden = self._run_layer(layer, hidden, bias)
            states.append(hidden)
        itc = states[-1]
        for extra in states[-self.cfg.itc_last_n_layers : -1]:
            itc = itc + extra
        if not output_all:
            return itc
        return TextOutputs(itc=itc, last_hidden_state=hidden, hidden_states=tuple(states))

    def forward_fusion(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        sentence_ids: torch.Tensor | None,
        sentence_token_mask: torch.Tensor | None,
        visual_tokens: torch.Tensor,
        *,
        visual_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the fusion layers: self-attention (same mask as the text), cross-attention, FFN.

        Args:
            hidden: ``(B, L, E)`` text states (usually ``last_hidden_state`` of :meth:`forward_text`).
            attention_mask: ``(B, L)`` bool, True on real tokens.
            sentence_ids: ``(B, L)`` int64, as in :meth:`forward_text`.
            sentence_token_mask: ``(B, L)`` bool, as in :meth:`forward_text`.
            visual_tokens: ``(B, N, E_v)`` visual memory, ``E_v = cfg.vision_width``.
            visual_mask: ``(B, N)`` bool, True on valid visual tokens (default: all valid).

        Returns:
            ``(B, L, E)`` fused states.

        Raises:
            ValueError: the model has no fusion layers, or ``visual_tokens`` has the wrong shape.
        """
        if not self.fusion_layers:
            raise ValueError("this TriBert has num_fusion_layers=0: forward_fusion is unavailable")
        if visual_tokens.ndim != 3 or visual_tokens.shape[0] != hidden.shape[0]:
            raise ValueError(
                f"visual_tokens must be (B={hidden.shape[0]}, N, E_v), got {tuple(visual_tokens.shape)}"
            )
        if visual_tokens.shape[-1] != self.cfg.vision_width:
            raise ValueError(
                f"visual_tokens width {visual_tokens.shape[-1]} != cfg.vision_width {self.cfg.vision_width}"
            )
        bias = self.text_attention_bias(attention_mask, sentence_ids, sentence_token_mask, hidden.dtype)
        cross_bias = None
        if visual_mask is not None:
            cross_bias = attention_bias(
                key_padding_mask(visual_mask), implementation=self.cfg.attn_implementation, dtype=hidden.dtype
            )
        for layer in self.fusion_layers:
            hidden = self._run_layer(layer, hidden, bias, visual_tokens, cross_bias)
        return hidden

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        sentence_ids: torch.Tensor | None = None,
        sentence_token_mask: torch.Tensor | None = None,
        *,
        visual_tokens: torch.Tensor | None = None,
        visual_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text layers, then the fusion layers when ``visual_tokens`` is given (the ``mm_mlm`` path).

        Returns:
            ``(B, L, E)``: the last text layer's output, or the fusion output.
        """
        out = self.forward_text(
            input_ids, token_type_ids, attention_mask, sentence_ids, sentence_token_mask, output_all=True
        )
        hidden = out["last_hidden_state"]
        if visual_tokens is None:
            return hidden
        return self.forward_fusion(
            hidden, attention_mask, sentence_ids, sentence_token_mask, visual_tokens, visual_mask=visual_mask
        )

    def pool(
        self,
        hidden: torch.Tensor,
        word_ids: torch.Tensor,
        sentence_ids: torch.Tensor,
        sentence_token_mask: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        max_words: int | None = None,
        max_sentences: int | None = None,
    ) -> PooledText:
        """Report / word / sentence vectors (see :func:`~velvet.models.text.pooling.pool_text`).

        Returns:
            ``report (B, E)``, ``words (B, T, E)``, ``word_mask (B, T)``, ``sentences (B, S, E)``,
            ``sentence_mask (B, S)``. With ``sentence_modeling=False``, ``S = 1``: one sentence per
            report, the mean of all its words.
        """
        return pool_text(
            hidden,
            word_ids,
            sentence_ids,
            sentence_token_mask,
            attention_mask,
            sentence_modeling=self.cfg.sentence_modeling,
            max_words=max_words,
            max_sentences=max_sentences,
        )

    # ---------------------------------------------------------------- training helpers
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each layer in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay: 1-D tensors and the position embeddings."""
        names = {name for name, p in self.named_parameters() if p.ndim < 2}
        names.add("embeddings.position_embeddings.weight")
        return names


def load_bert_state_dict(model: TriBert, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Load a ``transformers.BertModel`` state dict into the embeddings and text layers, key for key.

    Minimal on purpose: no token-type or ``[SEN_k]`` row expansion, no head re-partitioning (the
    full converter, :func:`velvet.models.convert.load_bert_weights`, does that). ``bert.`` prefixes are stripped, the pooler is dropped,
    ``encoder.layer.i`` becomes ``text_layers.i``.

    Args:
        model: the target; must have the checkpoint's shapes.
        state_dict: ``BertModel.state_dict()`` (or a ``BertFor*`` one with the ``bert.`` prefix).

    Returns:
        The model keys the checkpoint did not provide (the fusion layers, if any).

    Raises:
        ValueError: a checkpoint key has no place in the model, or an embedding / text-layer key is missing.
    """
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("bert.")
        if key.startswith("pooler.") or key in ("embeddings.position_ids", "embeddings.token_type_ids"):
            continue
        mapped[key.replace("encoder.layer.", "text_layers.", 1)] = value
    result = model.load_state_dict(mapped, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"checkpoint keys with no place in TriBert: {sorted(result.unexpected_keys)}")
    missing = sorted(k for k in result.missing_keys if not k.startswith("fusion_layers."))
    if missing:
        raise ValueError(f"TriBert keys missing from the checkpoint: {missing}")
    return sorted(result.missing_keys)

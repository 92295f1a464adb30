"""BERT / CXR-BERT checkpoints -> TriBERT's embeddings and text layers (method.md 2.1).

The checkpoint is a transformers ``BertModel`` or ``BertFor*`` state dict (``bert.`` prefix or none;
any wrapper prefix works, e.g. M3D-CLIP's ``language_encoder.``), as a mapping or a file. The mapping:

========================================= ===============================================================
checkpoint (after the prefix)             TriBert
========================================= ===============================================================
``embeddings.word_embeddings.weight``     grown to the tokenizer's vocabulary: checkpoint rows copied,
                                          every ``[SEN_k]`` row a copy of the ``[CLS]`` row
``embeddings.token_type_embeddings``      row 0 zero (padding type), rows ``1..K`` copies of checkpoint
                                          type 0 (token type = sentence index)
``embeddings.position_embeddings``,       copied
``embeddings.LayerNorm.*``
``encoder.layer.<i>.*``                   ``text_layers.<i>.*`` (``LayerNorm.gamma`` / ``.beta`` of
                                          TensorFlow-converted checkpoints become ``.weight`` / ``.bias``)
``pooler.*``, keys outside the prefix     dropped (listed in the report): pooler, ``cls.predictions.*``
(``cls.predictions.*``, ``cls.seq_*``)    MLM head, NSP head, other towers
``embeddings.position_ids`` / ``.token_   ignored (constant buffers)
type_ids``
========================================= ===============================================================

Attention heads: a state dict does not record the head count, and Q/K/V shapes are the same for any
count that divides the hidden size, so a different ``num_attention_heads`` loads without error and
re-partitions the heads. The reference does this on purpose (6 heads on 12-head CXR-BERT, method.md
2.1); to reproduce the checkpoint's own function, set the config's ``num_attention_heads`` to the
checkpoint's (12 for CXR-BERT). That is a config choice, not something the converter can detect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from velvet.models.convert import (
    ConversionReport,
    WeightsSource,
    find_prefix,
    load_converted,
    read_state_dict,
    split_prefix,
)
from velvet.models.text.config import TextEncoderConfig
from velvet.models.weights import StateDictDiff, WeightsMismatchError

__all__ = ["ALLOWED_MISSING", "convert_bert_state_dict", "load_bert_weights"]

#: TriBert key prefixes a BERT checkpoint never provides (randomly initialised, method.md 2.1).
ALLOWED_MISSING = ("fusion_layers.",)

_ANCHOR = "embeddings.word_embeddings.weight"
_EXAMPLES = ("bert.embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight")
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
# checkpoints converted from TensorFlow name the LayerNorm parameters gamma / beta
_TF_LAYER_NORM = re.compile(r"LayerNorm\.(gamma|beta)$")
_TF_NAMES = {"gamma": "weight", "beta": "bias"}
_WORDS = "embeddings.word_embeddings.weight"
_TYPES = "embeddings.token_type_embeddings.weight"


def convert_bert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    target: torch.nn.Module | TextEncoderConfig,
    *,
    cls_token_id: int,
    sen_token_ids: Sequence[int] | torch.Tensor = (),
    prefix: str | None = None,
    drop_extra_layers: bool = False,
) -> dict[str, torch.Tensor]:
    """Map a BERT state dict onto TriBert's keys (see the module docstring for the table).

    Shapes are not checked beyond what the mapping needs; :func:`load_bert_weights` loads the result
    strictly and reports any mismatch.

    Args:
        state_dict: a ``BertModel`` / ``BertForMaskedLM`` state dict (any wrapper prefix).
        target: the :class:`~velvet.models.text.tribert.TriBert` (or its config) to convert for.
        cls_token_id: id of ``[CLS]`` in the checkpoint's vocabulary (``tokenizer.cls_token_id``).
        sen_token_ids: ids of ``[SEN_1]``..``[SEN_K]`` in the TriBERT vocabulary
            (``TriBertTokenizer.sen_token_ids``; empty without sentence modelling). Each of these rows
            becomes a copy of the ``[CLS]`` row, also when the id lies inside the checkpoint's
            vocabulary. Every id beyond the checkpoint's vocabulary must be one of them.
        prefix: the key prefix of the BERT inside the checkpoint; None finds it.
        drop_extra_layers: keep only the first ``num_text_layers`` checkpoint layers (the reference's
            ``St`` configs load 6 of CXR-BERT's 12 this way); False raises instead.

    Returns:
        The TriBert state dict (without the fusion layers).

    Raises:
        ValueError: not a BERT layout, or vocabulary ids that cannot be initialised.
        WeightsMismatchError: the checkpoint has more layers than the config and not ``drop_extra_layers``.
    """
    return _convert(state_dict, target, cls_token_id, sen_token_ids, prefix, drop_extra_layers)[0]


def load_bert_weights(
    model: torch.nn.Module,
    source: WeightsSource,
    *,
    cls_token_id: int,
    sen_token_ids: Sequence[int] | torch.Tensor = (),
    strict: bool = True,
    prefix: str | None = None,
    drop_extra_layers: bool = False,
) -> ConversionReport:
    """Load a BERT / CXR-BERT checkpoint into a TriBert's embeddings and text layers.

    Only the fusion layers (``fusion_layers.*``, :data:`ALLOWED_MISSING`) may be absent: they are new
    in TriBERT and keep their random initialisation.

    Args:
        model: the :class:`~velvet.models.text.tribert.TriBert`, built for the TriBERT tokenizer
            (``vocab_size=len(tokenizer)``, ``type_vocab_size=tokenizer.type_vocab_size``).
        source: a state dict, a checkpoint dict wrapping one, or a ``.safetensors`` / ``.bin`` / ``.pt`` file.
        cls_token_id, sen_token_ids, prefix, drop_extra_layers: as in :func:`convert_bert_state_dict`.
        strict: raise on any other missing, unexpected or mismatched key; False loads what fits and
            lists the rest in the report.

    Returns:
        A :class:`~velvet.models.convert.ConversionReport`.

    Raises:
        WeightsMismatchError: the weights do not fit (e.g. another hidden size); the message lists
            each key with both shapes.
        ValueError: not a BERT layout, or vocabulary ids that cannot be initialised.

    Example:
        >>> tok = TriBertTokenizer.from_pretrained("checkpoints/cxr-bert")  # doctest: +SKIP
        >>> model = TriBert(text_encoder_config("bt", vocab_size=tok.vocab_size))  # doctest: +SKIP
        >>> load_bert_weights(model, "checkpoints/cxr-bert/pytorch_model.bin",
        ...                   cls_token_id=tok.cls_token_id, sen_token_ids=tok.sen_token_ids)  # doctest: +SKIP
    """
    state_dict, name = read_state_dict(source)
    converted, report = _convert(state_dict, model, cls_token_id, sen_token_ids, prefix, drop_extra_layers)
    report.source = name
    return load_converted(model, converted, report, strict=strict, allowed_missing=ALLOWED_MISSING)


def _convert(
    state_dict: Mapping[str, torch.Tensor],
    target: torch.nn.Module | TextEncoderConfig,
    cls_token_id: int,
    sen_token_ids: Sequence[int] | torch.Tensor,
    prefix: str | None,
    drop_extra_layers: bool,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    cfg: TextEncoderConfig = target if isinstance(target, TextEncoderConfig) else target.cfg  # type: ignore[assignment]
    if prefix is None:
        prefix = find_prefix(state_dict, _ANCHOR, layout="BERT", examples=_EXAMPLES)
    inside, outside = split_prefix(state_dict, prefix)
    report = ConversionReport(source="state dict", prefix=prefix, dropped=outside)
    out, extra = _map_keys(inside, prefix, cfg.num_text_layers, report)
    if extra and not drop_extra_layers:
        count = 1 + max(extra.values())
        raise WeightsMismatchError(
            f"the checkpoint has {count} BERT layers, the TriBert config num_text_layers="
            f"{cfg.num_text_layers}: set num_text_layers={count}, or pass drop_extra_layers=True to keep "
            "the first layers (as the reference's St configs do):",
            StateDictDiff(unexpected=sorted(extra)),
        )
    report.dropped = sorted([*report.dropped, *extra])
    if _WORDS in out:
        out[_WORDS] = _grow_vocabulary(out[_WORDS], cfg, cls_token_id, _ids(sen_token_ids), report)
    if _TYPES in out and out[_TYPES].shape[-1] == cfg.hidden_size:
        out[_TYPES] = _sentence_types(out[_TYPES], cfg.type_vocab_size)
        report.derived[_TYPES] = (
            f"row 0 zero (padding type), rows 1..{cfg.type_vocab_size - 1} copies of the checkpoint's type 0"
        )
    return out, report


def _map_keys(
    inside: Mapping[str, torch.Tensor], prefix: str, num_layers: int, report: ConversionReport
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """TriBert keys of the checkpoint's tensors, and ``{checkpoint key: layer}`` of layers beyond ``num_layers``."""
    out: dict[str, torch.Tensor] = {}
    extra: dict[str, int] = {}
    for key, value in inside.items():
        if key in _BUFFERS:
            continue
        if key.startswith("pooler."):
            report.dropped.append(prefix + key)
            continue
        new = _TF_LAYER_NORM.sub(lambda m: "LayerNorm." + _TF_NAMES[m[1]], key)
        match = _LAYER.fullmatch(new)
        if match is None:
            out[new] = value
        elif int(match[1]) < num_layers:
            out[f"text_layers.{match[1]}.{match[2]}"] = value
        else:
            extra[prefix + key] = int(match[1])
    return out, extra


def _ids(ids: Sequence[int] | torch.Tensor) -> list[int]:
    return [int(i) for i in torch.as_tensor(ids, dtype=torch.long).reshape(-1).tolist()]


def _grow_vocabulary(
    words: torch.Tensor, cfg: TextEncoderConfig, cls_id: int, sen_ids: list[int], report: ConversionReport
) -> torch.Tensor:
    """``(vocab_size, E)``: the checkpoint rows, then every ``[SEN_k]`` row set to the ``[CLS]`` row."""
    n_src, width = words.shape
    if width != cfg.hidden_size or n_src > cfg.vocab_size:
        return words  # the strict load reports the shape mismatch with both shapes
    if not 0 <= cls_id < n_src:
        raise ValueError(f"cls_token_id {cls_id} is outside the checkpoint's vocabulary of {n_src} tokens")
    bad = [i for i in sen_ids if not 0 <= i < cfg.vocab_size]
    if bad:
        raise ValueError(f"[SEN_k] ids {bad[:5]} are outside the TriBert vocabulary of {cfg.vocab_size}")
    unknown = sorted(set(range(n_src, cfg.vocab_size)) - set(sen_ids))
    if unknown:
        raise ValueError(
            f"the TriBert vocabulary has {cfg.vocab_size} ids and the checkpoint {n_src}; ids {unknown[:5]} "
            f"({len(unknown)} in all) lie beyond the checkpoint and are not [SEN_k] tokens, so there is no "
            "row to start them from. Pass the tokenizer's sen_token_ids, or build the config with "
            "vocab_size=len(tokenizer) of the checkpoint's tokenizer"
        )
    out = words.new_empty(cfg.vocab_size, width)
    out[:n_src] = words
    if sen_ids:
        out[sen_ids] = words[cls_id]
        report.derived[_WORDS] = (
            f"{n_src} checkpoint rows; {len(sen_ids)} [SEN_k] rows (ids {min(sen_ids)}..{max(sen_ids)}) "
            f"copied from the [CLS] row (id {cls_id})"
        )
    return out


def _sentence_types(types: torch.Tensor, type_vocab_size: int) -> torch.Tensor:
    """Token type = sentence index: type 0 (padding) a zero row, every sentence type the checkpoint's type 0."""
    out = types.new_zeros(type_vocab_size, types.shape[-1])
    out[1:] = types[0]
    return out

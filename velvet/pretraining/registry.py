"""The VELVET-Med pretraining objectives, each declared once.

An :class:`Objective` says everything the rest of the code needs to know about one objective: the
loss terms it produces, which parts of the model it uses (projection levels, fusion layers), what
it reads from the batch, the heads it adds on the pretraining side, its loss module and the
:class:`~velvet.pretraining.objectives.VelvetPretrainer` method that computes it. The pretrainer,
the task (weights, model levels), the negative cache and the recipes all read this table; nothing
else lists objectives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from velvet.models.velvet import VelvetModel

__all__ = ["OBJECTIVES", "Objective", "check_objectives", "levels_for", "loss_terms"]

_TEXT = ("input_ids", "token_type_ids", "attention_mask", "sentence_ids", "sentence_token_mask")
_TEXT_POOL = (*_TEXT, "word_ids")


def _no_heads(model: VelvetModel, settings: Mapping[str, Any]) -> dict[str, nn.Module]:
    return {}


def _ssl_heads(model: VelvetModel, settings: Mapping[str, Any]) -> dict[str, nn.Module]:
    from velvet.models.heads.vision_ssl import ContrastiveProjection, ReconstructionDecoder, RotationHead

    width = model.vision.embed_dim
    return {
        "ssl_rotation": RotationHead(width, 4),
        "ssl_contrast": ContrastiveProjection(width, int(settings["ssl_embed_dim"])),
        "ssl_recon": ReconstructionDecoder.for_encoder(model.vision),
    }


def _mlm_head(name: str) -> Callable[[VelvetModel, Mapping[str, Any]], dict[str, nn.Module]]:
    def build(model: VelvetModel, settings: Mapping[str, Any]) -> dict[str, nn.Module]:
        from velvet.models.heads.mlm import MLMHead

        return {name: MLMHead(model.text.cfg.hidden_size, model.text.cfg.vocab_size)}

    return build


def _itm_head(model: VelvetModel, settings: Mapping[str, Any]) -> dict[str, nn.Module]:
    return {"itm": nn.Linear(model.text.cfg.hidden_size, 2)}


def _clip_loss(s: Mapping[str, Any]) -> nn.Module:
    from velvet.losses.contrastive import ClipLoss

    return ClipLoss(label_smoothing=s["label_smoothing"], gather=s["gather"], name="itc_report")


def _local_loss(level: str) -> Callable[[Mapping[str, Any]], nn.Module]:
    def build(s: Mapping[str, Any]) -> nn.Module:
        from velvet.losses.local_alignment import LocalAlignmentLoss

        t1, t2, t3 = s["local_temperatures"]
        return LocalAlignmentLoss(
            t1, t2, t3, agg=s["local_agg"], gather=s["gather"], name=f"itc_{level}", chunk_size=s["local_chunk_size"],
            attention=s["local_attention"],
        )

    return build


def _ssl_loss(s: Mapping[str, Any]) -> nn.Module:
    from velvet.losses.vision_ssl import VisionSSLLoss

    return VisionSSLLoss(temperature=s["ssl_temperature"], gather=s["gather"])


def _mlm_loss(name: str) -> Callable[[Mapping[str, Any]], nn.Module]:
    def build(s: Mapping[str, Any]) -> nn.Module:
        from velvet.losses.mlm import MLMLoss

        return MLMLoss(name=name)

    return build


def _itm_loss(s: Mapping[str, Any]) -> nn.Module:
    from velvet.losses.itm import ITMLoss

    return ITMLoss(name="itm")


@dataclass(frozen=True)
class Objective:
    """One pretraining objective.

    Attributes:
        name: the recipe name (``itc_report`` ...).
        terms: the loss terms it reports; its weight scales each of them.
        contrastive: an image-text contrastive term, computed on features of the whole batch (so the
            negative cache can keep every negative); otherwise computed per (micro-)batch.
        levels: the model's projection levels it uses (``report``, ``sentence``, ``word``).
        fusion: it runs the fusion layers on visual tokens.
        requires: other objectives it depends on.
        batch_keys: what it reads from the batch.
        heads: builds its pretraining-only heads from the model and the pretrainer settings.
        loss: builds its loss module from the pretrainer settings.
        method: the :class:`~velvet.pretraining.objectives.VelvetPretrainer` method computing it
            (non-contrastive objectives; the contrastive ones go through ``contrastive_losses``).
        summary: one line for docs and errors.
    """

    name: str
    terms: tuple[str, ...]
    contrastive: bool
    levels: tuple[str, ...]
    fusion: bool
    requires: tuple[str, ...]
    batch_keys: tuple[str, ...]
    heads: Callable[[VelvetModel, Mapping[str, Any]], dict[str, nn.Module]]
    loss: Callable[[Mapping[str, Any]], nn.Module]
    method: str | None
    summary: str


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("itc_report", ("itc_report_loss",), True, ("report",), False, (), ("image", *_TEXT_POOL),
                  _no_heads, _clip_loss, None, "report-level image-text contrast (CLIP loss, label smoothing)"),
        Objective("itc_sentence", ("itc_sentence_loss",), True, ("sentence",), False, (), ("image", *_TEXT_POOL),
                  _no_heads, _local_loss("sentence"), None, "sentence-to-region local alignment (GLoRIA)"),
        Objective("itc_word", ("itc_word_loss",), True, ("word",), False, (), ("image", *_TEXT_POOL),
                  _no_heads, _local_loss("word"), None, "word-to-region local alignment (GLoRIA)"),
        Objective("vis_ssl", ("vis_rot_loss", "vis_contrast_loss", "vis_recon_loss"), False, (), False, (),
                  ("image",), _ssl_heads, _ssl_loss, "vision_ssl",
                  "vision SSL on a local view: rotation, NT-Xent between two views, cut-out reconstruction"),
        Objective("txt_mlm", ("txt_mlm_loss",), False, (), False, (), (*_TEXT, "special_tokens_mask"),
                  _mlm_head("txt_mlm"), _mlm_loss("txt_mlm"), "text_mlm", "masked language modelling, text layers"),
        Objective("itm", ("itm_loss",), False, ("report",), True, ("itc_report",), ("image", *_TEXT_POOL),
                  _itm_head, _itm_loss, "image_text_matching",
                  "image-text matching on hard negatives drawn from the report similarities"),
        Objective("mm_mlm", ("mm_mlm_loss",), False, (), True, (), ("image", *_TEXT, "special_tokens_mask"),
                  _mlm_head("mm_mlm"), _mlm_loss("mm_mlm"), "multimodal_mlm",
                  "masked language modelling through the fusion layers, cross-attending to the volume"),
    )
}


def loss_terms(objectives: Iterable[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Objective -> its loss terms (all objectives, or those given)."""
    names = OBJECTIVES if objectives is None else objectives
    return {n: OBJECTIVES[n].terms for n in names}


def check_objectives(objectives: Iterable[str]) -> tuple[str, ...]:
    """Validate a choice of objectives; returns them in canonical order.

    Raises:
        ValueError: an unknown, repeated or empty choice, or a missing requirement.
    """
    chosen = [objectives] if isinstance(objectives, str) else list(objectives)
    unknown = sorted(set(chosen) - set(OBJECTIVES))
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}; known: {list(OBJECTIVES)}")
    if not chosen:
        raise ValueError(f"choose at least one pretraining objective from {list(OBJECTIVES)}")
    for name in chosen:
        missing = [r for r in OBJECTIVES[name].requires if r not in chosen]
        if missing:
            raise ValueError(f"objective {name!r} needs {missing} as well ({OBJECTIVES[name].summary})")
    return tuple(n for n in OBJECTIVES if n in chosen)


def levels_for(objectives: Iterable[str]) -> tuple[str, ...]:
    """The model projection levels the objectives use (in ``report, sentence, word`` order)."""
    used = {lv for n in objectives for lv in OBJECTIVES[n].levels}
    return tuple(lv for lv in ("report", "sentence", "word") if lv in used)


def needs_fusion(objectives: Iterable[str]) -> bool:
    """Whether any of the objectives runs the fusion layers."""
    return any(OBJECTIVES[n].fusion for n in objectives)

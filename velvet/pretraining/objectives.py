"""Every VELVET-Med pretraining objective, composed over a :class:`~velvet.models.velvet.VelvetModel`.

``VelvetPretrainer(batch)`` returns named loss terms (``{"itc_report_loss": ..., "vis_rot_loss": ...}``)
plus the report-level embeddings for retrieval metrics. It is plain torch: the Lightning task only
weights, logs and optimises, and the distributed and accumulation tests run it directly.

Randomness (MLM masking, SSL views, hard negatives) comes from the ``generator`` argument, which
lives on the batch's device (every draw is made there: no host copy, no host sync), so a step is a
function of its inputs and seed; dropout uses the global RNG, which the task reseeds per step.

The objectives are declared in :mod:`velvet.pretraining.registry`; their heads (vision SSL, MLM,
ITM) belong to the pretrainer, not to the model, so a saved model carries only what inference and
downstream tasks use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from velvet.losses.distributed import all_gather_padded, all_gather_with_grad, rank_offset
from velvet.losses.itm import itm_labels, sample_hard_negatives
from velvet.losses.mlm import IGNORE_INDEX, mask_tokens
from velvet.models.velvet import TEXT_INPUTS, VelvetModel
from velvet.pretraining.registry import OBJECTIVES, check_objectives, loss_terms
from velvet.pretraining.views import random_local_view

__all__ = ["LOSS_TERMS", "VelvetPretrainer"]

# objective -> the loss terms it produces (its weight scales each of them); from the registry
LOSS_TERMS: dict[str, tuple[str, ...]] = loss_terms()
# padding values when text tensors of different lengths are gathered across ranks
_TEXT_PAD = {"attention_mask": False, "sentence_ids": -1, "sentence_token_mask": False}


class VelvetPretrainer(nn.Module):
    """The pretraining objectives over a model, with the heads only pretraining uses.

    Args:
        model: the model; it must have the projection levels (and fusion layers) the objectives
            use (:func:`velvet.pretraining.registry.levels_for`).
        objectives: the objectives to compute (:data:`velvet.pretraining.registry.OBJECTIVES`).
        tokenizer_info: ``mask_token_id`` and ``random_token_ids`` (ids MLM may substitute: the
            vocabulary minus special tokens), from the tokenizer.
        label_smoothing: report-level CLIP loss label smoothing (0.1).
        local_temperatures: GLoRIA temperatures ``(temp1, temp2, temp3)``; None: the model
            config's (``model.config.local_temperatures``, 4, 5, 10 by default). They belong to the
            model, so that evaluation and grounding score as training did: a value that differs from
            the model config's is refused.
        local_agg: ``"sum"`` or ``"mean"`` word aggregation of the local score; None: the model
            config's (same rule).
        local_chunk_size: image chunk size bounding the local losses' memory (None: all at once).
        ssl_temperature: NT-Xent temperature of vision SSL (0.5).
        ssl_embed_dim: width of the vision-SSL contrastive projection (512).
        mlm_probability: MLM selection rate (0.15).
        local_view_scale: edge-fraction range of the vision-SSL local crop.
        gather: gather negatives across DDP ranks (with gradients).

    Attributes:
        heads: ``nn.ModuleDict`` of the objectives' own heads (``ssl_rotation``, ``ssl_contrast``,
            ``ssl_recon``, ``txt_mlm``, ``itm``, ``mm_mlm``: those enabled).
        losses: ``nn.ModuleDict`` objective -> loss module.

    Raises:
        ValueError: unknown objectives, or a model without a part an objective needs.
    """

    def __init__(
        self,
        model: VelvetModel,
        *,
        objectives: tuple[str, ...] | list[str] = tuple(OBJECTIVES),
        tokenizer_info: Mapping[str, Any],
        label_smoothing: float = 0.1,
        local_temperatures: tuple[float, float, float] | None = None,
        local_agg: str | None = None,
        local_chunk_size: int | None = None,
        ssl_temperature: float = 0.5,
        ssl_embed_dim: int = 512,
        mlm_probability: float = 0.15,
        local_view_scale: tuple[float, float] = (0.5, 1.0),
        gather: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.objectives = check_objectives(objectives)
        for name in self.objectives:
            spec = OBJECTIVES[name]
            missing = [lv for lv in spec.levels if f"image_{lv}" not in model.heads]
            if missing:
                raise ValueError(
                    f"objective {name!r} needs the model's {missing} projection(s); build the model with "
                    f"levels including {missing} (model levels: {list(model.config.levels)})"
                )
            if spec.fusion and not model.has_fusion:
                raise ValueError(f"objective {name!r} needs fusion layers: set text num_fusion_layers >= 1")
        self.mask_token_id = int(tokenizer_info["mask_token_id"])
        self.register_buffer(
            "random_token_ids", torch.as_tensor(tokenizer_info["random_token_ids"], dtype=torch.long), persistent=False
        )
        self.mlm_probability = mlm_probability
        self.local_view_scale = tuple(local_view_scale)
        self.gather = gather
        cfg = model.config
        for name, given, own in (
            ("local_temperatures", local_temperatures, cfg.local_temperatures),
            ("local_agg", local_agg, cfg.local_agg),
        ):
            if given is not None and (tuple(map(float, given)) if name == "local_temperatures" else given) != own:
                raise ValueError(
                    f"{name}={given!r} differs from the model config's {own!r}: set it in the model config "
                    f"(VelvetConfig.{name}), so that evaluation and grounding use what training used"
                )
        settings = {
            "label_smoothing": label_smoothing,
            "local_temperatures": cfg.local_temperatures,
            "local_agg": cfg.local_agg,
            "local_attention": cfg.local_attention,
            "local_chunk_size": local_chunk_size,
            "ssl_temperature": ssl_temperature,
            "ssl_embed_dim": ssl_embed_dim,
            "gather": gather,
        }
        self.heads = nn.ModuleDict()
        for name in self.objectives:
            self.heads.update(OBJECTIVES[name].heads(model, settings))
        self.losses = nn.ModuleDict({name: OBJECTIVES[name].loss(settings) for name in self.objectives})

    # ------------------------------------------------------------------ the whole step

    def forward(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """All enabled loss terms of one batch.

        Args:
            batch: a :class:`~velvet.types.VolumeTextBatch` (``image`` + tokenised text).
            generator: random source for masking, views and negatives, on the batch's device.

        Returns:
            ``"<term>_loss"`` scalars (see :data:`LOSS_TERMS`), plus ``image_embedding`` /
            ``text_embedding`` ``(B, E)`` (detached) when the report-level head exists.
        """
        features = self.contrastive_features(batch)
        out = self.contrastive_losses(features)
        out.update(self.other_losses(batch, features, generator))
        for key in ("image_embedding", "text_embedding"):
            if key in features:
                out[key] = features[key].detach()
        return out

    # ------------------------------------------------------------------ image-text contrast

    def contrastive_features(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Encode both modalities and project every enabled contrastive level.

        Returns:
            ``image_embedding``/``text_embedding`` ``(B, E)``; per local level ``<level>_regions``
            ``(B, R, E)``, ``<level>_units`` ``(B, S|T, E)``, ``<level>_mask``; and the raw encodings
            (``image``, ``text``) that the fusion objectives reuse.
        """
        model = self.model
        needs_encoders = any(OBJECTIVES[o].contrastive or OBJECTIVES[o].fusion for o in self.objectives)
        feats: dict[str, Any] = {}
        if not needs_encoders:
            return feats
        image = model.encode_image(batch["image"])
        text = model.encode_text(batch)
        feats["image"], feats["text"] = image, text
        if "embedding" in image:
            feats["image_embedding"], feats["text_embedding"] = image["embedding"], text["embedding"]
        for level in ("sentence", "word"):
            if f"itc_{level}" in self.objectives:
                feats[f"{level}_regions"] = model.image_regions(image["maps"], level)
                feats[f"{level}_units"], feats[f"{level}_mask"] = model.text_units(text, level)
        return feats

    def contrastive_losses(self, feats: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The report/sentence/word ITC terms from :meth:`contrastive_features` outputs."""
        out: dict[str, torch.Tensor] = {}
        if "itc_report" in self.objectives:
            scale = self.model.logit_scale()
            res = self.losses["itc_report"](feats["image_embedding"], feats["text_embedding"], scale)
            out.update(res)
            out["logit_scale"] = scale.detach()
        for level in ("sentence", "word"):
            if f"itc_{level}" in self.objectives:
                out.update(
                    self.losses[f"itc_{level}"](
                        feats[f"{level}_regions"], feats[f"{level}_units"], feats[f"{level}_mask"]
                    )
                )
        return out

    # ------------------------------------------------------------------ everything else

    def other_losses(
        self,
        batch: Mapping[str, Any],
        feats: Mapping[str, Any],
        generator: torch.Generator | None,
    ) -> dict[str, torch.Tensor]:
        """Vision SSL, text MLM, ITM and vision-conditioned MLM terms (those enabled)."""
        out: dict[str, torch.Tensor] = {}
        for name in self.objectives:
            method = OBJECTIVES[name].method
            if method is not None:
                out.update(getattr(self, method)(batch, feats, generator))
        return out

    def vision_ssl(
        self, batch: Mapping[str, Any], feats: Mapping[str, Any], generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Rotation, NT-Xent and cut-out reconstruction on two views of a random local crop (method 4.1)."""
        from velvet.models.vision.ssl_views import make_ssl_views

        heads, image = self.heads, batch["image"]
        with torch.no_grad():
            local = random_local_view(image, generator, scale=self.local_view_scale)
            views = make_ssl_views(local, generator)
        top = self.model.vision(torch.cat([views["view1"], views["view2"]]))["maps"][-1]  # (2B, C, h, w, d)
        z = heads["ssl_contrast"](top)
        b = image.shape[0]
        return self.losses["vis_ssl"](
            heads["ssl_rotation"](top),
            torch.cat([views["rot1"], views["rot2"]]),
            z[:b],
            z[b:],
            heads["ssl_recon"](top),
            torch.cat([views["target1"], views["target2"]]),
            torch.cat([views["mask1"], views["mask2"]]),
        )

    def _masked(self, batch: Mapping[str, Any], generator: torch.Generator | None) -> tuple[dict, torch.Tensor]:
        ids, labels = mask_tokens(
            batch["input_ids"],
            batch["special_tokens_mask"],
            mask_token_id=self.mask_token_id,
            vocab_size=self.model.text.cfg.vocab_size,
            probability=self.mlm_probability,
            generator=generator,
            random_token_ids=self.random_token_ids,
        )
        return {**batch, "input_ids": ids}, labels

    def _mlm_loss(self, head: str, hidden: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        positions = labels != IGNORE_INDEX
        # scoring only the P masked positions saves a (B, L, V) tensor over a 30k vocabulary
        logits = self.heads[head](hidden, positions)  # (P, V)
        return self.losses[head](logits[None], labels[positions][None])  # as one (1, P) row

    def text_mlm(
        self, batch: Mapping[str, Any], feats: Mapping[str, Any], generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Masked language modelling on the text-only layers (method 4.2)."""
        masked, labels = self._masked(batch, generator)
        states = self.model.text.forward_text(*(masked[k] for k in TEXT_INPUTS), output_all=True)
        return self._mlm_loss("txt_mlm", states["last_hidden_state"], labels)

    def multimodal_mlm(
        self, batch: Mapping[str, Any], feats: Mapping[str, Any], generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """MLM through the text and fusion layers, cross-attending to the volume (method 4.3)."""
        masked, labels = self._masked(batch, generator)
        states = self.model.text.forward_text(*(masked[k] for k in TEXT_INPUTS), output_all=True)
        visual = self.model.visual_tokens(feats["image"]["maps"])
        fused = self.model.fuse(masked, states["last_hidden_state"], visual)
        return self._mlm_loss("mm_mlm", fused, labels)

    def image_text_matching(
        self, batch: Mapping[str, Any], feats: Mapping[str, Any], generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """ITM on B positives and 2B hard negatives drawn from the (gathered) batch (ALBEF style).

        Negatives are sampled from the report-level similarities of the global batch, so under DDP
        a rank's image can be paired with another rank's report; the gathers carry gradients.
        """
        model = self.model
        text, hidden = batch, feats["text"]["last_hidden"]
        visual = model.visual_tokens(feats["image"]["maps"])  # (B, N, E_v)
        b = visual.shape[0]
        with torch.no_grad():
            scale = model.logit_scale()
            img_all = all_gather_with_grad(feats["image_embedding"]) if self.gather else feats["image_embedding"]
            txt_all = all_gather_with_grad(feats["text_embedding"]) if self.gather else feats["text_embedding"]
            sim_i2t = scale * feats["image_embedding"] @ txt_all.T  # (B, B_global)
            sim_t2i = scale * feats["text_embedding"] @ img_all.T
            offset = rank_offset(b) if self.gather else 0
            # drawn where the similarities are (the generator lives on the batch's device): no host sync
            neg_text, neg_image = sample_hard_negatives(
                sim_i2t.float(), local_offset=offset, sim_t2i=sim_t2i.float(), generator=generator
            )
        gathered = self._gather_text(text, hidden) if self.gather else {**{k: text[k] for k in _TEXT_PAD}, "hidden": hidden}
        visual_all = all_gather_with_grad(visual) if self.gather else visual
        # positives, (image, hard-negative report), (hard-negative image, report); reports from other
        # ranks may be longer, so every text is padded to the gathered length
        length = gathered["hidden"].shape[1]
        hidden_3 = torch.cat([_pad_to(hidden, length), gathered["hidden"][neg_text], _pad_to(hidden, length)])
        masks_3 = {
            k: torch.cat([_pad_to(text[k], length, v), gathered[k][neg_text], _pad_to(text[k], length, v)])
            for k, v in _TEXT_PAD.items()
        }
        visual_3 = torch.cat([visual, visual, visual_all[neg_image]])
        fused = model.fuse(masks_3, hidden_3, visual_3)  # (3B, L, E_t)
        logits = self.heads["itm"](fused[:, 0])  # [CLS]
        return self.losses["itm"](logits, itm_labels(b, 2 * b).to(logits.device))

    def _gather_text(self, text: Mapping[str, Any], hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {k: all_gather_padded(text[k], dim=1, pad_value=v) for k, v in _TEXT_PAD.items()}
        out["hidden"] = all_gather_padded(hidden, dim=1, pad_value=0.0)
        return out


def _pad_to(x: torch.Tensor, length: int, value: Any = 0) -> torch.Tensor:
    """Pad dim 1 (tokens) of ``x`` up to ``length`` with ``value``."""
    if x.shape[1] >= length:
        return x
    pad = x.new_full((x.shape[0], length - x.shape[1], *x.shape[2:]), value)
    return torch.cat([x, pad], dim=1)

"""VolumeLanguageModel: velvet encoders -> soft prompt -> a causal LM (VQA and report generation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from velvet.vlm.config import VLMConfig
from velvet.vlm.lm_batch import IGNORE

__all__ = ["VolumeLanguageModel"]


class VolumeLanguageModel(nn.Module):
    """A velvet encoder prompting a causal LM with visual and/or fused question states.

    The prefix (method.md 6.3) is, per ``config.bridge``:

    - ``visual``: each map of ``config.visual_levels`` (pooled to ``visual_pool^3`` cells),
      flattened to tokens, through its own ``Linear(C_level, d_lm)`` (M3D-LaMed-style);
    - ``fusion``: the question through TriBERT and its fusion layers, cross-attending to the
      top-map visual tokens (the model's visual adapter), every valid state through
      ``Linear(E_text, d_lm)``; the method's bridge;
    - ``both``: the visual tokens, then the fused states.

    The LM reads ``[prefix] BOS prompt target EOS``; the loss is on ``target EOS`` only. Prefix
    positions that are padding (questions of different lengths) are masked out of attention and
    the positions count only valid tokens, in training and generation alike.

    Args:
        encoder: a :class:`~velvet.models.velvet.VelvetModel` (pretrained); for a ``fusion`` or
            ``both`` bridge it needs fusion layers.
        lm: a Hugging Face causal LM (LoRA is applied here when ``config.lora`` is set).
        lm_tokenizer: its tokenizer (with BOS, EOS and PAD ids).
        config: the :class:`~velvet.vlm.config.VLMConfig`.
    """

    def __init__(self, encoder: nn.Module, lm: nn.Module, lm_tokenizer: Any, config: VLMConfig) -> None:
        super().__init__()
        if config.bridge in ("fusion", "both") and not getattr(encoder, "has_fusion", False):
            raise ValueError(
                f"bridge {config.bridge!r} runs the question through TriBERT's fusion layers, but this encoder has "
                "none (text num_fusion_layers = 0): use bridge 'visual' or an encoder pretrained with fusion layers"
            )
        self.config = config
        self.encoder = encoder
        self.lm_tokenizer = lm_tokenizer
        if config.lora is not None:
            from velvet.vlm.lora import apply_lora

            lm = apply_lora(lm, config.lora)
        self.lm = lm
        width = self.lm.get_input_embeddings().embedding_dim
        dims = encoder.vision.feature_dims
        n_maps = len(dims)
        for level in config.visual_levels:
            if not -n_maps <= level < n_maps:
                raise ValueError(f"visual level {level} is not among the encoder's {n_maps} maps")
        self.visual_proj = nn.ModuleList(
            [nn.Linear(dims[level], width) for level in config.visual_levels]
            if config.bridge in ("visual", "both")
            else []
        )
        if config.yes_no_head and config.bridge == "visual":
            raise ValueError(
                "the yes/no head reads the fused question ([CLS] of the fusion layers): use bridge 'fusion' or 'both'"
            )
        hidden = encoder.text.cfg.hidden_size
        # method 6.4's CLSModel head: Linear, GELU, LayerNorm, Linear -> one logit
        self.yes_no_head = (
            nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, 1))
            if config.yes_no_head
            else None
        )
        self.bridge_proj = (
            nn.Linear(encoder.text.cfg.hidden_size, width) if config.bridge in ("fusion", "both") else None
        )
        self._apply_freeze()

    @property
    def preprocess(self) -> Any:
        """The preprocessing contract of the encoder (what volumes must go through)."""
        return self.encoder.preprocess

    # ------------------------------------------------------------------ parameters

    def _parts(self) -> dict[str, list[nn.Parameter]]:
        enc = self.encoder
        fusion_names = ("fusion_layers",)
        text_params = [p for n, p in enc.text.named_parameters() if not n.startswith(fusion_names)]
        fusion_params = [p for n, p in enc.text.named_parameters() if n.startswith(fusion_names)]
        if "visual_adapter" in enc.heads:
            fusion_params += list(enc.heads["visual_adapter"].parameters())
        lm_own = [p for n, p in self.lm.named_parameters() if "lora_" not in n]
        return {
            "vision": list(enc.vision.parameters()),
            "text": text_params,
            "fusion": fusion_params,
            "lm": lm_own,
        }

    def _apply_freeze(self) -> None:
        used = {"vision", "lm", "text", "fusion"} if self.bridge_proj is not None else {"vision", "lm"}
        for part, params in self._parts().items():
            for p in params:
                # a part the bridge does not run (TriBERT under the visual bridge) is never trained
                p.requires_grad_(part in used and not self.config.freeze[part])
        # the encoder's contrastive heads and temperature take no part in VQA
        for name, head in self.encoder.heads.items():
            if name != "visual_adapter":
                head.requires_grad_(False)
        self.encoder.logit_scale.requires_grad_(False)

    def trainable_parameter_count(self) -> dict[str, int]:
        """Trainable parameters per part (``lora``, ``projections`` and the unfrozen parts)."""
        counts = {part: sum(p.numel() for p in ps if p.requires_grad) for part, ps in self._parts().items()}
        counts["lora"] = sum(
            p.numel() for n, p in self.lm.named_parameters() if "lora_" in n and p.requires_grad
        )
        proj = list(self.visual_proj.parameters()) + (
            list(self.bridge_proj.parameters()) if self.bridge_proj is not None else []
        )
        counts["projections"] = sum(p.numel() for p in proj)
        return counts

    def train(self, mode: bool = True) -> VolumeLanguageModel:
        super().train(mode)
        # a frozen encoder part stays in eval mode: no dropout noise, batch-norm statistics kept
        if self.config.freeze["vision"]:
            self.encoder.vision.eval()
        if self.config.freeze["text"] and self.config.freeze["fusion"]:
            self.encoder.text.eval()
        return self

    # ------------------------------------------------------------------ the prefix

    def prefix(
        self, image: torch.Tensor, question: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The soft prompt of a batch: ``embeds`` ``(B, P, d_lm)`` and ``mask`` ``(B, P)`` bool
        (False on padding); see :meth:`prefix_parts`."""
        embeds, mask, _ = self.prefix_parts(image, question)
        return embeds, mask

    def prefix_parts(
        self, image: torch.Tensor, question: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The soft prompt of a batch and the fused question's ``[CLS]``.

        Args:
            image: ``(B, 1, H, W, D)`` preprocessed volumes.
            question: the questions as a velvet ``TextBatch`` (the encoder's tokenizer); needed by
                the ``fusion`` / ``both`` bridges.

        Returns:
            ``embeds`` ``(B, P, d_lm)``, ``mask`` ``(B, P)`` bool (False on padding) and the fused
            ``[CLS]`` states ``(B, E_t)`` (None without a fusion bridge), which the yes/no head reads.
        """
        cfg, enc = self.config, self.encoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and not cfg.freeze["vision"]):
            maps = enc.vision(image)["maps"]
        parts, masks = [], []
        visual_levels = cfg.visual_levels if len(self.visual_proj) else ()
        for proj, level in zip(self.visual_proj, visual_levels, strict=True):
            fmap = maps[level]
            if cfg.visual_pool is not None and max(fmap.shape[2:]) > cfg.visual_pool:
                # token reduction; a map already at most pool^3 is kept as it is
                fmap = F.adaptive_avg_pool3d(fmap, [min(cfg.visual_pool, s) for s in fmap.shape[2:]])
            tokens = proj(rearrange(fmap, "b c h w d -> b (h w d) c"))
            parts.append(tokens)
            masks.append(torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))
        if self.bridge_proj is not None:
            if question is None:
                raise ValueError(f"bridge {cfg.bridge!r} needs the question as a TextBatch")
            fused = self._fuse(maps, question)
            parts.append(self.bridge_proj(fused))
            masks.append(question["attention_mask"].bool())
        cls = fused[:, 0] if self.bridge_proj is not None else None
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1), cls

    def yes_no_logits(self, cls: torch.Tensor) -> torch.Tensor:
        """``(B,)`` yes-vs-no logits of the classification head from fused ``[CLS]`` states
        ``(B, E_t)`` (:meth:`prefix_parts`)."""
        if self.yes_no_head is None:
            raise RuntimeError("this model has no yes/no head (VLMConfig.yes_no_head)")
        return self.yes_no_head(cls).squeeze(-1)

    def _fuse(self, maps: list[torch.Tensor], question: Mapping[str, torch.Tensor]) -> torch.Tensor:
        from velvet.models.velvet import TEXT_INPUTS

        enc, freeze = self.encoder, self.config.freeze
        with torch.set_grad_enabled(torch.is_grad_enabled() and not freeze["text"]):
            states = enc.text.forward_text(*(question[k] for k in TEXT_INPUTS), output_all=True)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not freeze["fusion"]):
            visual = enc.visual_tokens(maps)
            return enc.fuse(question, states["last_hidden_state"], visual)  # (B, L, E_t)

    # ------------------------------------------------------------------ LM inputs

    def _lm_inputs(
        self,
        prefix: torch.Tensor,
        prefix_mask: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        embeds = self.lm.get_input_embeddings()(input_ids)
        mask = torch.cat([prefix_mask, attention_mask.bool()], dim=1)
        # positions count valid tokens only, as generate() derives them from the attention mask
        position_ids = (mask.long().cumsum(dim=1) - 1).clamp_min(0)
        return {
            "inputs_embeds": torch.cat([prefix.to(embeds.dtype), embeds], dim=1),
            "attention_mask": mask.long(),
            "position_ids": position_ids,
        }

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The answer-token loss of a batch.

        Args:
            batch: ``image`` ``(B, 1, H, W, D)``; ``question`` (TextBatch, for fusion bridges);
                ``input_ids`` / ``attention_mask`` / ``labels`` ``(B, L)`` from
                :func:`~velvet.vlm.lm_batch.training_batch`.

        Returns:
            ``loss`` (mean cross-entropy over the target tokens of the batch), ``logits``
            ``(B, P + L, V)``, ``n_tokens`` (target tokens counted).
        """
        prefix, prefix_mask, cls = self.prefix_parts(batch["image"], batch.get("question"))
        out = self.lm_loss(prefix, prefix_mask, batch)
        out["answer_loss"] = out["loss"]
        if self.yes_no_head is not None and "yes_no" in batch:
            # method 6.4: BCE of the fused [CLS] on the yes/no items of the batch (-1 marks the others)
            target = batch["yes_no"].to(prefix.device)
            rows = target >= 0
            logits = self.yes_no_logits(cls)
            bce = (
                F.binary_cross_entropy_with_logits(logits[rows], target[rows].to(logits.dtype))
                if bool(rows.any())
                else logits.sum() * 0.0
            )
            out["yes_no_loss"] = bce
            out["loss"] = out["loss"] + self.config.yes_no_weight * bce
        return out

    def lm_loss(
        self, prefix: torch.Tensor, prefix_mask: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """:meth:`forward` after the prefix (reused when one prefix serves several targets)."""
        inputs = self._lm_inputs(prefix, prefix_mask, batch["input_ids"], batch["attention_mask"])
        labels = batch["labels"]
        ignore = torch.full(prefix_mask.shape, IGNORE, dtype=labels.dtype, device=labels.device)
        labels = torch.cat([ignore, labels], dim=1)
        logits = self.lm(**inputs).logits
        # next-token loss written out (not the LM's own): the same reduction for every LM
        loss = F.cross_entropy(
            _upcast(logits[:, :-1]).flatten(0, 1),
            labels[:, 1:].flatten(),
            ignore_index=IGNORE,
            reduction="sum",
        )
        n = (labels[:, 1:] != IGNORE).sum()
        return {"loss": loss / n.clamp_min(1), "logits": logits, "n_tokens": n}

    @torch.no_grad()
    def sequence_logprobs(
        self, prefix: torch.Tensor, prefix_mask: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """``(B,)`` sum of the log-probabilities of each row's target tokens (option scoring).

        Args:
            prefix, prefix_mask: ``(B, P, d)`` / ``(B, P)`` from :meth:`prefix` (rows repeated as needed).
            batch: ``input_ids`` / ``attention_mask`` / ``labels`` ``(B, L)`` from
                :func:`~velvet.vlm.lm_batch.training_batch`.
        """
        out = self.lm_loss(prefix, prefix_mask, batch)
        labels = batch["labels"]
        p = out["logits"].shape[1] - labels.shape[1]
        logits = _upcast(out["logits"][:, p - 1 : -1])  # the logits that predict each LM position
        logp = logits.log_softmax(-1)
        valid = labels != IGNORE
        picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return (picked * valid).sum(dim=1)

    @torch.no_grad()
    def generate(
        self,
        image: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        question: Mapping[str, torch.Tensor] | None = None,
        **generation: Any,
    ) -> list[str]:
        """Generate answers (or reports) after the prefix and left-padded prompts.

        Args:
            image: ``(B, 1, H, W, D)``.
            input_ids, attention_mask: ``(B, L)`` from :func:`~velvet.vlm.lm_batch.generation_batch`.
            question: the questions as a TextBatch (fusion bridges).
            **generation: ``generate`` options (``num_beams``, ``max_new_tokens``,
                ``no_repeat_ngram_size``, ``do_sample``, ...).

        Returns:
            The B decoded texts (special tokens removed, stripped).
        """
        prefix, prefix_mask = self.prefix(image, question)
        # left padding of the prompt must come first: move the prompt's pads before the prefix
        inputs = self._lm_inputs(prefix, prefix_mask, input_ids, attention_mask)
        tok = self.lm_tokenizer
        options = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, **generation}
        out = self.lm.generate(
            inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"], **options
        )
        return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """Half-precision logits to float32 for the softmax; float32 / float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t

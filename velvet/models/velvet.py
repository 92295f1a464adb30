"""VelvetModel: the vision encoder, TriBERT, the image-text projections and the temperature.

The model holds what inference and downstream tasks need, and computes no loss. The pretraining
objectives and their own heads (vision SSL, MLM, ITM) live in
:class:`velvet.pretraining.VelvetPretrainer`; downstream tasks compose the same encoding steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, overload

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from velvet.losses.temperature import LogitScale
from velvet.models.config import VelvetConfig

__all__ = ["VelvetModel"]

TEXT_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "sentence_ids", "sentence_token_mask")


class VelvetModel(nn.Module):
    """A VELVET-Med model: a 3D vision encoder, the TriBERT text encoder and the shared spaces.

    Args:
        config: a config resolved against the data (:meth:`VelvetConfig.for_data`), so that
            ``config.text`` holds every ``TextEncoderConfig`` field.

    Attributes:
        vision: the vision encoder (:class:`~velvet.models.vision.base.VisionEncoder`).
        text: the :class:`~velvet.models.text.tribert.TriBert` encoder.
        logit_scale: the learnable, clamped 1 / temperature of the contrastive losses.
        heads: ``nn.ModuleDict``: ``image_<level>`` / ``text_<level>`` projections for each of
            ``config.levels``, and ``visual_adapter`` (top vision map -> fusion width) when the
            architecture has fusion layers.
    """

    def __init__(self, config: VelvetConfig) -> None:
        super().__init__()
        from velvet.models.text.config import TextEncoderConfig
        from velvet.models.text.tribert import TriBert
        from velvet.models.vision.factory import create_vision_encoder

        if "preset" in config.text or "vocab_size" not in config.text:
            raise ValueError(
                "resolve the config against the data first: config.for_data(tokenizer=...) "
                "(or velvet.create_model(name) for a model whose weights come later)"
            )
        self.config = config
        self.vision = create_vision_encoder(config.vision)
        text_cfg = TextEncoderConfig.from_dict(config.text)
        if config.visual_adapter and text_cfg.num_fusion_layers < 1:
            raise ValueError("visual_adapter=True needs fusion layers: set text num_fusion_layers >= 1")
        self.text = TriBert(text_cfg)
        self.logit_scale = LogitScale(config.init_temperature, config.max_logit_scale)
        self.heads = nn.ModuleDict(self._build_heads(config, text_cfg))
        # set by from_pretrained (or by hand): what encode_volume / encode_text(list[str]) apply
        self.preprocess: Any = None
        self.tokenizer: Any = None

    @property
    def has_fusion(self) -> bool:
        """Whether the model has fusion layers and the visual adapter that feeds them."""
        return "visual_adapter" in self.heads

    def _build_heads(self, config: VelvetConfig, text_cfg: Any) -> dict[str, nn.Module]:
        from velvet.models.heads.projection import ProjectionHead

        e, hidden, dims = config.embed_dim, text_cfg.hidden_size, self.vision.feature_dims
        image_width = {
            "report": self.vision.embed_dim,
            "sentence": dims[config.sentence_level],
            "word": dims[config.word_level],
        }
        heads: dict[str, nn.Module] = {}
        for level in config.levels:
            heads[f"image_{level}"] = ProjectionHead(image_width[level], e, norm=config.projection_norm)  # type: ignore[arg-type]
            heads[f"text_{level}"] = ProjectionHead(hidden, e, norm=config.projection_norm)  # type: ignore[arg-type]
        adapter = config.visual_adapter if config.visual_adapter is not None else text_cfg.num_fusion_layers > 0
        if adapter:
            # the reference's "mm_adpater": top-map tokens -> the fusion layers' memory width
            heads["visual_adapter"] = nn.Sequential(
                nn.Linear(self.vision.embed_dim, text_cfg.vision_width), nn.LayerNorm(text_cfg.vision_width)
            )
        return heads

    # ------------------------------------------------------------------ encoding steps

    def encode_image(self, image: torch.Tensor) -> dict[str, Any]:
        """Encode volumes.

        Args:
            image: ``(B, 1, H, W, D)`` float in [0, 1] (the preprocessing contract's output).

        Returns:
            ``maps`` (list of ``(B, C_i, h, w, d)``, fine -> coarse), ``pooled`` ``(B, C_top)`` and,
            with a report-level head, ``embedding`` ``(B, E)`` L2-normalised.
        """
        out: dict[str, Any] = dict(self.vision(image))
        if "image_report" in self.heads:
            out["embedding"] = F.normalize(self.heads["image_report"](out["pooled"]), dim=-1)
        return out

    @overload
    def encode_text(self, text: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    @overload
    def encode_text(self, text: str | Sequence[str]) -> torch.Tensor: ...

    def encode_text(self, text: Any) -> Any:
        """Encode tokenised reports (a :class:`~velvet.types.TextBatch`), or report strings.

        Given a string or a list of strings, the model's ``tokenizer`` (set by ``from_pretrained``)
        tokenises them and the ``(N, E)`` L2-normalised report embeddings come back, without
        gradients (inference). Given a ``TextBatch``, the full output below comes back.

        Returns:
            ``hidden`` ``(B, L, E_t)`` (the ITC layer output), ``last_hidden`` ``(B, L, E_t)``, the pooled
            levels ``report`` ``(B, E_t)``, ``sentences`` ``(B, S, E_t)``, ``sentence_mask`` ``(B, S)``,
            ``words`` ``(B, T, E_t)``, ``word_mask`` ``(B, T)``, and with a report-level head
            ``embedding`` ``(B, E)`` L2-normalised.
        """
        if isinstance(text, str) or (isinstance(text, Sequence) and not isinstance(text, Mapping)):
            return self._embed_reports([text] if isinstance(text, str) else list(text))
        states = self.text.forward_text(*(text[k] for k in TEXT_INPUTS), output_all=True)
        out = {"hidden": states["itc"], "last_hidden": states["last_hidden_state"]}
        out.update(
            self.text.pool(
                states["itc"], text["word_ids"], text["sentence_ids"], text["sentence_token_mask"], text["attention_mask"]
            )
        )
        if "text_report" in self.heads:
            out["embedding"] = F.normalize(self.heads["text_report"](out["report"]), dim=-1)
        return out

    # ------------------------------------------------------------------ inference helpers

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def _embed_reports(self, reports: list[str], batch_size: int = 64) -> torch.Tensor:
        if self.tokenizer is None:
            raise RuntimeError("this model has no tokenizer: load it with from_pretrained or set model.tokenizer")
        if "image_report" not in self.heads:
            raise RuntimeError("this model has no report-level projection (levels without 'report') to embed with")
        if not reports or any(not isinstance(r, str) for r in reports):
            raise ValueError("encode_text takes a non-empty list of report strings")
        device, chunks = self._device(), []
        for start in range(0, len(reports), batch_size):
            batch = self.tokenizer(reports[start : start + batch_size])
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            chunks.append(self.encode_text(batch)["embedding"])
        return torch.cat(chunks)

    @torch.no_grad()
    def encode_volume(self, volumes: Any, *, preprocess: bool | None = None, batch_size: int = 4) -> torch.Tensor:
        """Embed volumes for retrieval (inference: no gradients).

        Args:
            volumes: a file path (NIfTI, DICOM folder, NRRD, MHA), a :class:`~velvet.data.io.Volume`,
                a tensor, a ``(B, 1, H, W, D)`` batch or a list of these. Paths and Volumes go through
                the model's preprocessing contract (``model.preprocess``).
            preprocess: for tensors: True = raw scanner values (the contract is applied), False/None
                = already model input in [0, 1]. A value range that contradicts this is warned about
                (:class:`~velvet.models.inference.IntensityWarning`).
            batch_size: volumes per forward pass.

        Returns:
            ``(N, E)`` L2-normalised image embeddings.
        """
        from velvet.models.inference import prepare_volumes

        if "image_report" not in self.heads:
            raise RuntimeError("this model has no report-level projection (levels without 'report') to embed with")
        items = list(volumes) if isinstance(volumes, (list, tuple)) else [volumes]
        contract = self.preprocess
        if contract is None:
            if preprocess or not all(isinstance(v, torch.Tensor) for v in items):
                raise RuntimeError(
                    "this model has no preprocessing contract: load it with from_pretrained or set model.preprocess"
                )
            from velvet.data.contract import PreprocessContract

            contract = PreprocessContract()  # model input is only range-checked, never transformed
        device, chunks = self._device(), []
        for start in range(0, len(items), batch_size):
            part = items[start : start + batch_size]
            image = prepare_volumes(part if len(part) > 1 else part[0], contract, preprocess=preprocess)
            chunks.append(self.encode_image(image.to(device))["embedding"])
        return torch.cat(chunks)

    def save_pretrained(self, directory: Any, **kwargs: Any) -> Any:
        """Write the model (and its ``preprocess`` / ``tokenizer``); see :func:`velvet.models.pretrained.save_pretrained`."""
        from velvet.models.pretrained import save_pretrained

        return save_pretrained(self, directory, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: Any, **kwargs: Any) -> VelvetModel:
        """Load a saved model; see :func:`velvet.models.pretrained.from_pretrained`."""
        from velvet.models.pretrained import from_pretrained

        model = from_pretrained(name_or_path, **kwargs)
        if not isinstance(model, cls):
            raise TypeError(f"{name_or_path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def image_regions(self, maps: list[torch.Tensor], level: str) -> torch.Tensor:
        """Project a vision map's voxels into the shared space: ``(B, R, E)`` for ``level`` sentence/word."""
        index = self.config.sentence_level if level == "sentence" else self.config.word_level
        regions = rearrange(maps[index], "b c h w d -> b (h w d) c")  # (B, R, C)
        return self.heads[f"image_{level}"](regions)

    def text_units(self, encoded: Mapping[str, torch.Tensor], level: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Project sentences or words into the shared space: ``(B, S|T, E)`` and their ``(B, S|T)`` mask."""
        units, mask = (
            (encoded["sentences"], encoded["sentence_mask"])
            if level == "sentence"
            else (encoded["words"], encoded["word_mask"])
        )
        head = self.heads[f"text_{level}"]
        return head(units, mask.bool()), mask

    def forward_projections(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Run every image-text projection head on a batch (``image`` plus the text fields).

        Returns the projected ``image_<level>`` / ``text_<level>`` features of the levels this model
        has heads for; used to re-estimate batch-norm statistics of the heads
        (:func:`velvet.pretraining.precise_bn.recalibrate_batch_norm`).
        """
        image = self.encode_image(batch["image"])
        text = self.encode_text(batch)
        out: dict[str, torch.Tensor] = {}
        if "embedding" in image:
            out["image_report"], out["text_report"] = image["embedding"], text["embedding"]
        for level in ("sentence", "word"):
            if f"image_{level}" in self.heads:
                out[f"image_{level}"] = self.image_regions(image["maps"], level)
                out[f"text_{level}"] = self.text_units(text, level)[0]
        return out

    def visual_tokens(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The fusion layers' memory: top-map voxels through the adapter, ``(B, N, E_v)``."""
        if not self.has_fusion:
            raise RuntimeError("this model has no fusion layers (text num_fusion_layers = 0), so no visual tokens")
        tokens = rearrange(maps[-1], "b c h w d -> b (h w d) c")  # (B, N, C_top)
        return self.heads["visual_adapter"](tokens)

    def fuse(self, text: Mapping[str, torch.Tensor], hidden: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Run the fusion layers on text states ``(B, L, E_t)`` with visual memory ``(B, N, E_v)``."""
        return self.text.forward_fusion(
            hidden, text["attention_mask"], text["sentence_ids"], text["sentence_token_mask"], visual
        )

    # ------------------------------------------------------------------ inference helpers

    @torch.no_grad()
    def similarity(self, image: Any, text: Any) -> torch.Tensor:
        """Cosine similarity ``(N_image, N_text)`` of report-level embeddings.

        Args:
            image: ``(N, E)`` image embeddings (2-D), or anything :meth:`encode_volume` takes
                (a ``(B, 1, H, W, D)`` model-input batch, file paths, volumes).
            text: ``(M, E)`` text embeddings (2-D), a ``TextBatch``, or report strings.
        """
        if not (isinstance(image, torch.Tensor) and image.ndim == 2):
            image = self.encode_volume(image)
        if isinstance(text, Mapping):
            text = self.encode_text(text)["embedding"]
        elif not (isinstance(text, torch.Tensor) and text.ndim == 2):
            text = self.encode_text(text)
        return image @ text.T

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in both encoders."""
        self.vision.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay (1-D parameters, position tables, the temperature)."""
        names = {f"vision.{n}" for n in self.vision.no_weight_decay()}
        names |= {f"text.{n}" for n in self.text.no_weight_decay()}
        names |= {n for n, p in self.named_parameters() if p.ndim < 2}
        return names

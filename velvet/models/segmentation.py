"""The segmentation model: MONAI ``SwinUNETR`` whose encoder is a velvet Swin encoder.

``SwinUNETR.swinViT`` is the same MONAI ``SwinTransformer`` that :class:`~velvet.models.vision.swin.SwinEncoder3D`
holds as ``swin``, so a pretrained velvet vision encoder loads into it key for key
(:func:`velvet.models.segmentation_encoder.load_encoder`); the decoder starts random. The class
names, the patch (ROI) size and the sliding-window settings travel in :class:`SegmentationConfig`,
so a saved model (``save_pretrained`` / ``from_pretrained``, kind ``segmentation``) segments a scan
with nothing else to configure but its preprocessing contract, which is saved beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from velvet.models.vision.config import SwinConfig

__all__ = ["ENCODER_PREFIX", "SegmentationConfig", "SegmentationModel"]

# where the Swin encoder's MONAI SwinTransformer keys live inside SegmentationModel
ENCODER_PREFIX = "net.swinViT."
_NORMS = ("instance", "batch")


@dataclass(frozen=True)
class SegmentationConfig:
    """Architecture and inference settings of a :class:`SegmentationModel`.

    Attributes:
        class_names: every output class, background (id 0) first.
        vision: the Swin encoder (a :class:`~velvet.models.vision.config.SwinConfig` dict or a
            ``{"preset": ...}``): its ``embed_dim`` is SwinUNETR's ``feature_size`` (a multiple of 12).
        roi_size: the training patch and sliding-window size, divisible by ``patch_size * 16`` (32 for 2).
        norm_name: decoder normalisation (``instance`` as in SwinUNETR, or ``batch``).
        sw_overlap: sliding-window overlap (fraction of the ROI).
        sw_batch_size: windows per forward pass.
        sw_mode: ``gaussian`` (windows weighted towards their centre) or ``constant`` blending.
    """

    class_names: tuple[str, ...]
    vision: dict[str, Any] = field(default_factory=lambda: {"preset": "swin-tv"})
    roi_size: tuple[int, int, int] = (96, 96, 96)
    norm_name: str = "instance"
    sw_overlap: float = 0.25
    sw_batch_size: int = 4
    sw_mode: Literal["gaussian", "constant"] = "gaussian"

    def __post_init__(self) -> None:
        from velvet.models.vision.factory import resolve_vision_config

        set_ = object.__setattr__
        names = tuple(str(n) for n in self.class_names)
        if len(names) < 2:
            raise ValueError(f"class_names needs background and at least one class, got {list(names)}")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names has duplicates: {list(names)}")
        set_(self, "class_names", names)
        vision = resolve_vision_config(self.vision)
        if not isinstance(vision, SwinConfig):
            raise ValueError("the segmentation model needs a Swin encoder (SwinUNETR); got a ViT config")
        if vision.embed_dim % 12:
            raise ValueError(f"SwinUNETR needs an encoder embed_dim divisible by 12, got {vision.embed_dim}")
        set_(self, "vision", vision.to_dict())
        roi = tuple(int(s) for s in self.roi_size)
        stride = vision.patch_size * 16
        if len(roi) != 3 or any(s <= 0 or s % stride for s in roi):
            raise ValueError(f"roi_size {list(roi)} must be 3 sizes divisible by {stride} (patch_size * 16)")
        set_(self, "roi_size", roi)
        if self.norm_name not in _NORMS:
            raise ValueError(f"norm_name must be one of {_NORMS}, got {self.norm_name!r}")
        if self.norm_name == "instance" and min(roi) < 2 * stride:
            # SwinUNETR's bottleneck is roi / stride voxels; instance norm needs more than one
            raise ValueError(
                f"roi_size {list(roi)} leaves a 1-voxel bottleneck, which instance norm cannot normalise: "
                f"use a roi_size of at least {2 * stride} on every axis, or norm_name: batch"
            )
        if not 0.0 <= float(self.sw_overlap) < 1.0:
            raise ValueError(f"sw_overlap must be in [0, 1), got {self.sw_overlap}")
        if int(self.sw_batch_size) < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if self.sw_mode not in ("gaussian", "constant"):
            raise ValueError(f"sw_mode must be 'gaussian' or 'constant', got {self.sw_mode!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def swin(self) -> SwinConfig:
        """The encoder's config."""
        return SwinConfig.from_dict(self.vision)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentationConfig:
        """Build from :meth:`to_dict` output.

        Raises:
            ValueError: unknown keys or bad values.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SegmentationConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> SegmentationConfig:
        return dataclasses.replace(self, **changes)


class SegmentationModel(nn.Module):
    """SwinUNETR with a velvet Swin encoder, class names and sliding-window inference.

    Args:
        config: a :class:`SegmentationConfig` (or its dict).

    Example:
        >>> m = SegmentationModel(SegmentationConfig(["background", "liver"], vision={"preset": "swin-tiny"}, roi_size=(64, 64, 64)))
        >>> m(torch.zeros(1, 1, 64, 64, 64)).shape
        torch.Size([1, 2, 64, 64, 64])
    """

    def __init__(self, config: SegmentationConfig | Mapping[str, Any]) -> None:
        super().__init__()
        from monai.networks.nets import SwinUNETR

        from velvet.models.vision.window_attention import fuse_window_attention

        self.config = config if isinstance(config, SegmentationConfig) else SegmentationConfig.from_dict(config)
        v = self.config.swin
        self.net = SwinUNETR(
            in_channels=v.in_chans,
            out_channels=self.config.num_classes,
            patch_size=v.patch_size,
            depths=tuple(v.depths),
            num_heads=tuple(v.num_heads),
            window_size=v.window_size,
            qkv_bias=v.qkv_bias,
            mlp_ratio=v.mlp_ratio,
            feature_size=v.embed_dim,
            norm_name=self.config.norm_name,
            dropout_path_rate=v.drop_path_rate,
            normalize=True,
            patch_norm=False,  # as velvet's pretrained encoders (method.md 1.1)
            use_checkpoint=v.use_checkpoint,
            use_v2=v.use_v2,
        )
        fuse_window_attention(self.net.swinViT, enable=v.fused_attention)
        self.preprocess: Any = None  # the PreprocessContract, set by the task or from_pretrained

    # ------------------------------------------------------------------ parts

    @property
    def encoder(self) -> nn.Module:
        """The Swin encoder (MONAI ``SwinTransformer``)."""
        return self.net.swinViT

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def no_weight_decay(self) -> set[str]:
        """1-D parameters and relative-position-bias tables."""
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or n.endswith("relative_position_bias_table")}

    def set_encoder_trainable(self, trainable: bool) -> None:
        """Freeze (False) or unfreeze the encoder's parameters."""
        for p in self.encoder.parameters():
            p.requires_grad_(trainable)

    # ------------------------------------------------------------------ compute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a patch.

        Args:
            x: ``(B, 1, H, W, D)``, each of H, W, D divisible by ``patch_size * 16``.

        Returns:
            ``(B, C, H, W, D)`` class logits.
        """
        return self.net(x)

    @torch.no_grad()
    def predict_logits(
        self,
        image: torch.Tensor,
        *,
        overlap: float | None = None,
        sw_batch_size: int | None = None,
        mode: str | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Sliding-window logits over a whole volume of any size (MONAI ``sliding_window_inference``).

        Args:
            image: ``(B, 1, H, W, D)`` preprocessed volume.
            overlap, sw_batch_size, mode: override the config's sliding-window settings.
            progress: show a progress bar over the windows.

        Returns:
            ``(B, C, H, W, D)`` float32 logits on ``image``'s device.
        """
        from monai.inferers import sliding_window_inference

        c = self.config
        logits = sliding_window_inference(
            image,
            roi_size=c.roi_size,
            sw_batch_size=sw_batch_size or c.sw_batch_size,
            predictor=self,
            overlap=c.sw_overlap if overlap is None else overlap,
            mode=mode or c.sw_mode,
            progress=progress,
        )
        return logits.as_tensor().float() if hasattr(logits, "as_tensor") else logits.float()

    @torch.no_grad()
    def predict_labels(self, image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Argmax class ids ``(B, H, W, D)`` (uint8 for up to 256 classes, else int16); see :meth:`predict_logits`."""
        labels = self.predict_logits(image, **kwargs).argmax(1)
        return labels.to(torch.uint8 if self.config.num_classes <= 256 else torch.int16)

    # ------------------------------------------------------------------ saving

    @classmethod
    def from_checkpoint(cls, path: Any) -> SegmentationModel:
        """The model (with its ``.preprocess``) of a Lightning checkpoint of the segmentation task.

        Read with ``weights_only=True``; loaded strictly.

        Raises:
            ValueError: not a checkpoint of the segmentation task.
        """
        from velvet.data.contract import PreprocessContract
        from velvet.models.weights import load_state_dict_checked, read_weights

        data = read_weights(path)
        meta = data.get("velvet") if isinstance(data, dict) else None
        if not isinstance(meta, dict) or meta.get("kind") != "segmentation":
            raise ValueError(f"{path}: not a checkpoint of the segmentation task (no velvet segmentation record)")
        model = cls(SegmentationConfig.from_dict(meta["model_config"]))
        prefix = "segmenter."
        state = {k[len(prefix) :]: v for k, v in data["state_dict"].items() if k.startswith(prefix)}
        load_state_dict_checked(model, state, source=f"{path} (state_dict)")
        model.preprocess = PreprocessContract.from_dict(meta["preprocess"]) if meta.get("preprocess") else None
        return model

    def save_pretrained(self, directory: Any, **kwargs: Any) -> Any:
        """See :func:`velvet.models.pretrained.save_pretrained` (kind ``segmentation``)."""
        from velvet.models.pretrained import save_pretrained

        return save_pretrained(self, directory, **kwargs)


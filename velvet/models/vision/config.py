"""Vision encoder configuration: two frozen dataclasses and the named presets (method.md 1.1, 1.2, 5.2).

This module imports nothing heavy (no torch, no MONAI): the CLI and checkpoint configs read it freely.

Presets:

============== ======================================================================================
``swin-tv``    Swin "Tv": embed 48, depths (2,2,2,2), heads (3,6,12,24); the default SwinUNETR encoder
``swin-sv``    Swin "Sv" (main model): embed 48, depths (2,8,8,8), heads (4,8,16,32)
``swin-bv``    Swin "Bv": embed 96, depths (2,8,8,8), heads (4,8,16,32); 1,536-channel top map
``swin-tiny``  tests and CPU demos: embed 12, depths (2,2,2,2) (so shifted windows run), 32^3 input
``vit3d-b16``  the M3D-CLIP-style baseline (method.md 5.2): MONAI ViT-B, 256x256x32, patch 16x16x4
``vit3d-tiny`` tests: hidden 32, 4 layers (one per returned level), 64x64x16, patch 16x16x4
============== ======================================================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "VISION_PRESETS",
    "SwinConfig",
    "ViTConfig",
    "VisionConfig",
    "get_vision_config",
    "list_vision_presets",
    "vision_config_from_dict",
]

Arch = Literal["swin", "vit"]


def _triple(value: Any, name: str) -> tuple[int, int, int]:
    items = (value,) * 3 if isinstance(value, int) else tuple(value)
    if len(items) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise ValueError(f"{name} needs 3 positive integers (H, W, D), got {value!r}")
    return items  # type: ignore[return-value]


def _ints(value: Any, name: str, length: int | None = None) -> tuple[int, ...]:
    items = tuple(value)
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise ValueError(f"{name} needs positive integers, got {value!r}")
    if length is not None and len(items) != length:
        raise ValueError(f"{name} needs {length} values, got {value!r}")
    return items


class _ConfigIO:
    """``to_dict``/``from_dict`` shared by both configs; the dict carries ``"arch"``."""

    arch: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists), with ``"arch"`` first."""
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {"arch": self.arch, **{k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Build from :meth:`to_dict` output (an ``"arch"`` key, when present, must match).

        Raises:
            ValueError: unknown keys, a different ``arch``, or bad values.
        """
        data = dict(data)
        arch = data.pop("arch", cls.arch)
        if arch != cls.arch:
            raise ValueError(f"{cls.__name__} cannot be built from an arch={arch!r} config")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class SwinConfig(_ConfigIO):
    """A 3D Swin encoder built on MONAI's ``SwinTransformer`` (the SwinUNETR encoder).

    Attributes:
        img_size: the ``(H, W, D)`` input the model is meant for (any size divisible by
            ``patch_size * 16`` runs; this one sizes the SSL decoder and documents the checkpoint).
        in_chans: input channels.
        embed_dim: MONAI's ``embed_dim`` = SwinUNETR ``feature_size`` ``C``: the patch-embedding width.
            Stage ``i`` (1..4) has ``C * 2**i`` channels, so the encoder's global width is ``16 C``.
        depths: Swin blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window edge (cubic windows).
        patch_size: patch-embedding edge (cubic patches); the top map has stride ``patch_size * 16``.
        mlp_ratio: MLP width / channels.
        qkv_bias: bias on the q, k, v projections.
        drop_path_rate: stochastic depth (0 in the reference).
        use_checkpoint: gradient checkpointing of every Swin block (MONAI ``use_checkpoint``).
        use_v2: SwinUNETR-v2 residual conv block before each stage.
        fused_attention: window attention through ``scaled_dot_product_attention`` (same weights,
            same outputs; see :mod:`velvet.models.vision.window_attention`).
    """

    img_size: tuple[int, int, int] = (96, 96, 96)
    in_chans: int = 1
    embed_dim: int = 48
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 2
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    use_checkpoint: bool = False
    use_v2: bool = False
    fused_attention: bool = True

    arch = "swin"  # class attribute, not a field

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise JSON lists into tuples
        set_(self, "img_size", _triple(self.img_size, "img_size"))
        set_(self, "depths", _ints(self.depths, "depths", 4))
        set_(self, "num_heads", _ints(self.num_heads, "num_heads", 4))
        for name in ("in_chans", "embed_dim", "window_size", "patch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for stage, heads in enumerate(self.num_heads, start=1):
            width = self.embed_dim * 2 ** (stage - 1)  # MONAI stage widths before merging: C, 2C, 4C, 8C
            if width % heads:
                raise ValueError(f"stage {stage} width {width} is not divisible by num_heads {heads}")
        stride = self.patch_size * 16
        if any(s % stride for s in self.img_size):
            raise ValueError(f"img_size {self.img_size} must be divisible by patch_size * 16 = {stride}")
        if self.mlp_ratio <= 0 or not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError("mlp_ratio must be > 0 and drop_path_rate in [0, 1)")

    @property
    def feature_dims(self) -> tuple[int, ...]:
        """Channels of the 4 returned stage maps, fine -> coarse: ``(2C, 4C, 8C, 16C)``."""
        return tuple(self.embed_dim * 2**i for i in range(1, 5))

    @property
    def feature_strides(self) -> tuple[tuple[int, int, int], ...]:
        """``(H, W, D)`` stride of each returned map relative to the input."""
        return tuple((self.patch_size * 2**i,) * 3 for i in range(1, 5))


@dataclass(frozen=True)
class ViTConfig(_ConfigIO):
    """A 3D ViT encoder built on MONAI's ``ViT`` (the M3D-CLIP-style baseline, method.md 5.2).

    Attributes:
        img_size: the fixed ``(H, W, D)`` input (learned position embeddings fix the token grid).
        patch_size: ``(H, W, D)`` patch edges; the token grid is ``img_size // patch_size``.
        in_chans: input channels.
        hidden_size: token width (the encoder's global width).
        mlp_dim: MLP width.
        num_layers: transformer blocks.
        num_heads: attention heads.
        classification: prepend a learned ``[CLS]`` token and use it (after the final LayerNorm) as
            the pooled feature, as M3D-CLIP does; False pools the mean of the patch tokens.
        qkv_bias: bias on the q, k, v projection (MONAI's default: none).
        proj_type: MONAI patch embedding, ``"conv"`` or ``"perceptron"``.
        pos_embed_type: MONAI position embedding, ``"learnable"``, ``"sincos"`` or ``"none"``.
        fused_attention: MONAI's ``use_flash_attention`` switch (``scaled_dot_product_attention``).
        feature_layers: 1-based block indices whose outputs are the returned levels, fine -> coarse;
            the last must be ``num_layers``. None: 4 evenly spaced layers (3, 6, 9, 12 for 12 layers),
            so the ViT returns as many levels as the Swin and the hierarchical losses run unchanged.
        use_checkpoint: gradient checkpointing of every block.
    """

    img_size: tuple[int, int, int] = (256, 256, 32)
    patch_size: tuple[int, int, int] = (16, 16, 4)
    in_chans: int = 1
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    classification: bool = True
    qkv_bias: bool = False
    proj_type: Literal["conv", "perceptron"] = "conv"
    pos_embed_type: Literal["learnable", "sincos", "none"] = "learnable"
    fused_attention: bool = True
    feature_layers: tuple[int, ...] | None = None
    use_checkpoint: bool = False

    arch = "vit"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "img_size", _triple(self.img_size, "img_size"))
        set_(self, "patch_size", _triple(self.patch_size, "patch_size"))
        if any(i % p for i, p in zip(self.img_size, self.patch_size, strict=True)):
            raise ValueError(f"img_size {self.img_size} must be divisible by patch_size {self.patch_size}")
        for name in ("in_chans", "hidden_size", "mlp_dim", "num_layers", "num_heads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.proj_type not in ("conv", "perceptron"):
            raise ValueError(f"proj_type must be 'conv' or 'perceptron', got {self.proj_type!r}")
        if self.pos_embed_type not in ("learnable", "sincos", "none"):
            raise ValueError(
                f"pos_embed_type must be 'learnable', 'sincos' or 'none', got {self.pos_embed_type!r}"
            )
        layers = self.feature_layers
        if layers is None:
            n = min(4, self.num_layers)
            layers = tuple(dict.fromkeys(round(self.num_layers * (i + 1) / n) for i in range(n)))
        layers = _ints(layers, "feature_layers")
        if list(layers) != sorted(set(layers)) or layers[-1] != self.num_layers:
            raise ValueError(
                f"feature_layers must increase strictly and end at num_layers={self.num_layers}, got {layers}"
            )
        set_(self, "feature_layers", layers)

    @property
    def feature_dims(self) -> tuple[int, ...]:
        """Channels of the returned levels (all ``hidden_size``)."""
        return (self.hidden_size,) * len(self.feature_layers)  # type: ignore[arg-type]

    @property
    def feature_strides(self) -> tuple[tuple[int, int, int], ...]:
        """``(H, W, D)`` stride of each returned level (all ``patch_size``)."""
        return (self.patch_size,) * len(self.feature_layers)  # type: ignore[arg-type]


VisionConfig = SwinConfig | ViTConfig

VISION_PRESETS: dict[str, SwinConfig | ViTConfig] = {
    "swin-tv": SwinConfig(embed_dim=48, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24)),
    "swin-sv": SwinConfig(embed_dim=48, depths=(2, 8, 8, 8), num_heads=(4, 8, 16, 32)),
    "swin-bv": SwinConfig(embed_dim=96, depths=(2, 8, 8, 8), num_heads=(4, 8, 16, 32)),
    "swin-tiny": SwinConfig(img_size=(32, 32, 32), embed_dim=12, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)),
    "vit3d-b16": ViTConfig(),
    "vit3d-tiny": ViTConfig(
        img_size=(64, 64, 16),
        hidden_size=32,
        mlp_dim=64,
        num_layers=4,
        num_heads=2,
        feature_layers=(1, 2, 3, 4),
    ),
}


def list_vision_presets() -> list[str]:
    """Names of the built-in vision encoder presets."""
    return sorted(VISION_PRESETS)


def get_vision_config(name: str) -> SwinConfig | ViTConfig:
    """The preset config called ``name``.

    Raises:
        ValueError: unknown name (the message lists the presets).
    """
    if name not in VISION_PRESETS:
        raise ValueError(f"unknown vision encoder preset {name!r}; presets: {list_vision_presets()}")
    return VISION_PRESETS[name]


def vision_config_from_dict(data: Mapping[str, Any]) -> SwinConfig | ViTConfig:
    """Build a config from a dict with an ``"arch"`` key (``"swin"`` or ``"vit"``), e.g. from JSON.

    ``{"preset": name, **overrides}`` starts from a preset instead.

    Raises:
        ValueError: missing/unknown arch or preset, unknown keys, bad values.
    """
    data = dict(data)
    preset = data.pop("preset", None)
    if preset is not None:
        return get_vision_config(preset).replace(**data)
    arch = data.get("arch")
    classes: dict[str, type[SwinConfig] | type[ViTConfig]] = {"swin": SwinConfig, "vit": ViTConfig}
    if arch not in classes:
        raise ValueError(f"a vision config needs arch 'swin' or 'vit', got {arch!r}")
    return classes[arch].from_dict(data)

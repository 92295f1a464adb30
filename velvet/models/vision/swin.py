"""The 3D Swin encoder (method.md 1.1): MONAI's ``SwinTransformer`` with multi-level outputs.

State-dict keys: the MONAI module is held as ``self.swin``, so every key is ``"swin." + k`` where ``k`` is
the key of a plain MONAI ``SwinTransformer`` with the same hyper-parameters, and the key of MONAI
``SwinUNETR`` is ``"swinViT." + k``. Converting weights is a prefix swap (``swinViT.`` <-> ``swin.``);
the self-supervised ``model_swinvit.pt`` additionally uses ``module.`` and ``fc1/fc2`` for
``linear1/linear2`` (:func:`velvet.models.convert.load_swin_weights` handles that).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from monai.networks.nets.swin_unetr import SwinTransformer, SwinTransformerBlock
from torch import nn

from velvet.models.vision.base import VisionEncoderOutput, resolve_level_indices
from velvet.models.vision.window_attention import fuse_window_attention

__all__ = ["SwinEncoder3D"]

logger = logging.getLogger(__name__)

NUM_STAGES = 4


class SwinEncoder3D(nn.Module):
    """MONAI Swin transformer returning the 4 stage maps, layer-normalised per channel without affine.

    For a 96^3 input with ``embed_dim`` C=48 the maps are 2C@24^3, 4C@12^3 ("bottom": 1,728 word-level
    regions), 8C@6^3 ("middle": 216 sentence-level regions) and 16C@3^3 ("top"), exactly as MONAI's
    ``SwinTransformer(x, normalize=True)[1:]``; the patch-embedding output (index 0) is not returned.

    Args:
        img_size: the ``(H, W, D)`` input size the model is configured for (inputs of any size
            divisible by ``16 * patch_size`` are accepted).
        in_chans: input channels.
        embed_dim: MONAI's ``embed_dim`` (SwinUNETR ``feature_size``), the patch-embedding width C.
            Not to be confused with the attribute :attr:`embed_dim`, the top-map width ``16 C``.
        depths: Swin blocks per stage (4 stages).
        num_heads: attention heads per stage.
        window_size: cubic window edge.
        patch_size: cubic patch edge.
        mlp_ratio: MLP width / channels.
        qkv_bias: bias on q, k, v.
        drop_path_rate: stochastic depth.
        use_checkpoint: gradient checkpointing of every block.
        use_v2: SwinUNETR-v2 residual conv block before each stage.
        fused_attention: use :mod:`~velvet.models.vision.window_attention` (identical outputs, faster).

    Example:
        >>> enc = SwinEncoder3D(img_size=(32, 32, 32), embed_dim=12, num_heads=(1, 2, 2, 4))
        >>> out = enc(torch.zeros(1, 1, 32, 32, 32))
        >>> [tuple(m.shape) for m in out["maps"]], tuple(out["pooled"].shape)
        ([(1, 24, 8, 8, 8), (1, 48, 4, 4, 4), (1, 96, 2, 2, 2), (1, 192, 1, 1, 1)], (1, 192))
    """

    def __init__(
        self,
        *,
        img_size: Sequence[int] = (96, 96, 96),
        in_chans: int = 1,
        embed_dim: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        use_v2: bool = False,
        fused_attention: bool = True,
    ) -> None:
        super().__init__()
        if len(depths) != NUM_STAGES or len(num_heads) != NUM_STAGES:
            raise ValueError(f"depths and num_heads need {NUM_STAGES} values, got {depths} and {num_heads}")
        # method.md 1.1: all dropout 0, LayerNorm, no patch norm, "merging" downsample.
        self.swin = SwinTransformer(
            in_chans=in_chans,
            embed_dim=embed_dim,
            window_size=(window_size,) * 3,
            patch_size=(patch_size,) * 3,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=drop_path_rate,
            norm_layer=nn.LayerNorm,
            patch_norm=False,
            use_checkpoint=use_checkpoint,
            spatial_dims=3,
            downsample="merging",
            use_v2=use_v2,
        )
        fuse_window_attention(self.swin, enable=fused_attention)
        self.img_size: tuple[int, int, int] = tuple(img_size)  # type: ignore[assignment]
        self.patch_size: tuple[int, int, int] = (patch_size,) * 3
        self.in_chans = in_chans
        self.feature_dims: tuple[int, ...] = tuple(embed_dim * 2**i for i in range(1, NUM_STAGES + 1))
        self.feature_strides: tuple[tuple[int, int, int], ...] = tuple(
            (patch_size * 2**i,) * 3 for i in range(1, NUM_STAGES + 1)
        )
        self.embed_dim = self.feature_dims[-1]

    @property
    def stride(self) -> int:
        """Total stride of the top map (``16 * patch_size``); inputs must be divisible by it."""
        return self.feature_strides[-1][0]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected a (B, {self.in_chans}, H, W, D) volume, got shape {tuple(x.shape)}")
        if any(s % self.stride for s in x.shape[2:]):
            raise ValueError(
                f"volume size {tuple(x.shape[2:])} must be divisible by {self.stride} on every axis"
            )

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Stage maps ``(B, C_i, h_i, w_i, d_i)`` at ``indices`` (0..3, fine -> coarse); stops at the deepest.

        Args:
            x: ``(B, in_chans, H, W, D)`` float volume, each of H, W, D divisible by :attr:`stride`.
            indices: None (all 4), an int n (the last n) or level indices.

        Raises:
            ValueError: a badly shaped input or bad indices.
        """
        self._check_input(x)
        wanted = resolve_level_indices(indices, NUM_STAGES)
        swin = self.swin
        stages = (swin.layers1, swin.layers2, swin.layers3, swin.layers4)
        convs = (swin.layers1c, swin.layers2c, swin.layers3c, swin.layers4c) if swin.use_v2 else None
        # The same sequence as MONAI SwinTransformer.forward, minus the unused patch-level output.
        x = swin.pos_drop(swin.patch_embed(x))
        maps = []
        for i in range(wanted[-1] + 1):
            if convs is not None:
                x = convs[i][0](x.contiguous())
            x = stages[i][0](x.contiguous())
            if i in wanted:
                maps.append(swin.proj_out(x, normalize=True))
        return maps

    def forward(self, x: torch.Tensor) -> VisionEncoderOutput:
        """Encode a volume.

        Args:
            x: ``(B, in_chans, H, W, D)`` float volume (e.g. HU-windowed to [0, 1]).

        Returns:
            ``maps``: the 4 stage maps (see :meth:`forward_intermediates`); ``pooled``: ``(B, 16 C)``
            average of the top map.
        """
        maps = self.forward_intermediates(x)
        return {"maps": maps, "pooled": maps[-1].mean(dim=(2, 3, 4))}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every Swin block (MONAI's ``use_checkpoint``: attention and MLP halves separately)."""
        for module in self.modules():
            if isinstance(module, SwinTransformerBlock):
                module.use_checkpoint = enable

    def no_weight_decay(self) -> set[str]:
        """Biases, norm weights (every 1-D parameter) and the relative-position-bias tables."""
        return {
            name
            for name, p in self.named_parameters()
            if p.ndim <= 1 or name.endswith("relative_position_bias_table")
        }

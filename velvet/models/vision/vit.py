"""The 3D ViT baseline (method.md 5.2, M3D-CLIP style): MONAI's ``ViT`` with multi-level outputs.

State-dict keys are ``"vit." + k`` with ``k`` a MONAI ``ViT`` key. Two groups of MONAI parameters that
would never get a gradient are removed, so a converter drops their keys from MONAI/M3D checkpoints:
the classification head (``classification_head.*``; the encoder returns features) and the unused
cross-attention LayerNorm of every block (``blocks.<i>.norm_cross_attn.*``).

Differences from the reference's use of the same MONAI ViT, on purpose: the pooled ``[CLS]`` feature is
taken after the final LayerNorm (the reference took the pre-norm last hidden state, which left that
LayerNorm untrained), and every returned level goes through that same final LayerNorm (timm's
``forward_intermediates(norm=True)`` convention) so all levels share one scale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from einops import rearrange
from monai.networks.nets import ViT
from torch import nn
from torch.utils.checkpoint import checkpoint

from velvet.models.vision.base import VisionEncoderOutput, resolve_level_indices

__all__ = ["ViTEncoder3D"]

logger = logging.getLogger(__name__)


class ViTEncoder3D(nn.Module):
    """MONAI ViT returning hidden states of several blocks as maps on the patch grid.

    For the M3D-CLIP configuration (256x256x32 input, patch 16x16x4, 12 layers, 768 wide) the grid is
    16x16x8 (2,048 tokens) and the 4 default levels are the outputs of blocks 3, 6, 9 and 12, each
    ``(B, 768, 16, 16, 8)``: all levels have the same resolution, unlike the Swin's pyramid.
    M3D-CLIP itself orders its volumes ``(D, H, W)`` (32x256x256, patch 4x16x16): load its weights
    with :func:`velvet.models.convert.load_vit_weights` and ``source_axes="DHW"``.

    Args:
        img_size: the fixed ``(H, W, D)`` input size (learned position embeddings).
        patch_size: ``(H, W, D)`` patch edges.
        in_chans: input channels.
        hidden_size: token width (= :attr:`embed_dim`).
        mlp_dim: MLP width.
        num_layers: transformer blocks.
        num_heads: attention heads.
        classification: prepend a ``[CLS]`` token and pool it; else pool the mean of the patch tokens.
        qkv_bias: bias on the q, k, v projection.
        proj_type: MONAI patch embedding, ``"conv"`` or ``"perceptron"``.
        pos_embed_type: MONAI position embedding, ``"learnable"``, ``"sincos"`` or ``"none"``.
        fused_attention: MONAI's ``use_flash_attention`` (``scaled_dot_product_attention``).
        feature_layers: 1-based blocks returned as levels, increasing, the last = ``num_layers``;
            None: 4 evenly spaced blocks.
        use_checkpoint: gradient checkpointing of every block.
    """

    def __init__(
        self,
        *,
        img_size: Sequence[int] = (256, 256, 32),
        patch_size: Sequence[int] = (16, 16, 4),
        in_chans: int = 1,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        classification: bool = True,
        qkv_bias: bool = False,
        proj_type: str = "conv",
        pos_embed_type: str = "learnable",
        fused_attention: bool = True,
        feature_layers: Sequence[int] | None = None,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if feature_layers is None:
            n = min(4, num_layers)
            feature_layers = tuple(dict.fromkeys(round(num_layers * (i + 1) / n) for i in range(n)))
        layers = tuple(feature_layers)
        if list(layers) != sorted(set(layers)) or layers[0] < 1 or layers[-1] != num_layers:
            raise ValueError(
                f"feature_layers must increase strictly within 1..{num_layers} and end at it, got {layers}"
            )
        self.vit = ViT(
            in_channels=in_chans,
            img_size=tuple(img_size),
            patch_size=tuple(patch_size),
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            proj_type=proj_type,
            pos_embed_type=pos_embed_type,
            classification=classification,
            dropout_rate=0.0,
            spatial_dims=3,
            qkv_bias=qkv_bias,
            save_attn=False,
        )
        # Parameters that never get a gradient would break DDP (unused parameters) and weight decay
        # bookkeeping: MONAI's classification head (an encoder returns features) and the LayerNorm
        # every MONAI block builds for a cross-attention that is off here.
        if hasattr(self.vit, "classification_head"):
            del self.vit.classification_head
        for blk in self.vit.blocks:
            if not blk.with_cross_attention:
                del blk.norm_cross_attn
        self.set_fused_attention(fused_attention)
        self.img_size: tuple[int, int, int] = tuple(img_size)  # type: ignore[assignment]
        self.patch_size: tuple[int, int, int] = tuple(patch_size)  # type: ignore[assignment]
        self.grid: tuple[int, int, int] = tuple(i // p for i, p in zip(img_size, patch_size, strict=True))  # type: ignore[assignment]
        self.in_chans = in_chans
        self.classification = classification
        self.feature_layers = layers
        self.embed_dim = hidden_size
        self.feature_dims: tuple[int, ...] = (hidden_size,) * len(layers)
        self.feature_strides: tuple[tuple[int, int, int], ...] = (self.patch_size,) * len(layers)
        self.grad_checkpointing = use_checkpoint

    def set_fused_attention(self, enable: bool = True) -> None:
        """Switch MONAI's ``SABlock.use_flash_attention`` (SDPA) in every block; weights are unchanged."""
        for blk in self.vit.blocks:
            blk.attn.use_flash_attention = enable

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_chans or tuple(x.shape[2:]) != self.img_size:
            raise ValueError(
                f"expected a (B, {self.in_chans}, {', '.join(map(str, self.img_size))}) volume "
                f"(fixed by the position embeddings), got shape {tuple(x.shape)}"
            )

    def _hidden_states(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Final-LayerNorm'd tokens ``(B, N_prefix + N, E)`` after each block in ``layers`` (1-based)."""
        self._check_input(x)
        tokens = self.vit.patch_embedding(x)  # (B, N, E), tokens in (h w d) order
        if self.classification:
            tokens = torch.cat((self.vit.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        out = []
        for i, blk in enumerate(self.vit.blocks, start=1):
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(blk, tokens, use_reentrant=False)
            else:
                tokens = blk(tokens)
            if i in layers:
                out.append(self.vit.norm(tokens))
            if i == layers[-1]:
                break
        return out

    def _to_map(self, tokens: torch.Tensor) -> torch.Tensor:
        h, w, d = self.grid
        patches = tokens[:, 1:] if self.classification else tokens
        return rearrange(patches, "b (h w d) e -> b e h w d", h=h, w=w, d=d)

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Levels ``(B, hidden, h, w, d)`` on the patch grid at ``indices`` (fine -> coarse = shallow -> deep).

        Args:
            x: ``(B, in_chans, *img_size)`` float volume.
            indices: None (all levels), an int n (the last n) or level indices into :attr:`feature_layers`.

        Raises:
            ValueError: a badly shaped input or bad indices.
        """
        wanted = resolve_level_indices(indices, len(self.feature_layers))
        states = self._hidden_states(x, [self.feature_layers[i] for i in wanted])
        return [self._to_map(t) for t in states]

    def forward(self, x: torch.Tensor) -> VisionEncoderOutput:
        """Encode a volume.

        Args:
            x: ``(B, in_chans, *img_size)`` float volume in [0, 1].

        Returns:
            ``maps``: one ``(B, hidden, h, w, d)`` map per feature layer; ``pooled``: ``(B, hidden)``,
            the normalised ``[CLS]`` token, or the mean patch token without ``classification``.
        """
        states = self._hidden_states(x, self.feature_layers)
        top = states[-1]
        pooled = top[:, 0] if self.classification else top.mean(dim=1)
        return {"maps": [self._to_map(t) for t in states], "pooled": pooled}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every transformer block (``torch.utils.checkpoint``, non-reentrant)."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Every 1-D parameter, the position embeddings and the ``[CLS]`` token."""
        return {
            name
            for name, p in self.named_parameters()
            if p.ndim <= 1 or name.endswith(("position_embeddings", "cls_token"))
        }

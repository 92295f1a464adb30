"""Shared vocabulary: the shape glossary and the keys of a batch.

Shape letters used in every docstring of the library:

====== ==============================================================================
``B``  batch
``C``  channels
``H``  first spatial axis of a volume after RAS orientation (x)
``W``  second spatial axis (y)
``D``  third spatial axis, the axial slice axis (z, inferior -> superior)
``N``  visual tokens
``L``  text tokens (sub-word pieces, including ``[CLS]`` and ``[SEN_k]``)
``S``  sentences of a report
``T``  merged words of a report
``R``  image regions (voxels of a feature map)
``E``  embedding width
``K``  finding labels
====== ==============================================================================

Volumes follow MONAI's channel-first layout ``(B, C, H, W, D)``: the array axes are the voxel axes
of the RAS-oriented image, depth (the slice axis) last. A method.md input of "96x96x96" is
``(B, 1, 96, 96, 96)``; the M3D-style ViT input "256x256x32" is ``(B, 1, 256, 256, 32)``.
"""

from __future__ import annotations

from typing import TypedDict

import torch

__all__ = ["TextBatch", "VolumeTextBatch"]


class TextBatch(TypedDict, total=False):
    """Tokenised reports in the TriBERT layout (see :mod:`velvet.data.tokenization`).

    Keys:
        input_ids: ``(B, L)`` int64 token ids; ``[CLS]`` at 0, one ``[SEN_k]`` before each sentence.
        attention_mask: ``(B, L)`` bool, True on real tokens, False on padding.
        token_type_ids: ``(B, L)`` int64 sentence index 1..S (``[CLS]`` gets 1, padding 0).
        sentence_ids: ``(B, L)`` int64 sentence index 1..S of each token, 0 for ``[CLS]``, -1 for padding.
        sentence_token_mask: ``(B, L)`` bool, True on ``[SEN_k]`` tokens.
        word_ids: ``(B, L)`` int64 index of the merged word a piece belongs to (0..T-1), -1 for
            ``[CLS]``, ``[SEN_k]`` and padding.
        special_tokens_mask: ``(B, L)`` bool, True on tokens MLM must never mask (``[CLS]``,
            ``[SEN_k]``, padding).
        num_sentences: ``(B,)`` int64 sentence count S_b.
        num_words: ``(B,)`` int64 merged-word count T_b.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    sentence_ids: torch.Tensor
    sentence_token_mask: torch.Tensor
    word_ids: torch.Tensor
    special_tokens_mask: torch.Tensor
    num_sentences: torch.Tensor
    num_words: torch.Tensor


class VolumeTextBatch(TextBatch, total=False):
    """A collated batch of the pretraining DataModule.

    Keys (in addition to :class:`TextBatch`):
        image: ``(B, 1, H, W, D)`` float32 in [0, 1], the preprocessed "global" view.
        image_local: ``(B, 1, H, W, D)`` float32, the random "local" view for vision SSL (when enabled).
        labels: ``(B, K)`` float32 0/1 finding labels (NaN where unknown), when the manifest has them.
        label_map: ``(B, 1, H, W, D)`` int64 segmentation labels, when requested.
        ids: list of B case ids (strings).
        index: ``(B,)`` int64 position of each sample's record in its dataset (unique within a split;
            used to drop the repeats a distributed sampler pads the split with).
        reports: list of B cleaned report strings.
    """

    image: torch.Tensor
    image_local: torch.Tensor
    labels: torch.Tensor
    label_map: torch.Tensor
    ids: list[str]
    index: torch.Tensor
    reports: list[str]

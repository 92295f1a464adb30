"""Accumulation that keeps every negative: contrastive losses on a batch larger than memory allows.

Plain gradient accumulation over k micro-batches of size b gives each contrastive loss only b
negatives. Here (the gradient-cache method of Gao et al. 2021, "Scaling Deep Contrastive Learning
Batch Size under Memory Limited Setup"):

1. every micro-batch is encoded without a graph, and its contrastive features kept
   (report embeddings, sentence/word units and regions: a few MB);
2. the image-text contrastive losses are computed on the concatenated features, with all k*b
   negatives, and backpropagated to those features (and to the temperature);
3. each micro-batch is encoded again with a graph and backpropagated with its slice of the
   feature gradients, under the same random state as in step 1 (dropout masks match).

The image-text contrastive gradients equal those of one big batch when a sample's features do not
depend on the other samples encoded with it: plain projections (``projection_norm: "none"``; batch
norm, whose statistics would come from each micro-batch, is refused) and no dropout (with dropout,
step 3 replays step 1's masks, so the gradients are exact for the loss under the masks drawn per
micro-batch, which are not those one big forward pass would draw). Objectives that are not
image-text contrastive (vision SSL, MLM, ITM) are computed per micro-batch in step 3, weighted by
its share of the batch; their negatives (NT-Xent views, ITM hard negatives) come from the
micro-batch and their random draws from ``generator_factory``.

Under DDP a step backpropagates several times (first to the temperature alone), which DDP's
reducer does not allow; run the backward calls under the wrapper's ``no_sync`` and average the
gradients once afterwards (:func:`average_gradients`), which gives DDP's averaged gradient. Each
rank caches its own batch; the contrastive losses gather negatives across ranks as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from velvet.pretraining.objectives import LOSS_TERMS, VelvetPretrainer

__all__ = ["average_gradients", "cached_negatives_step", "split_batch"]

# contrastive features that cross micro-batches; the dict value says which dim is ragged
_CACHED = {
    "image_embedding": None,
    "text_embedding": None,
    "sentence_regions": None,
    "sentence_units": 1,
    "sentence_mask": 1,
    "word_regions": None,
    "word_units": 1,
    "word_mask": 1,
}


def split_batch(batch: Mapping[str, Any], size: int) -> list[dict[str, Any]]:
    """Cut a collated batch into micro-batches of ``size`` samples (tensors and lists along dim 0)."""
    n = batch["image"].shape[0]
    chunks = []
    for start in range(0, n, size):
        chunk = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n or isinstance(value, list) and len(value) == n:
                chunk[key] = value[start : start + size]
            else:
                chunk[key] = value
        chunks.append(chunk)
    return chunks


def _cat_padded(parts: list[torch.Tensor], ragged_dim: int | None) -> torch.Tensor:
    if ragged_dim is None:
        return torch.cat(parts)
    length = max(p.shape[ragged_dim] for p in parts)
    padded = []
    for p in parts:
        shape = list(p.shape)
        shape[ragged_dim] = length - p.shape[ragged_dim]
        padded.append(torch.cat([p, p.new_zeros(shape)], dim=ragged_dim))  # zeros: mask False / unit 0
    return torch.cat(padded)


def cached_negatives_step(
    pretrainer: VelvetPretrainer,
    batch: Mapping[str, Any],
    micro_batch_size: int,
    *,
    weights: Mapping[str, float],
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    generator_factory: Callable[[int], torch.Generator | None] = lambda i: None,
    no_sync: Callable[[], AbstractContextManager[Any]] = nullcontext,
    sync_gradients: Callable[[], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Run forward and backward of one batch in micro-batches, keeping every contrastive negative.

    Args:
        pretrainer: the objectives (in training mode).
        batch: the full (logical) batch.
        micro_batch_size: samples encoded at once (bounds activation memory).
        weights: objective -> weight (the task's loss weights).
        backward: how to backpropagate a loss (``LightningModule.manual_backward`` under Lightning).
        generator_factory: micro-batch index -> generator for its random objectives.
        no_sync: a context in which every backward call of the step runs (DDP: the wrapper's
            ``no_sync``, so its reducer never sees the several backward calls of one step).
        sync_gradients: called once after the last backward (DDP: :func:`average_gradients` of the
            wrapped module's parameters over its process group).

    Returns:
        Detached loss terms of the batch (contrastive terms over all negatives; the others averaged
        over micro-batches by size), ``loss`` (the weighted total) and the report embeddings.

    Raises:
        ValueError: the model has batch norm in training mode (``projection_norm: "batch"``).
    """
    _refuse_batch_norm(pretrainer.model)
    chunks = split_batch(batch, micro_batch_size)
    n = batch["image"].shape[0]
    states, parts = [], []
    with torch.no_grad():  # 1. features of every micro-batch, no graph
        for chunk in chunks:
            states.append(_rng_state())
            feats = pretrainer.contrastive_features(chunk)
            parts.append({k: feats[k] for k in _CACHED if k in feats})
    keys = list(parts[0])
    leaves = {k: _cat_padded([p[k] for p in parts], _CACHED[k]) for k in keys}
    for v in leaves.values():
        if v.is_floating_point():
            v.requires_grad_(True)
    other_sums: dict[str, torch.Tensor] = {}
    with no_sync():
        terms = pretrainer.contrastive_losses(leaves)  # 2. the contrastive losses with all negatives
        contrastive = _weighted(terms, weights)
        if contrastive.requires_grad:
            backward(contrastive)
        grads = {k: v.grad for k, v in leaves.items() if v.is_floating_point() and v.grad is not None}
        start = 0
        for i, chunk in enumerate(chunks):  # 3. replay each micro-batch with its feature gradients
            size = chunk["image"].shape[0]
            _set_rng_state(states[i])
            feats = pretrainer.contrastive_features(chunk)
            surrogate = sum(
                (feats[k] * _slice(g, start, size, feats[k].shape)).sum() for k, g in grads.items()
            )
            others = pretrainer.other_losses(chunk, feats, generator_factory(i))
            loss = _weighted(others, weights) * (size / n) + surrogate
            if isinstance(loss, torch.Tensor) and loss.requires_grad:
                backward(loss)
            for k, v in others.items():
                other_sums[k] = other_sums.get(k, 0.0) + v.detach() * (size / n)
            start += size
    if sync_gradients is not None:
        sync_gradients()
    out = {k: v.detach() for k, v in terms.items()}
    out.update(other_sums)
    out["loss"] = _weighted(out, weights).detach()
    for key in ("image_embedding", "text_embedding"):
        if key in leaves:
            out[key] = leaves[key].detach()
    return out


def average_gradients(
    parameters: Iterable[torch.Tensor], *, group: Any = None, bucket_mb: float = 64.0
) -> None:
    """Average the parameters' ``.grad`` over the ranks of ``group`` in place, as DDP does.

    The gradients are flattened (per device and dtype, in buckets of at most ``bucket_mb``) and
    summed with one ``all_reduce`` per bucket (a single call for a small model), then divided by
    the world size. A parameter without a gradient on some ranks counts as zeros there; one without
    a gradient on every rank keeps ``grad = None`` (DDP leaves globally unused parameters alone).
    Frozen parameters are skipped. Nothing happens outside ``torch.distributed`` or with one rank.

    Every rank must pass the same parameters in the same order.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size(group)
    params = [p for p in parameters if p.requires_grad]
    if world == 1 or not params:
        return
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for bucket in _buckets([*grads, used], int(bucket_mb * 2**20)):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.all_reduce(flat, group=group)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
    for p, g, anywhere in zip(params, grads, used.tolist(), strict=True):
        p.grad = g.div_(world) if anywhere else None


def _buckets(tensors: list[torch.Tensor], cap: int) -> list[list[torch.Tensor]]:
    """Consecutive tensors of one device and dtype, at most ``cap`` bytes each (a larger tensor alone)."""
    done: list[list[torch.Tensor]] = []
    open_: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], int]] = {}
    for t in tensors:
        key, size = (t.device, t.dtype), t.numel() * t.element_size()
        bucket, total = open_.get(key, ([], 0))
        if bucket and total + size > cap:
            done.append(bucket)
            bucket, total = [], 0
        bucket.append(t)
        open_[key] = (bucket, total + size)
    return done + [b for b, _ in open_.values()]


def _refuse_batch_norm(model: nn.Module) -> None:
    batch_norm = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d, SyncBatchNorm
    norms = [name for name, m in model.named_modules() if isinstance(m, batch_norm) and m.training]
    if norms:
        raise ValueError(
            "negative_cache_micro_batch does not support batch-normalised projections "
            f"(projection_norm: 'batch'; batch norm in {norms[:4]}): their statistics would come from "
            "each micro-batch instead of the whole batch, so the loss and gradients would not be those "
            "of the big batch. Use projection_norm: 'none' with the negative cache, or keep "
            "projection_norm: 'batch' and drop negative_cache_micro_batch (a batch that fits in memory, "
            "more devices, or trainer accumulate_grad_batches, which gives each step only its own negatives)"
        )


def _weighted(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    total: torch.Tensor | float = 0.0
    for objective, names in LOSS_TERMS.items():
        for name in names:
            if name in terms:
                total = total + weights.get(objective, 1.0) * terms[name]
    return total if isinstance(total, torch.Tensor) else torch.tensor(total)


def _slice(grad: torch.Tensor, start: int, size: int, shape: torch.Size) -> torch.Tensor:
    g = grad[start : start + size]
    if g.ndim > 1 and g.shape[1] != shape[1]:  # ragged units: this chunk's are a prefix
        g = g[:, : shape[1]]
    return g


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])

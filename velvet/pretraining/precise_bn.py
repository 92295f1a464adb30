"""Re-estimate batch-norm running statistics with the current weights ("precise BN").

During training a BatchNorm layer normalises with the batch's own statistics and keeps an
exponential average for evaluation. When the weights move quickly (contrastive training from
scratch, large learning rates), that average mixes statistics of many past weight states. For a
batch-standardised projection (:class:`velvet.models.heads.projection.ProjectionHead`) over
features whose differences between samples are small compared with their common part, the lag
alone can exceed those differences and every evaluation embedding comes out the same. Recomputing
the statistics with the frozen, current weights over a few training batches removes the lag
(Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["batch_norms", "recalibrate_batch_norm"]


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``model`` that track running statistics."""
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recalibrate_batch_norm(
    model: nn.Module,
    batches: Iterable[Any],
    forward: Callable[[Any], Any],
    *,
    max_batches: int | None = None,
) -> int:
    """Replace every batch-norm layer's running statistics by their average over ``batches``.

    The rest of ``model`` runs in eval mode (no dropout), the batch-norm layers in train mode with a
    cumulative average (``momentum=None``), so the result is the mean of the per-batch means and
    (unbiased) variances. Under ``torch.distributed`` the statistics are averaged across ranks, so
    every rank ends with the same buffers. The model's train/eval mode is restored.

    Args:
        model: the module whose batch-norm layers are recalibrated.
        batches: an iterable of inputs for ``forward``; ``None`` items (fully skipped batches) are ignored.
        forward: runs the model on one batch (its return value is ignored).
        max_batches: use at most this many batches.

    Returns:
        The number of batches used (0 when the model has no batch-norm layer).

    Raises:
        ValueError: if ``batches`` yields no usable batch (the old statistics are then kept).
    """
    norms = batch_norms(model)
    if not norms:
        return 0
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    used = 0
    try:
        for batch in batches:
            if max_batches is not None and used >= max_batches:
                break
            if batch is None:
                continue
            forward(batch)
            used += 1
    finally:
        for m, (momentum, *_rest) in zip(norms, saved, strict=True):
            m.momentum = momentum
        model.train(was_training)
    if used == 0:
        for m, (_, mean, var, count) in zip(norms, saved, strict=True):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
        raise ValueError("recalibrate_batch_norm: no batch to estimate the statistics from")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        for m in norms:
            for buffer in (m.running_mean, m.running_var):
                torch.distributed.all_reduce(buffer)
                buffer.div_(world)
    return used

"""Gathering loss inputs across DDP ranks, with gradients.

Every contrastive / ITM term in velvet compares the *local* rows of a batch with the *global* batch
(all ranks). The helpers here read the rank and world size when called, not when a loss is built,
because Lightning starts the worker processes after the modules exist.

Gradient convention (the one open_clip uses with ``local_loss=True``): rank ``r`` computes the loss
of its local rows against the gathered columns, normalised as a mean over its own rows. The backward
of the gather sums the gradients that every rank sends to rank ``r``'s slice, so the gradient that
arrives at rank ``r``'s inputs is ``world_size * dL/dx_r``, where ``L`` is the mean of the per-rank
losses (which equals the single-process loss on the concatenated batch when every rank has the same
local batch size). DDP then *averages* parameter gradients over ranks, dividing by ``world_size``
again, so the parameters receive exactly the single-process gradient ``dL/dtheta``. The 2-process
gloo test in ``tests/losses/test_distributed_gloo.py`` checks both statements.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "all_gather_padded",
    "all_gather_with_grad",
    "is_dist",
    "max_over_ranks",
    "rank",
    "rank_offset",
    "world_size",
]


def is_dist() -> bool:
    """True when ``torch.distributed`` is available and a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    """Rank of this process in the default group (0 when not distributed)."""
    return dist.get_rank() if is_dist() else 0


def rank_offset(local_batch: int) -> int:
    """Index of this rank's first row in the gathered batch.

    Args:
        local_batch: rows per rank (identical on every rank, see :func:`all_gather_with_grad`).

    Returns:
        ``rank() * local_batch``: add it to ``arange(local_batch)`` to get the targets of the local
        rows among the gathered columns.
    """
    return rank() * local_batch


def _gather_dim0(x: torch.Tensor) -> torch.Tensor:
    """Autograd-aware all-gather along dim 0 (functional collectives, else ``torch.distributed.nn``)."""
    try:
        from torch.distributed import _functional_collectives as fcol

        out = fcol.all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)
        # functional collectives return an AsyncCollectiveTensor; wait so callers get a plain tensor
        return out.wait() if hasattr(out, "wait") else out
    except (ImportError, AttributeError):  # pragma: no cover - only on torch builds without fcol
        from torch.distributed.nn.functional import all_gather

        with warnings.catch_warnings():
            # deprecated in favour of functional collectives, which are tried first
            warnings.simplefilter("ignore", FutureWarning)
            return torch.cat(all_gather(x.contiguous()), dim=0)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0; gradients flow back to each rank's slice.

    Identity (the same tensor object) when not distributed or at world size 1. Bool tensors (masks)
    are gathered as uint8 and come back as bool, without gradient.

    Args:
        x: ``(B, ...)`` tensor; the shape must be identical on every rank (a ``DistributedSampler``
            gives each rank the same number of samples, hence equal batch sizes).

    Returns:
        ``(world_size * B, ...)``: rank 0's rows first, then rank 1's, ... The backward sums the
        gradients of all ranks for this rank's slice (see the module docstring for the convention).
    """
    if world_size() == 1:
        return x
    if x.dtype == torch.bool:
        return _gather_dim0(x.to(torch.uint8)).bool()
    return _gather_dim0(x)


def max_over_ranks(value: int, device: torch.device | str = "cpu") -> int:
    """The maximum of an integer over all ranks (``value`` itself when not distributed).

    Args:
        value: this rank's value (e.g. its number of words).
        device: device of the reduction tensor; must be CUDA for NCCL, CPU works for gloo.

    Returns:
        The maximum over ranks.
    """
    if world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], device=device, dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_padded(x: torch.Tensor, dim: int = 1, pad_value: float | bool = 0) -> torch.Tensor:
    """All-gather a tensor whose size along ``dim`` differs between ranks.

    Pads ``dim`` (at the end) to the maximum size over ranks with ``pad_value``, then gathers along
    dim 0 with gradients like :func:`all_gather_with_grad`. Typical use: word embeddings ``(B, T, E)``
    with a different ``T`` per rank, gathered with ``pad_value=0``, together with their ``(B, T)``
    bool mask gathered with ``pad_value=False`` so the padding stays invalid.

    Args:
        x: ``(B, ..., T_rank, ...)`` tensor; all dims except 0 and ``dim`` identical on every rank.
        dim: the variable-length dimension (not 0).
        pad_value: value written into the padding.

    Returns:
        ``(world_size * B, ..., T_max, ...)``; identity when not distributed.

    Raises:
        ValueError: if ``dim`` is the batch dimension.
    """
    dim = dim % x.dim()
    if dim == 0:
        raise ValueError("all_gather_padded pads a non-batch dimension; dim must not be 0")
    if world_size() == 1:
        return x
    target = max_over_ranks(x.shape[dim], device=x.device)
    missing = target - x.shape[dim]
    if missing > 0:
        # F.pad lists (left, right) pairs from the last dim backwards
        pad = [0, 0] * (x.dim() - 1 - dim) + [0, missing]
        if x.dtype == torch.bool:
            x = F.pad(x.to(torch.uint8), pad, value=int(bool(pad_value))).bool()
        else:
            x = F.pad(x, pad, value=float(pad_value))
    return all_gather_with_grad(x)

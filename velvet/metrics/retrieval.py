"""Cross-modal retrieval metrics: recall@k and mean/median rank from a similarity matrix.

Row ``i`` of the similarity matrix is query ``i``; its correct item is column ``i`` (paired data,
as in method.md 6.2). Ranks are computed exactly from the full matrix (no top-k truncation), with
ties counted pessimistically: an item tied with the correct one is ranked ahead of it, so a
constant score matrix never looks good. Non-finite scores (NaN, +/-inf) are rejected rather than
ranked: every comparison with NaN is False, so a diverged run would otherwise log perfect recall.

Under DDP the validation sampler pads the split with repeated samples so every rank gets the same
count; :func:`deduplicate_by_index` removes them from the gathered gallery by dataset index.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["deduplicate_by_index", "retrieval_metrics", "retrieval_ranks"]


def retrieval_ranks(similarity: torch.Tensor) -> torch.Tensor:
    """1-based rank of the paired item for every query row.

    Args:
        similarity: ``(Q, G)`` scores, higher is better, with ``Q <= G``; the pair of query ``i`` is column ``i``.

    Returns:
        ``(Q,)`` int64 ranks in ``1..G``.

    Raises:
        ValueError: wrong shape, or any score is NaN or +/-inf.
    """
    if similarity.ndim != 2 or similarity.shape[0] > similarity.shape[1]:
        raise ValueError(f"similarity must be (Q, G) with Q <= G, got {tuple(similarity.shape)}")
    _check_finite(similarity)
    q = similarity.shape[0]
    positive = similarity[torch.arange(q), torch.arange(q)].unsqueeze(1)
    ahead = (similarity >= positive).sum(dim=1)  # includes the pair itself, and every tie
    return ahead.to(torch.int64)


def retrieval_metrics(
    similarity: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    *,
    prefix: str = "",
) -> dict[str, float]:
    """Image-to-text and text-to-image retrieval metrics of a square paired similarity matrix.

    Args:
        similarity: ``(N, N)`` with rows = images and columns = texts; pair ``i`` is ``(i, i)``.
        ks: the cut-offs of recall@k.
        prefix: prepended to every key (e.g. ``"val/"``).

    Returns:
        ``recall@{k}_i2t``, ``recall@{k}_t2i``, ``mean_rank_i2t``/``_t2i``, ``median_rank_i2t``/``_t2i``
        and ``gallery_size`` (N; chance recall@k is k/N). The median rank is the usual median: the
        middle rank for odd N, the mean of the two middle ranks for even N (ranks 1..4 give 2.5).

    Raises:
        ValueError: a non-square or empty matrix, or any score is NaN or +/-inf.
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (N, N), got {tuple(similarity.shape)}")
    if similarity.shape[0] == 0:
        raise ValueError("similarity is empty (0, 0): no pairs to retrieve")
    _check_finite(similarity)  # on the input, so the error counts the caller's entries
    sim = similarity.detach().float()
    out: dict[str, float] = {f"{prefix}gallery_size": float(sim.shape[0])}
    for direction, matrix in (("i2t", sim), ("t2i", sim.T)):
        ranks = retrieval_ranks(matrix).double()
        for k in ks:
            out[f"{prefix}recall@{k}_{direction}"] = float((ranks <= k).float().mean())
        out[f"{prefix}mean_rank_{direction}"] = float(ranks.mean())
        out[f"{prefix}median_rank_{direction}"] = _median(ranks)
    return out


def deduplicate_by_index(index: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Keep the first occurrence of every sample index, ordered by index.

    ``DistributedSampler`` pads a split to a multiple of the world size by repeating samples, so a
    gallery gathered from all ranks holds some cases twice (5 cases on 2 ranks give 6 rows); the
    repeats would make recall depend on the world size.

    Args:
        index: ``(N,)`` integer dataset index of every row.
        *tensors: at least one tensor with ``N`` rows (dim 0) each, e.g. the image and text embeddings.

    Returns:
        The ``tensors`` restricted to the first row of each distinct index, sorted by index (as many
        tensors as were passed; pass ``index`` itself too to get the kept indices).

    Raises:
        ValueError: ``index`` is not a 1-D integer tensor, no tensor is given, or a tensor's first
            dimension is not ``N``.
    """
    if (
        index.ndim != 1
        or index.dtype.is_floating_point
        or index.dtype.is_complex
        or index.dtype == torch.bool
    ):
        raise ValueError(
            f"index must be a 1-D integer tensor, got {index.dtype} of shape {tuple(index.shape)}"
        )
    if not tensors:
        raise ValueError("deduplicate_by_index needs at least one tensor to deduplicate")
    n = index.shape[0]
    for i, t in enumerate(tensors):
        if t.ndim == 0 or t.shape[0] != n:
            raise ValueError(f"tensor {i} has shape {tuple(t.shape)}; expected {n} rows to match index")
    distinct, inverse = torch.unique(index, sorted=True, return_inverse=True)
    positions = torch.arange(n, device=index.device)
    # smallest row position per distinct index = its first occurrence; unique() sorted the groups
    first = torch.full((distinct.numel(),), n, dtype=torch.long, device=index.device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return tuple(t[first.to(t.device)] for t in tensors)


def _check_finite(similarity: torch.Tensor) -> None:
    """Raise if any score is NaN or +/-inf: NaN compares False (rank 0, a "hit"), +inf always wins."""
    bad = int((~torch.isfinite(similarity)).sum())
    if bad:
        raise ValueError(
            f"similarity has {bad} non-finite entr{'y' if bad == 1 else 'ies'} (NaN or +/-inf) out of "
            f"{similarity.numel()}; retrieval metrics are undefined (did training diverge?)"
        )


def _median(values: torch.Tensor) -> float:
    """The usual median: the mean of the two middle values for an even count.

    ``torch.median`` returns the lower of the two instead (ranks 1..4 would give 2, not 2.5).
    """
    ordered = values.flatten().sort().values
    mid = ordered.numel() // 2
    if ordered.numel() % 2:
        return float(ordered[mid])
    return float((ordered[mid - 1] + ordered[mid]) / 2)

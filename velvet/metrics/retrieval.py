"""Cross-modal retrieval metrics: recall@k and mean/median rank from a similarity matrix.

Row ``i`` of the similarity matrix is query ``i``; its correct item is column ``i`` (paired data,
as in method.md 6.2). Ranks are computed exactly from the full matrix (no top-k truncation), with
ties counted pessimistically: an item tied with the correct one is ranked ahead of it, so a
constant score matrix never looks good.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["retrieval_metrics", "retrieval_ranks"]


def retrieval_ranks(similarity: torch.Tensor) -> torch.Tensor:
    """1-based rank of the paired item for every query row.

    Args:
        similarity: ``(Q, G)`` scores, higher is better, with ``Q <= G``; the pair of query ``i`` is column ``i``.

    Returns:
        ``(Q,)`` int64 ranks in ``1..G``.
    """
    if similarity.ndim != 2 or similarity.shape[0] > similarity.shape[1]:
        raise ValueError(f"similarity must be (Q, G) with Q <= G, got {tuple(similarity.shape)}")
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
        and ``gallery_size`` (N; chance recall@k is k/N).
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (N, N), got {tuple(similarity.shape)}")
    sim = similarity.detach().float()
    out: dict[str, float] = {f"{prefix}gallery_size": float(sim.shape[0])}
    for direction, matrix in (("i2t", sim), ("t2i", sim.T)):
        ranks = retrieval_ranks(matrix).float()
        for k in ks:
            out[f"{prefix}recall@{k}_{direction}"] = float((ranks <= k).float().mean())
        out[f"{prefix}mean_rank_{direction}"] = float(ranks.mean())
        out[f"{prefix}median_rank_{direction}"] = float(ranks.median())
    return out

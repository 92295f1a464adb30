"""Seeded, case-level bootstrap confidence intervals (percentile method).

One set of resampled case indices is drawn per evaluation and shared by every finding and by the
macro mean, so their intervals describe the same resampled populations. A resample on which the
statistic is undefined (NaN: e.g. AUROC when the draw holds no positive case) is dropped and
counted in ``n_valid``; the interval is NaN when fewer than half the resamples are valid, because
an interval from the few draws that happen to contain both classes would be biased.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["BOOTSTRAP_DEFINITION", "bootstrap_ci", "bootstrap_indices", "percentile_interval"]

BOOTSTRAP_DEFINITION = (
    "case-level resampling with replacement (torch.Generator seeded with `seed`, the same draws for every "
    "finding), percentile interval; draws where the statistic is undefined are dropped and counted (n_valid); "
    "NaN when fewer than half the draws are valid"
)


def bootstrap_indices(n: int, n_resamples: int, seed: int) -> torch.Tensor:
    """``(n_resamples, n)`` int64 case indices drawn with replacement from a seeded CPU generator."""
    if n < 1 or n_resamples < 1:
        raise ValueError(f"need n >= 1 and n_resamples >= 1, got {n} and {n_resamples}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n_resamples, n), generator=generator)


def percentile_interval(values: torch.Tensor, level: float = 0.95) -> tuple[float, float, int]:
    """``(low, high, n_valid)`` percentile interval of the finite bootstrap values."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    valid = values[torch.isfinite(values)].double()
    n_valid = int(valid.numel())
    if n_valid == 0 or n_valid < values.numel() / 2:
        return math.nan, math.nan, n_valid
    alpha = (1 - level) / 2
    q = torch.quantile(valid, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return float(q[0]), float(q[1]), n_valid


def bootstrap_ci(
    statistic: Callable[..., float],
    data: Sequence[torch.Tensor],
    *,
    indices: torch.Tensor | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Bootstrap interval of ``statistic(*data)`` resampling cases (the first dimension).

    Args:
        statistic: maps resampled tensors to a float (NaN when undefined on a draw).
        data: tensors sharing their first dimension ``N`` (e.g. scores and labels).
        indices: ``(R, N)`` draws from :func:`bootstrap_indices` to share across statistics;
            drawn from ``n_resamples`` and ``seed`` when None.
        n_resamples: number of draws when ``indices`` is None.
        seed: generator seed when ``indices`` is None.
        level: interval coverage.

    Returns:
        ``low``, ``high``, ``n_valid`` (draws with a defined statistic), ``n_resamples``.
    """
    n = data[0].shape[0]
    if any(t.shape[0] != n for t in data):
        raise ValueError("all data tensors need the same number of cases")
    if indices is None:
        indices = bootstrap_indices(n, n_resamples, seed)
    if indices.ndim != 2 or indices.shape[1] != n:
        raise ValueError(f"indices must be (R, {n}), got {tuple(indices.shape)}")
    values = torch.tensor([statistic(*(t[row] for t in data)) for row in indices], dtype=torch.float64)
    low, high, n_valid = percentile_interval(values, level)
    return {"low": low, "high": high, "n_valid": float(n_valid), "n_resamples": float(indices.shape[0])}

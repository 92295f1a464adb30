"""Retrieval metrics against an independent sort-based implementation and hand cases."""

from __future__ import annotations

import pytest
import torch

from velvet.metrics.retrieval import retrieval_metrics, retrieval_ranks


def _loop_recall(sim: torch.Tensor, k: int) -> float:
    hits = 0
    for i in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda j: -float(sim[i, j]))
        hits += i in order[:k]
    return hits / sim.shape[0]


def test_hand_computed_3x3():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.0, 0.5, 0.4]])
    # rows (i2t): row0 pair ranked 1st; row1 pair 0.2 < 0.8 -> 2nd; row2 0.4 < 0.5 -> 2nd
    assert retrieval_ranks(sim).tolist() == [1, 2, 2]
    # columns (t2i): col0 0.9 best -> 1; col1 0.2 < 0.5 -> 2; col2 0.4 best -> 1
    assert retrieval_ranks(sim.T).tolist() == [1, 2, 1]
    m = retrieval_metrics(sim, ks=(1, 2))
    assert m["recall@1_i2t"] == pytest.approx(1 / 3) and m["recall@2_i2t"] == 1.0
    assert m["recall@1_t2i"] == pytest.approx(2 / 3)
    assert m["median_rank_i2t"] == 2 and m["mean_rank_t2i"] == pytest.approx(4 / 3)
    assert m["gallery_size"] == 3


def test_matches_sort_based_reference():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(37, 37, generator=g)
    m = retrieval_metrics(sim, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert m[f"recall@{k}_i2t"] == pytest.approx(_loop_recall(sim, k))
        assert m[f"recall@{k}_t2i"] == pytest.approx(_loop_recall(sim.T, k))


def test_ties_are_not_rewarded():
    m = retrieval_metrics(torch.zeros(20, 20), ks=(1, 5))
    assert m["recall@1_i2t"] == 0.0 and m["recall@5_t2i"] == 0.0 and m["mean_rank_i2t"] == 20


def test_perfect_and_prefix():
    m = retrieval_metrics(torch.eye(8) * 3, prefix="val/")
    assert m["val/recall@1_i2t"] == 1.0 and m["val/recall@1_t2i"] == 1.0


def test_bad_shapes():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="Q <= G"):
        retrieval_ranks(torch.zeros(4, 3))

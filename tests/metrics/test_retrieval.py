"""Retrieval metrics against an independent sort-based implementation and hand cases."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from velvet.metrics.retrieval import deduplicate_by_index, retrieval_metrics, retrieval_ranks


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


# ---------------------------------------------------------------- non-finite scores


@pytest.mark.parametrize(
    ("fill", "count"),
    [
        ("all_nan", 16),
        ("diagonal_nan", 1),
        ("pos_inf", 1),
        ("neg_inf", 2),
    ],
)
def test_non_finite_scores_raise_with_the_count(fill, count):
    sim = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    if fill == "all_nan":
        sim = torch.full((4, 4), math.nan)
    elif fill == "diagonal_nan":
        sim[2, 2] = math.nan
    elif fill == "pos_inf":
        sim[1, 1] = math.inf  # +inf on the pair would look like a guaranteed hit
    else:
        sim[0, 3] = sim[3, 0] = -math.inf
    entries = "entry" if count == 1 else "entries"
    with pytest.raises(ValueError, match=rf"{count} non-finite {entries}"):
        retrieval_metrics(sim)
    with pytest.raises(ValueError, match="non-finite"):
        retrieval_ranks(sim)


def test_empty_matrix_raises():
    with pytest.raises(ValueError, match="empty"):
        retrieval_metrics(torch.zeros(0, 0))


# ---------------------------------------------------------------- median and naive reference


def _naive_ranks(rows: list[list[float]]) -> list[int]:
    """Rank of the pair by sorting each row, ties placed ahead of the pair (pessimistic)."""
    ranks = []
    for i, row in enumerate(rows):
        # higher score first; among equal scores the pair (key True) sorts after the others
        order = sorted(range(len(row)), key=lambda j: (-row[j], j == i))
        ranks.append(order.index(i) + 1)
    return ranks


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    # row i has i columns scored above its pair: ranks 1, 2, 3, 4
    sim = torch.tensor([[0.0 if j == i else (1.0 if j < i else -1.0) for j in range(4)] for i in range(4)])
    assert retrieval_ranks(sim).tolist() == [1, 2, 3, 4]
    assert retrieval_metrics(sim)["median_rank_i2t"] == 2.5


@pytest.mark.parametrize("n", [1, 2, 7, 10, 16, 33])
def test_median_rank_matches_statistics_median(n):
    g = torch.Generator().manual_seed(n)
    sim = torch.randn(n, n, generator=g, dtype=torch.float64)
    m = retrieval_metrics(sim)
    for direction, matrix in (("i2t", sim), ("t2i", sim.T)):
        ranks = _naive_ranks(matrix.tolist())
        assert m[f"median_rank_{direction}"] == statistics.median(ranks) == float(np.median(ranks))


@pytest.mark.parametrize("seed", range(6))
def test_matches_naive_python_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    n = 8 + seed  # even and odd gallery sizes
    # scores from only 4 values: most rows tie the pair with several other items
    sim = torch.randint(0, 4, (n, n), generator=g).double()
    ks = (1, 2, 5)
    m = retrieval_metrics(sim, ks=ks)
    for direction, matrix in (("i2t", sim), ("t2i", sim.T)):
        ranks = _naive_ranks(matrix.tolist())
        assert retrieval_ranks(matrix).tolist() == ranks
        for k in ks:
            assert m[f"recall@{k}_{direction}"] == pytest.approx(sum(r <= k for r in ranks) / n)
        assert m[f"mean_rank_{direction}"] == pytest.approx(sum(ranks) / n)
        assert m[f"median_rank_{direction}"] == statistics.median(ranks)


# ---------------------------------------------------------------- DDP gallery deduplication


def _naive_dedup(index: list[int]) -> list[int]:
    """Row positions of the first occurrence of each index, ordered by index."""
    first: dict[int, int] = {}
    for pos, i in enumerate(index):
        first.setdefault(i, pos)
    return [first[i] for i in sorted(first)]


def test_deduplicate_the_padded_two_rank_gallery():
    # DistributedSampler, 5 cases on 2 ranks: rank 0 gets 0, 2, 4 and rank 1 gets 1, 3 and 0 again
    index = torch.tensor([0, 2, 4, 1, 3, 0])
    emb = torch.arange(6.0).unsqueeze(1).expand(6, 3)  # row r holds r: tells first from repeat
    kept_index, kept = deduplicate_by_index(index, index, emb)
    assert kept_index.tolist() == [0, 1, 2, 3, 4]
    assert kept[:, 0].tolist() == [0.0, 3.0, 1.0, 4.0, 2.0]  # row 0, not the padded row 5


@pytest.mark.parametrize("seed", range(5))
def test_deduplicate_matches_naive(seed):
    g = torch.Generator().manual_seed(seed)
    n = 20
    index = torch.randint(0, 9, (n,), generator=g)
    a = torch.randn(n, 4, generator=g)
    b = torch.randn(n, 2, 3, generator=g)
    kept_a, kept_b = deduplicate_by_index(index, a, b)
    rows = _naive_dedup(index.tolist())
    assert torch.equal(kept_a, a[rows]) and torch.equal(kept_b, b[rows])


def test_deduplicate_without_duplicates_is_a_sort():
    index = torch.tensor([3, 1, 2])
    (kept,) = deduplicate_by_index(index, torch.tensor([30, 10, 20]))
    assert kept.tolist() == [10, 20, 30]


def test_deduplicate_bad_input():
    with pytest.raises(ValueError, match="1-D integer"):
        deduplicate_by_index(torch.tensor([0.0, 1.0]), torch.zeros(2))
    with pytest.raises(ValueError, match="1-D integer"):
        deduplicate_by_index(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match="at least one"):
        deduplicate_by_index(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="expected 2 rows"):
        deduplicate_by_index(torch.tensor([0, 1]), torch.zeros(3, 4))

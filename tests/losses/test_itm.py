"""ITM: hard-negative sampling statistics and the matching loss."""

from __future__ import annotations

import math

import pytest
import torch

from velvet.losses.itm import ITMLoss, itm_labels, sample_hard_negatives


def test_negatives_never_the_positive() -> None:
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(64, 64, generator=g) * 3
    for _ in range(20):
        neg_text, neg_image = sample_hard_negatives(sim, local_offset=0, generator=g)
        assert torch.all(neg_text != torch.arange(64)) and torch.all(neg_image != torch.arange(64))
    # gathered columns: 16 local rows at offset 32 among 64
    sim_i2t, sim_t2i = torch.randn(16, 64, generator=g), torch.randn(16, 64, generator=g)
    positive = torch.arange(16) + 32
    for _ in range(20):
        neg_text, neg_image = sample_hard_negatives(sim_i2t, sim_t2i=sim_t2i, local_offset=32, generator=g)
        assert torch.all(neg_text != positive) and torch.all(neg_image != positive)
        assert neg_text.max() < 64 and neg_image.max() < 64


def test_sampled_in_proportion_to_softmax_weights() -> None:
    # one call, many rows with the same law: row b scores text (b + d) % n with f(d), the positive
    # (d = 0) with 5 and every other text -inf (weight 0), so d = (neg - b) % n follows softmax(f)
    n = 2000
    f = {1: 1.0, 2: 0.0, 3: -1.0}
    rows = torch.arange(n)
    sim = torch.full((n, n), float("-inf"))
    sim[rows, rows] = 5.0
    for d, value in f.items():
        sim[rows, (rows + d) % n] = value
    neg_text, neg_image = sample_hard_negatives(
        sim, local_offset=0, generator=torch.Generator().manual_seed(1)
    )
    weights = torch.tensor([math.exp(v) for v in f.values()])
    expected = weights / weights.sum()  # e^1 : e^0 : e^-1, the positive excluded
    # 2000 draws: std of a frequency <= 0.011, allow ~4 sigma
    freq_text = torch.bincount((neg_text - rows) % n, minlength=4)[:4].float() / n
    assert freq_text[0] == 0
    assert torch.allclose(freq_text[1:], expected, atol=0.04)
    # texts draw images from the columns of sim (sim_t2i = sim.T): image b - d with f(d)
    freq_image = torch.bincount((rows - neg_image) % n, minlength=4)[:4].float() / n
    assert torch.allclose(freq_image[1:], expected, atol=0.04)


def test_dominant_positive_does_not_underflow() -> None:
    sim = torch.eye(3) * 1e4  # softmax puts ~all mass on the positive
    neg_text, neg_image = sample_hard_negatives(
        sim, local_offset=0, generator=torch.Generator().manual_seed(0)
    )
    assert torch.all(neg_text != torch.arange(3)) and torch.all(neg_image != torch.arange(3))


def test_deterministic_with_generator() -> None:
    sim = torch.randn(6, 6, generator=torch.Generator().manual_seed(2))
    a = sample_hard_negatives(sim, local_offset=0, generator=torch.Generator().manual_seed(3))
    b = sample_hard_negatives(sim, local_offset=0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_sampling_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 2 pairs"):
        sample_hard_negatives(torch.zeros(1, 1), local_offset=0)
    with pytest.raises(ValueError, match="sim_t2i is required"):
        sample_hard_negatives(torch.zeros(2, 4), local_offset=0)
    with pytest.raises(ValueError, match="local_offset"):
        sample_hard_negatives(torch.zeros(2, 4), sim_t2i=torch.zeros(2, 4), local_offset=3)
    with pytest.raises(ValueError, match="shape"):
        sample_hard_negatives(torch.zeros(2, 4), sim_t2i=torch.zeros(2, 3), local_offset=0)


def naive_itm(logits: torch.Tensor, labels: list[int]) -> torch.Tensor:
    total = 0
    for i, y in enumerate(labels):
        total = total - torch.log(
            torch.exp(logits[i, y]) / (torch.exp(logits[i, 0]) + torch.exp(logits[i, 1]))
        )
    return total / len(labels)


def test_itm_loss_matches_naive_forward_and_grad() -> None:
    logits = torch.randn(
        9, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True
    )
    loss = ITMLoss()(logits)["itm_loss"]  # default labels: 3 positives, then 6 negatives
    ref = naive_itm(logits, [1, 1, 1, 0, 0, 0, 0, 0, 0])
    assert torch.allclose(loss, ref, atol=1e-10)
    assert torch.allclose(
        torch.autograd.grad(loss, logits)[0], torch.autograd.grad(ref, logits)[0], atol=1e-10
    )


def test_itm_loss_hand_computed() -> None:
    # B = 1: (positive, image + negative text, negative image + text)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    # -log p(match) = log(e^2 + 1) for the positive; -log p(no match) = log(1 + e), then log 2
    expected = (math.log(math.exp(2) + 1) + math.log(1 + math.e) + math.log(2)) / 3
    assert ITMLoss()(logits)["itm_loss"].item() == pytest.approx(expected, abs=1e-12)
    labels = torch.tensor([0, 1, 1])
    expected = (math.log(math.exp(2) + 1) - 2 + math.log(1 + math.e) - 1 + math.log(2)) / 3
    assert ITMLoss()(logits, labels)["itm_loss"].item() == pytest.approx(expected, abs=1e-12)


def test_itm_labels_and_bad_arguments() -> None:
    assert itm_labels(2, 4).tolist() == [1, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="3B rows"):
        ITMLoss()(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        ITMLoss()(torch.zeros(3, 3))

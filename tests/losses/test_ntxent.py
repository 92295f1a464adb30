"""NTXentLoss: naive loop reference, hand-computed 2x2 case, properties."""

from __future__ import annotations

import math

import pytest
import torch

from velvet.losses.ntxent import NTXentLoss

KEY = "vis_contrast_loss"


def naive_ntxent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR loss, one anchor and one candidate at a time."""
    views = [z / z.norm() for z in list(z1) + list(z2)]
    n, b = len(views), z1.shape[0]
    total = 0
    for a in range(n):
        positive = (a + b) % n
        denom = sum(torch.exp(torch.dot(views[a], views[c]) / tau) for c in range(n) if c != a)
        total = total - torch.log(torch.exp(torch.dot(views[a], views[positive]) / tau) / denom)
    return total / n


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_matches_naive_forward_and_grad(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    loss = NTXentLoss(temperature=tau)(z1, z2)[KEY]
    ref = naive_ntxent(z1, z2, tau)
    assert torch.allclose(loss, ref, atol=1e-10)
    for got, want in zip(
        torch.autograd.grad(loss, [z1, z2]), torch.autograd.grad(ref, [z1, z2]), strict=True
    ):
        assert torch.allclose(got, want, atol=1e-10)


def test_hand_computed_2x2() -> None:
    # views a0 = e1, a1 = e2 (first views), a2 = e1, a3 = (0.6, 0.8) (second views); logits = dot / 0.5
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z2 = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    e = math.exp
    rows = [
        math.log(e(0.0) + e(2.0) + e(1.2)) - 2.0,  # a0 vs a1, a2 (positive), a3
        math.log(e(0.0) + e(0.0) + e(1.6)) - 1.6,  # a1 vs a0, a2, a3 (positive)
        math.log(e(2.0) + e(0.0) + e(1.2)) - 2.0,  # a2 vs a0 (positive), a1, a3
        math.log(e(1.2) + e(1.6) + e(1.2)) - 1.6,  # a3 vs a0, a1 (positive), a2
    ]
    assert NTXentLoss()(z1, z2)[KEY].item() == pytest.approx(sum(rows) / 4, abs=1e-12)


def test_symmetric_in_the_two_views() -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    assert torch.allclose(NTXentLoss()(z1, z2)[KEY], NTXentLoss()(z2, z1)[KEY], atol=1e-6)


def test_identical_views_beat_random_views() -> None:
    eye = torch.eye(6)
    g = torch.Generator().manual_seed(2)
    assert NTXentLoss(temperature=0.1)(eye, eye)[KEY] < 0.01
    assert NTXentLoss(temperature=0.1)(eye, torch.randn(6, 6, generator=g))[KEY] > 1.0


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(temperature=0.0)
    with pytest.raises(ValueError, match=r"\(B, E\)"):
        NTXentLoss()(torch.randn(3, 4), torch.randn(3, 5))

"""MLMHead: Linear-GELU-LayerNorm-Linear, untied, optional position selection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from velvet.models.heads.mlm import MLMHead


def test_mlm_head_matches_its_definition_and_selection():
    torch.manual_seed(0)
    head = MLMHead(16, 40)
    hidden = torch.randn(2, 5, 16, requires_grad=True)
    logits = head(hidden)
    assert logits.shape == (2, 5, 40)
    expected = head.decoder(
        nn.functional.layer_norm(
            nn.functional.gelu(head.dense(hidden)), (16,), head.norm.weight, head.norm.bias, 1e-12
        )
    )
    torch.testing.assert_close(logits, expected)
    positions = torch.zeros(2, 5, dtype=torch.bool)
    positions[0, 1] = positions[1, 4] = True
    torch.testing.assert_close(head(hidden, positions), logits[positions])
    head(hidden, positions).sum().backward()
    assert all(p.grad is not None for p in head.parameters())
    assert hidden.grad[0, 0].abs().sum() == 0 and hidden.grad[0, 1].abs().sum() > 0


def test_mlm_head_rejects_bad_sizes():
    with pytest.raises(ValueError):
        MLMHead(0, 10)

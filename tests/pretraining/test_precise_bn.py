"""Batch-norm recalibration and the batch-standardised projection head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from velvet.models.heads.projection import ProjectionHead
from velvet.pretraining.precise_bn import recalibrate_batch_norm


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))


def test_statistics_are_the_average_over_the_batches_with_dropout_off():
    model = _model()
    model.train()
    batches = [torch.randn(8, 5) * (i + 1) + i for i in range(3)]
    used = recalibrate_batch_norm(model, batches, model)
    assert used == 3
    feats = [model[0](x) for x in batches]  # eval-mode dropout is the identity
    bn = model[2]
    torch.testing.assert_close(bn.running_mean, torch.stack([f.mean(0) for f in feats]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([f.var(0, unbiased=True) for f in feats]).mean(0))
    assert bn.momentum == 0.1 and model.training and model[1].training  # modes and momentum restored


def test_max_batches_and_skipped_batches():
    model = _model()
    batches = [None, torch.randn(6, 5), None, torch.randn(6, 5) + 3, torch.randn(6, 5) - 3]
    assert recalibrate_batch_norm(model, batches, model, max_batches=2) == 2
    model.eval()
    feats = torch.stack([model[0](batches[1]).mean(0), model[0](batches[3]).mean(0)])
    torch.testing.assert_close(model[2].running_mean, feats.mean(0))
    assert not model.training


def test_no_batch_keeps_the_old_statistics():
    model = _model()
    model[2].running_mean.fill_(2.0)
    with pytest.raises(ValueError, match="no batch"):
        recalibrate_batch_norm(model, [None], model)
    assert torch.equal(model[2].running_mean, torch.full((4,), 2.0))


def test_model_without_batch_norm_is_left_alone():
    model = nn.Linear(3, 3)
    assert recalibrate_batch_norm(model, [torch.randn(2, 3)], model) == 0


def test_masked_projection_ignores_padding():
    torch.manual_seed(0)
    head = ProjectionHead(6, 4, norm="batch")
    x = torch.randn(3, 5, 6)
    mask = torch.rand(3, 5) > 0.4
    out = head(x, mask)
    assert torch.all(out[~mask] == 0)
    valid = head.linear(x)[mask]
    expected = (valid - valid.mean(0)) / torch.sqrt(valid.var(0, unbiased=False) + head.norm.eps)
    torch.testing.assert_close(out[mask], expected)
    x2 = x.clone()
    x2[~mask] = 1e3  # padding content never reaches the valid outputs
    torch.testing.assert_close(head(x2, mask)[mask], out[mask])


def test_plain_projection_is_a_linear_layer():
    head = ProjectionHead(6, 4)
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(head(x, torch.ones(2, 3, dtype=torch.bool)), head.linear(x))
    with pytest.raises(ValueError, match="norm"):
        ProjectionHead(6, 4, norm="layer")  # type: ignore[arg-type]

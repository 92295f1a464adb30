"""The linear probe against scikit-learn's logistic regression and its validation choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from velvet.evaluation.probe import LinearProbe, fit_logistic
from velvet.metrics.classification import auroc


def _data(seed: int, n: int = 120, d: int = 6, f: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, f, generator=g, dtype=torch.float64)
    y = (torch.sigmoid(x @ w + 0.3 * torch.randn(n, f, generator=g, dtype=torch.float64)) > 0.5).double()
    return x, y


@pytest.mark.parametrize("l2", [1e-2, 1e-1, 1.0])
def test_fit_equals_sklearn_unbalanced(l2):
    x, y = _data(0)
    y[5, 1] = math.nan  # an unknown label is left out of that finding only
    w, b = fit_logistic(x, y, [l2], balanced=False)
    for f in range(y.shape[1]):
        keep = ~torch.isnan(y[:, f])
        n = int(keep.sum())
        # ours: mean BCE + l2/2 |w|^2  ==  sklearn: C * sum BCE + 1/2 |w|^2 with C = 1 / (n * l2)
        ref = LogisticRegression(C=1.0 / (n * l2), tol=1e-12, max_iter=10000).fit(
            x[keep].numpy(), y[keep, f].numpy()
        )
        np.testing.assert_allclose(w[0, f].numpy(), ref.coef_[0], rtol=1e-4, atol=1e-6)
        assert float(b[0, f]) == pytest.approx(float(ref.intercept_[0]), rel=1e-3, abs=1e-5)


def test_fit_equals_sklearn_balanced():
    x, y = _data(1)
    l2 = 0.05
    w, b = fit_logistic(x, y, [l2], balanced=True)
    for f in range(y.shape[1]):
        yy = y[:, f].numpy()
        n_pos, n_neg = yy.sum(), (1 - yy).sum()
        # our per-case weights are 0.5 / n_class; sklearn's sample_weight scales C * BCE per case
        sw = np.where(yy > 0.5, 0.5 / n_pos, 0.5 / n_neg)
        ref = LogisticRegression(C=1.0 / l2, tol=1e-12, max_iter=10000).fit(x.numpy(), yy, sample_weight=sw)
        np.testing.assert_allclose(w[0, f].numpy(), ref.coef_[0], rtol=1e-4, atol=1e-6)


def test_validation_picks_the_best_strength_per_finding():
    x, y = _data(2, n=200)
    train, val = slice(0, 120), slice(120, 200)
    grid = [0.03, 1.0, 100.0]
    probe = LinearProbe.fit(x[train], y[train], x[val], y[val], l2_grid=grid)
    mean, std = x[train].mean(0), x[train].std(0)
    w, b = fit_logistic((x[train] - mean) / std, y[train], grid)
    for f in range(y.shape[1]):
        aucs = [auroc(((x[val] - mean) / std) @ w[i, f] + b[i, f], y[val, f]) for i in range(len(grid))]
        best = max(range(len(grid)), key=lambda i: (aucs[i], grid[i]))  # ties -> stronger
        assert probe.l2[f] == grid[best]
        assert probe.val_auroc[f] == pytest.approx(aucs[best])
    p = probe.predict_proba(x[val])
    assert p.shape == (80, 3) and bool(((p > 0) & (p < 1)).all())

"""Linear probe: L2-regularised logistic regression per finding on frozen features.

Features are standardised with the training split's mean and standard deviation. For every
finding and every L2 strength of the grid one logistic regression is fitted, all of them at once
(one tensor of weights ``(L, F, D)``; the objective is a sum of independent convex terms, so
minimising the sum with L-BFGS minimises each term). The loss is the mean binary cross-entropy
over cases with a known label, class-balanced by default (positives and negatives weigh half each,
as RATE-Evals' probe), plus ``0.5 * l2 * |w|^2``. The strength is chosen per finding by the
validation AUROC (ties: the stronger regularisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from velvet.metrics.classification import auroc, known

__all__ = ["DEFAULT_L2_GRID", "LinearProbe", "fit_logistic"]

DEFAULT_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _weights(labels: torch.Tensor, balanced: bool) -> torch.Tensor:
    """``(N, F)`` per-case loss weights: 0 for unknown labels, class-balanced if asked, mean 1 per finding."""
    mask = ~torch.isnan(labels)
    y = torch.nan_to_num(labels, nan=0.0)
    if not balanced:
        return mask.double() / mask.sum(0).clamp_min(1)
    n_pos = (y * mask).sum(0)
    n_neg = ((1 - y) * mask).sum(0)
    w = torch.where(y > 0.5, 0.5 / n_pos.clamp_min(1), 0.5 / n_neg.clamp_min(1)) * mask
    return w.double()


def fit_logistic(
    x: torch.Tensor,
    labels: torch.Tensor,
    l2: Sequence[float],
    *,
    balanced: bool = True,
    max_iter: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``len(l2) * F`` logistic regressions on standardised features.

    Args:
        x: ``(N, D)`` features (already standardised).
        labels: ``(N, F)`` 0/1, NaN = unknown (left out).
        l2: the regularisation strengths.
        balanced: class-balanced loss weights.
        max_iter: L-BFGS iterations.

    Returns:
        ``weight (L, F, D)`` and ``bias (L, F)`` in float64.
    """
    x = x.double()
    n, d = x.shape
    f = labels.shape[1]
    lam = torch.tensor(list(l2), dtype=torch.float64)
    w = torch.zeros(len(lam), f, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(lam), f, dtype=torch.float64, requires_grad=True)
    y = torch.nan_to_num(labels.double(), nan=0.0)
    weight = _weights(labels.double(), balanced)  # (N, F), each column sums to 1
    optimizer = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-11,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = torch.einsum("nd,lfd->lnf", x, w) + b[:, None, :]  # (L, N, F)
        bce = F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none")
        loss = (bce * weight).sum() + 0.5 * (lam[:, None, None] * w.pow(2)).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


class LinearProbe:
    """A fitted probe: standardisation, the chosen strength and weights per finding.

    Use :meth:`fit`, then :meth:`predict_proba`.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        l2: list[float],
        val_auroc: list[float],
    ) -> None:
        self.mean, self.std, self.weight, self.bias = mean, std, weight, bias
        self.l2 = l2
        self.val_auroc = val_auroc

    @classmethod
    def fit(
        cls,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        val_x: torch.Tensor,
        val_y: torch.Tensor,
        *,
        l2_grid: Sequence[float] = DEFAULT_L2_GRID,
        balanced: bool = True,
    ) -> LinearProbe:
        """Fit on train, choose the L2 strength per finding by validation AUROC.

        Args:
            train_x, val_x: ``(N, D)`` features; train_y, val_y: ``(N, F)`` labels (NaN unknown).
            l2_grid: strengths to try.
            balanced: class-balanced loss.
        """
        mean = train_x.double().mean(0)
        std = train_x.double().std(0).clamp_min(1e-6)
        grid = sorted(float(v) for v in l2_grid)
        w, b = fit_logistic((train_x.double() - mean) / std, train_y, grid, balanced=balanced)
        val_logits = torch.einsum("nd,lfd->lnf", (val_x.double() - mean) / std, w) + b[:, None, :]
        chosen_w, chosen_b, chosen_l2, chosen_auc = [], [], [], []
        for f in range(train_y.shape[1]):
            best, best_auc = len(grid) - 1, -math.inf
            for li in range(len(grid) - 1, -1, -1):  # strongest first: ties keep the stronger
                s, y = known(val_logits[li, :, f], val_y[:, f].double())
                auc = auroc(s, y) if y.numel() else math.nan
                if math.isfinite(auc) and auc > best_auc + 1e-12:
                    best, best_auc = li, auc
            chosen_w.append(w[best, f])
            chosen_b.append(b[best, f])
            chosen_l2.append(grid[best])
            chosen_auc.append(best_auc if math.isfinite(best_auc) else math.nan)
        return cls(mean, std, torch.stack(chosen_w), torch.stack(chosen_b), chosen_l2, chosen_auc)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, F)`` probabilities."""
        z = (x.double() - self.mean) / self.std
        return torch.sigmoid(z @ self.weight.T + self.bias)

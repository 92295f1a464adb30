"""Classification metrics and the bootstrap against scikit-learn, naive loops and hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from velvet.metrics.bootstrap import bootstrap_ci, bootstrap_indices, percentile_interval
from velvet.metrics.classification import auroc, binary_metrics, known, youden_threshold


def _random_case(seed: int, n: int = 60, ties: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.3).long()
    y[0], y[1] = 0, 1  # both classes present
    s = torch.randn(n, generator=g) + 0.8 * y
    if ties:
        s = (s * 2).round() / 2  # many tied scores, across classes too
    return s, y


@pytest.mark.parametrize("seed", range(8))
def test_auroc_equals_sklearn_with_ties(seed):
    s, y = _random_case(seed)
    assert auroc(s, y) == pytest.approx(roc_auc_score(y.numpy(), s.numpy()), abs=1e-12)


def test_auroc_hand_cases():
    y = torch.tensor([0, 0, 1, 1])
    assert auroc(torch.tensor([0.1, 0.2, 0.3, 0.4]), y) == 1.0
    assert auroc(torch.tensor([0.4, 0.3, 0.2, 0.1]), y) == 0.0
    assert auroc(torch.tensor([0.1, 0.3, 0.2, 0.4]), y) == 0.75
    # constant scores are chance, never perfect
    assert auroc(torch.full((4,), 0.7), y) == 0.5
    # one class only: undefined
    assert math.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))


def test_bad_scores_raise():
    y = torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        auroc(torch.tensor([0.1, float("nan"), 0.3]), y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        binary_metrics(torch.tensor([0.1, float("inf"), 0.3]), y, 0.5)
    with pytest.raises(ValueError, match="0 or 1"):
        auroc(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.0, 1.0, float("nan")]))


def test_known_drops_unknown_labels():
    s, y = known(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.0, float("nan"), 1.0]))
    assert s.tolist() == pytest.approx([0.1, 0.3]) and y.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [-0.5, 0.0, 0.5, 1.5, 9.0])
def test_thresholded_metrics_equal_sklearn(seed, threshold):
    s, y = _random_case(seed)
    m = binary_metrics(s, y, threshold)
    pred = (s >= threshold).long().numpy()
    yy = y.numpy()
    assert m["precision"] == pytest.approx(precision_score(yy, pred, zero_division=0))
    assert m["recall"] == pytest.approx(recall_score(yy, pred, zero_division=0))
    assert m["f1"] == pytest.approx(f1_score(yy, pred, zero_division=0))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(yy, pred))
    assert m["n_positive"] == yy.sum() and m["n"] == len(yy)


def test_balanced_accuracy_undefined_with_one_class():
    m = binary_metrics(torch.tensor([0.1, 0.9]), torch.tensor([1, 1]), 0.5)
    assert math.isnan(m["balanced_accuracy"]) and math.isnan(m["auroc"])


@pytest.mark.parametrize("seed", range(6))
def test_youden_matches_a_naive_search(seed):
    s, y = _random_case(seed, ties=seed % 2 == 0)
    best_j, best_t = -2.0, None
    for t in sorted(set(s.tolist())):  # ascending: >= keeps the highest threshold on ties
        pred = [v >= t for v in s.tolist()]
        tp = sum(p and yy == 1 for p, yy in zip(pred, y.tolist(), strict=False))
        tn = sum((not p) and yy == 0 for p, yy in zip(pred, y.tolist(), strict=False))
        j = tp / int(y.sum()) + tn / int((1 - y).sum()) - 1
        if j >= best_j - 1e-15:
            best_j, best_t = j, t
    assert youden_threshold(s, y) == pytest.approx(best_t)


def test_bootstrap_matches_a_naive_numpy_bootstrap():
    s, y = _random_case(3, n=40)
    idx = bootstrap_indices(40, 300, seed=7)
    ci = bootstrap_ci(auroc, (s, y), indices=idx)
    naive = []
    for row in idx.numpy():
        yy, ss = y.numpy()[row], s.numpy()[row]
        naive.append(roc_auc_score(yy, ss) if 0 < yy.sum() < len(yy) else np.nan)
    naive = np.array(naive)
    valid = naive[np.isfinite(naive)]
    assert ci["n_valid"] == len(valid)
    assert ci["low"] == pytest.approx(np.quantile(valid, 0.025), abs=1e-12)
    assert ci["high"] == pytest.approx(np.quantile(valid, 0.975), abs=1e-12)


def test_bootstrap_is_seeded_and_case_level():
    a = bootstrap_indices(10, 5, seed=1)
    assert torch.equal(a, bootstrap_indices(10, 5, seed=1))
    assert not torch.equal(a, bootstrap_indices(10, 5, seed=2))
    assert a.shape == (5, 10) and int(a.min()) >= 0 and int(a.max()) <= 9


def test_percentile_interval_needs_half_the_draws():
    values = torch.tensor([0.5, float("nan"), float("nan"), float("nan")])
    low, high, n_valid = percentile_interval(values)
    assert math.isnan(low) and math.isnan(high) and n_valid == 1

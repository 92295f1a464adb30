"""Binary classification metrics of finding scores: AUROC, thresholded metrics, operating points.

Conventions (written into every result through :data:`CLASSIFICATION_DEFINITIONS`):

- **AUROC** is the Mann-Whitney statistic: the probability that a random positive scores above a
  random negative, ties counting one half (identical to scikit-learn's ``roc_auc_score``). Constant
  scores therefore give exactly 0.5, never a perfect score. With only one class present AUROC is
  undefined and returned as NaN; macro means skip NaN entries and say how many they skipped.
- **Thresholded metrics** call a case positive when ``score >= threshold``. Precision with no
  predicted positive, recall with no positive case, and F1 when both precision and recall are 0 are
  0.0 (scikit-learn's ``zero_division=0``); balanced accuracy averages sensitivity and specificity
  and is NaN only when a class is absent.
- Scores must be finite: NaN or infinite scores raise ``ValueError`` (a diverged model would
  otherwise be ranked arbitrarily). Labels must be 0/1; unknown labels (NaN) are removed by the
  caller per finding (:func:`known`).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "CLASSIFICATION_DEFINITIONS",
    "auroc",
    "binary_metrics",
    "check_scores",
    "known",
    "youden_threshold",
]

CLASSIFICATION_DEFINITIONS = {
    "auroc": "Mann-Whitney U / (n_pos * n_neg), ties count 1/2 (= sklearn roc_auc_score); NaN if one class is absent",
    "threshold_rule": "positive when score >= threshold",
    "precision": "TP / (TP + FP); 0 when nothing is predicted positive",
    "recall": "TP / (TP + FN) (sensitivity); 0 when there is no positive case",
    "specificity": "TN / (TN + FP); 0 when there is no negative case",
    "f1": "2 P R / (P + R); 0 when P + R = 0",
    "balanced_accuracy": "(sensitivity + specificity) / 2; NaN if one class is absent",
    "youden": "threshold maximising sensitivity + specificity - 1 over the observed scores (highest such threshold)",
    "macro": "mean over findings with a defined value; findings with NaN are listed, not counted",
}


def check_scores(scores: torch.Tensor, labels: torch.Tensor, *, what: str = "scores") -> None:
    """Raise ``ValueError`` unless ``scores`` and ``labels`` are matching finite 1-D tensors with 0/1 labels."""
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"{what}: need 1-D scores and labels of one length, got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if scores.numel() == 0:
        raise ValueError(f"{what}: no cases")
    bad = ~torch.isfinite(scores)
    if bool(bad.any()):
        raise ValueError(f"{what}: {int(bad.sum())} of {scores.numel()} scores are NaN or infinite")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"{what}: labels must be 0 or 1 (remove unknown labels first with known())")


def known(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the cases whose label is unknown (NaN): ``(scores[k], labels[k])``."""
    keep = ~torch.isnan(labels.float())
    return scores[keep], labels[keep]


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve by average ranks (ties count 1/2).

    Args:
        scores: ``(N,)`` finite scores, higher = more likely positive.
        labels: ``(N,)`` 0/1.

    Returns:
        AUROC in [0, 1], or NaN when only one class is present.
    """
    check_scores(scores, labels)
    s = scores.double()
    y = labels.bool()
    n_pos = int(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # average rank of tied groups: rank = (first + last) / 2 over each run of equal values
    sorted_s, order = torch.sort(s)
    _, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0).double()  # 1-based rank of each group's last member
    avg_rank_group = last - (counts.double() - 1) / 2
    ranks = torch.empty_like(s)
    ranks[order] = avg_rank_group[inverse]
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def binary_metrics(scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> dict[str, float]:
    """AUROC and the thresholded metrics of one finding (see the module docstring for conventions).

    Args:
        scores: ``(N,)`` finite scores.
        labels: ``(N,)`` 0/1.
        threshold: a case is predicted positive when ``score >= threshold``.

    Returns:
        ``auroc``, ``balanced_accuracy``, ``f1``, ``precision``, ``recall``, ``specificity``,
        ``accuracy``, ``threshold``, ``n``, ``n_positive``.
    """
    check_scores(scores, labels)
    y = labels.bool()
    pred = scores >= threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    tn = int((~pred & ~y).sum())
    n_pos, n_neg = tp + fn, tn + fp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_pos if n_pos else 0.0
    specificity = tn / n_neg if n_neg else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    balanced = (recall + specificity) / 2 if n_pos and n_neg else math.nan
    return {
        "auroc": auroc(scores, labels),
        "balanced_accuracy": balanced,
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "accuracy": (tp + tn) / y.numel(),
        "threshold": float(threshold),
        "n": float(y.numel()),
        "n_positive": float(n_pos),
    }


def youden_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1 (over observed scores).

    Ties in J go to the highest threshold (the fewest positive calls).

    Raises:
        ValueError: bad scores, or a class is absent (no operating point can be chosen).
    """
    check_scores(scores, labels)
    y = labels.bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("youden_threshold needs both positive and negative cases")
    candidates = torch.unique(scores.double())  # ascending
    pred = scores.double()[None, :] >= candidates[:, None]  # (C, N), vectorised over thresholds
    sens = (pred & y[None]).sum(1).double() / n_pos
    spec = (~pred & ~y[None]).sum(1).double() / n_neg
    j = sens + spec - 1
    best = torch.nonzero(j == j.max()).flatten()[-1]
    return float(candidates[best])

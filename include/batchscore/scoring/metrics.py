"""Realised performance: how good a window's scores were, once its outcomes are known.

Plain numpy over the matched rows (score and outcome of the same entity in the same window),
written out here rather than taken from scikit-learn so the tests can hold them against
scikit-learn's own ``roc_auc_score``, ``average_precision_score``, ``log_loss`` and
``mean_squared_error`` as an independent computation. Every metric is None where it is not
defined (one class only, no rows), never a made-up number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DECILES = 10
# The smallest probability log loss is taken of, as scikit-learn clips: a score of exactly 0 or 1
# that turns out wrong costs a large, finite loss instead of infinity.
LOG_LOSS_EPS = float(np.finfo(np.float64).eps)


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (the Mann-Whitney U statistic's convention)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    distinct = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    group = np.cumsum(distinct) - 1
    first = np.flatnonzero(distinct)
    last = np.concatenate((first[1:], [len(values)])) - 1
    average = (first + last) / 2.0 + 1.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = average[group]
    return ranks


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve: P(a random positive scores above a random negative), ties counted half."""
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    rank_sum = float(_ranks(score)[y].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def average_precision(y: np.ndarray, score: np.ndarray) -> float | None:
    """PR AUC as average precision: the precision at each distinct threshold, weighted by the recall it adds."""
    positives = int(y.sum())
    if positives == 0:
        return None
    order = np.argsort(-score, kind="mergesort")
    ordered, hits = score[order], y[order].astype(np.float64)
    last_of_threshold = np.concatenate((ordered[1:] != ordered[:-1], [True]))
    true_pos = np.cumsum(hits)[last_of_threshold]
    predicted = (np.flatnonzero(last_of_threshold) + 1).astype(np.float64)
    precision = true_pos / predicted
    recall_gain = np.diff(np.concatenate(([0.0], true_pos))) / positives
    return float(np.sum(precision * recall_gain))


def log_loss(y: np.ndarray, score: np.ndarray) -> float:
    """Mean negative log-likelihood of the outcomes under the scores (natural log), scores clipped to [eps, 1-eps]."""
    p = np.clip(score, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def calibration(y: np.ndarray, score: np.ndarray, bins: int = DECILES) -> list[dict[str, Any]]:
    """Per decile of the score (equal-count bins, lowest scores first): rows, mean score, observed positive rate."""
    order = np.argsort(score, kind="mergesort")
    out = []
    for part in np.array_split(order, min(bins, len(order))):
        if len(part):
            out.append(
                {
                    "rows": len(part),
                    "score_min": float(score[part].min()),
                    "score_max": float(score[part].max()),
                    "mean_score": float(score[part].mean()),
                    "observed_rate": float(y[part].mean()),
                }
            )
    return out


def classifier_metrics(y: np.ndarray, score: np.ndarray) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """(metrics, calibration) of probabilities ``score`` against booleans ``y`` (True: the positive class)."""
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if len(y) == 0:
        return {"positive_rate": None, "roc_auc": None, "pr_auc": None, "log_loss": None, "brier": None}, []
    metrics: dict[str, float | None] = {
        "positive_rate": float(y.mean()),
        "roc_auc": roc_auc(y, score),
        "pr_auc": average_precision(y, score),
        "log_loss": log_loss(y, score),
        "brier": float(np.mean((score - y) ** 2)),
    }
    return metrics, calibration(y, score)


def regressor_metrics(actual: np.ndarray, predicted: np.ndarray) -> tuple[dict[str, float | None], list[float]]:
    """(metrics, residual deciles): RMSE, MAE, R², bias (mean of predicted - actual); residual = actual - predicted.

    R² is None when the outcomes do not vary (it divides by their variance).
    """
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if len(actual) == 0:
        return {"rmse": None, "mae": None, "r2": None, "bias": None, "mean_outcome": None}, []
    residual = actual - predicted
    spread = float(np.sum((actual - actual.mean()) ** 2))
    metrics: dict[str, float | None] = {
        "rmse": float(np.sqrt(np.mean(residual**2))),
        "mae": float(np.mean(np.abs(residual))),
        "r2": 1.0 - float(np.sum(residual**2)) / spread if spread > 0 else None,
        "bias": float(np.mean(-residual)),
        "mean_outcome": float(actual.mean()),
    }
    deciles = np.quantile(residual, np.linspace(0.1, 0.9, 9)).tolist()
    return metrics, [float(d) for d in deciles]


# For each metric: True when a larger value is better (what "gain" means in a promotion's evidence).
HIGHER_IS_BETTER = {
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "brier": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}

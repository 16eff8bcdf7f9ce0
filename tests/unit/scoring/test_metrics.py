"""The realised-performance metrics against scikit-learn's, ties and edge cases included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, r2_score, roc_auc_score

from batchscore.scoring.metrics import classifier_metrics, regressor_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classifier_metrics_equal_scikit_learn_with_tied_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    score = np.round(rng.random(5_000), 2)  # 101 distinct values: many ties
    y = rng.random(5_000) < score
    metrics, calibration = classifier_metrics(y, score)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(y, score), abs=1e-12)
    assert metrics["log_loss"] == pytest.approx(log_loss(y, np.clip(score, 1e-15, 1 - 1e-15)), rel=1e-6)
    assert metrics["brier"] == pytest.approx(brier_score_loss(y, score), abs=1e-12)
    assert [b["rows"] for b in calibration] == [500] * 10
    assert calibration[0]["mean_score"] < calibration[-1]["mean_score"]


def test_one_class_only_has_no_auc_and_no_rows_no_metrics() -> None:
    metrics, _ = classifier_metrics(np.zeros(10, dtype=bool), np.linspace(0, 1, 10))
    assert (metrics["roc_auc"], metrics["pr_auc"], metrics["positive_rate"]) == (None, None, 0.0)
    empty, curves = classifier_metrics(np.array([], dtype=bool), np.array([]))
    assert (empty["roc_auc"], empty["log_loss"], curves) == (None, None, [])


def test_regressor_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    actual = rng.gamma(2.0, 50.0, 2_000)
    predicted = actual + rng.normal(5.0, 20.0, 2_000)
    metrics, deciles = regressor_metrics(actual, predicted)
    assert metrics["rmse"] == pytest.approx(float(np.sqrt(np.mean((actual - predicted) ** 2))))
    assert metrics["r2"] == pytest.approx(r2_score(actual, predicted))
    assert metrics["bias"] == pytest.approx(float(np.mean(predicted - actual)))
    assert deciles == pytest.approx(np.quantile(actual - predicted, np.linspace(0.1, 0.9, 9)).tolist())
    constant, _ = regressor_metrics(np.ones(5), np.arange(5.0))
    assert constant["r2"] is None

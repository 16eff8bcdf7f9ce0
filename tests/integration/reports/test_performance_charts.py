"""The performance chart is drawn from the recorded metrics, with the training holdout as its reference."""

from __future__ import annotations

from datetime import timedelta

import pytest

from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.windows import Window
from batchscore.reports.performance_charts import performance_chart, window_performance
from batchscore.run.evaluation import evaluate_window
from batchscore.run.in_process import run_pipeline
from batchscore.sink.performance import performance_rows
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.run.test_evaluation import LATER, endpoints, evaluated

pytestmark = pytest.mark.integration


def test_chart_series_are_the_recorded_metrics_per_role(services: Services) -> None:
    config = evaluated("churn_eval_chart")
    windows = [Window(*day_window(WAREHOUSE_END - timedelta(days=d))) for d in (3, 2)]
    for window in windows:
        run_pipeline(config, endpoints(services), window=window, run_id=f"it__chart_{window.slug}")
        evaluate_window(config, endpoints(services), window, run_id="eval__chart", now=LATER)
    rows = performance_rows(services.scores_url, config.name)
    registry = ModelRegistry(services.registry)
    champion = registry.resolve("churn", "champion")
    chart = performance_chart(rows, {(champion.name, champion.version): champion.metrics})
    assert chart is not None
    assert chart["windows"] == [f"{w.start:%Y-%m-%d}" for w in windows]
    auc = chart["metrics"]["roc_auc"]
    recorded = {(r["role"], r["window_start"]): r["metrics"]["roc_auc"] for r in rows}
    for role in ("champion", "challenger"):
        assert auc["series"][role] == [recorded[(role, w.start)] for w in windows]
    assert auc["reference"] == champion.metrics["holdout_roc_auc"]
    page = window_performance(rows, windows[0].start)
    assert [p["role"] for p in page] == ["challenger", "champion"]
    calibration = page[1]["calibration"]
    assert len(calibration) == 10
    assert sum(point["rows"] for point in calibration) == page[1]["rows_matched"]

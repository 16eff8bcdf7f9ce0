"""Realised performance: a window's published scores judged against its outcomes, checked against scikit-learn."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
from sklearn.metrics import average_precision_score, log_loss, mean_squared_error, r2_score, roc_auc_score

from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import PipelineConfig, load_config
from batchscore.pipeline.evaluation_config import OutcomesConfig
from batchscore.pipeline.model_config import ShadowConfig
from batchscore.pipeline.windows import Window
from batchscore.run.evaluation import EvaluationError, evaluate_window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints
from tests.conftest import CHALLENGER, WAREHOUSE_END, Services, day_window
from tests.integration.helpers import REPO, churn_config, churn_variant

pytestmark = pytest.mark.integration
WINDOW = Window(*day_window(WAREHOUSE_END - timedelta(days=4)))
LATER = datetime(2030, 1, 1, tzinfo=UTC)  # every test window's horizon has passed by then
CHURNED = (
    "SELECT customer_id, churned::int AS churned FROM warehouse.customer_activity "
    "WHERE event_time >= :window_start AND event_time < :window_end"
)


def endpoints(services: Services) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry)


def evaluated(name: str, query: str = CHURNED, horizon: str = "30d", shadow: bool = True) -> PipelineConfig:
    config = churn_variant(name, churn_config().source.query)
    return config.model_copy(
        update={
            "outcomes": OutcomesConfig(query=query, horizon=horizon),
            "shadow": ShadowConfig(name=CHALLENGER, version="challenger") if shadow else None,
        }
    )


def recorded(scores_url: str, pipeline: str, window: Window) -> dict[str, dict]:
    """The window's scoring.performance rows by role, read with psycopg."""
    with psycopg.connect(scores_url) as conn:
        cur = conn.execute(
            "SELECT * FROM scoring.performance WHERE pipeline = %s AND window_start = %s AND window_end = %s",
            (pipeline, window.start, window.end),
        )
        names = [c.name for c in cur.description]  # type: ignore[union-attr]
        return {r[names.index("role")]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def joined(services: Services, table: str, window: Window, where: str = "true") -> pd.DataFrame:
    """Published scores joined to the warehouse's outcomes, both read here with psycopg."""
    with psycopg.connect(services.scores_url) as conn:
        scores = pd.DataFrame(
            conn.execute(
                f"SELECT customer_id, score FROM {table} WHERE window_start = %s AND window_end = %s",
                (window.start, window.end),
            ).fetchall(),
            columns=["customer_id", "score"],
        )
    with psycopg.connect(services.warehouse_url) as conn:
        outcomes = pd.DataFrame(
            conn.execute(
                "SELECT customer_id, churned::int, spend_next_30d FROM warehouse.customer_activity "
                f"WHERE event_time >= %s AND event_time < %s AND {where}",
                (window.start, window.end),
            ).fetchall(),
            columns=["customer_id", "churned", "spend"],
        )
    return scores.merge(outcomes, on="customer_id", how="inner")


def test_metrics_equal_scikit_learn_for_champion_and_challenger(services: Services) -> None:
    config = evaluated("churn_eval")
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__eval")
    result = evaluate_window(config, endpoints(services), WINDOW, run_id="eval__1", now=LATER)
    assert result.status == "evaluated"
    rows = recorded(services.scores_url, config.name, WINDOW)
    assert set(rows) == {"champion", "challenger"}
    versions = {
        "champion": ModelRegistry(services.registry).resolve("churn", "champion").version,
        "challenger": ModelRegistry(services.registry).resolve(CHALLENGER, "challenger").version,
    }
    for role, table in (("champion", config.output.table), ("challenger", config.shadow_table)):
        frame = joined(services, table, WINDOW)
        row = rows[role]
        metrics = row["metrics"]
        assert row["model_version"] == versions[role]
        assert row["status"] == "evaluated"
        assert row["rows_matched"] == len(frame) == row["rows_scored"]
        assert row["rows_without_outcome"] == 0
        y, p = frame["churned"].to_numpy(), frame["score"].to_numpy()
        assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert metrics["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
        assert metrics["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-12)
        assert metrics["brier"] == pytest.approx(float(np.mean((p - y) ** 2)), abs=1e-12)
        assert metrics["positive_rate"] == pytest.approx(float(y.mean()))
        calibration = row["curves"]
        assert len(calibration) == 10
        assert sum(b["rows"] for b in calibration) == len(frame)
        lowest = frame.sort_values("score", kind="mergesort").head(calibration[0]["rows"])
        assert calibration[0]["observed_rate"] == pytest.approx(float(lowest["churned"].mean()))
    assert rows["champion"]["metrics"]["roc_auc"] != rows["challenger"]["metrics"]["roc_auc"]


def test_outcomes_for_part_of_the_keys_are_counted(services: Services) -> None:
    partial = CHURNED + " AND mod(customer_id, 3) = 0"
    config = evaluated("churn_eval_part", query=partial, shadow=False)
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__eval_part")
    evaluate_window(config, endpoints(services), WINDOW, run_id="eval__part", now=LATER)
    row = recorded(services.scores_url, config.name, WINDOW)["champion"]
    frame = joined(services, config.output.table, WINDOW, where="mod(customer_id, 3) = 0")
    with psycopg.connect(services.scores_url) as conn:
        scored = conn.execute(
            f"SELECT count(*) FROM {config.output.table} WHERE window_start = %s",
            (WINDOW.start,),
        ).fetchone()[0]  # type: ignore[index]
    with psycopg.connect(services.warehouse_url) as conn:
        outcomes = conn.execute(
            "SELECT count(*) FROM warehouse.customer_activity WHERE event_time >= %s AND event_time < %s "
            "AND mod(customer_id, 3) = 0",
            (WINDOW.start, WINDOW.end),
        ).fetchone()[0]  # type: ignore[index]
    assert 0 < row["rows_matched"] == len(frame) < scored
    assert row["rows_scored"] == scored
    assert row["rows_without_outcome"] == scored - len(frame)
    assert row["outcomes_unmatched"] == outcomes - len(frame)  # the rejected rows' outcomes: no score to judge
    assert row["outcomes_unmatched"] > 0
    assert row["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(frame["churned"], frame["score"]), abs=1e-12)


def test_a_rescored_window_is_re_evaluated_under_the_new_version(services: Services) -> None:
    from batchscore.local.demo.model import train_and_register

    config = evaluated("churn_eval_again", shadow=False)
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__eval_v1")
    evaluate_window(config, endpoints(services), WINDOW, run_id="eval__v1", now=LATER)
    first = recorded(services.scores_url, config.name, WINDOW)["champion"]
    start = datetime.combine(WAREHOUSE_END - timedelta(days=18), datetime.min.time(), tzinfo=UTC)
    newer = train_and_register(
        services.warehouse_url,
        services.registry,
        train=Window(start, start + timedelta(days=1)),
        max_iter=8,
        aliases=(),
    )
    assert newer.version != first["model_version"]
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__eval_v2", model_ref=str(newer.version))
    evaluate_window(config, endpoints(services), WINDOW, run_id="eval__v2", now=LATER)
    rows = recorded(services.scores_url, config.name, WINDOW)
    assert list(rows) == ["champion"]
    assert (rows["champion"]["model_version"], rows["champion"]["run_id"]) == (newer.version, "eval__v2")
    frame = joined(services, config.output.table, WINDOW)
    assert rows["champion"]["metrics"]["log_loss"] == pytest.approx(log_loss(frame["churned"], frame["score"]))
    assert rows["champion"]["metrics"]["roc_auc"] != first["metrics"]["roc_auc"]


def test_a_window_before_its_horizon_is_skipped_with_the_reason(services: Services) -> None:
    config = evaluated("churn_eval_early", horizon="30d", shadow=False)
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__eval_early")
    result = evaluate_window(config, endpoints(services), WINDOW, run_id="eval__early", now=WINDOW.end)
    assert result.status == "skipped"
    assert result.reason is not None
    assert "horizon 30d" in result.reason
    assert (WINDOW.end + timedelta(days=30)).isoformat() in result.reason
    assert recorded(services.scores_url, config.name, WINDOW) == {}
    done = evaluate_window(
        config, endpoints(services), WINDOW, run_id="eval__late", now=WINDOW.end + timedelta(days=30)
    )
    assert done.status == "evaluated"


def test_outcomes_that_are_not_classes_are_refused_naming_positive(services: Services) -> None:
    words = CHURNED.replace("churned::int", "churned")  # booleans: 'true'/'false', the model's classes are 0/1
    config = evaluated("churn_eval_words", query=words, shadow=False)
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__eval_words")
    with pytest.raises(EvaluationError, match=r"outcomes\.positive"):
        evaluate_window(config, endpoints(services), WINDOW, run_id="eval__words", now=LATER)
    assert recorded(services.scores_url, config.name, WINDOW) == {}


def test_regressor_metrics_equal_scikit_learn(services: Services) -> None:
    from batchscore.local.demo.spend import train_and_register as train_spend

    start = datetime.combine(WAREHOUSE_END - timedelta(days=18), datetime.min.time(), tzinfo=UTC)
    train_spend(services.warehouse_url, services.registry, train=Window(start, start + timedelta(days=2)), max_iter=20)
    spend = load_config(REPO / "include" / "pipelines" / "spend.yaml")
    query = CHURNED.replace("churned::int AS churned", "spend_next_30d")
    config = spend.model_copy(update={"name": "spend_eval", "outcomes": OutcomesConfig(query=query, horizon="30d")})
    config = config.model_copy(update={"output": config.output.model_copy(update={"table": "scoring.spend_eval"})})
    run_pipeline(config, endpoints(services), window=WINDOW, run_id="it__eval_spend")
    evaluate_window(config, endpoints(services), WINDOW, run_id="eval__spend", now=LATER)
    row = recorded(services.scores_url, config.name, WINDOW)["champion"]
    frame = joined(services, config.output.table, WINDOW).dropna(subset=["spend"])
    assert row["rows_matched"] == len(frame) > 0
    assert row["metrics"]["rmse"] == pytest.approx(mean_squared_error(frame["spend"], frame["score"]) ** 0.5)
    assert row["metrics"]["r2"] == pytest.approx(r2_score(frame["spend"], frame["score"]))
    assert row["metrics"]["bias"] == pytest.approx(float((frame["score"] - frame["spend"]).mean()))
    assert len(row["curves"]) == 9

"""evaluate_<name> through Airflow's dag.test(): a window given by the form is judged and recorded."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from batchscore.pipeline.config import load_config
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints
from tests.conftest import PIPELINES, SLICED, STACK, WAREHOUSE_END, Services, day_window

pytestmark = pytest.mark.airflow


def test_dag_test_evaluates_the_window_and_replaces_its_rows(airflow_db: Services) -> None:
    from airflow.dag_processing.dagbag import DagBag

    window = Window(*day_window(WAREHOUSE_END - timedelta(days=9)))
    config = load_config(PIPELINES / f"{SLICED}.yaml")
    ends = Endpoints(airflow_db.warehouse_url, airflow_db.scores_url, airflow_db.registry)
    run_pipeline(config, ends, window=window, run_id="dagtest__eval_scored")
    dag = DagBag(dag_folder=str(STACK.dags_dir)).dags[f"evaluate_{SLICED}"]
    assert dag.max_active_runs == 33  # 30 days of windows waiting for their horizon, and 3 more
    conf = {"window_start": window.start.isoformat(), "window_end": window.end.isoformat()}
    for _ in range(2):  # a re-evaluation replaces the window's rows
        run = dag.test(run_conf=conf)
        assert run.state == "success"
    with psycopg.connect(airflow_db.scores_url) as conn:
        rows = conn.execute(
            "SELECT role, status, rows_matched, run_id, metrics->>'roc_auc' FROM scoring.performance "
            "WHERE pipeline = %s AND window_start = %s",
            (SLICED, window.start),
        ).fetchall()
    assert len(rows) == 1
    role, status, matched, run_id, auc = rows[0]
    assert (role, status, run_id) == ("champion", "evaluated", run.run_id)
    assert matched > 2_000
    assert 0.5 < float(auc) < 1.0

"""Against a running Airflow: a REST-triggered run, a CLI backfill and the nightly run land exact scores."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from batchscore.local.stack import AirflowClient
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.e2e.conftest import DAG_ID, assert_exact, backfill, trigger
from tests.integration.helpers import run_record

pytestmark = pytest.mark.e2e


def test_rest_triggered_run_without_logical_date(client: AirflowClient, airflow_db: Services) -> None:
    start, end = day_window(WAREHOUSE_END - timedelta(days=3))
    run_id = trigger(client, start, end)
    run = client.wait_for_runs(DAG_ID, {run_id}, timeout=300)[0]
    assert run["logical_date"] is None
    assert_exact(airflow_db, start, end, run_id)


def test_backfill_two_days_through_the_cli(client: AirflowClient, airflow_db: Services) -> None:
    first = WAREHOUSE_END - timedelta(days=5)
    last = first + timedelta(days=1)
    runs = backfill(airflow_db, client, first, last, "--max-active-runs", "2")
    made = [
        r
        for r in runs
        if r["run_type"] == "backfill" and first <= datetime.fromisoformat(r["data_interval_start"]).date() <= last
    ]
    assert [datetime.fromisoformat(r["data_interval_start"]).date() for r in made] == [first, last]
    for run in made:
        start = datetime.fromisoformat(run["data_interval_start"])
        assert datetime.fromisoformat(run["data_interval_end"]) - start == timedelta(days=1)
        assert_exact(airflow_db, start, start + timedelta(days=1), run["dag_run_id"])


def test_scheduler_runs_the_latest_nightly_window_on_unpause(client: AirflowClient, airflow_db: Services) -> None:
    """With catchup off, unpausing schedules the last complete day: here an empty window, which must succeed."""
    scheduled: list[dict] = []
    for _ in range(60):
        scheduled = [r for r in client.dag_runs(DAG_ID) if r["run_type"] == "scheduled"]
        if scheduled:
            break
        time.sleep(2)
    assert len(scheduled) == 1
    run = client.wait_for_runs(DAG_ID, {scheduled[0]["dag_run_id"]}, timeout=300)[0]
    start = datetime.fromisoformat(run["data_interval_start"])
    assert datetime.fromisoformat(run["data_interval_end"]) - start == timedelta(days=1)
    record = run_record(airflow_db.scores_url, "churn", run["dag_run_id"])
    assert record is not None
    assert (record["status"], record["rows_read"], record["rows_written"]) == ("success", 0, 0)

"""Against a running Airflow: api-server + scheduler + dag-processor, LocalExecutor, metadata on PostgreSQL.

A run triggered through the REST API v2 (no logical date, window from the form) and a
backfill created with ``airflow backfill create`` both land exact scores.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from batchscore.local import AirflowClient

from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import expected_scores, run_record, stored_scores

pytestmark = pytest.mark.e2e
DAG_ID = "score_churn"
TABLE = "scoring.churn_scores"


@pytest.fixture(scope="module")
def client(airflow_db: Services) -> Iterator[AirflowClient]:
    airflow_db.stack.start_services(timeout=240)
    try:
        api = AirflowClient(f"http://127.0.0.1:{airflow_db.stack.api_port}")
        api.wait_for_dag(DAG_ID, timeout=240)
        api.send("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
        yield api
    finally:
        airflow_db.stack.stop_services()


def assert_exact(services: Services, start: datetime, end: datetime, run_id: str) -> None:
    expected, rejected = expected_scores(services.warehouse_url, services.registry, start, end)
    stored = stored_scores(services.scores_url, TABLE, start, end)
    assert len(stored) == len(expected) > 2_000
    assert stored.index.is_unique
    np.testing.assert_allclose(stored.loc[expected.index, "score"], expected["score"], rtol=0, atol=1e-12)
    assert set(stored["run_id"]) == {run_id}
    record = run_record(services.scores_url, "churn", run_id)
    assert record is not None
    assert (record["status"], record["rows_written"], record["rows_rejected"]) == (
        "success",
        len(expected),
        len(rejected),
    )


def test_rest_triggered_run_without_logical_date(client: AirflowClient, airflow_db: Services) -> None:
    start, end = day_window(WAREHOUSE_END - timedelta(days=3))
    run = client.send(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        {"logical_date": None, "conf": {"window_start": start.isoformat(), "window_end": end.isoformat()}},
    )
    assert run["logical_date"] is None
    client.wait_for_runs(DAG_ID, {run["dag_run_id"]}, timeout=300)
    assert_exact(airflow_db, start, end, run["dag_run_id"])


def test_backfill_two_days_through_the_cli(client: AirflowClient, airflow_db: Services) -> None:
    first: date = WAREHOUSE_END - timedelta(days=5)
    last: date = first + timedelta(days=1)
    airflow_db.stack.airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        first.isoformat(),
        "--to-date",
        last.isoformat(),
        "--max-active-runs",
        "2",
        capture=True,
    )
    runs: list[dict] = []
    for _ in range(60):
        runs = [r for r in client.dag_runs(DAG_ID) if r["run_type"] == "backfill"]
        if len(runs) >= 2:
            break
        time.sleep(2)
    assert len(runs) == 2
    client.wait_for_runs(DAG_ID, {r["dag_run_id"] for r in runs}, timeout=400)
    windows = sorted((datetime.fromisoformat(r["data_interval_start"]), r["dag_run_id"]) for r in runs)
    assert [w.date() for w, _ in windows] == [first, last]
    for start, run_id in windows:
        assert_exact(airflow_db, start.astimezone(UTC), start.astimezone(UTC) + timedelta(days=1), run_id)


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

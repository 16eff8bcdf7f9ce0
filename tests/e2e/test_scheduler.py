"""Against a running Airflow: a REST-triggered run, a CLI backfill and the nightly run land exact scores."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import pytest

from batchscore.local.airflow_client import AirflowClient
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.e2e.conftest import DAG_ID, TABLE, assert_exact, backfill, trigger
from tests.integration.helpers import run_record, stored_scores

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
    """With catchup off, unpausing schedules the last complete day: here a window whose upstream has no rows
    yet, which the volume guard holds: the run fails once, naming the guard, and publishes nothing."""
    scheduled: list[dict] = []
    for _ in range(120):
        scheduled = [r for r in client.dag_runs(DAG_ID) if r["run_type"] == "scheduled"]
        if scheduled:
            break
        time.sleep(1)
    assert len(scheduled) == 1
    run = client.wait_for_runs(DAG_ID, {scheduled[0]["dag_run_id"]}, timeout=300, allow_failed=True)[0]
    assert run["state"] == "failed"
    start = datetime.fromisoformat(run["data_interval_start"])
    assert datetime.fromisoformat(run["data_interval_end"]) - start == timedelta(days=1)
    record = run_record(airflow_db.scores_url, "churn", run["dag_run_id"])
    assert record is not None
    assert (record["status"], record["failed_stage"], record["rows_read"]) == ("failed", "publish", 0)
    assert record["error"].startswith("VolumeGuardHeld: volume guard: 0 rows < ")
    assert "allow_shrink" in record["remedy"]
    instances = client.get(f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
    publish = next(t for t in instances if t["task_id"] == "publish")
    assert (publish["state"], publish["try_number"]) == ("failed", 1), "a held run is not retried"
    assert stored_scores(airflow_db.scores_url, TABLE, start, start + timedelta(days=1)).empty


def test_a_backfill_with_a_conf_window_scores_each_runs_own_interval(
    client: AirflowClient, airflow_db: Services
) -> None:
    """``--dag-run-conf`` gives every backfill run the same conf: a window in it is ignored, and the log says so."""
    first = WAREHOUSE_END - timedelta(days=2)
    last = first + timedelta(days=1)
    elsewhere = day_window(WAREHOUSE_END - timedelta(days=9))
    conf = {"window_start": elsewhere[0].isoformat(), "window_end": elsewhere[1].isoformat()}
    runs = backfill(
        airflow_db, client, first, last, "--dag-run-conf", json.dumps(conf), "--reprocess-behavior", "completed"
    )
    assert [datetime.fromisoformat(r["data_interval_start"]).date() for r in runs] == [first, last]
    for run in runs:
        start = datetime.fromisoformat(run["data_interval_start"])
        assert run["conf"] == conf
        assert_exact(airflow_db, start, start + timedelta(days=1), run["dag_run_id"])
        log = client.get(f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/plan/logs/1")
        assert f"is a backfill run, which scores its own data interval [{start.isoformat()}" in json.dumps(log)
    backfilled = {r["dag_run_id"] for r in runs}
    other = stored_scores(airflow_db.scores_url, TABLE, *elsewhere)
    assert not backfilled & set(other["run_id"]), "no backfill run scored the conf's window"

"""Readiness on the running stack: the wait is deferred to the real triggerer and holds no executor slot.

A pipeline whose ``ready_when`` looks for its window in a load log: rows logged 15 s after the wait
began (three polls that find nothing, at the 5 s poke interval) are waited for, then scored exactly;
a window never logged fails on its timeout, once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import psycopg
import pytest
import yaml

from batchscore.local.airflow_client import AirflowClient
from tests.conftest import PIPELINES, STACK, WAREHOUSE_END, Services, day_window
from tests.e2e.conftest import assert_exact, trigger
from tests.integration.helpers import REPO, run_record

pytestmark = pytest.mark.e2e

PIPELINE = "churn_ready_e2e"
DAG = f"score_{PIPELINE}"
TABLE = f"scoring.{PIPELINE}_scores"
CHECK = "SELECT count(*) > 0 FROM test_ready_e2e.load_log WHERE day_start = :window_start AND day_end = :window_end"
LANDS_AFTER = timedelta(seconds=15)  # after the wait began: the check has found nothing three times


@pytest.fixture(scope="module")
def ready_dag(client: AirflowClient, airflow_db: Services) -> Iterator[str]:
    from batchscore.airflow.dag_files import dag_file_name, render

    with psycopg.connect(airflow_db.warehouse_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS test_ready_e2e")
        conn.execute("CREATE TABLE IF NOT EXISTS test_ready_e2e.load_log (day_start timestamptz, day_end timestamptz)")
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data.update(name=PIPELINE, output={"conn_id": "scores_db", "table": TABLE})
    data["source"].update(ready_when=CHECK, poke_interval_seconds=5, ready_timeout_minutes=1)
    data["execution"].update(retries=0)
    (PIPELINES / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    dag_file = STACK.dags_dir / dag_file_name(PIPELINE)
    dag_file.write_text(render(PIPELINE))
    client.wait_for_dag(DAG, timeout=240)
    client.send("PATCH", f"/dags/{DAG}", {"is_paused": False})
    yield DAG
    client.send("PATCH", f"/dags/{DAG}", {"is_paused": True})
    dag_file.unlink(missing_ok=True)
    (PIPELINES / f"{PIPELINE}.yaml").unlink(missing_ok=True)


def _wait_ti(client: AirflowClient, run_id: str) -> dict:
    return client.get(f"/dags/{DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances/wait_for_upstream")


def _until_deferred(client: AirflowClient, run_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ti = _wait_ti(client, run_id) if _exists(client, run_id) else {}
        if ti.get("state") == "deferred":
            return ti
        time.sleep(0.5)
    raise TimeoutError(f"wait_for_upstream of {run_id} was never deferred (last: {ti.get('state')})")


def _exists(client: AirflowClient, run_id: str) -> bool:
    import requests

    try:
        _wait_ti(client, run_id)
    except requests.HTTPError:
        return False
    return True


def _assert_no_slot_held(client: AirflowClient, run_id: str) -> None:
    """While deferred: the default pool counts the task as deferred, and no task of the run is running."""
    pool = client.get("/pools/default_pool")
    assert pool["deferred_slots"] >= 1
    running = client.get(f"/dags/{DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances", state="running")
    assert running["task_instances"] == [], "no task of the waiting run occupies an executor slot"
    assert _wait_ti(client, run_id)["state"] == "deferred"


def test_rows_landing_15_s_after_the_wait_began_are_waited_for_then_scored_exactly(
    client: AirflowClient, airflow_db: Services, ready_dag: str
) -> None:
    start, end = day_window(WAREHOUSE_END - timedelta(days=10))
    run_id = trigger(client, start, end, dag_id=ready_dag)
    began = datetime.fromisoformat(_until_deferred(client, run_id)["start_date"])
    _assert_no_slot_held(client, run_id)
    time.sleep(max(0.0, (began + LANDS_AFTER - datetime.now(UTC)).total_seconds()))
    assert _wait_ti(client, run_id)["state"] == "deferred", "still waiting after 15 s: nothing has landed"
    with psycopg.connect(airflow_db.warehouse_url, autocommit=True) as conn:
        conn.execute("INSERT INTO test_ready_e2e.load_log VALUES (%s, %s)", (start, end))
    run = client.wait_for_runs(ready_dag, {run_id}, timeout=300)[0]
    assert run["state"] == "success"
    wait = _wait_ti(client, run_id)
    assert (wait["state"], wait["try_number"]) == ("success", 1)
    assert datetime.fromisoformat(wait["start_date"]) == began, "one wait, from its first start to the landing"
    assert datetime.fromisoformat(wait["end_date"]) - began >= LANDS_AFTER
    assert_exact(airflow_db, start, end, run_id, table=TABLE, pipeline=PIPELINE)


def test_a_window_that_never_lands_fails_on_the_timeout_with_its_cause(
    client: AirflowClient, airflow_db: Services, ready_dag: str
) -> None:
    start, end = day_window(WAREHOUSE_END - timedelta(days=11))
    run_id = trigger(client, start, end, dag_id=ready_dag)
    _until_deferred(client, run_id)
    _assert_no_slot_held(client, run_id)
    run = client.wait_for_runs(ready_dag, {run_id}, timeout=400, allow_failed=True)[0]
    assert run["state"] == "failed"
    wait = _wait_ti(client, run_id)
    assert (wait["state"], wait["try_number"]) == ("failed", 1)
    record = run_record(airflow_db.scores_url, PIPELINE, run_id)
    assert record is not None
    assert (record["status"], record["failed_stage"]) == ("failed", "wait_for_upstream")
    assert record["error"] == (
        f"UpstreamNotLanded: upstream not landed for [{start.isoformat()}, {end.isoformat()}) after 1 min"
    )

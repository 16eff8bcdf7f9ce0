"""Readiness through dag.test(): the run defers until its window's upstream has landed, or fails on the timeout.

dag.test() runs the deferred task's trigger in line (the same trigger class the triggerer runs),
so the check, its polling, the resume and the timeout's failure path are Airflow's own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
import yaml

from tests.conftest import PIPELINES, STACK, WAREHOUSE_END, Services, day_window
from tests.integration.helpers import REPO, run_record, stored_scores, window_rows
from tests.receivers import HttpReceiver

pytestmark = pytest.mark.airflow

READY = "churn_ready_when"
READY_WHEN = "SELECT count(*) > 0 FROM test_ready.load_log WHERE day_start = :window_start AND day_end = :window_end"


@pytest.fixture(scope="module")
def webhook() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def ready_dag(airflow_db: Services, webhook: HttpReceiver) -> Iterator[object]:
    from airflow.dag_processing.dagbag import DagBag

    from batchscore.airflow.dag_files import dag_file_name, render

    with psycopg.connect(airflow_db.warehouse_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS test_ready")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS test_ready.load_log (day_start timestamptz, day_end timestamptz, "
            "loaded_at timestamptz DEFAULT now())"
        )
    os.environ["AIRFLOW_CONN_READY_WEBHOOK"] = webhook.connection()
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data.update(name=READY, output={"conn_id": "scores_db", "table": f"scoring.{READY}_scores"})
    data["source"].update(ready_when=READY_WHEN, poke_interval_seconds=5, ready_timeout_minutes=1)
    data["notify"] = [{"on": ["upstream_timeout", "failure"], "via": "webhook", "conn_id": "ready_webhook"}]
    data["execution"].update(retries=1, retry_delay_seconds=1)
    (PIPELINES / f"{READY}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    dag_file = STACK.dags_dir / dag_file_name(READY)
    dag_file.write_text(render(READY))
    yield DagBag(dag_folder=str(STACK.dags_dir)).dags[f"score_{READY}"]
    dag_file.unlink(missing_ok=True)
    (PIPELINES / f"{READY}.yaml").unlink(missing_ok=True)
    os.environ.pop("AIRFLOW_CONN_READY_WEBHOOK", None)


def test_the_run_waits_for_its_rows_then_scores_the_window_exactly(ready_dag, airflow_db: Services) -> None:
    start, end = day_window(WAREHOUSE_END - timedelta(days=6))
    landed_at: list[float] = []

    def land_later() -> None:
        time.sleep(12)
        with psycopg.connect(airflow_db.warehouse_url, autocommit=True) as conn:
            conn.execute("INSERT INTO test_ready.load_log (day_start, day_end) VALUES (%s, %s)", (start, end))
        landed_at.append(time.monotonic())

    lander = threading.Thread(target=land_later)
    begun = time.monotonic()
    lander.start()
    run = ready_dag.test(run_conf={"window_start": start.isoformat(), "window_end": end.isoformat()})
    lander.join()
    assert run.state == "success"
    wait = run.get_task_instance("wait_for_upstream")
    assert wait is not None
    assert (wait.state, wait.try_number) == ("success", 1)
    assert landed_at[0] - begun >= 12, "the rows landed only after the wait began"
    plan = run.get_task_instance("plan")
    assert plan is not None
    assert plan.start_date >= wait.end_date - timedelta(seconds=1), "plan ran after the wait ended"
    rows = window_rows(airflow_db.warehouse_url, start, end)
    stored = stored_scores(airflow_db.scores_url, f"scoring.{READY}_scores", start, end)
    assert len(stored) == len(rows) - run_record(airflow_db.scores_url, READY, run.run_id)["rows_rejected"]
    assert set(stored.index) <= set(rows["customer_id"])


def test_a_window_that_never_lands_fails_once_on_the_timeout_and_says_so(
    ready_dag, airflow_db: Services, webhook: HttpReceiver
) -> None:
    start, end = day_window(WAREHOUSE_END - timedelta(days=7))
    run = ready_dag.test(run_conf={"window_start": start.isoformat(), "window_end": end.isoformat()})
    assert run.state == "failed"
    wait = run.get_task_instance("wait_for_upstream")
    assert wait is not None
    assert (wait.state, wait.try_number) == ("failed", 1), "a timeout is not retried"
    assert (wait.end_date - wait.start_date) >= timedelta(minutes=1)
    assert run.get_task_instance("plan").state == "upstream_failed"
    cause = f"UpstreamNotLanded: upstream not landed for [{start.isoformat()}, {end.isoformat()}) after 1 min"
    record = run_record(airflow_db.scores_url, READY, run.run_id)
    assert record is not None
    assert (record["status"], record["failed_stage"], record["error"]) == ("failed", "wait_for_upstream", cause)
    assert record["window_start"] == start
    hooks = webhook.bodies_about(run.run_id)
    assert len(hooks) == 1
    assert (hooks[0]["event"], hooks[0]["cause"], hooks[0]["stage"]) == ("upstream_timeout", cause, "wait_for_upstream")
    assert "clear the run's wait_for_upstream task" in hooks[0]["remedy"]

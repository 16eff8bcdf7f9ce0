"""Sliced windows through a real scheduler: a slice task killed mid-load, and a 100k-row window.

The kill is made deterministic inside PostgreSQL: an event trigger arms every slice table
the sliced pipeline creates with a row trigger that, at its 200th row, waits on an advisory
lock the test holds. Each slice task's COPY then stops mid-load with rows already sent; the
test SIGKILLs one of those task processes, releases the lock, and Airflow retries the task.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import psycopg
import pytest

from batchscore.local.airflow_client import AirflowClient
from tests.conftest import SLICED, SLICED_TABLE, STACK, WAREHOUSE_END, Services
from tests.e2e.conftest import DAG_ID, assert_exact, trigger, utc_day
from tests.e2e.holds import held_mid_load, loading_backend, process_with_local_port
from tests.integration.helpers import run_record

pytestmark = pytest.mark.e2e

SLICED_DAG = f"score_{SLICED}"
SCHEMA, TABLE_NAME = SLICED_TABLE.split(".")


def _unattached_slice_tables(scores_url: str, run_id: str) -> list[str]:
    """The run's slice tables that exist but are not part of the published window (an attempt left behind)."""
    with psycopg.connect(scores_url) as conn:
        rows = conn.execute(
            """
            SELECT c.relname FROM scoring.lineage AS l
            JOIN pg_class AS c ON c.relname IN (%s || '_l' || l.lineage_id, %s || '_l' || l.lineage_id || '_rej')
            JOIN pg_namespace AS n ON n.oid = c.relnamespace AND n.nspname = %s
            WHERE l.run_id = %s AND NOT c.relispartition AND c.relname NOT LIKE '%%\\_rej'
            """,
            (TABLE_NAME, TABLE_NAME, SCHEMA, run_id),
        ).fetchall()
    return [r[0] for r in rows]


def test_slice_task_killed_mid_load_is_retried_and_the_window_is_exact(
    client: AirflowClient, airflow_db: Services
) -> None:
    client.wait_for_dag(SLICED_DAG, timeout=240)
    client.send("PATCH", f"/dags/{SLICED_DAG}", {"is_paused": False})
    start, end = utc_day(WAREHOUSE_END - timedelta(days=3))
    with held_mid_load(airflow_db.scores_url, SLICED_TABLE):
        run_id = trigger(client, start, end, dag_id=SLICED_DAG)
        task = process_with_local_port(loading_backend(airflow_db.scores_url, SLICED_TABLE))
        os.kill(task.pid, signal.SIGKILL)
        task.wait(timeout=30)
    client.wait_for_runs(SLICED_DAG, {run_id}, timeout=400)

    assert_exact(airflow_db, start, end, run_id, table=SLICED_TABLE, pipeline=SLICED)
    record = run_record(airflow_db.scores_url, SLICED, run_id)
    assert record is not None
    assert len(record["slices"]) == 3
    tries = [
        t["try_number"]
        for t in client.get(f"/dags/{SLICED_DAG}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]
        if t["task_id"] == "score_slice"
    ]
    assert sorted(tries) == [1, 1, 2], "exactly the killed slice task ran twice"
    assert _unattached_slice_tables(airflow_db.scores_url, run_id) == []


def _add_day_of_rows(services: Services, start, rows: int, first_id: int) -> None:
    """``rows`` rows copied from the warehouse (dirty ones included) with new ids, spread over the day at ``start``."""
    step_ms = 86_400_000 // rows
    with psycopg.connect(services.warehouse_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO warehouse.customer_activity
            SELECT %(first)s + n, %(start)s + n * %(step)s * interval '1 millisecond', plan, region, channel,
                   tenure_days, monthly_spend, txn_count_7d, txn_amount_7d, support_tickets_30d,
                   days_since_last_login, avg_session_minutes, discount_rate, late_payments_90d, churned
            FROM (
                SELECT a.*, row_number() OVER () - 1 AS n
                FROM warehouse.customer_activity AS a CROSS JOIN generate_series(1, 2)
                WHERE a.event_time < %(end)s
            ) AS copied
            WHERE n < %(rows)s
            """,
            {"first": first_id, "start": start, "step": step_ms, "end": WAREHOUSE_END, "rows": rows},
        )


def test_a_100k_row_window_through_the_scheduler(client: AirflowClient, airflow_db: Services) -> None:
    start, end = utc_day(WAREHOUSE_END + timedelta(days=14))  # a day no other test reads
    _add_day_of_rows(airflow_db, start, 100_000, first_id=50_000_000)
    began = time.monotonic()
    run_id = trigger(client, start, end)
    client.wait_for_runs(DAG_ID, {run_id}, timeout=400)
    seconds = time.monotonic() - began

    rows = assert_exact(airflow_db, start, end, run_id)
    record = run_record(airflow_db.scores_url, "churn", run_id)
    assert record is not None
    assert record["rows_read"] == 100_000
    assert len(record["slices"]) == 1, "a small window is one slice: no extra task start-ups"
    # Forked from the scheduler's preloading forkserver: the task did not import the scoring stack itself.
    assert record["slices"][0]["warm_start"] is True
    # One XCom per task (its return value), not one per key of the returned dict: each is an API call.
    run_path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
    pushed = {
        task: [e["key"] for e in client.get(f"{run_path}/{task}/xcomEntries", map_index=index)["xcom_entries"]]
        for task, index in (("score_slice", 0), ("publish", -1))
    }
    assert pushed == {"score_slice": ["return_value"], "publish": ["return_value"]}
    # The forkserver (and its preload) started with the scheduler, not at the stack's first task.
    assert "started the preloading forkserver with the scheduler" in (STACK.home / "logs" / "scheduler.log").read_text()
    print(f"100k-row window: {rows:,} scores, trigger to success {seconds:.1f}s")

"""Exact windows under backfills, reprocessing, concurrent runs, late rows and a publish killed mid-transaction.

Every check compares the stored scores with the model's own predictions on the window's
rows, computed independently in the test (tests/integration/helpers.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta

import psutil
import psycopg
import pytest

from batchscore.local.airflow_client import AirflowClient
from tests.conftest import WAREHOUSE_END, Services
from tests.e2e.conftest import DAG_ID, TABLE, assert_exact, backfill, trigger, utc_day
from tests.integration.helpers import run_record, stored_scores

pytestmark = pytest.mark.e2e


def add_late_rows(services: Services, start, count: int, first_id: int) -> set[int]:
    """Insert ``count`` valid rows into the window after it was scored (late-arriving data)."""
    with psycopg.connect(services.warehouse_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO warehouse.customer_activity
            SELECT %s + row_number() OVER (), %s + interval '1 hour', plan, region, channel, tenure_days,
                   monthly_spend, txn_count_7d, txn_amount_7d, support_tickets_30d, days_since_last_login,
                   avg_session_minutes, discount_rate, late_payments_90d, churned
            FROM warehouse.customer_activity
            WHERE plan IS NOT NULL AND region <> 'islands' AND event_time < %s
            LIMIT %s
            """,
            (first_id, start, start, count),
        )
    return {first_id + i for i in range(1, count + 1)}


def test_seven_day_backfill_then_reprocess_completed_is_identical(client: AirflowClient, airflow_db: Services) -> None:
    first = WAREHOUSE_END - timedelta(days=16)
    last = first + timedelta(days=6)
    runs = backfill(airflow_db, client, first, last, "--max-active-runs", "3")
    assert len(runs) == 7
    before = {}
    for offset, run in enumerate(runs):
        start, end = utc_day(first + timedelta(days=offset))
        assert datetime.fromisoformat(run["data_interval_start"]) == start
        assert_exact(airflow_db, start, end, run["dag_run_id"])
        before[start] = stored_scores(airflow_db.scores_url, TABLE, start, end)
    again = backfill(airflow_db, client, first, last, "--max-active-runs", "3", "--reprocess-behavior", "completed")
    assert len(again) == 7
    for run in again:
        start = datetime.fromisoformat(run["data_interval_start"])
        after = stored_scores(airflow_db.scores_url, TABLE, start, start + timedelta(days=1))
        assert len(after) == len(before[start])
        assert (after["score"].sort_index() == before[start]["score"].sort_index()).all()
        assert set(after["run_id"]) == {run["dag_run_id"]}
        record = run_record(airflow_db.scores_url, "churn", run["dag_run_id"])
        assert record is not None
        assert (record["status"], record["rows_written"]) == ("success", len(after))


def test_two_concurrent_runs_on_one_window_are_serialised(client: AirflowClient, airflow_db: Services) -> None:
    start, end = utc_day(WAREHOUSE_END - timedelta(days=6))
    a, b = trigger(client, start, end), trigger(client, start, end)
    client.wait_for_runs(DAG_ID, {a, b}, timeout=400)
    rows = assert_exact(airflow_db, start, end, None)
    stored = stored_scores(airflow_db.scores_url, TABLE, start, end)
    assert len(set(stored["run_id"])) == 1
    assert set(stored["run_id"]) <= {a, b}
    for run_id in (a, b):
        record = run_record(airflow_db.scores_url, "churn", run_id)
        assert record is not None
        assert (record["status"], record["rows_written"]) == ("success", rows)


def test_late_rows_are_scored_by_a_rerun_and_nothing_else_changes(client: AirflowClient, airflow_db: Services) -> None:
    start, end = utc_day(WAREHOUSE_END - timedelta(days=8))
    first = trigger(client, start, end)
    client.wait_for_runs(DAG_ID, {first}, timeout=300)
    before = stored_scores(airflow_db.scores_url, TABLE, start, end)
    late = add_late_rows(airflow_db, start, 40, first_id=8_200_000)
    second = trigger(client, start, end)
    client.wait_for_runs(DAG_ID, {second}, timeout=300)
    after = stored_scores(airflow_db.scores_url, TABLE, start, end)
    assert set(after.index) == set(before.index) | late
    assert (after.loc[before.index, "score"] == before["score"]).all()
    assert_exact(airflow_db, start, end, second)


def _publishing_backend(scores_url: str, run_id: str, timeout: float = 300) -> int:
    """The client port of the publish task's connection once it waits inside its transaction, after its swap."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(scores_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT client_port FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%%UPDATE scoring.lineage SET published_at%%'"
            ).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.2)
    raise TimeoutError(f"the publish task of {run_id} never reached its transaction")


def _process_with_local_port(port: int) -> psutil.Process:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise LookupError(f"no process holds a TCP connection from port {port}")


def test_publish_killed_mid_transaction_is_retried_and_never_half_visible(
    client: AirflowClient, airflow_db: Services
) -> None:
    start, end = utc_day(WAREHOUSE_END - timedelta(days=7))
    first = trigger(client, start, end)
    client.wait_for_runs(DAG_ID, {first}, timeout=300)
    old_count = assert_exact(airflow_db, start, end, first)
    late = add_late_rows(airflow_db, start, 25, first_id=8_100_000)

    seen: list[int] = []
    stop = threading.Event()

    def read_counts() -> None:
        with psycopg.connect(airflow_db.scores_url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    f"SELECT count(*) FROM {TABLE} WHERE window_start = %s AND window_end = %s", (start, end)
                ).fetchone()
                seen.append(int(row[0]))
                time.sleep(0.02)

    reader = threading.Thread(target=read_counts, daemon=True)
    reader.start()
    second = trigger(client, start, end)
    holder = psycopg.connect(airflow_db.scores_url)  # holds the slice's lineage row: publish blocks after its swap
    try:
        deadline = time.monotonic() + 300
        while not holder.execute(
            "SELECT 1 FROM scoring.lineage WHERE pipeline = 'churn' AND run_id = %s FOR UPDATE", (second,)
        ).fetchall():
            assert time.monotonic() < deadline, "the slice of the second run never started loading"
            holder.rollback()
            time.sleep(0.2)
        port = _publishing_backend(airflow_db.scores_url, second)
        task = _process_with_local_port(port)
        os.kill(task.pid, signal.SIGKILL)
        task.wait(timeout=30)
    finally:
        holder.rollback()
        holder.close()
    client.wait_for_runs(DAG_ID, {second}, timeout=400)
    stop.set()
    reader.join(timeout=10)

    new_count = assert_exact(airflow_db, start, end, second)
    assert new_count == old_count + len(late)
    assert set(seen) <= {old_count, new_count}, f"a reader saw a partial window: {sorted(set(seen))}"
    assert seen[0] == old_count
    assert seen[-1] == new_count
    tries = client.get(f"/dags/{DAG_ID}/dagRuns/{second}/taskInstances/publish")["try_number"]
    assert tries == 2

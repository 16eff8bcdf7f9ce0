"""One running Airflow (api-server, scheduler, dag-processor; LocalExecutor) for all end-to-end tests.

The permission tests have their own api-server with the FAB auth manager (``fab_api``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from batchscore import db
from batchscore.local.airflow_client import AirflowClient
from batchscore.local.stack import LocalStack
from batchscore.pipeline.windows import Window
from tests.conftest import PIPELINES, SHADOW, WAREHOUSE_END, Services, day_window
from tests.e2e import fab_stack
from tests.e2e.fab_stack import FabApi
from tests.integration.helpers import expected_scores, run_record, stored_scores

DAG_ID = "score_churn"
TABLE = "scoring.churn_scores"


@pytest.fixture(scope="session")
def client(airflow_db: Services) -> Iterator[AirflowClient]:
    airflow_db.stack.start_services(timeout=240)
    try:
        api = AirflowClient(f"http://127.0.0.1:{airflow_db.stack.api_port}")
        api.wait_for_dag(DAG_ID, timeout=240)
        api.send("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
        yield api
    finally:
        airflow_db.stack.stop_services()


def assert_exact(
    services: Services,
    start: datetime,
    end: datetime,
    run_id: str | None,
    *,
    table: str = TABLE,
    pipeline: str = "churn",
) -> int:
    """The window holds exactly the model's scores for its rows, from ``run_id``; returns the row count."""
    expected, rejected = expected_scores(services.warehouse_url, services.registry, start, end)
    stored = stored_scores(services.scores_url, table, start, end)
    assert len(stored) == len(expected) > 2_000
    assert stored.index.is_unique
    np.testing.assert_allclose(stored.loc[expected.index, "score"], expected["score"], rtol=0, atol=1e-12)
    if run_id is not None:
        assert set(stored["run_id"]) == {run_id}
        record = run_record(services.scores_url, pipeline, run_id)
        assert record is not None
        assert (record["status"], record["rows_written"], record["rows_rejected"]) == (
            "success",
            len(expected),
            len(rejected),
        )
    return len(stored)


# The performance page's windows: churn with a challenger in shadow, scored and evaluated by the
# engine's own functions (what score_churn_shadow and evaluate_churn_shadow run), days no other e2e test uses.
PERF_PIPELINE = SHADOW
PERF_WINDOWS = tuple(Window(*day_window(WAREHOUSE_END - timedelta(days=d))) for d in (10, 9))
LONG_AFTER = datetime(2030, 1, 1, tzinfo=UTC)  # every test window's horizon has passed by then


@pytest.fixture(scope="session")
def evaluated_windows(airflow_db: Services, client: AirflowClient) -> dict[Window, str]:
    """Two windows of ``churn_shadow`` published and evaluated (champion and challenger); their run ids."""
    from batchscore.pipeline.config import load_config
    from batchscore.run.evaluation import evaluate_window
    from batchscore.run.in_process import run_pipeline
    from batchscore.run.planning import Endpoints

    config = load_config(PIPELINES / f"{PERF_PIPELINE}.yaml")
    ends = Endpoints(airflow_db.warehouse_url, airflow_db.scores_url, airflow_db.registry)
    runs = {}
    for window in PERF_WINDOWS:
        runs[window] = f"e2e__perf_{window.slug}"
        run_pipeline(config, ends, window=window, run_id=runs[window])
        result = evaluate_window(config, ends, window, run_id="e2e__perf_eval", now=LONG_AFTER)
        assert (result.status, [r.role for r in result.roles]) == ("evaluated", ["champion", "challenger"])
    return runs


def recorded_performance(services: Services, pipeline: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``scoring.performance`` read back with psycopg: (role, window start as a date) -> the row."""
    with psycopg.connect(db.libpq_url(services.scores_url)) as conn:
        cur = conn.execute(
            "SELECT role, window_start, model_name, model_version, rows_matched, metrics, curves"
            " FROM scoring.performance WHERE pipeline = %s",
            (pipeline,),
        )
        names = [c.name for c in cur.description or ()]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return {(r["role"], f"{r['window_start']:%Y-%m-%d}"): r for r in rows}


def trigger(client: AirflowClient, start: datetime, end: datetime, dag_id: str = DAG_ID) -> str:
    """A manual run through the REST API v2 with no logical date; the window comes from the form."""
    run = client.send(
        "POST",
        f"/dags/{dag_id}/dagRuns",
        {"logical_date": None, "conf": {"window_start": start.isoformat(), "window_end": end.isoformat()}},
    )
    return str(run["dag_run_id"])


def backfill(services: Services, client: AirflowClient, first: date, last: date, *extra: str) -> list[dict]:
    """``airflow backfill create`` over [first, last]; wait until each day's run finished after the call.

    Returns one run per day, by date. A reprocessed day may reuse its run id (Airflow clears
    and re-runs it), so runs are matched by date and by finishing after the backfill began.
    Airflow allows one active backfill per DAG, and its scheduler marks a backfill complete only
    every 30 s (a fixed interval), so the wait for the previous one's mark comes before the call,
    not after: it passes while the caller checks what its own backfill wrote.
    """
    _until_no_active_backfill(client)
    began = datetime.now(UTC)
    services.stack.backfill(DAG_ID, first, last, *extra)
    days = (last - first).days + 1
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        runs = {
            datetime.fromisoformat(r["data_interval_start"]).date(): r
            for r in client.dag_runs(DAG_ID)
            if r["run_type"] == "backfill" and first <= datetime.fromisoformat(r["data_interval_start"]).date() <= last
        }
        done = [
            r
            for r in runs.values()
            if r["end_date"] and datetime.fromisoformat(r["end_date"]) > began and r["state"] in ("success", "failed")
        ]
        if len(done) == days:
            assert all(r["state"] == "success" for r in done), [(r["dag_run_id"], r["state"]) for r in done]
            return sorted(done, key=lambda r: r["data_interval_start"])
        time.sleep(1)
    raise TimeoutError(f"backfill {first}..{last} did not finish")


def _until_no_active_backfill(client: AirflowClient, timeout: float = 120) -> None:
    """Wait until every backfill of the DAG is marked complete (the scheduler does so every 30 s)."""
    deadline = time.monotonic() + timeout
    while any(b["completed_at"] is None for b in client.get("/backfills", dag_id=DAG_ID)["backfills"]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"a backfill of {DAG_ID} was still not complete after {timeout:.0f}s")
        time.sleep(1)


def utc_day(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


@pytest.fixture(scope="module")
def fab_api(database: LocalStack) -> Iterator[FabApi]:
    """A second api-server with the FAB auth manager and per-DAG roles (tests/e2e/fab_stack.py).

    Module-scoped: only test_ui_permissions.py uses it, so it starts once a session and stops
    when that module is done, instead of idling beside the main stack for the rest of the run.
    """
    api = fab_stack.start(database)
    try:
        yield api
    finally:
        api.stack.stop_services()

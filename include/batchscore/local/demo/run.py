"""``make demo``: the whole job end to end on the local stack.

Starts PostgreSQL, migrates Airflow's metadata DB, seeds the warehouse, trains and
registers the three demo models (churn: a classifier, spend: a regressor, segments: a
clusterer), starts the Airflow services, lets the scheduler run each pipeline's latest
nightly window, backfills churn's three windows before it with ``airflow backfill create``,
and prints what landed where.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import psycopg

from batchscore import db
from batchscore.local.airflow_client import AirflowClient
from batchscore.local.demo.catalog import DEMO_MODELS, register_missing
from batchscore.local.demo.report import summary
from batchscore.local.demo.warehouse import seed_warehouse
from batchscore.local.stack import LocalStack

DAG_IDS = tuple(f"score_{demo.pipeline}" for demo in DEMO_MODELS)
BACKFILL_DAG = "score_churn"
BACKFILL_DAYS = 3


def _say(message: str) -> None:
    print(f"[demo {datetime.now():%H:%M:%S}] {message}", flush=True)


def warehouse_days(url: str) -> tuple[int, date | None]:
    """Customers on the warehouse's last day, and that day; (0, None) when the table is missing
    or older than this version (no ``spend_next_30d``), so that it is seeded again."""
    with psycopg.connect(db.libpq_url(url)) as conn:
        current = conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'warehouse' "
            "AND table_name = 'customer_activity' AND column_name = 'spend_next_30d'"
        ).fetchone()
        if current is None:
            return 0, None
        row = conn.execute(
            "SELECT count(DISTINCT customer_id), max(event_time)::date FROM warehouse.customer_activity "
            "WHERE event_time >= (SELECT max(event_time) FROM warehouse.customer_activity) - interval '1 day'"
        ).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)


def prepare(stack: LocalStack, *, rows_per_day: int, days: int, today: date, reseed: bool = False) -> None:
    """Database, metadata, warehouse and models: everything before Airflow runs anything."""
    _say("starting PostgreSQL" if not stack.external_url else f"using {db.redact(stack.external_url)}")
    stack.start_database()
    _say("migrating the Airflow metadata database")
    stack.migrate()
    prepare_data(
        stack.database_url("warehouse"),
        stack.env()["BATCHSCORE_MODEL_REGISTRY"],
        rows_per_day=rows_per_day,
        days=days,
        today=today,
        reseed=reseed,
    )


def prepare_data(
    warehouse: str, registry_root: str, *, rows_per_day: int, days: int, today: date, reseed: bool = False
) -> None:
    """The demo warehouse up to yesterday and the three demo models' champions, each only if missing (idempotent).

    What ``make demo`` and the docker-compose init service both run.
    """
    seeded_rows, last_day = warehouse_days(warehouse)
    if reseed or last_day != today - timedelta(days=1) or seeded_rows < rows_per_day:
        _say(f"seeding the warehouse: {days} days x {rows_per_day:,} customers")
        started = time.perf_counter()
        total = seed_warehouse(warehouse, end=today, days=days, rows_per_day=rows_per_day)
        _say(f"seeded {total:,} rows in {time.perf_counter() - started:.0f}s")
    first = datetime.combine(today - timedelta(days=days), datetime.min.time(), tzinfo=UTC)
    register_missing(warehouse, registry_root, first, say=_say)


def _scheduled_run(client: AirflowClient, dag_id: str, window_start: datetime, timeout: float = 120) -> str:
    """The id of the run the scheduler creates for the window starting at ``window_start``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in client.dag_runs(dag_id):
            if run["run_type"] == "scheduled" and datetime.fromisoformat(run["data_interval_start"]) == window_start:
                return str(run["dag_run_id"])
        time.sleep(2)
    raise TimeoutError(f"the scheduler did not create the nightly run of {dag_id}")


def _backfill_runs(client: AirflowClient, dag_id: str, first: date, last: date, timeout: float = 60) -> set[str]:
    """The ids of the backfill's runs, one per window from ``first`` to ``last``, once all exist."""
    deadline = time.monotonic() + timeout
    runs: set[str] = set()
    while time.monotonic() < deadline:
        runs = {
            str(r["dag_run_id"])
            for r in client.dag_runs(dag_id)
            if r["run_type"] == "backfill" and first <= datetime.fromisoformat(r["data_interval_start"]).date() <= last
        }
        if len(runs) == (last - first).days + 1:
            break
        time.sleep(2)
    return runs


def _cancel_unfinished_backfills(client: AirflowClient, dag_id: str) -> None:
    """Cancel a backfill left unfinished by an interrupted demo: Airflow allows one running backfill per DAG."""
    for backfill in client.get("/backfills", dag_id=dag_id, limit=100)["backfills"]:
        if backfill.get("completed_at") is None:
            _say(f"cancelling backfill {backfill['id']} of {dag_id}, left unfinished by an earlier run")
            client.send("PUT", f"/backfills/{backfill['id']}/cancel", {})


def run_through_airflow(stack: LocalStack, today: date) -> None:
    """Each pipeline's nightly run by the scheduler, then a 3-window backfill of churn; waits for all of them.

    One backfill shows how; backfilling the other two as well would triple the demo's slowest
    step (every task is a fresh process: about 5 s of imports each, 27 tasks for 9 windows).
    """
    _say(f"starting Airflow (api-server :{stack.api_port}, scheduler, dag-processor)")
    stack.start_services()
    client = AirflowClient(f"http://127.0.0.1:{stack.api_port}")
    for dag_id in DAG_IDS:
        client.wait_for_dag(dag_id)
    nightly_start = datetime.combine(today - timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    _say(
        f"unpausing {', '.join(DAG_IDS)}: the scheduler runs each one's latest nightly window "
        f"[{nightly_start:%Y-%m-%d}, {today})"
    )
    for dag_id in DAG_IDS:
        client.send("PATCH", f"/dags/{dag_id}", {"is_paused": False})
    for dag_id in DAG_IDS:
        client.wait_for_runs(dag_id, {_scheduled_run(client, dag_id, nightly_start)})
    _say(f"{len(DAG_IDS)} nightly runs succeeded")
    first = today - timedelta(days=BACKFILL_DAYS + 1)
    last = today - timedelta(days=2)
    _cancel_unfinished_backfills(client, BACKFILL_DAG)
    _say(f"backfilling {BACKFILL_DAG} {first} .. {last} with `airflow backfill create`")
    stack.backfill(BACKFILL_DAG, first, last, "--max-active-runs", "3", "--reprocess-behavior", "completed")
    done = client.wait_for_runs(BACKFILL_DAG, _backfill_runs(client, BACKFILL_DAG, first, last))
    _say(f"backfill of {len(done)} windows succeeded")


def main(rows_per_day: int, days: int, reseed: bool = False) -> None:
    stack = LocalStack()
    today = datetime.now(UTC).date()
    started = time.perf_counter()
    prepare(stack, rows_per_day=rows_per_day, days=days, today=today, reseed=reseed)
    try:
        run_through_airflow(stack, today)
    finally:
        stack.stop_services()
    _say(f"done in {time.perf_counter() - started:.0f}s\n")
    print(summary(stack))

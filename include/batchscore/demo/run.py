"""``make demo``: the whole job end to end on the local stack.

Starts PostgreSQL, migrates Airflow's metadata DB, seeds the warehouse, trains and
registers the model, starts the Airflow services, lets the scheduler run the latest
nightly window, backfills the three windows before it with ``airflow backfill create``,
and prints what landed where.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import psycopg

from batchscore import db, settings
from batchscore.config import load_config
from batchscore.demo.model import train_and_register
from batchscore.demo.warehouse import seed_warehouse
from batchscore.local import ADMIN_PASSWORD, ADMIN_USER, AirflowClient, LocalStack
from batchscore.registry import ModelRegistry, RegistryError
from batchscore.windows import Window

DAG_ID = "score_churn"


def _say(message: str) -> None:
    print(f"[demo {datetime.now():%H:%M:%S}] {message}", flush=True)


def _warehouse_days(url: str) -> tuple[int, date | None]:
    with psycopg.connect(db.libpq_url(url)) as conn:
        exists = conn.execute("SELECT to_regclass('warehouse.customer_activity')").fetchone()
        if not exists or exists[0] is None:
            return 0, None
        row = conn.execute(
            "SELECT count(DISTINCT customer_id), max(event_time)::date FROM warehouse.customer_activity "
            "WHERE event_time >= (SELECT max(event_time) FROM warehouse.customer_activity) - interval '1 day'"
        ).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)


def prepare(stack: LocalStack, *, rows_per_day: int, days: int, today: date, reseed: bool = False) -> None:
    """Database, metadata, warehouse and model: everything before Airflow runs anything."""
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
    """The demo warehouse up to yesterday and a registered 'churn' champion, each only if missing (idempotent).

    What ``make demo`` and the docker-compose init service both run.
    """
    seeded_rows, last_day = _warehouse_days(warehouse)
    if reseed or last_day != today - timedelta(days=1) or seeded_rows < rows_per_day:
        _say(f"seeding the warehouse: {days} days x {rows_per_day:,} customers")
        started = time.perf_counter()
        total = seed_warehouse(warehouse, end=today, days=days, rows_per_day=rows_per_day)
        _say(f"seeded {total:,} rows in {time.perf_counter() - started:.0f}s")
    registry = ModelRegistry(registry_root)
    try:
        manifest = registry.resolve("churn", "champion")
    except RegistryError:
        first = datetime.combine(today - timedelta(days=days), datetime.min.time(), tzinfo=UTC)
        _say("training the churn model on the first two days and registering it as 'champion'")
        manifest = train_and_register(warehouse, registry.root, train=Window(first, first + timedelta(days=2)))
    _say(
        f"model churn v{manifest.version}: holdout ROC AUC {manifest.metrics['holdout_roc_auc']:.3f} "
        f"(the ground-truth rule scores {manifest.metrics['ground_truth_rule_roc_auc']:.3f})"
    )


def run_through_airflow(stack: LocalStack, today: date) -> None:
    """The nightly run by the scheduler, then a 3-window backfill; waits for all of them."""
    _say(f"starting Airflow (api-server :{stack.api_port}, scheduler, dag-processor)")
    stack.start_services()
    client = AirflowClient(f"http://127.0.0.1:{stack.api_port}")
    client.wait_for_dag(DAG_ID)
    nightly_start = datetime.combine(today - timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    _say(f"unpausing {DAG_ID}: the scheduler runs the latest nightly window [{nightly_start:%Y-%m-%d}, {today})")
    client.send("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    deadline = time.monotonic() + 120
    nightly: dict[str, object] | None = None
    while nightly is None and time.monotonic() < deadline:
        nightly = next(
            (
                r
                for r in client.dag_runs(DAG_ID)
                if r["run_type"] == "scheduled" and datetime.fromisoformat(r["data_interval_start"]) == nightly_start
            ),
            None,
        )
        time.sleep(2)
    if nightly is None:
        raise TimeoutError("the scheduler did not create the nightly run")
    client.wait_for_runs(DAG_ID, {str(nightly["dag_run_id"])})
    _say("nightly run succeeded")
    first = today - timedelta(days=4)
    last = today - timedelta(days=2)
    _say(f"backfilling {first} .. {last} with `airflow backfill create`")
    stack.backfill(DAG_ID, first, last, "--max-active-runs", "3", "--reprocess-behavior", "completed")
    deadline = time.monotonic() + 60
    backfill: set[str] = set()
    while len(backfill) < 3 and time.monotonic() < deadline:
        backfill = {
            str(r["dag_run_id"])
            for r in client.dag_runs(DAG_ID)
            if r["run_type"] == "backfill" and first <= datetime.fromisoformat(r["data_interval_start"]).date() <= last
        }
        time.sleep(2)
    client.wait_for_runs(DAG_ID, backfill)
    _say(f"backfill of {len(backfill)} windows succeeded")


def summary(stack: LocalStack) -> str:
    config = load_config(settings.pipelines_dir() / "churn.yaml")
    url = stack.database_url("scores")
    lines = [f"Scores are in {config.output.table} of {db.redact(url)}", ""]
    lines.append(f"{'window start':<12} {'scored':>9} {'rejected':>9} {'mean P(churn)':>14}  model    run")
    with psycopg.connect(db.libpq_url(url)) as conn:
        rows = conn.execute(
            """
            SELECT window_start::date, rows_written, rows_rejected, (score_summary->>'mean')::float,
                   model_name || ' v' || model_version, run_id
            FROM scoring.scoring_runs WHERE pipeline = %s AND status = 'success'
            ORDER BY window_start DESC, finished_at DESC LIMIT 8
            """,
            (config.name,),
        ).fetchall()
        for day, written, rejected, mean, model, run_id in rows:
            # An empty window (a quiet day, a late upstream load) has no mean: shown as such, never a crash.
            shown = f"{mean:>14.4f}" if mean is not None else f"{'(no rows)':>14}"
            lines.append(f"{day!s:<12} {written or 0:>9,} {rejected or 0:>9,} {shown}  {model:<8} {run_id}")
        reasons = conn.execute(
            "SELECT reason, count(*) FROM scoring.rejects WHERE pipeline = %s GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
            (config.name,),
        ).fetchall()
    lines += ["", "Rejected rows (scoring.rejects) by reason:"] + [f"  {n:>6,}  {r}" for r, n in reasons]
    lines += [
        "",
        "Next:",
        f"  make airflow   # Airflow UI at http://127.0.0.1:{stack.api_port} "
        f"(user {ADMIN_USER}, password {ADMIN_PASSWORD})",
        "  make psql      # SQL shell on the scores database",
        "  make stop      # stop the local PostgreSQL and Airflow",
    ]
    return "\n".join(lines)


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

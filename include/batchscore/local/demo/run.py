"""``make demo``: the whole job end to end on the local stack.

Starts PostgreSQL, migrates Airflow's metadata DB, seeds the warehouse, trains and
registers the three demo models (churn: a classifier, spend: a regressor, segments: a
clusterer), starts the Airflow services, lets the scheduler run each pipeline's latest
nightly window, backfills churn with ``airflow backfill create`` over the three windows
newest among those whose outcomes are complete (the pipelines' 30-day horizon) while the
engine scores spend's same windows in this process (what ``batchscore score`` does), judges
those windows against their outcomes with the evaluation step ``evaluate_<name>`` runs, and
prints what landed where, with the realised ROC AUC and RMSE beside the training holdout's.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, date, datetime, timedelta

import psycopg

from batchscore import db, settings
from batchscore.local.airflow_client import AirflowClient
from batchscore.local.demo.catalog import DEMO_MODELS, register_missing
from batchscore.local.demo.report import summary
from batchscore.local.demo.warehouse import seed_warehouse
from batchscore.local.stack import LocalStack
from batchscore.pipeline.config import PipelineConfig, load_config
from batchscore.pipeline.windows import Window
from batchscore.run.planning import Endpoints

DAG_IDS = tuple(f"score_{demo.pipeline}" for demo in DEMO_MODELS)
BACKFILL_DAG = "score_churn"
EVALUATED = ("churn", "spend")  # the pipelines with outcomes: scored on old windows, then judged
BACKFILL_DAYS = 3
TRAINING_DAYS = 3  # the warehouse's first days, which trained the models and made their holdouts


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


def evaluated_configs() -> list[PipelineConfig]:
    return [load_config(settings.pipelines_dir() / f"{name}.yaml") for name in EVALUATED]


def old_windows(today: date, days: int) -> tuple[date, date] | None:
    """The first and last day of the windows to backfill and evaluate: the newest ``BACKFILL_DAYS``
    whose outcomes are complete by today (window end + horizon <= today's midnight), or None
    when the warehouse's ``days`` do not reach back that far past the training days."""
    horizon = max(c.outcomes.horizon_delta for c in evaluated_configs() if c.outcomes is not None)
    last = today - timedelta(days=math.ceil(horizon / timedelta(days=1)) + 1)
    first = last - timedelta(days=BACKFILL_DAYS - 1)
    return (first, last) if first >= today - timedelta(days=days - TRAINING_DAYS) else None


def evaluate_windows(
    configs: list[PipelineConfig], endpoints: Endpoints, first: date, last: date, *, now: datetime
) -> dict[str, list[str]]:
    """Judge each pipeline's day windows from ``first`` to ``last`` against their outcomes, as ``evaluate_<name>``
    does (the same ``evaluate_window``, recording ``scoring.performance``); per pipeline, each window's
    ``evaluated``, or the reason it was skipped."""
    from batchscore.run.evaluation import evaluate_window

    done: dict[str, list[str]] = {}
    for config in configs:
        for window in day_windows(first, last):
            result = evaluate_window(config, endpoints, window, run_id=f"demo__evaluate_{window.slug}", now=now)
            done.setdefault(config.name, []).append(result.status if result.reason is None else result.reason)
    return done


def day_windows(first: date, last: date) -> list[Window]:
    """The day windows [d, d + 1) from ``first`` to ``last``, both included, in UTC."""
    starts = [
        datetime.combine(first + timedelta(days=n), datetime.min.time(), tzinfo=UTC)
        for n in range((last - first).days + 1)
    ]
    return [Window(start, start + timedelta(days=1)) for start in starts]


def score_without_airflow(config: PipelineConfig, endpoints: Endpoints, first: date, last: date) -> None:
    """Score ``config``'s day windows from ``first`` to ``last`` with the engine in this process (``batchscore score``).

    The same plan, slices and publish the DAG's tasks run, without a scheduler: cheaper here
    than a second backfill, whose every task is a fresh process (about 5 s of imports each).
    """
    from batchscore.run.in_process import run_pipeline

    for window in day_windows(first, last):
        run_pipeline(config, endpoints, window=window, run_id=f"demo__{config.name}_{window.start:%Y-%m-%d}")


def run_through_airflow(
    stack: LocalStack, today: date, backfill: tuple[date, date] | None, endpoints: Endpoints
) -> None:
    """Each pipeline's nightly run by the scheduler, then churn's backfill; waits for all of them.

    While the backfill runs, spend's same windows are scored without Airflow, so both have old
    windows to judge. Backfilling spend and segments as well would double the demo's slowest
    step (every task is a fresh process: about 5 s of imports each).
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
    if backfill is None:
        return
    first, last = backfill
    spend = next(c for c in evaluated_configs() if c.name == "spend")
    _cancel_unfinished_backfills(client, BACKFILL_DAG)
    _say(f"backfilling {BACKFILL_DAG} {first} .. {last} with `airflow backfill create`")
    stack.backfill(BACKFILL_DAG, first, last, "--max-active-runs", "3", "--reprocess-behavior", "completed")
    _say(f"meanwhile scoring {spend.name} {first} .. {last} without Airflow (`batchscore score`: the engine here)")
    score_without_airflow(spend, endpoints, first, last)
    done = client.wait_for_runs(BACKFILL_DAG, _backfill_runs(client, BACKFILL_DAG, first, last))
    _say(f"backfill of {len(done)} windows succeeded")


def main(rows_per_day: int, days: int, reseed: bool = False) -> None:
    stack = LocalStack()
    today = datetime.now(UTC).date()
    started = time.perf_counter()
    prepare(stack, rows_per_day=rows_per_day, days=days, today=today, reseed=reseed)
    backfill = old_windows(today, days)
    if backfill is None:
        _say(f"{days} days of warehouse do not reach past the outcomes' horizon: nothing to evaluate (try --days 60)")
    endpoints = Endpoints(
        stack.database_url("warehouse"), stack.database_url("scores"), stack.env()["BATCHSCORE_MODEL_REGISTRY"]
    )
    try:
        run_through_airflow(stack, today, backfill, endpoints)
    finally:
        stack.stop_services()
    if backfill is not None:
        _say(f"evaluating {', '.join(EVALUATED)} on {backfill[0]} .. {backfill[1]} against their outcomes")
        judged = evaluate_windows(evaluated_configs(), endpoints, *backfill, now=datetime.now(UTC))
        for name, statuses in judged.items():
            _say(f"{name}: {statuses.count('evaluated')} windows evaluated into scoring.performance")
            for reason in (s for s in statuses if s != "evaluated"):
                _say(f"{name}: {reason}")
    _say(f"done in {time.perf_counter() - started:.0f}s\n")
    print(summary(stack))

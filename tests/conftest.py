"""Shared test services, started once per session.

The environment for Airflow is set here, at import, because Airflow reads its
configuration the first time it is imported: every test (and every Airflow process a
test starts) uses a throw-away AIRFLOW_HOME and model registry, and a
real PostgreSQL server from the pip-installed binaries (fsync off: tests, not data).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from batchscore.local.embedded_pg import free_ports
from batchscore.local.stack import LocalStack
from tests.mlflow_server import MlflowServer

TEST_ROOT = Path(tempfile.mkdtemp(prefix="bs-test-"))
REVIEWER, REVIEWER_PASSWORD = "reviewer", "reviewer-pw"
PG_PORT, API_PORT, LOG_PORT = free_ports(3)  # distinct: the API server once drew PostgreSQL's port
# Test-only Airflow housekeeping intervals (every stack a test starts takes them):
TEST_AIRFLOW_SETTINGS = {
    # A new or rewritten DAG file is parsed at once whatever this says (Airflow queues it first);
    # re-parsing the two dozen unchanged files every 10 s kept half a core busy all session.
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
    # The sweep that fails an approval request past its response timeout (and a deferred task
    # past its own): every 2 s, not Airflow's 15, so an expiry is seen when it happens.
    "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
}
STACK = LocalStack(
    root=TEST_ROOT,
    pg_port=PG_PORT,
    api_port=API_PORT,
    log_port=LOG_PORT,
    external_url=None,
    pg_settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
    dags_dir=TEST_ROOT / "dags",  # the test pipelines' generated DAG files, beside the project's check file
    users={REVIEWER: ("user", REVIEWER_PASSWORD)},  # answers promotion requests in the e2e tests
    airflow_overrides=TEST_AIRFLOW_SETTINGS,
)
os.environ.update(STACK.env())
os.environ.pop("BATCHSCORE_PG_URL", None)

# The shipped pipelines plus a sliced variant of churn (slice_rows small enough that a test day of
# 3,000 rows makes 3 slices), so dag.test() and the running scheduler exercise mapped slice tasks.
PIPELINES = TEST_ROOT / "pipelines"
SLICED = "churn_sliced"
SLICED_TABLE = "scoring.churn_sliced_scores"
# Scored by two Celery workers: 4 slices of a test day.
CELERY = "churn_celery"
CELERY_TABLE = "scoring.churn_celery_scores"
# churn (in 3 slices) with a challenger in shadow: a second churn model registered as 'challenger'.
SHADOW = "churn_shadow"
SHADOW_TABLE = "scoring.churn_shadow_scores"
CHALLENGER = "churn_challenger"
# churn with outcomes, its challenger a version of its own model (churn_promo, registered by the
# promotion tests), and promotion by approval: promote_churn_promo; _expiry's requests time out in 36 s.
PROMO = "churn_promo"
PROMO_EXPIRY = "churn_promo_expiry"


def _write_pipelines() -> None:
    import yaml

    shipped = Path(__file__).resolve().parents[1] / "include" / "pipelines"
    PIPELINES.mkdir(parents=True, exist_ok=True)
    for path in shipped.glob("*.yaml"):
        shutil.copy(path, PIPELINES / path.name)
    sliced = yaml.safe_load((shipped / "churn.yaml").read_text())
    sliced.update(name=SLICED, tags=["churn", "test"], output={"conn_id": "scores_db", "table": SLICED_TABLE})
    sliced["execution"].update(slice_rows=1_000, max_slices=3, retries=2, retry_delay_seconds=1)
    (PIPELINES / f"{SLICED}.yaml").write_text(yaml.safe_dump(sliced, sort_keys=False))
    celery = {**sliced, "name": CELERY, "output": {"conn_id": "scores_db", "table": CELERY_TABLE}}
    celery["execution"] = {**sliced["execution"], "slice_rows": 700, "max_slices": 4, "threads_per_slice": 1}
    (PIPELINES / f"{CELERY}.yaml").write_text(yaml.safe_dump(celery, sort_keys=False))
    shadow = {**sliced, "name": SHADOW, "output": {"conn_id": "scores_db", "table": SHADOW_TABLE}}
    shadow["shadow"] = {"name": CHALLENGER, "version": "challenger"}
    (PIPELINES / f"{SHADOW}.yaml").write_text(yaml.safe_dump(shadow, sort_keys=False))
    for name, hours in ((PROMO, 2.0), (PROMO_EXPIRY, 0.01)):
        promo = {**shadow, "name": name, "output": {"conn_id": "scores_db", "table": f"scoring.{name}_scores"}}
        promo["model"] = {"name": PROMO, "version": "champion"}
        promo["shadow"] = {"version": "challenger"}
        promo["outcomes"] = {**sliced["outcomes"], "horizon": "1d"}
        promo["promotion"] = {
            "windows": 2,
            "timeout_hours": hours,
            "requires": {"metric": "roc_auc", "min_gain": 0.0, "windows": 2},
        }
        (PIPELINES / f"{name}.yaml").write_text(yaml.safe_dump(promo, sort_keys=False))


def _write_dag_files() -> None:
    from batchscore.airflow.dag_files import sync

    sync(PIPELINES, STACK.dags_dir)
    shutil.copy(Path(__file__).resolve().parents[1] / "dags" / "pipeline_files.py", STACK.dags_dir)


_write_pipelines()
os.environ["BATCHSCORE_PIPELINES_DIR"] = str(PIPELINES)
_write_dag_files()

# The demo warehouse every database test reads: 18 days x 3,000 customers, ending before WAREHOUSE_END.
# Days by use: the first 2 train the model; integration tests rescore the last 9; the e2e tests
# backfill 7 days from the 3rd and 2 days at WAREHOUSE_END - 5.
WAREHOUSE_END = date(2026, 11, 1)
WAREHOUSE_DAYS = 18
ROWS_PER_DAY = 3_000
TRAIN_WINDOW_DAYS = 2


def day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


@dataclass(frozen=True)
class Services:
    stack: LocalStack
    warehouse_url: str
    scores_url: str
    registry: str


@pytest.fixture(scope="session")
def database() -> Iterator[LocalStack]:
    """The embedded PostgreSQL with the airflow, warehouse and scores databases."""
    STACK.start_database()
    yield STACK
    if "airflow.settings" in sys.modules:  # close Airflow's pooled connections before the server goes
        sys.modules["airflow.settings"].dispose_orm()
    STACK.stop()
    shutil.rmtree(TEST_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def services(database: LocalStack) -> Services:
    """Database plus a seeded warehouse, a registered 'churn' champion and a 'churn_challenger' challenger."""
    from batchscore.local.demo.model import train_and_register
    from batchscore.local.demo.warehouse import seed_warehouse
    from batchscore.pipeline.windows import Window

    warehouse = database.database_url("warehouse")
    seed_warehouse(warehouse, end=WAREHOUSE_END, days=WAREHOUSE_DAYS, rows_per_day=ROWS_PER_DAY)
    registry = os.environ["BATCHSCORE_MODEL_REGISTRY"]
    first = datetime.combine(WAREHOUSE_END - timedelta(days=WAREHOUSE_DAYS), datetime.min.time(), tzinfo=UTC)
    train = Window(first, first + timedelta(days=TRAIN_WINDOW_DAYS))
    train_and_register(warehouse, registry, train=train, max_iter=30)
    # fewer boosting rounds, so its scores differ from the champion's
    train_and_register(warehouse, registry, train=train, name=CHALLENGER, max_iter=5, aliases=("challenger",))
    return Services(
        stack=database,
        warehouse_url=warehouse,
        scores_url=database.database_url("scores"),
        registry=registry,
    )


@pytest.fixture(scope="session")
def airflow_db(services: Services) -> Services:
    """Airflow's metadata schema migrated on the embedded PostgreSQL."""
    services.stack.migrate()
    return services


_MLFLOW: list[MlflowServer] = []


def _mlflow_started() -> MlflowServer:
    """The session's MLflow tracking server, started on first call (its own virtualenv; SQLite, local artifacts)."""
    if not _MLFLOW:
        from tests.mlflow_server import start_server

        _MLFLOW.append(start_server(TEST_ROOT / "mlflow", free_ports(1)[0]))
    return _MLFLOW[0]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the MLflow server as soon as a collected test needs it: it boots (15-40 s) while other tests run."""
    if any("mlflow_server" in getattr(item, "fixturenames", ()) for item in session.items):
        _mlflow_started()


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    """A real MLflow tracking server, answering."""
    server = _mlflow_started()
    yield server.wait()
    server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's scratch folder (the database fixture has stopped its server by now)."""
    for server in _MLFLOW:  # started for tests that were then not run (an interrupted session)
        server.stop()
    if not STACK.pg.is_running():
        shutil.rmtree(TEST_ROOT, ignore_errors=True)

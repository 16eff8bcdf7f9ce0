"""Past one machine: the DAG on CeleryExecutor with two real workers, and a worker lost mid-window.

A real Redis broker (Debian's redis-server), Airflow's metadata and the Celery result backend
on the embedded PostgreSQL, a scheduler, a dag-processor, an api-server, and two
``airflow celery worker`` processes with distinct hostnames, ``worker_concurrency`` 1 and working
directories of their own. Nothing passes between tasks but XCom and the databases.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from batchscore.local.airflow_client import AirflowClient
from batchscore.local.embedded_pg import free_ports
from batchscore.local.services import start_redis
from batchscore.local.stack import LocalStack
from batchscore.sink.run_record import run_events
from tests.conftest import CELERY, CELERY_TABLE, PG_PORT, STACK, TEST_ROOT, WAREHOUSE_END, Services
from tests.e2e.conftest import assert_exact, trigger, utc_day
from tests.e2e.holds import held_mid_load, loading_backend, loading_backends, process_with_local_port
from tests.e2e.sockets import Listener, answering_from_outside, listeners, process_tree, stack_parts
from tests.integration.helpers import run_record

pytestmark = pytest.mark.e2e
CELERY_DAG = f"score_{CELERY}"
WORKERS = ("worker1", "worker2")


def _wait_for_log(path: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(1)
    tail = path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"
    raise TimeoutError(f"{path} never said {text!r}:\n{tail}")


@pytest.fixture(scope="module")
def celery(airflow_db: Services) -> Iterator[tuple[LocalStack, AirflowClient]]:
    redis_port, api_port, log_port = free_ports(3)
    redis = start_redis(TEST_ROOT / "redis", redis_port)
    stack = LocalStack(
        root=TEST_ROOT,
        pg_port=PG_PORT,
        api_port=api_port,
        log_port=log_port,
        external_url=None,
        pg_settings=STACK.pg_settings,
        dags_dir=STACK.dags_dir,
        name="airflow_celery",
        executor="CeleryExecutor",
        broker_url=f"redis://127.0.0.1:{redis_port}/0",
        heartbeat_timeout=20,
        airflow_overrides=STACK.airflow_overrides,
    )
    try:
        stack.migrate()
        stack.start_services(timeout=240)
        for name in WORKERS:
            workdir = stack.start_worker(name)
            _wait_for_log(workdir / "worker.log", "ready.")
        api = AirflowClient(f"http://127.0.0.1:{api_port}")
        api.wait_for_dag(CELERY_DAG, timeout=120)
        api.send("PATCH", f"/dags/{CELERY_DAG}", {"is_paused": False})
    except BaseException:
        for log in sorted(TEST_ROOT.glob("airflow_celery*/**/*.log"))[:8]:
            print(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}")
        stack.stop_services()
        redis.terminate()
        raise
    try:
        yield stack, api
    finally:
        stack.stop_services()
        redis.terminate()
        redis.wait(timeout=30)


def test_the_celery_stack_and_its_workers_listen_on_127_0_0_1_only(celery: tuple[LocalStack, AirflowClient]) -> None:
    """Workers serve no logs (Airflow's log server binds every interface); Redis is bound to loopback."""
    stack, _ = celery
    parts = stack_parts(stack)
    assert {"worker-worker1", "worker-worker2"} <= set(parts.values())
    redis_port = int(str(stack.broker_url).rsplit(":", 1)[1].split("/")[0])
    redis = next(p for p in psutil.process_iter(["cwd"]) if p.info["cwd"] == str(TEST_ROOT / "redis"))
    parts |= dict.fromkeys(process_tree(redis.pid), "redis")

    assert listeners(parts) == {
        Listener("api-server", "127.0.0.1", stack.api_port),
        Listener("log-server", "127.0.0.1", stack.log_port),
        Listener("postgres", "127.0.0.1", stack.pg_port),
        Listener("redis", "127.0.0.1", redis_port),
    }
    for port in (stack.api_port, stack.log_port, redis_port):
        assert answering_from_outside(port) == [], f"port {port} answers on an address beyond loopback"


def _slice_instances(api: AirflowClient, run_id: str) -> list[dict]:
    listed = api.get(f"/dags/{CELERY_DAG}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]
    return [t for t in listed if t["task_id"] == "score_slice"]


def _worker_of(stack: LocalStack, process: psutil.Process) -> str:
    """Which test worker ``process`` (a task's process) runs under: its ancestors hold the worker's main pid."""
    lineage = {process.pid, *(p.pid for p in process.parents())}
    for name in WORKERS:
        if int((stack.home / f"worker-{name}.pid").read_text()) in lineage:
            return name
    raise LookupError(f"process {process.pid} belongs to no test worker")


def test_two_celery_workers_share_the_slices_and_the_window_is_exact(
    celery: tuple[LocalStack, AirflowClient], airflow_db: Services
) -> None:
    """Two slices are held mid-load at once: with one task slot per worker, each worker holds one.

    Without the hold a warm worker can score all four slices before the other takes its first
    (the assertion once failed that way), so the test would prove nothing about sharing.
    """
    stack, api = celery
    start, end = utc_day(WAREHOUSE_END - timedelta(days=11))
    with held_mid_load(airflow_db.scores_url, CELERY_TABLE):
        run_id = trigger(api, start, end, dag_id=CELERY_DAG)
        ports = loading_backends(airflow_db.scores_url, CELERY_TABLE, count=2)
        holding = {_worker_of(stack, process_with_local_port(port)) for port in ports}
    assert holding == set(WORKERS), "both workers were loading a slice at the same moment"
    api.wait_for_runs(CELERY_DAG, {run_id}, timeout=600, poll=1)

    assert_exact(airflow_db, start, end, run_id, table=CELERY_TABLE, pipeline=CELERY)
    slices = _slice_instances(api, run_id)
    assert len(slices) == 4
    assert {t["hostname"] for t in slices} == set(WORKERS), "both workers scored slices"
    record = run_record(airflow_db.scores_url, CELERY, run_id)
    assert record is not None
    assert {s["host"] for s in record["slices"]} == set(WORKERS)
    # Each worker imported the scoring stack before forking its pool (batchscore.airflow.celery_config).
    assert [s["warm_start"] for s in record["slices"]] == [True] * 4


def test_a_worker_lost_mid_window_is_replaced_by_the_other_and_the_window_is_exact(
    celery: tuple[LocalStack, AirflowClient], airflow_db: Services
) -> None:
    stack, api = celery
    start, end = utc_day(WAREHOUSE_END - timedelta(days=12))
    with held_mid_load(airflow_db.scores_url, CELERY_TABLE):
        run_id = trigger(api, start, end, dag_id=CELERY_DAG)
        task = process_with_local_port(loading_backend(airflow_db.scores_url, CELERY_TABLE))
        lost = _worker_of(stack, task)
        stack.kill_worker(lost)  # the whole worker, as a lost machine: its task process too
    api.wait_for_runs(CELERY_DAG, {run_id}, timeout=600, poll=1)

    assert_exact(airflow_db, start, end, run_id, table=CELERY_TABLE, pipeline=CELERY)
    survivor = next(name for name in WORKERS if name != lost)
    slices = _slice_instances(api, run_id)
    retried = [t for t in slices if t["try_number"] > 1]
    assert len(retried) == 1, [(t["map_index"], t["try_number"], t["hostname"]) for t in slices]
    assert retried[0]["hostname"] == survivor, "the lost worker's slice was scored again by the other worker"
    record = run_record(airflow_db.scores_url, CELERY, run_id)
    assert record is not None
    assert len(record["slices"]) == 4
    events = run_events(airflow_db.scores_url, pipeline=CELERY, run_id=run_id)
    assert [e["event"] for e in events] == ["attempt replaced"], "the record says a slice's first try was lost"


def test_the_scheduler_killed_mid_run_and_started_again_finishes_the_window_exact(
    celery: tuple[LocalStack, AirflowClient], airflow_db: Services
) -> None:
    stack, api = celery
    start, end = utc_day(WAREHOUSE_END - timedelta(days=13))
    with held_mid_load(airflow_db.scores_url, CELERY_TABLE):
        run_id = trigger(api, start, end, dag_id=CELERY_DAG)
        loading_backend(airflow_db.scores_url, CELERY_TABLE)  # slices are loading on the workers
        stack.kill("scheduler")  # its whole process group, as a crash; the workers and their tasks go on
        assert not stack.running("scheduler")
    stack.start_services(timeout=240)  # only the scheduler was down: it alone starts again
    api.wait_for_runs(CELERY_DAG, {run_id}, timeout=600, poll=1)

    assert_exact(airflow_db, start, end, run_id, table=CELERY_TABLE, pipeline=CELERY)
    record = run_record(airflow_db.scores_url, CELERY, run_id)
    assert record is not None
    assert len(record["slices"]) == 4
    assert all(t["state"] == "success" for t in _slice_instances(api, run_id))

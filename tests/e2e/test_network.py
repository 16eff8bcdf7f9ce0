"""Nothing of the running local stack listens beyond 127.0.0.1.

Read from the kernel while the session's stack runs (the api-server, scheduler, dag-processor,
triggerer, log server and PostgreSQL the e2e fixtures start), idle and with a task running,
and for the MLflow server the tests start. Each listener is named with its part, so a new one
(a health check, a log server) fails here until a person decides where it may listen.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from batchscore.local.airflow_client import AirflowClient
from tests.conftest import WAREHOUSE_END, Services
from tests.e2e.conftest import DAG_ID, TABLE, assert_exact, trigger, utc_day
from tests.e2e.holds import held_mid_load, loading_backend, process_with_local_port
from tests.e2e.sockets import Listener, answering_from_outside, listeners, process_tree, stack_parts
from tests.mlflow_server import MlflowServer

pytestmark = pytest.mark.e2e
# A training day of the warehouse: no other end-to-end test scores it.
DAY = WAREHOUSE_END - timedelta(days=17)


def test_the_stack_listens_on_127_0_0_1_only(client: AirflowClient, airflow_db: Services) -> None:
    stack = airflow_db.stack
    parts = stack_parts(stack)
    assert set(parts.values()) == {"api-server", "scheduler", "dag-processor", "triggerer", "log-server", "postgres"}

    assert listeners(parts) == {
        Listener("api-server", "127.0.0.1", stack.api_port),
        Listener("log-server", "127.0.0.1", stack.log_port),
        Listener("postgres", "127.0.0.1", stack.pg_port),
    }
    assert (stack.pg.datadir / f".s.PGSQL.{stack.pg_port}").is_socket()
    for port in (stack.api_port, stack.log_port, stack.pg_port):
        assert answering_from_outside(port) == [], f"port {port} answers on an address beyond loopback"


def test_a_running_task_adds_no_listener_and_its_log_is_served_on_loopback(
    client: AirflowClient, airflow_db: Services
) -> None:
    """A slice task held mid-load: its process listens nowhere, and the api-server reads its log live
    from the stack's log server (the task's host name, this machine's, resolves to loopback here)."""
    stack = airflow_db.stack
    start, end = utc_day(DAY)
    with held_mid_load(airflow_db.scores_url, TABLE):
        run_id = trigger(client, start, end)
        task = process_with_local_port(loading_backend(airflow_db.scores_url, TABLE))
        parts = stack_parts(stack)
        assert parts[task.pid] == "scheduler", "the task process runs under the scheduler's LocalExecutor"
        assert {item.part for item in listeners(parts)} == {"api-server", "log-server", "postgres"}
        assert all(item.ip == "127.0.0.1" for item in listeners(parts))
        log = client.session.get(
            f"{client.base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/score_slice/logs/1",
            params={"map_index": 0},
            headers={"Accept": "application/json"},
            timeout=60,
        )
        log.raise_for_status()
    sources = _log_sources(log.json()["content"])
    assert not [source for source in sources if "Could not read served logs" in source], sources
    served = [source for source in sources if source.startswith("http://")]
    assert [url.split("/log/")[0].rsplit(":", 1)[1] for url in served] == [str(stack.log_port)], sources
    assert served[0].split("/log/")[1].startswith(f"dag_id={DAG_ID}/run_id={run_id}/task_id=score_slice/")
    client.wait_for_runs(DAG_ID, {run_id}, timeout=400)
    assert_exact(airflow_db, start, end, run_id)


def _log_sources(content: list[dict[str, object]]) -> list[str]:
    """The lines of the log's "source details" group: each file and URL the api-server read it from."""
    events = [str(line.get("event", "")) for line in content]
    first = events.index("::group::Log message source details")
    return events[first + 1 : events.index("::endgroup::", first)]


def test_the_mlflow_test_server_listens_on_127_0_0_1_only(mlflow_server: MlflowServer) -> None:
    pids = process_tree(mlflow_server.process.pid)
    found = listeners(dict.fromkeys(pids, "mlflow"))
    port = int(mlflow_server.uri.rsplit(":", 1)[1])
    assert found == {Listener("mlflow", "127.0.0.1", port)}
    assert answering_from_outside(port) == []

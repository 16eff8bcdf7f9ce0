"""Against a running Airflow: a broken pipeline file stops only itself; an error no retry can fix fails once."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from batchscore import settings
from batchscore.airflow.dag_files import sync
from batchscore.local.airflow_client import AirflowClient
from tests.conftest import WAREHOUSE_END, Services
from tests.e2e.conftest import DAG_ID, assert_exact, trigger, utc_day
from tests.integration.helpers import run_record

pytestmark = pytest.mark.e2e


def _import_errors(client: AirflowClient) -> list[dict]:
    return list(client.get("/importErrors")["import_errors"])


def _wait_for(predicate, what: str, timeout: float = 120):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise TimeoutError(what)


def _errors_about(client: AirflowClient, name: str) -> list[dict]:
    return [e for e in _import_errors(client) if name in e["stack_trace"]]


def test_a_broken_pipeline_file_leaves_the_other_pipelines_scheduled(
    client: AirflowClient, airflow_db: Services
) -> None:
    """A new pipeline file with two missing fields, synced like any other: only its own DAG fails to load."""
    broken = settings.pipelines_dir() / "broken.yaml"
    broken.write_text("name: broken\nstart_date: 2026-10-01\nfeatures: [tenure_days]\n")
    sync(settings.pipelines_dir(), airflow_db.stack.dags_dir)
    try:
        (error,) = _wait_for(lambda: _errors_about(client, "broken.yaml"), "no import error for broken.yaml")
        assert error["filename"].endswith("score_broken.py")
        assert "broken.yaml: entity_key: Field required" in error["stack_trace"]
        assert "broken.yaml: model: Field required" in error["stack_trace"]
        assert client.get(f"/dags/{DAG_ID}")["has_import_errors"] is False

        start, end = utc_day(WAREHOUSE_END - timedelta(days=9))
        run_id = trigger(client, start, end)
        client.wait_for_runs(DAG_ID, {run_id}, timeout=300, poll=1)
        assert_exact(airflow_db, start, end, run_id)
    finally:
        broken.unlink()
        sync(settings.pipelines_dir(), airflow_db.stack.dags_dir)
    _wait_for(lambda: not _errors_about(client, "broken.yaml"), "the import error did not clear")


def test_a_hostile_window_is_refused_when_triggered(client: AirflowClient) -> None:
    before = {r["dag_run_id"] for r in client.dag_runs(DAG_ID)}
    with pytest.raises(RuntimeError, match=r"-> 400: .*does not match"):
        client.send(
            "POST",
            f"/dags/{DAG_ID}/dagRuns",
            {
                "logical_date": None,
                "conf": {"window_start": "2026-10-01'; drop table heldout.tumors; --", "window_end": "2026-10-02"},
            },
        )
    assert {r["dag_run_id"] for r in client.dag_runs(DAG_ID)} == before, "no run was created"


def test_a_window_ending_before_it_starts_fails_in_plan_once_and_is_recorded(
    client: AirflowClient, airflow_db: Services
) -> None:
    """Well-formed fields that together make no window: the UI and the REST API refuse them at trigger
    time (the plugin's window check, tests/e2e/test_ui_plugin.py); a run created past that check (the
    ``airflow dags trigger`` CLI writes to the metadata database itself) is refused by plan, once."""
    conf = {"window_start": "2026-10-02T00:00:00+00:00", "window_end": "2026-10-01"}
    run_id = "manual__window_ending_before_it_starts"
    airflow_db.stack.airflow("dags", "trigger", DAG_ID, "--run-id", run_id, "-c", json.dumps(conf), capture=True)
    began = time.monotonic()
    (finished,) = client.wait_for_runs(DAG_ID, {run_id}, timeout=120, poll=1, allow_failed=True)
    seconds = time.monotonic() - began
    assert finished["state"] == "failed"
    instances = {
        t["task_id"]: t for t in client.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    }
    assert (instances["plan"]["state"], instances["plan"]["try_number"]) == ("failed", 1), "no retry of a bad param"
    assert seconds < 60, f"a bad parameter took {seconds:.0f}s to fail"

    record = run_record(airflow_db.scores_url, "churn", run_id)
    assert record is not None
    assert (record["status"], record["failed_stage"]) == ("failed", "plan")
    assert record["error"].startswith("WindowError: ")
    assert "\n" not in record["error"]
    assert "window_start" in record["remedy"]
    assert record["window_start"] is None  # the window itself was what failed

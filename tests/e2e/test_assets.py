"""Asset-driven runs on the running stack: an upstream DAG's partitions start our runs, each scoring its window.

In the test's DAG folder: ``load_activity_e2e`` (a ``CronPartitionTimetable`` producer that copies one
warehouse day into ``test_assets_e2e.customer_activity`` and updates that Asset), the pipeline
``churn_assets_e2e`` (``schedule: {asset: ..., partitioned: true, period: 1d}``, reading that table)
and ``scores_consumer_e2e`` (partitioned on our scores Asset: it returns the events it received).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

import psycopg
import pytest
import requests
import yaml

from batchscore.cli.backfill import plan_backfill, trigger_backfill
from batchscore.local.airflow_client import AirflowClient
from batchscore.pipeline.config import load_config
from tests.conftest import PIPELINES, STACK, WAREHOUSE_END, Services, day_window
from tests.e2e.conftest import assert_exact
from tests.integration.helpers import REPO, run_record

pytestmark = pytest.mark.e2e

PIPELINE = "churn_assets_e2e"
DAG = f"score_{PIPELINE}"
TABLE = f"scoring.{PIPELINE}_scores"
PRODUCER, CONSUMER = "load_activity_e2e", "scores_consumer_e2e"
ACTIVITY_URI = "warehouse://test_assets_e2e/customer_activity"

PLAIN = "churn_asset_plain_e2e"
PLAIN_DAG, PLAIN_TABLE = f"score_{PLAIN}", f"scoring.{PLAIN}_scores"
ANNOUNCER, ANNOUNCED_URI = "announce_window_e2e", "warehouse://test_assets_e2e/announced"

PRODUCER_DAG = f'''
"""Test producer: copies one warehouse day into test_assets_e2e and emits its daily partition."""
from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Asset, CronPartitionTimetable, get_current_context, task

ACTIVITY = Asset(name="test_assets_e2e_activity", uri="{ACTIVITY_URI}")

with DAG(
    dag_id="{PRODUCER}",
    schedule=CronPartitionTimetable("0 0 * * *", timezone="UTC", run_offset=-1),
    start_date=datetime(2026, 10, 1, tzinfo=timezone.utc),
    catchup=False,
):

    @task(outlets=[ACTIVITY])
    def load_day() -> int:
        from batchscore import db
        from batchscore.airflow.glue import connection_url

        start = get_current_context()["partition_date"]
        end = start + timedelta(days=1)
        with db.pg_connect(connection_url("warehouse_db")) as conn:
            conn.execute(
                "DELETE FROM test_assets_e2e.customer_activity WHERE event_time >= %s AND event_time < %s",
                (start, end),
            )
            return conn.execute(
                "INSERT INTO test_assets_e2e.customer_activity SELECT * FROM warehouse.customer_activity "
                "WHERE event_time >= %s AND event_time < %s",
                (start, end),
            ).rowcount

    load_day()
'''

CONSUMER_DAG = f'''
"""Test consumer of the pipeline's scores Asset: returns the partition and the events' extra it received."""
from datetime import datetime, timezone

from airflow.sdk import DAG, Asset, PartitionedAssetTimetable, get_current_context, task

with DAG(
    dag_id="{CONSUMER}",
    schedule=PartitionedAssetTimetable(assets=Asset.ref(name="scores_{PIPELINE}")),
    start_date=datetime(2026, 10, 1, tzinfo=timezone.utc),
    catchup=False,
):

    @task
    def receive() -> dict:
        context = get_current_context()
        scores = Asset.ref(name="scores_{PIPELINE}")  # by the Asset: the alias lists the same events again
        events = [dict(e.extra) for e in context["triggering_asset_events"][scores]]
        return {{"partition_key": context["partition_key"], "extras": events}}

    receive()
'''

ANNOUNCER_DAG = f'''
"""Test producer of a plain Asset: announces the window in its conf on the event's extra."""
from datetime import datetime, timezone

from airflow.sdk import DAG, Asset, get_current_context, task

ANNOUNCED = Asset(name="test_assets_e2e_announced", uri="{ANNOUNCED_URI}")

with DAG(dag_id="{ANNOUNCER}", schedule=None, start_date=datetime(2026, 10, 1, tzinfo=timezone.utc)):

    @task(outlets=[ANNOUNCED])
    def announce() -> None:
        context = get_current_context()
        conf = context["dag_run"].conf
        context["outlet_events"][ANNOUNCED].extra = {{"window_start": conf["start"], "window_end": conf["end"]}}

    announce()
'''


def _pipeline(name: str, table: str, schedule: dict) -> dict:
    """churn, reading the test's copy of the activity table, on ``schedule``."""
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data.pop("outcomes")
    data.update(name=name, schedule=schedule, output={"conn_id": "scores_db", "table": table})
    data["source"]["query"] = data["source"]["query"].replace(
        "warehouse.customer_activity", "test_assets_e2e.customer_activity"
    )
    data["execution"].update(retries=0)
    return data


def _copy_day(warehouse_url: str, day: date) -> None:
    """What a producer does: that day's activity rows into the test's table."""
    start, end = day_window(day)
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO test_assets_e2e.customer_activity SELECT * FROM warehouse.customer_activity "
            "WHERE event_time >= %s AND event_time < %s",
            (start, end),
        )


@pytest.fixture(scope="module")
def asset_dags(client: AirflowClient, airflow_db: Services) -> Iterator[None]:
    from batchscore.airflow.dag_files import dag_file_name, render

    with psycopg.connect(airflow_db.warehouse_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS test_assets_e2e")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS test_assets_e2e.customer_activity "
            "(LIKE warehouse.customer_activity INCLUDING ALL)"
        )
    pipelines = {
        PIPELINE: _pipeline(PIPELINE, TABLE, {"asset": ACTIVITY_URI, "partitioned": True, "period": "1d"}),
        PLAIN: _pipeline(PLAIN, PLAIN_TABLE, {"asset": ANNOUNCED_URI, "name": "test_assets_e2e_announced"}),
    }
    for name, data in pipelines.items():
        (PIPELINES / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    files = {STACK.dags_dir / dag_file_name(name): render(name) for name in pipelines}
    files |= {
        STACK.dags_dir / f"{PRODUCER}.py": PRODUCER_DAG,
        STACK.dags_dir / f"{CONSUMER}.py": CONSUMER_DAG,
        STACK.dags_dir / f"{ANNOUNCER}.py": ANNOUNCER_DAG,
    }
    for path, text in files.items():
        path.write_text(text)
    dag_ids = (DAG, PLAIN_DAG, PRODUCER, CONSUMER, ANNOUNCER)
    for dag_id in dag_ids:
        client.wait_for_dag(dag_id, timeout=300)
        client.send("PATCH", f"/dags/{dag_id}", {"is_paused": False})
    yield
    for dag_id in dag_ids:
        client.send("PATCH", f"/dags/{dag_id}", {"is_paused": True})
    for path in files:
        path.unlink(missing_ok=True)
    for name in pipelines:
        (PIPELINES / f"{name}.yaml").unlink(missing_ok=True)


def _producer_key(day: date) -> str:
    return f"{day.isoformat()}T00:00:00"  # CronPartitionTimetable's default key_format


def _run_for(client: AirflowClient, dag_id: str, key: str | None, *, after: set[str], timeout: float = 300) -> dict:
    """The finished run of ``dag_id`` for partition ``key`` that is not one of ``after`` (runs seen before)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            listed = client.dag_runs(dag_id)
        except requests.Timeout:  # a busy api-server: a missed poll
            continue
        runs = [r for r in listed if r["partition_key"] == key and r["dag_run_id"] not in after]
        if runs and runs[0]["state"] in ("success", "failed"):
            return runs[0]
        time.sleep(1)
    raise TimeoutError(f"no finished run of {dag_id} for partition {key}")


def _run_ids(client: AirflowClient, dag_id: str) -> set[str]:
    return {r["dag_run_id"] for r in client.dag_runs(dag_id)}


def test_an_upstream_partition_starts_one_run_that_scores_exactly_its_day_and_tells_downstream(
    client: AirflowClient, airflow_db: Services, asset_dags: None
) -> None:
    day = WAREHOUSE_END - timedelta(days=3)
    start, end = day_window(day)
    seen = _run_ids(client, DAG) | _run_ids(client, CONSUMER)
    client.send("POST", f"/dags/{PRODUCER}/dagRuns", {"logical_date": None, "partition_key": _producer_key(day)})
    run = _run_for(client, DAG, day.isoformat(), after=seen)
    assert (run["state"], run["run_type"], run["data_interval_start"]) == ("success", "asset_triggered", None)
    rows = assert_exact(airflow_db, start, end, run["dag_run_id"], table=TABLE, pipeline=PIPELINE)
    record = run_record(airflow_db.scores_url, PIPELINE, run["dag_run_id"])
    assert record is not None
    assert (record["window_start"], record["window_end"]) == (start, end)

    consumed = _run_for(client, CONSUMER, day.isoformat(), after=seen)
    assert consumed["state"] == "success"
    run_path = f"/dags/{CONSUMER}/dagRuns/{quote(consumed['dag_run_id'], safe='')}"
    xcom = client.get(f"{run_path}/taskInstances/receive/xcomEntries/return_value", deserialize=True)
    received = xcom["value"]
    assert received["partition_key"] == day.isoformat()
    assert len(received["extras"]) == 1
    extra = received["extras"][0]
    assert extra == {
        "pipeline": PIPELINE,
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "partition_key": day.isoformat(),
        "rows": rows,
        "rows_rejected": record["rows_rejected"],
        "published": True,
        "model_name": "churn",
        "model_version": record["model_version"],
        "run_id": run["dag_run_id"],
        "timezone": "UTC",
    }


def test_two_partitions_from_a_producer_backfill_give_two_runs_with_two_windows(
    client: AirflowClient, airflow_db: Services, asset_dags: None
) -> None:
    """The documented backfill path: ``airflow backfill create`` on the producer, by partition date."""
    first, second = WAREHOUSE_END - timedelta(days=5), WAREHOUSE_END - timedelta(days=4)
    seen = _run_ids(client, DAG)
    airflow_db.stack.backfill(PRODUCER, first, second)
    runs = {day: _run_for(client, DAG, day.isoformat(), after=seen, timeout=400) for day in (first, second)}
    assert len({r["dag_run_id"] for r in runs.values()}) == 2
    for day, run in runs.items():
        assert run["state"] == "success"
        start, end = day_window(day)
        assert_exact(airflow_db, start, end, run["dag_run_id"], table=TABLE, pipeline=PIPELINE)


def test_backfill_create_refuses_our_asset_dag_and_batchscore_backfill_rescores_a_day(
    client: AirflowClient, airflow_db: Services, asset_dags: None
) -> None:
    """Airflow 3.3: no date-range backfill of an asset-scheduled DAG; a manual run per partition key works."""
    first = WAREHOUSE_END - timedelta(days=6)
    start, end = day_window(first)
    _copy_day(airflow_db.warehouse_url, first)
    refused = airflow_db.stack.airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG,
        "--from-date",
        first.isoformat(),
        "--to-date",
        first.isoformat(),
        check=False,
        capture=True,
    )
    assert refused.returncode != 0
    assert "non-periodic schedule that does not support backfills" in refused.stdout + refused.stderr
    config = load_config(PIPELINES / f"{PIPELINE}.yaml")
    planned = plan_backfill(config, first, first, datetime.now(UTC))  # what `batchscore backfill` triggers
    assert [p.body["partition_key"] for p in planned] == [first.isoformat()]
    (run_id,) = trigger_backfill(client, config, planned)
    done = client.wait_for_runs(DAG, {run_id}, timeout=300)[0]
    assert (done["state"], done["run_type"], done["partition_key"]) == ("success", "manual", first.isoformat())
    assert_exact(airflow_db, start, end, run_id, table=TABLE, pipeline=PIPELINE)


def test_a_plain_asset_event_with_a_window_in_its_extra_starts_a_run_that_scores_that_window(
    client: AirflowClient, airflow_db: Services, asset_dags: None
) -> None:
    day = WAREHOUSE_END - timedelta(days=7)
    start, end = day_window(day)
    _copy_day(airflow_db.warehouse_url, day)
    seen = _run_ids(client, PLAIN_DAG)
    conf = {"start": start.isoformat(), "end": end.isoformat()}
    client.send("POST", f"/dags/{ANNOUNCER}/dagRuns", {"logical_date": None, "conf": conf})
    run = _run_for(client, PLAIN_DAG, None, after=seen)
    record = run_record(airflow_db.scores_url, PLAIN, run["dag_run_id"])
    assert (run["state"], run["run_type"], run["data_interval_start"]) == ("success", "asset_triggered", None), record
    assert_exact(airflow_db, start, end, run["dag_run_id"], table=PLAIN_TABLE, pipeline=PLAIN)

"""Clearing any task of a run, in any state, through Airflow's REST API: the window ends exact and the run
record agrees with Airflow.

The sliced pipeline (3 slices of a test day) runs on the real scheduler. Tasks are cleared
with ``POST /api/v2/dags/{dag_id}/clearTaskInstances``, as the UI's Clear button does.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest

from batchscore.local.airflow_client import AirflowClient
from batchscore.sink.run_record import run_events
from tests.conftest import SLICED, SLICED_TABLE, WAREHOUSE_END, Services
from tests.e2e.conftest import assert_exact, trigger, utc_day
from tests.e2e.holds import failing_load
from tests.e2e.test_right_answers import add_late_rows
from tests.integration.helpers import run_record, stored_scores

pytestmark = pytest.mark.e2e

SLICED_DAG = f"score_{SLICED}"


@pytest.fixture(scope="module")
def sliced(client: AirflowClient) -> AirflowClient:
    client.wait_for_dag(SLICED_DAG, timeout=240)
    client.send("PATCH", f"/dags/{SLICED_DAG}", {"is_paused": False})
    return client


def clear(client: AirflowClient, run_id: str, tasks: list | None, *, downstream: bool = True) -> None:
    """Clear ``tasks`` (task ids, or [task id, map index]) of the run, or the whole run; as the UI's Clear does."""
    body: dict = {
        "dry_run": False,
        "dag_run_id": run_id,
        "only_failed": False,
        "reset_dag_runs": True,
        "include_downstream": downstream,
    }
    if tasks is not None:
        body["task_ids"] = tasks
    cleared = client.send("POST", f"/dags/{SLICED_DAG}/clearTaskInstances", body)
    assert cleared["task_instances"], "the clear matched task instances"


def tries(client: AirflowClient, run_id: str) -> dict[tuple[str, int], tuple[str, int]]:
    """(task id, map index) -> (state, try number) of every task instance of the run."""
    instances = client.get(f"/dags/{SLICED_DAG}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]
    return {(t["task_id"], t["map_index"]): (t["state"], t["try_number"]) for t in instances}


def run_state(client: AirflowClient, run_id: str) -> str:
    return str(client.get(f"/dags/{SLICED_DAG}/dagRuns/{run_id}")["state"])


def slice_tables(services: Services, run_id: str) -> dict[int, tuple[int, bool]]:
    """slice index -> (lineage id, attached to the window) of the run's slice tables that exist now."""
    schema, name = SLICED_TABLE.split(".")
    with psycopg.connect(services.scores_url) as conn:
        rows = conn.execute(
            """
            SELECT l.slice_index, l.lineage_id, c.relispartition FROM scoring.lineage AS l
            JOIN pg_class AS c ON c.relname = %s || '_l' || l.lineage_id
            JOIN pg_namespace AS n ON n.oid = c.relnamespace AND n.nspname = %s
            WHERE l.run_id = %s AND l.output_table = %s
            """,
            (name, schema, run_id, SLICED_TABLE),
        ).fetchall()
    found: dict[int, tuple[int, bool]] = {}
    for index, lineage_id, attached in rows:
        assert index not in found, f"slice {index} of {run_id} has two tables"
        found[int(index)] = (int(lineage_id), bool(attached))
    return found


def median_key(services: Services, start: datetime, end: datetime) -> int:
    with psycopg.connect(services.warehouse_url) as conn:
        row = conn.execute(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY customer_id) FROM warehouse.customer_activity "
            "WHERE event_time >= %s AND event_time < %s",
            (start, end),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_clearing_one_slice_with_downstream_after_success_rescores_it_and_keeps_the_others(
    sliced: AirflowClient, airflow_db: Services
) -> None:
    start, end = utc_day(WAREHOUSE_END - timedelta(days=4))
    run_id = trigger(sliced, start, end, dag_id=SLICED_DAG)
    sliced.wait_for_runs(SLICED_DAG, {run_id}, timeout=400)
    before = assert_exact(airflow_db, start, end, run_id, table=SLICED_TABLE, pipeline=SLICED)
    first = slice_tables(airflow_db, run_id)
    assert sorted(first) == [0, 1, 2]
    late = add_late_rows(airflow_db, start, 30, first_id=9_400_000)  # new keys: all in the last slice's range

    clear(sliced, run_id, [["score_slice", 2]])
    sliced.wait_for_runs(SLICED_DAG, {run_id}, timeout=400)

    after = assert_exact(airflow_db, start, end, run_id, table=SLICED_TABLE, pipeline=SLICED)
    assert after == before + len(late)
    again = slice_tables(airflow_db, run_id)
    assert {i: again[i] for i in (0, 1)} == {i: first[i] for i in (0, 1)}, "the other slices stayed attached"
    assert again[2][0] != first[2][0]
    assert all(attached for _, attached in again.values()), "no slice table of the run is left unattached"
    assert tries(sliced, run_id) == {
        ("plan", -1): ("success", 1),
        ("score_slice", 0): ("success", 1),
        ("score_slice", 1): ("success", 1),
        ("score_slice", 2): ("success", 2),
        ("publish", -1): ("success", 2),
    }
    events = [e["event"] for e in run_events(airflow_db.scores_url, pipeline=SLICED, run_id=run_id)]
    assert "scored again" in events


def test_clearing_publish_alone_after_success_changes_nothing(sliced: AirflowClient, airflow_db: Services) -> None:
    start, end = utc_day(WAREHOUSE_END - timedelta(days=5))
    run_id = trigger(sliced, start, end, dag_id=SLICED_DAG)
    sliced.wait_for_runs(SLICED_DAG, {run_id}, timeout=400)
    before = stored_scores(airflow_db.scores_url, SLICED_TABLE, start, end)
    tables = slice_tables(airflow_db, run_id)

    clear(sliced, run_id, ["publish"])
    sliced.wait_for_runs(SLICED_DAG, {run_id}, timeout=400)

    assert_exact(airflow_db, start, end, run_id, table=SLICED_TABLE, pipeline=SLICED)
    assert stored_scores(airflow_db.scores_url, SLICED_TABLE, start, end).equals(before)
    assert slice_tables(airflow_db, run_id) == tables
    assert tries(sliced, run_id)[("publish", -1)] == ("success", 2)


def test_clearing_the_whole_run_scores_the_window_again_and_leaves_nothing_behind(
    sliced: AirflowClient, airflow_db: Services
) -> None:
    start, end = utc_day(WAREHOUSE_END - timedelta(days=6))
    run_id = trigger(sliced, start, end, dag_id=SLICED_DAG)
    sliced.wait_for_runs(SLICED_DAG, {run_id}, timeout=400)
    first = slice_tables(airflow_db, run_id)

    clear(sliced, run_id, None)
    sliced.wait_for_runs(SLICED_DAG, {run_id}, timeout=400)

    assert_exact(airflow_db, start, end, run_id, table=SLICED_TABLE, pipeline=SLICED)
    again = slice_tables(airflow_db, run_id)
    assert sorted(again) == [0, 1, 2]
    assert not {lid for lid, _ in again.values()} & {lid for lid, _ in first.values()}, "every slice was new"
    assert all(attached for _, attached in again.values())
    assert {state for state, _ in tries(sliced, run_id).values()} == {"success"}
    assert {n for _, n in tries(sliced, run_id).values()} == {2}


def test_clearing_the_failed_slice_of_a_failed_run_publishes_the_window(
    sliced: AirflowClient, airflow_db: Services
) -> None:
    start, end = utc_day(WAREHOUSE_END - timedelta(days=7))
    before = stored_scores(airflow_db.scores_url, SLICED_TABLE, start, end)
    with failing_load(airflow_db.scores_url, SLICED_TABLE, "customer_id", median_key(airflow_db, start, end)):
        run_id = trigger(sliced, start, end, dag_id=SLICED_DAG)
        sliced.wait_for_runs(SLICED_DAG, {run_id}, timeout=400, allow_failed=True)
    assert run_state(sliced, run_id) == "failed"
    states = tries(sliced, run_id)
    assert states[("score_slice", 1)] == ("failed", 3)
    assert states[("publish", -1)][0] == "upstream_failed"
    record = run_record(airflow_db.scores_url, SLICED, run_id)
    assert record is not None
    assert (record["status"], record["failed_stage"]) == ("failed", "score_slice")
    assert slice_tables(airflow_db, run_id) == {}, "the failed run dropped its slices"
    assert stored_scores(airflow_db.scores_url, SLICED_TABLE, start, end).equals(before)

    clear(sliced, run_id, [["score_slice", 1]])
    sliced.wait_for_runs(SLICED_DAG, {run_id}, timeout=400)

    assert_exact(airflow_db, start, end, run_id, table=SLICED_TABLE, pipeline=SLICED)
    assert all(attached for _, attached in slice_tables(airflow_db, run_id).values())
    events = run_events(airflow_db.scores_url, pipeline=SLICED, run_id=run_id)
    assert [e["detail"] for e in events if e["event"] == "slices scored again"] == [
        "slice(s) 0, 2: their tables were gone (dropped when the run failed, or swept); scored again by publish "
        "with the plan's model and key ranges"
    ]


def test_a_cleared_slice_that_fails_again_fails_the_record_too_and_keeps_the_published_window(
    sliced: AirflowClient, airflow_db: Services
) -> None:
    """Was: the run record stayed success while Airflow showed the run failed."""
    start, end = utc_day(WAREHOUSE_END - timedelta(days=8))
    run_id = trigger(sliced, start, end, dag_id=SLICED_DAG)
    sliced.wait_for_runs(SLICED_DAG, {run_id}, timeout=400)
    published = stored_scores(airflow_db.scores_url, SLICED_TABLE, start, end)

    with failing_load(airflow_db.scores_url, SLICED_TABLE, "customer_id", median_key(airflow_db, start, end)):
        clear(sliced, run_id, [["score_slice", 1]])
        sliced.wait_for_runs(SLICED_DAG, {run_id}, timeout=400, allow_failed=True)

    assert run_state(sliced, run_id) == "failed"
    record = run_record(airflow_db.scores_url, SLICED, run_id)
    assert record is not None
    assert (record["status"], record["failed_stage"]) == ("failed", "score_slice")
    assert "the window keeps the scores this run published at" in record["error"]
    assert stored_scores(airflow_db.scores_url, SLICED_TABLE, start, end).equals(published)
    assert all(attached for _, attached in slice_tables(airflow_db, run_id).values()), "no attempt left behind"

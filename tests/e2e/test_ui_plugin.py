"""The "Scoring runs" UI plugin on the running api-server: authenticated, correct, and strict on input."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests

from batchscore.local import AirflowClient
from tests.conftest import WAREHOUSE_END, Services
from tests.e2e.conftest import DAG_ID, trigger, utc_day

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def finished_run(client: AirflowClient) -> str:
    start, end = utc_day(WAREHOUSE_END - timedelta(days=3))
    run_id = trigger(client, start, end)
    client.wait_for_runs(DAG_ID, {run_id}, timeout=300)
    return run_id


def test_plugin_routes_need_a_login(client: AirflowClient) -> None:
    anonymous = requests.get(f"{client.base}/scoring/api/runs", timeout=30)
    assert anonymous.status_code in (401, 403)
    assert requests.get(f"{client.base}/scoring/runs", timeout=30).status_code in (401, 403)


def test_api_lists_the_run_records(client: AirflowClient, airflow_db: Services, finished_run: str) -> None:
    reply = client.session.get(
        f"{client.base}/scoring/api/runs", params={"pipeline": "churn", "limit": 500}, timeout=30
    )
    assert reply.status_code == 200
    runs = {r["run_id"]: r for r in reply.json()}
    record = runs[finished_run]
    assert record["status"] == "success"
    assert record["pipeline"] == "churn"
    assert record["rows_written"] > 2_000
    assert record["rows_read"] == record["rows_scored"] + record["rows_rejected"]


def test_page_shows_the_run(client: AirflowClient, finished_run: str) -> None:
    reply = client.session.get(f"{client.base}/scoring/runs", timeout=30)
    assert reply.status_code == 200
    assert "<h1>Scoring runs</h1>" in reply.text
    assert finished_run in reply.text


@pytest.mark.parametrize("params", [{"pipeline": "churn'; DROP TABLE x;--"}, {"limit": 0}, {"limit": 100000}])
def test_hostile_query_parameters_are_refused(client: AirflowClient, params: dict) -> None:
    assert client.session.get(f"{client.base}/scoring/api/runs", params=params, timeout=30).status_code == 422


def test_nav_link_is_registered(client: AirflowClient) -> None:
    plugins = client.get("/plugins")["plugins"]
    ours = next(p for p in plugins if p["name"] == "scoring_runs")
    assert [v["href"] for v in ours["external_views"]] == ["/scoring/runs"]

"""The "Scoring runs" UI plugin on the running api-server: authenticated, correct, and strict on input."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests

from batchscore.local.airflow_client import AirflowClient
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.windows import Window
from tests.conftest import WAREHOUSE_END, Services
from tests.e2e.conftest import DAG_ID, PERF_PIPELINE, PERF_WINDOWS, recorded_performance, trigger, utc_day

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def finished_run(client: AirflowClient) -> str:
    start, end = utc_day(WAREHOUSE_END - timedelta(days=3))
    run_id = trigger(client, start, end)
    client.wait_for_runs(DAG_ID, {run_id}, timeout=300)
    return run_id


PLUGIN_ROUTES = [
    "/scoring/runs",
    "/scoring/run?pipeline=churn&run_id=x",
    "/scoring/run?dag_id=score_churn&run_id=x&embed=true",
    "/scoring/rejects?pipeline=churn&run_id=x",
    "/scoring/api/runs",
    "/scoring/api/run?pipeline=churn&run_id=x",
    "/scoring/api/rejects?pipeline=churn&run_id=x",
    "/scoring/performance?pipeline=churn",
    "/scoring/api/performance?pipeline=churn",
    "/scoring/static/scoring.js",
    "/scoring/static/vendor/chart.umd.min.js",
]


@pytest.mark.parametrize("route", PLUGIN_ROUTES)
def test_every_plugin_route_needs_a_login(client: AirflowClient, route: str) -> None:
    anonymous = requests.Session()
    anonymous.trust_env = False
    assert anonymous.get(f"{client.base}{route}", timeout=30).status_code in (401, 403)
    forged = anonymous.get(f"{client.base}{route}", cookies={"_token": "forged"}, timeout=30)
    assert forged.status_code in (401, 403)
    assert client.session.get(f"{client.base}{route}", timeout=30).status_code in (200, 404)


def test_no_unprotected_docs_routes(client: AirflowClient) -> None:
    for route in ("/scoring/docs", "/scoring/redoc", "/scoring/openapi.json"):
        assert requests.get(f"{client.base}{route}", timeout=30).status_code in (401, 403, 404)


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


def test_nav_entry_and_dag_run_tab_are_registered(client: AirflowClient) -> None:
    plugins = client.get("/plugins")["plugins"]
    ours = next(p for p in plugins if p["name"] == "scoring_runs")
    views = {v["destination"]: v for v in ours["external_views"]}
    assert (views["nav"]["href"], views["nav"]["url_route"]) == ("/scoring/runs", "scoring")
    assert views["dag_run"]["href"] == "/scoring/run?dag_id={DAG_ID}&run_id={RUN_ID}&embed=true"
    assert views["dag_run"]["url_route"] == "scoring-run"
    assert [m["name"] for m in ours["fastapi_root_middlewares"]] == ["Scoring window check"]
    # plugins/.airflowignore keeps the loader from importing scoring_ui's modules one by one
    assert client.get("/plugins/importErrors")["import_errors"] == []


@pytest.mark.parametrize(
    ("conf", "reason"),
    [
        ({"window_start": "2026-10-02T00:00:00Z", "window_end": "2026-10-01T00:00:00Z"}, "must be before end"),
        ({"window_start": "2026-10-02T00:00:00Z"}, "give both window_start and window_end"),
        ({"window_start": "2999-01-01", "window_end": "2999-01-02"}, "not complete yet"),
    ],
)
def test_rest_trigger_with_a_bad_window_creates_no_run(client: AirflowClient, conf: dict, reason: str) -> None:
    before = {r["dag_run_id"] for r in client.dag_runs(DAG_ID)}
    reply = client.session.post(
        f"{client.base}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}, timeout=30
    )
    assert reply.status_code == 400
    assert reason in reply.json()["detail"]
    assert {r["dag_run_id"] for r in client.dag_runs(DAG_ID)} == before


def test_performance_json_and_page_hold_the_recorded_metrics(
    client: AirflowClient, airflow_db: Services, evaluated_windows: dict[Window, str]
) -> None:
    reply = client.session.get(f"{client.base}/scoring/api/performance", params={"pipeline": PERF_PIPELINE})
    assert reply.status_code == 200
    data = reply.json()
    assert (data["state"], data["task"], data["horizon"]) == ("evaluated", "classifier", "30d")
    rows = recorded_performance(airflow_db, PERF_PIPELINE)
    labels = [f"{w.start:%Y-%m-%d}" for w in PERF_WINDOWS]
    auc = data["chart"]["roc_auc"]
    assert auc["labels"][-2:] == labels
    for role in ("champion", "challenger"):
        assert auc["series"][role][-2:] == [rows[(role, label)]["metrics"]["roc_auc"] for label in labels]
    champion = rows[("champion", labels[-1])]
    manifest = ModelRegistry(airflow_db.registry).resolve(champion["model_name"], str(champion["model_version"]))
    assert auc["reference"] == manifest.metrics["holdout_roc_auc"]
    assert [c["points"] for c in data["calibration"]["roles"]] == [
        [{"x": b["mean_score"], "y": b["observed_rate"], "rows": b["rows"]} for b in rows[(role, labels[-1])]["curves"]]
        for role in ("challenger", "champion")
    ]
    page = client.session.get(f"{client.base}/scoring/performance", params={"pipeline": PERF_PIPELINE}).text
    for metric in ("roc_auc", "pr_auc", "log_loss", "brier"):
        assert f'id="perf-{metric}"' in page
    assert f"{champion['rows_matched']:,}" in page
    runs = client.session.get(f"{client.base}/scoring/runs", params={"pipeline": PERF_PIPELINE}).text
    assert f"/scoring/performance?pipeline={PERF_PIPELINE}" in runs


def test_run_page_shows_realised_metrics_once_known_and_when_they_will_be(
    client: AirflowClient, evaluated_windows: dict[Window, str], finished_run: str
) -> None:
    window = PERF_WINDOWS[-1]
    details = client.session.get(
        f"{client.base}/scoring/api/run", params={"pipeline": PERF_PIPELINE, "run_id": evaluated_windows[window]}
    ).json()
    performance = details["performance"]
    assert performance["state"] == "evaluated"
    assert {r["role"] for r in performance["roles"]} == {"champion", "challenger"}
    page = client.session.get(
        f"{client.base}/scoring/run", params={"pipeline": PERF_PIPELINE, "run_id": evaluated_windows[window]}
    ).text
    champion = next(r for r in performance["roles"] if r["role"] == "champion")
    assert f'class="n metric-roc_auc">{champion["metrics"]["roc_auc"]:,.4f}<' in page
    assert 'data-chart="calibration"' in page
    # churn's window 3 days before the warehouse's end was scored but never evaluated: the page says when it can be
    _, end = utc_day(WAREHOUSE_END - timedelta(days=3))
    pending = client.session.get(f"{client.base}/scoring/run", params={"pipeline": "churn", "run_id": finished_run})
    assert (
        f"Not yet evaluated: outcomes complete after {end + timedelta(days=30):%Y-%m-%d %H:%M:%S} UTC" in pending.text
    )


def test_rest_backfill_with_a_window_in_its_conf_is_refused_and_creates_nothing(client: AirflowClient) -> None:
    before = client.get("/backfills", dag_id=DAG_ID)["total_entries"]
    body = {
        "dag_id": DAG_ID,
        "from_date": "2026-09-01T00:00:00Z",
        "to_date": "2026-09-03T00:00:00Z",
        "dag_run_conf": {"window_start": "2026-08-01T00:00:00Z", "window_end": "2026-08-02T00:00:00Z"},
    }
    reply = client.session.post(f"{client.base}/api/v2/backfills", json=body, timeout=30)
    assert reply.status_code == 400
    assert "window_start and window_end in the run conf would be ignored" in reply.json()["detail"]
    assert client.get("/backfills", dag_id=DAG_ID)["total_entries"] == before

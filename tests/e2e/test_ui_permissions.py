"""Per-DAG permissions in the Scoring view, on a real api-server with the FAB auth manager and real logins.

Three pipelines have a recorded run with rejected rows whose values carry a marker: a user
allowed only ``score_churn`` reads churn's run and its rejects counted by reason, never a value
unless their role may read task logs, and nothing of spend or segments in any page or JSON; a
user without DAG permissions sees no pipeline; an admin sees all. The trigger guard answers
only a user who may trigger the DAG. Users and roles: tests/e2e/fab_stack.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from batchscore import db
from batchscore.local.airflow_client import AirflowClient
from batchscore.local.stack import LocalStack
from batchscore.pipeline.windows import Window
from batchscore.sink.performance import RolePerformance, replace_performance
from batchscore.sink.run_record import RunTotals, apply_schema, record_finish, record_start
from tests.e2e.fab_stack import FabApi

pytestmark = pytest.mark.e2e

PIPELINES = ("churn", "spend", "segments")
OTHERS = ("spend", "segments")
RUN_ID = "perm__2026-09-15"
START = datetime(2026, 9, 15, tzinfo=UTC)
SECRET = {name: f"{name}-secret-{i}7731" for i, name in enumerate(PIPELINES)}  # in rejected values only
PERF_MODEL = {name: f"{name}_perf_model_{i}" for i, name in enumerate(PIPELINES)}  # in scoring.performance only


def seed(scores_url: str) -> None:
    """One finished run per pipeline, with two rejected rows whose values (and raw reasons) hold its secret."""
    window = Window(START, START + timedelta(days=1))
    with db.pg_connect(scores_url, autocommit=True) as conn:
        apply_schema(conn)
        for name in PIPELINES:
            conn.execute("DELETE FROM scoring.rejects WHERE pipeline = %s AND run_id = %s", (name, RUN_ID))
            record_start(
                conn,
                pipeline=name,
                run_id=RUN_ID,
                window=window,
                model_name=name,
                model_version=1,
                model_sha256="ab" * 32,
                output_table=f"scoring.{name}_scores",
            )
            summary = {"count": 998, "mean": 0.25, "histogram": {"edges": [0, 0.5, 1], "counts": [600, 398]}}
            totals = RunTotals(1_000, 998, 2, 998, 0.1, 0.2, 0.1, summary, None, [])
            record_finish(conn, pipeline=name, run_id=RUN_ID, status="success", totals=totals)
            secret = SECRET[name]
            rejects = [
                ("1", f"plan: unseen category '{secret}'", f'{{"plan": "{secret}", "customer_id": 1}}'),
                ("2", f"region: unseen category 'o'brien {secret}'", f'{{"region": "o\'brien {secret}"}}'),
            ]
            for key, reason, row in rejects:
                conn.execute(
                    "INSERT INTO scoring.rejects (pipeline, window_start, window_end, run_id, entity_key, reason,"
                    " row_data) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)",
                    (name, window.start, window.end, RUN_ID, key, reason, row),
                )
            judged = RolePerformance(
                role="champion",
                model_name=PERF_MODEL[name],
                model_version=1,
                task="classifier",
                status="evaluated",
                reason=None,
                rows_scored=998,
                rows_matched=990,
                rows_without_outcome=8,
                outcomes_unmatched=0,
                metrics={"roc_auc": 0.77, "pr_auc": 0.5, "log_loss": 0.4, "brier": 0.15, "positive_rate": 0.2},
                curves=[{"rows": 99, "mean_score": (i + 0.5) / 10, "observed_rate": i / 10} for i in range(10)],
            )
            replace_performance(conn, pipeline=name, window=window, run_id="perm__eval", rows=[judged])


@pytest.fixture(scope="module")
def fab(fab_api: FabApi, database: LocalStack) -> FabApi:
    seed(database.database_url("scores"))
    return fab_api


@pytest.fixture(scope="module")
def users(fab: FabApi) -> dict[str, AirflowClient]:
    return {name: fab.login(name) for name in ("admin", "churn", "churn_logs", "nobody")}


def get(client: AirflowClient, path: str, **params: Any) -> requests.Response:
    return client.session.get(f"{client.base}/scoring{path}", params=params, timeout=60)


def run_params(pipeline: str) -> dict[str, str]:
    return {"pipeline": pipeline, "run_id": RUN_ID}


def test_a_wrong_password_gets_no_token(fab: FabApi) -> None:
    reply = requests.post(f"{fab.base}/auth/token", json={"username": "churn", "password": "nope"}, timeout=60)
    assert reply.status_code == 401


def test_churn_reader_lists_churn_only(users: dict[str, AirflowClient]) -> None:
    churn = users["churn"]
    runs = get(churn, "/api/runs", limit=500).json()
    assert {r["pipeline"] for r in runs} == {"churn"}
    assert RUN_ID in {r["run_id"] for r in runs}
    for name in OTHERS:
        assert get(churn, "/api/runs", pipeline=name).json() == []
    page = get(churn, "/runs")
    assert page.status_code == 200
    assert 'id="pipeline-churn"' in page.text
    assert '<option value="churn"' in page.text
    for name in OTHERS:
        for text in (page.text, get(churn, "/runs", pipeline=name).text):
            assert f'id="pipeline-{name}"' not in text
            assert f'<option value="{name}"' not in text
            assert f"score_{name}" not in text  # its DAG's links
            assert SECRET[name] not in text
    assert 'class="run status-' not in get(churn, "/runs", pipeline="spend").text


def test_churn_reader_reads_churns_run_but_no_other_pipelines(users: dict[str, AirflowClient]) -> None:
    churn, admin = users["churn"], users["admin"]
    record = get(churn, "/api/run", **run_params("churn"))
    assert record.status_code == 200
    assert (record.json()["run"]["rows_rejected"], record.json()["run"]["rows_written"]) == (2, 998)
    assert 'class="n rows-written">998<' in get(churn, "/run", **run_params("churn")).text
    tab = get(churn, "/run", dag_id="score_churn", run_id=RUN_ID, embed="true")
    assert (tab.status_code, 'class="n rows-written">998<' in tab.text) == (200, True)
    for name in OTHERS:
        missing = {"pipeline": name, "run_id": "perm__never_ran"}
        for path in ("/api/run", "/api/rejects"):
            refused = get(churn, path, **run_params(name))
            assert (refused.status_code, refused.json()) == (
                404,
                {"detail": f"no scoring run {RUN_ID!r} of pipeline {name!r}"},
            )
            assert get(admin, path, **missing).json() == {
                "detail": f"no scoring run 'perm__never_ran' of pipeline {name!r}"
            }
        for path, params in (
            ("/run", run_params(name)),
            ("/run", {"dag_id": f"score_{name}", "run_id": RUN_ID, "embed": "true"}),
            ("/rejects", run_params(name)),
        ):
            page = get(churn, path, **params)
            assert page.status_code == 404, (path, params)
            assert "998" not in page.text
            assert SECRET[name] not in page.text
            assert "that you may read" in page.text


def test_performance_is_shown_only_for_pipelines_the_user_may_read(users: dict[str, AirflowClient]) -> None:
    churn, nobody, admin = users["churn"], users["nobody"], users["admin"]
    data = get(churn, "/api/performance", pipeline="churn").json()
    assert (data["state"], data["chart"]["roc_auc"]["series"]["champion"][-1]) == ("evaluated", 0.77)
    page = get(churn, "/performance", pipeline="churn")
    assert (page.status_code, PERF_MODEL["churn"] in page.text) == (200, True)
    run_page = get(churn, "/run", **run_params("churn")).text
    assert 'class="n metric-roc_auc">0.7700<' in run_page
    for name in OTHERS:
        for user in (churn, nobody):
            refused = get(user, "/api/performance", pipeline=name)
            assert (refused.status_code, refused.json()) == (404, {"detail": f"no scoring runs of pipeline {name!r}"})
            html = get(user, "/performance", pipeline=name)
            assert html.status_code == 404
            assert PERF_MODEL[name] not in html.text
            assert "that you may read" in html.text
        assert PERF_MODEL[name] in get(admin, "/performance", pipeline=name).text
    assert get(nobody, "/api/performance", pipeline="churn").status_code == 404
    unknown = get(admin, "/api/performance", pipeline="no_such_pipeline")  # the same answer as a hidden one
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "no scoring runs of pipeline 'no_such_pipeline'"})


def test_churn_reader_sees_reject_counts_and_reasons_but_no_values(users: dict[str, AirflowClient]) -> None:
    churn = users["churn"]
    reply = get(churn, "/api/rejects", **run_params("churn"))
    assert reply.status_code == 200
    data = reply.json()
    assert (data["values_visible"], data["rows"]) == (False, None)
    assert sorted((r["reason"], r["rows"]) for r in data["reasons"]) == [
        ("plan: unseen category '…'", 1),
        ("region: unseen category '…'", 1),
    ]
    assert "secret" not in reply.text
    assert "brien" not in reply.text
    page = get(churn, "/rejects", **run_params("churn"))
    assert page.status_code == 200
    assert "values-hidden" in page.text
    assert "plan: unseen category &#39;…&#39;" in page.text
    assert "secret" not in page.text
    assert "brien" not in page.text
    filtered = get(churn, "/rejects", reason="plan: unseen category '…'", **run_params("churn"))
    assert "secret" not in filtered.text


def test_task_log_access_shows_the_rejected_values(users: dict[str, AirflowClient]) -> None:
    reader = users["churn_logs"]
    data = get(reader, "/api/rejects", **run_params("churn")).json()
    assert data["values_visible"] is True
    assert sorted(r["row_data"].get("plan") or r["row_data"]["region"] for r in data["rows"]) == [
        SECRET["churn"],
        f"o'brien {SECRET['churn']}",
    ]
    page = get(reader, "/rejects", **run_params("churn")).text
    assert SECRET["churn"] in page
    assert "values-hidden" not in page
    assert get(reader, "/api/rejects", **run_params("spend")).status_code == 404


def test_a_user_without_dag_permissions_sees_no_pipeline(users: dict[str, AirflowClient]) -> None:
    nobody = users["nobody"]
    assert get(nobody, "/api/runs", limit=500).json() == []
    page = get(nobody, "/runs").text
    assert 'id="pipeline-' not in page
    assert "No scoring run that you may read" in page
    for name in PIPELINES:
        assert get(nobody, "/api/run", **run_params(name)).status_code == 404
        assert get(nobody, "/api/rejects", **run_params(name)).status_code == 404
        assert get(nobody, "/rejects", **run_params(name)).status_code == 404
    assert get(nobody, "/static/scoring.css").status_code == 200  # assets hold no pipeline's data


def test_admin_sees_every_pipeline_and_every_value(users: dict[str, AirflowClient]) -> None:
    admin = users["admin"]
    runs = get(admin, "/api/runs", limit=500).json()
    assert {r["pipeline"] for r in runs if r["run_id"] == RUN_ID} == set(PIPELINES)
    page = get(admin, "/runs").text
    for name in PIPELINES:
        assert f'id="pipeline-{name}"' in page
        rejects = get(admin, "/api/rejects", **run_params(name)).json()
        assert rejects["values_visible"] is True
        assert {r["entity_key"] for r in rejects["rows"]} == {"1", "2"}
        assert SECRET[name] in get(admin, "/rejects", **run_params(name)).text


def test_the_trigger_guard_answers_only_who_may_trigger(users: dict[str, AirflowClient]) -> None:
    """A bad window: 400 with the reason for an admin; Airflow's own 403 for others, the window rules unsaid."""
    bad = {"logical_date": None, "conf": {"window_start": "2026-10-02T00:00:00Z", "window_end": "2026-10-01T00:00:00Z"}}

    def trigger(client: AirflowClient, dag_id: str) -> requests.Response:
        return client.session.post(f"{client.base}/api/v2/dags/{dag_id}/dagRuns", json=bad, timeout=60)

    for name in ("churn", "nobody"):
        for dag_id in ("score_churn", "score_spend", "score_no_such_pipeline"):
            reply = trigger(users[name], dag_id)
            assert reply.status_code == 403, (name, dag_id)
            assert "window" not in reply.text.lower()
    refused = trigger(users["admin"], "score_spend")
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("Invalid window for score_spend:")
    assert users["admin"].dag_runs("score_spend") == []

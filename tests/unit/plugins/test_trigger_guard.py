"""A scoring trigger whose window plan would refuse is answered 400 before Airflow creates a run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from batchscore.airflow.dag_factory import model_suggestions
from batchscore.airflow.glue import ParamError, check_trigger_conf
from batchscore.pipeline.config import PipelineConfig, load_config
from batchscore.pipeline.windows import Window, WindowError
from tests.unit.plugins.test_scoring_ui import PLUGINS

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def churn() -> PipelineConfig:
    return load_config(PLUGINS.parent / "include" / "pipelines" / "churn.yaml")


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"window_start": "2026-11-02", "window_end": "2026-11-01"}, "must be before end"),
        ({"window_start": "2026-11-02", "window_end": "2026-11-02"}, "must be before end"),
        ({"window_start": "2026-11-02"}, "give both window_start and window_end"),
        ({"window_end": "2026-11-02T00:00:00Z"}, "give both window_start and window_end"),
        ({"window_start": "2026-11-20", "window_end": "2026-11-21"}, "not complete yet"),
        ({"window_start": "2026-01-01", "window_end": "2026-11-01"}, "more than max_window_days"),
        ({"window_start": "yesterday", "window_end": "2026-11-01"}, "not an ISO date"),
    ],
)
def test_windows_plan_would_refuse_are_refused_at_trigger(churn, conf: dict, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        check_trigger_conf(churn, conf, NOW)


def test_a_complete_window_or_none_passes(churn) -> None:
    window = check_trigger_conf(churn, {"window_start": "2026-11-01T00:00:00+00:00", "window_end": "2026-11-02"}, NOW)
    assert window == Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
    assert check_trigger_conf(churn, {"window_start": "", "window_end": None, "dry_run": True}, NOW) is None
    with pytest.raises(ParamError, match="must be true or false"):
        check_trigger_conf(churn, {"dry_run": "yes"}, NOW)


class Downstream:
    """Airflow's API as the middleware sees it: records what reached it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        api = FastAPI()

        @api.post("/api/v2/dags/{dag_id}/dagRuns")
        async def trigger(dag_id: str, request: Request) -> JSONResponse:
            try:
                self.bodies.append(json.loads(await request.body()))
            except ValueError:
                return JSONResponse({"detail": "not JSON"}, status_code=422)
            return JSONResponse({"dag_run_id": "manual__x"})

        @api.post("/api/v2/backfills")
        async def backfill(request: Request) -> JSONResponse:
            self.bodies.append(json.loads(await request.body()))
            return JSONResponse({"id": 1})

        @api.get("/api/v2/dags/{dag_id}/dagRuns")
        async def runs(dag_id: str) -> dict:
            return {"dag_runs": []}

        self.api = api


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, Downstream, list[str | None]]:
    """The guard before ``Downstream``, with the real SimpleAuthManager deciding.

    The request's user is a SimpleAuthManager user whose role is ``role[0]`` (None: no valid
    token), as the api-server would resolve it from the token (that needs its database; the
    e2e tests log in for real).
    """
    monkeypatch.syspath_prepend(str(PLUGINS))
    from airflow.api_fastapi import app as airflow_app
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from scoring_ui import trigger_guard

    role: list[str | None] = ["user"]

    async def user(scope: object) -> SimpleAuthManagerUser | None:
        return None if role[0] is None else SimpleAuthManagerUser(username="someone", role=role[0])

    monkeypatch.setattr(trigger_guard, "_user", user)
    monkeypatch.setattr(airflow_app._AuthManagerState, "instance", SimpleAuthManager())
    downstream = Downstream()
    downstream.api.add_middleware(trigger_guard.TriggerWindowGuard)
    return TestClient(downstream.api), downstream, role


def test_guard_answers_400_with_the_reason_and_creates_no_run(guarded) -> None:
    client, downstream, _ = guarded
    body = {"logical_date": None, "conf": {"window_start": "2026-11-02", "window_end": "2026-11-01"}}
    reply = client.post("/api/v2/dags/score_churn/dagRuns", json=body)
    assert reply.status_code == 400
    assert reply.json()["detail"].startswith("Invalid window for score_churn: window start 2026-11-02")
    future = {"logical_date": None, "conf": {"window_start": "2999-01-01", "window_end": "2999-01-02"}}
    assert "not complete yet" in client.post("/api/v2/dags/score_churn/dagRuns", json=future).json()["detail"]
    assert downstream.bodies == []


def test_guard_passes_good_windows_other_dags_and_anonymous_requests_unchanged(guarded) -> None:
    client, downstream, role = guarded
    good = {"logical_date": None, "conf": {"window_start": "2026-10-01", "window_end": "2026-10-02", "dry_run": False}}
    assert client.post("/api/v2/dags/score_churn/dagRuns", json=good).status_code == 200
    bad = {"logical_date": None, "conf": {"window_start": "2026-11-02", "window_end": "2026-11-01"}}
    assert client.post("/api/v2/dags/etl_daily/dagRuns", json=bad).status_code == 200  # not a scoring DAG
    assert client.post("/api/v2/dags/score_unknown/dagRuns", json=bad).status_code == 200  # no such pipeline
    malformed = {"logical_date": None, "conf": {"window_start": "2026-10-01'; --", "window_end": "2026-09-01"}}
    assert client.post("/api/v2/dags/score_churn/dagRuns", json=malformed).status_code == 200  # Airflow's Param check
    no_window = {"logical_date": "2026-10-01T00:00:00Z", "conf": {}}
    assert client.post("/api/v2/dags/score_churn/dagRuns", json=no_window).status_code == 200
    role[0] = None  # Airflow itself answers 401 to these; the guard says nothing about the pipeline
    assert client.post("/api/v2/dags/score_churn/dagRuns", json=bad).status_code == 200
    role[0] = "viewer"  # may read, not trigger: Airflow answers 403, the guard tells nothing of the window rules
    assert client.post("/api/v2/dags/score_churn/dagRuns", json=bad).status_code == 200
    assert client.get("/api/v2/dags/score_churn/dagRuns").json() == {"dag_runs": []}
    assert downstream.bodies == [good, bad, bad, malformed, no_window, bad, bad]
    raw = client.post(
        "/api/v2/dags/score_churn/dagRuns", content=b"not json", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 422  # passed on: Airflow's own validation answers it


def test_a_backfill_with_a_window_in_its_conf_is_refused_before_it_exists(guarded) -> None:
    """A backfill run scores its own interval: a window in dag_run_conf would be ignored, so it is refused."""
    client, downstream, role = guarded
    dates = {"from_date": "2026-10-01T00:00:00Z", "to_date": "2026-10-03T00:00:00Z"}
    windowed = {"dag_id": "score_churn", **dates, "dag_run_conf": {"window_start": "2026-09-01", "window_end": ""}}
    reply = client.post("/api/v2/backfills", json=windowed)
    assert reply.status_code == 400
    assert reply.json()["detail"].startswith("Invalid backfill of score_churn: each backfill run scores its own")
    assert "window_start in the run conf would be ignored" in reply.json()["detail"]
    plain = {"dag_id": "score_churn", **dates, "dag_run_conf": {"dry_run": True, "window_start": ""}}
    other = {"dag_id": "etl_daily", **dates, "dag_run_conf": {"window_start": "2026-09-01"}}
    assert client.post("/api/v2/backfills", json=plain).status_code == 200
    assert client.post("/api/v2/backfills", json=other).status_code == 200
    role[0] = "viewer"  # may not trigger: Airflow answers, the guard says nothing
    assert client.post("/api/v2/backfills", json=windowed).status_code == 200
    assert downstream.bodies == [plain, other, windowed]


def test_model_suggestions_from_a_local_registry_only(tmp_path: Path) -> None:
    model = tmp_path / "churn"
    for version in (1, 2, 10):
        (model / "versions" / str(version)).mkdir(parents=True)
        (model / "versions" / str(version) / "manifest.json").write_text("{}")
    (model / "versions" / "11").mkdir()  # a writer died before its manifest: not a version
    (model / "versions" / "tmp").mkdir()
    (model / "aliases.json").write_text(json.dumps({"champion": 2, "challenger": 10, "bad alias!": 1}))
    assert model_suggestions(str(tmp_path), "churn") == ["challenger", "champion", "10", "2", "1"]
    (model / "alias_changes").mkdir()  # changes logged since, on top of the older aliases.json
    (model / "alias_changes" / "000000000001.json").write_text(json.dumps({"alias": "shadow", "to": 1}))
    (model / "alias_changes" / ".000000000002.json.0a1b.tmp").write_text("{half")  # a writer's temp file
    assert model_suggestions(str(tmp_path), "churn") == ["challenger", "champion", "shadow", "10", "2", "1"]
    assert model_suggestions(f"file://{tmp_path}", "churn", limit=2) == ["challenger", "champion"]
    assert model_suggestions("s3://bucket/models", "churn") == []
    assert model_suggestions(str(tmp_path), "absent") == []
    (model / "aliases.json").write_text("{broken")
    assert model_suggestions(str(tmp_path), "churn") == []
    (model / "aliases.json").write_text("7")
    assert model_suggestions(str(tmp_path), "churn") == []

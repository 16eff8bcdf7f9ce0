"""Who may read what in the Scoring view, decided by the real SimpleAuthManager (roles only).

SimpleAuthManager has no per-DAG rules: every role reads every DAG's runs and logs, and a user
without a role reads nothing. Per-DAG permissions (the FAB auth manager, a real api-server and
login) are in tests/e2e/test_ui_permissions.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.plugins.test_scoring_ui import PLUGINS, FakeRecords, serve

ROLES = ("viewer", "user", "op", "admin")


@pytest.fixture
def access(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(PLUGINS))
    from scoring_ui import access as module

    return module


def simple_user(role: str | None) -> Any:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return SimpleAuthManagerUser(username="someone", role=role)


def simple_manager() -> Any:
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    return SimpleAuthManager()


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_every_pipelines_runs_and_rejected_values(access: Any, role: str) -> None:
    reader = access.Reader(simple_user(role), simple_manager(), listed=frozenset({"score_churn", "score_spend"}))
    assert reader.may_read_runs("churn")
    assert reader.may_read_values("churn")
    assert reader.may_read_runs("no_such_pipeline")  # a role reads any DAG; the record is what is missing then
    assert reader.readable(["churn", "fraud", "spend"]) == ["churn", "spend"]  # fraud: Airflow lists no such DAG


def test_a_user_without_a_role_reads_nothing(access: Any) -> None:
    reader = access.Reader(simple_user(None), simple_manager(), listed=frozenset({"score_churn"}))
    assert not reader.may_read_runs("churn")
    assert not reader.may_read_values("churn")
    assert reader.readable(["churn"]) == []


@pytest.mark.parametrize(("role", "allowed"), [("viewer", False), ("user", True), ("admin", True), (None, False)])
def test_triggering_needs_what_airflows_trigger_endpoint_needs(access: Any, role: str | None, allowed: bool) -> None:
    assert access.may_trigger(simple_manager(), simple_user(role), "churn") is allowed


@pytest.fixture
def records() -> FakeRecords:
    return FakeRecords()


@pytest.fixture
def roleless(monkeypatch: pytest.MonkeyPatch, records: FakeRecords) -> Iterator[TestClient]:
    yield from serve(monkeypatch, records, None)


def test_a_user_without_a_role_sees_no_pipeline_in_any_page_or_json(roleless: TestClient, records: FakeRecords) -> None:
    overview = roleless.get("/runs")
    assert overview.status_code == 200
    assert 'id="pipeline-' not in overview.text
    assert '<option value="churn"' not in overview.text
    assert "manual__2026-10-2" not in overview.text
    assert roleless.get("/runs", params={"pipeline": "churn"}).text.count('class="run status-') == 0
    assert roleless.get("/api/runs").json() == []
    assert roleless.get("/api/runs", params={"pipeline": "churn"}).json() == []
    run_id = records.runs[5]["run_id"]
    for path, params in (
        ("/api/run", {"pipeline": "churn", "run_id": run_id}),
        ("/api/rejects", {"pipeline": "churn", "run_id": run_id}),
    ):
        reply = roleless.get(path, params=params)
        assert (reply.status_code, reply.json()) == (404, {"detail": f"no scoring run {run_id!r} of pipeline 'churn'"})
    for params in ({"pipeline": "churn", "run_id": run_id}, {"dag_id": "score_churn", "run_id": run_id}):
        page = roleless.get("/run", params=params)
        assert page.status_code == 404
        assert "2,970" not in page.text
        assert "that you may read" in page.text
    rejects = roleless.get("/rejects", params={"pipeline": "churn", "run_id": run_id})
    assert rejects.status_code == 404
    assert "plan is NULL" not in rejects.text
    assert roleless.get("/static/scoring.js").status_code == 200  # no pipeline's data: a login is enough


def test_a_run_one_may_not_read_answers_as_a_run_that_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, records: FakeRecords
) -> None:
    run_id = records.runs[5]["run_id"]
    paths = [
        ("/run", {"pipeline": "churn", "run_id": run_id}),
        ("/run", {"dag_id": "score_churn", "run_id": run_id, "embed": "true"}),
        ("/rejects", {"pipeline": "churn", "run_id": run_id}),
        ("/api/run", {"pipeline": "churn", "run_id": run_id}),
        ("/api/rejects", {"pipeline": "churn", "run_id": run_id}),
    ]
    forbidden = serve(monkeypatch, records, None)
    client = next(forbidden)
    refused = [(r.status_code, r.text) for r in (client.get(path, params=params) for path, params in paths)]
    forbidden.close()
    records.runs = [r for r in records.runs if r["run_id"] != run_id]
    admin = serve(monkeypatch, records, "admin")
    client = next(admin)
    missing = [(r.status_code, r.text) for r in (client.get(path, params=params) for path, params in paths)]
    admin.close()
    assert refused == missing
    assert {status for status, _ in refused} == {404}

"""The Scoring view's pages and JSON, rendered from run records (the database's answers faked here).

The user is an admin of the real SimpleAuthManager; what other users may read is in
test_scoring_access.py. What the running api-server serves, with a real login and real runs,
is in tests/e2e/test_ui_*.py (per-DAG permissions with the FAB auth manager: test_ui_permissions.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.reports.ui_records import SHADOW, drift_rows, performance_row, run

PLUGINS = Path(__file__).resolve().parents[3] / "plugins"
VENDORED = {
    "chart.umd.min.js": "87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2",
    "chartjs-chart-matrix.min.js": "7e0cafdcfed5636319fb779f209230d38b6a3703b4b5f462ecb501fc6008f661",
}


class FakeRecords:
    """Stands in for batchscore.reports.run_views: records by (pipeline, run_id)."""

    def __init__(self) -> None:
        self.runs = [run(day) for day in range(6)]
        self.runs[5].update(shadow=SHADOW, drift_status="warn", drift_max_psi=0.24)
        self.runs.append(
            run(
                6,
                status="failed",
                failed_stage="plan",
                error="RegistryError: model 'churn' has no alias 'prod'",
                remedy="check the model name, version or alias",
                score_summary=None,
                rows_read=None,
                rows_rejected=None,
                slices=None,
                drift_status=None,
                alerts_sent=["failure"],
            )
        )
        self.runs.append(run(0, pipeline="fraud", run_id="scheduled__2026-10-20T00:00:00+00:00"))
        self.drift = [row for r in self.runs[3:6] for row in drift_rows(r, psi=0.06)]
        self.performance: list[dict[str, Any]] = []  # scoring.performance rows, oldest window first
        self.rejects = [
            {"entity_key": "17", "reason": "plan is NULL", "row_data": {"customer_id": 17, "plan": None, "x": 1.5}},
            {"entity_key": "<b>18</b>", "reason": "region: unseen category '<script>'", "row_data": {"region": "<i>"}},
        ]

    def list_runs(self, url: str, f: Any) -> list[dict[str, Any]]:
        return [r for r in self.runs if f.pipeline in (None, r["pipeline"]) and f.status in (None, r["status"])]

    def pipelines(self, url: str) -> list[str]:
        return sorted({r["pipeline"] for r in self.runs})

    def get_run(self, url: str, pipeline: str, run_id: str) -> dict[str, Any] | None:
        return next((r for r in self.runs if (r["pipeline"], r["run_id"]) == (pipeline, run_id)), None)

    def history(self, url: str, pipeline: str, *, until: Any = None, limit: int = 30) -> list[dict[str, Any]]:
        done = [r for r in self.runs if r["pipeline"] == pipeline and r["status"] == "success"]
        return [r for r in done if until is None or r["window_start"] <= until][-limit:]

    def drift_for_runs(self, url: str, pipeline: str, run_ids: list[str]) -> list[dict[str, Any]]:
        return [row for row in self.drift if row["run_id"] in run_ids]

    def reject_reasons(self, url: str, pipeline: str, run_id: str) -> list[dict[str, Any]]:
        return [{"reason": "plan is NULL", "rows": 20}, {"reason": "region: unseen category '…'", "rows": 10}]

    def rejected_rows(self, url: str, pipeline: str, run_id: str, **kw: Any) -> list[dict[str, Any]]:
        return self.rejects

    def performance_rows(self, url: str, pipeline: str, *, windows: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self.performance if r["pipeline"] == pipeline]

    def window_performance_rows(self, url: str, pipeline: str, start: Any, end: Any) -> list[dict[str, Any]]:
        return [r for r in self.performance_rows(url, pipeline) if (r["window_start"], r["window_end"]) == (start, end)]


@pytest.fixture
def records() -> FakeRecords:
    return FakeRecords()


def serve(monkeypatch: pytest.MonkeyPatch, records: FakeRecords, role: str | None) -> Iterator[TestClient]:
    """The plugin's app over ``records``, for a logged-in SimpleAuthManager user of ``role``.

    The DAGs Airflow lists are the records' pipelines' DAGs (the metadata database's answer,
    which unit tests have no database for); every other decision is the real auth manager's.
    """
    monkeypatch.syspath_prepend(str(PLUGINS))
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from scoring_ui import access
    from scoring_ui import app as module

    for name in ("list_runs", "pipelines", "get_run", "history", "drift_for_runs", "reject_reasons", "rejected_rows"):
        monkeypatch.setattr(module.run_views, name, getattr(records, name))
    for name in ("performance_rows", "window_performance_rows"):
        monkeypatch.setattr(module.performance_views, name, getattr(records, name))
    monkeypatch.setattr(module, "_scores_url", lambda: "postgresql://nowhere/scores")
    # No registry: the session's (with a churn model) would give the pages reference lines these records lack.
    monkeypatch.setenv("BATCHSCORE_MODEL_REGISTRY", str(PLUGINS.parent / ".no-such-registry"))
    user = SimpleAuthManagerUser(username="someone", role=role)
    listed = frozenset(f"score_{name}" for name in records.pipelines("x"))
    module.app.dependency_overrides[get_user] = lambda: user
    module.app.dependency_overrides[access.reader] = lambda: access.Reader(user, SimpleAuthManager(), listed=listed)
    try:
        yield TestClient(module.app, root_path="/scoring")
    finally:
        module.app.dependency_overrides.clear()


@pytest.fixture
def ui(monkeypatch: pytest.MonkeyPatch, records: FakeRecords) -> Iterator[TestClient]:
    yield from serve(monkeypatch, records, "admin")


def chart_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_overview_groups_runs_by_pipeline_with_links_and_causes(ui: TestClient, records: FakeRecords) -> None:
    page = ui.get("/runs").text
    assert page.index('id="pipeline-churn"') < page.index('id="pipeline-fraud"')
    assert page.count('class="run status-') == len(records.runs)
    assert 'href="/dags/score_churn/runs/manual__2026-10-25"' in page
    assert 'href="/dags/score_churn/runs/manual__2026-10-26/tasks/plan"' in page  # the failed stage's logs
    assert "/dags/score_fraud/runs/scheduled__2026-10-20T00%3A00%3A00%2B00%3A00" in page
    assert "model &#39;churn&#39; has no alias &#39;prod&#39;" in page
    assert "Remedy:" in page
    assert "/scoring/run?pipeline=churn&amp;run_id=manual__2026-10-21" in page
    trend = chart_data(page)["trend"]["churn"]
    assert trend["run_ids"] == [r["run_id"] for r in records.runs[:6]]
    assert trend["mean"][-1] == pytest.approx(0.35)


def test_overview_filters_are_kept_and_refuse_hostile_values(ui: TestClient) -> None:
    page = ui.get("/runs", params={"pipeline": "fraud", "status": "success"}).text
    assert 'id="pipeline-churn"' not in page
    assert 'id="pipeline-fraud"' in page
    assert '<option value="fraud" selected>' in page
    assert '<option value="success" selected>' in page
    for hostile in (
        {"pipeline": "churn'--"},
        {"status": "done"},
        {"since": "yesterday"},
        {"limit": 0},
        {"limit": 10_000},
        {"windows": 1},
    ):
        assert ui.get("/runs", params=hostile).status_code == 422, hostile


def test_run_page_draws_every_chart_that_has_data(ui: TestClient, records: FakeRecords) -> None:
    record = records.runs[5]
    page = ui.get("/run", params={"pipeline": "churn", "run_id": record["run_id"]}).text
    for chart in ("distribution", "reference", "trend", "drift", "shadow", "cost"):
        assert f'data-chart="{chart}"' in page, chart
    data = chart_data(page)
    assert data["distribution"]["counts"] == record["score_summary"]["histogram"]["counts"]
    assert len(data["distribution"]["previous"]) == 5
    assert data["trend"]["run_ids"][-1] == record["run_id"]
    assert data["drift"]["windows"] == ["2026-10-23", "2026-10-24", "2026-10-25"]
    assert data["shadow"]["label_agreement"] == [0.93]
    assert "93.00%" in page
    assert "scoring.churn_scores_shadow" in page
    assert 'class="n rows-read">3,000<' in page
    assert 'class="n rows-rejected">35 (1.17%)<' in page
    assert 'class="n rows-per-cpu">849<' in page  # 2,970 rows over 3.5 CPU seconds
    assert data["cost"]["run_ids"][-1] == record["run_id"]
    assert data["cost"]["cpu_per_mrow"][-1] == pytest.approx(3.5 / 2_970 * 1e6)


def test_run_page_without_drift_or_challenger_draws_neither(ui: TestClient, records: FakeRecords) -> None:
    page = ui.get("/run", params={"pipeline": "churn", "run_id": records.runs[1]["run_id"]}).text
    assert 'data-chart="distribution"' in page
    assert 'data-chart="trend"' in page
    assert 'data-chart="drift"' not in page
    assert 'data-chart="shadow"' not in page
    assert 'data-chart="reference"' not in page
    assert "Champion and challenger" not in page
    assert "No drift was recorded" in page


def test_failed_run_page_shows_cause_and_remedy(ui: TestClient, records: FakeRecords) -> None:
    page = ui.get("/run", params={"pipeline": "churn", "run_id": records.runs[6]["run_id"]}).text
    assert "Failed in plan" in page
    assert "Remedy:" in page
    assert "<strong>Alerts sent:</strong> failure</p>" in page
    assert 'data-chart="distribution"' not in page


def test_dag_run_tab_finds_the_pipeline_from_the_dag(ui: TestClient, records: FakeRecords) -> None:
    record = records.runs[2]
    page = ui.get("/run", params={"dag_id": "score_churn", "run_id": record["run_id"], "embed": "true"}).text
    assert 'class="embed"' in page
    assert 'data-chart="distribution"' in page
    other = ui.get("/run", params={"dag_id": "etl_daily", "run_id": "manual__x"}).text
    assert "is not a scoring DAG" in other
    missing = ui.get("/run", params={"dag_id": "score_churn", "run_id": "manual__none"})
    assert missing.status_code == 404
    assert "No scoring record of run manual__none of pipeline churn that you may read" in missing.text
    assert ui.get("/api/run", params={"pipeline": "churn", "run_id": "manual__none"}).status_code == 404
    assert ui.get("/run", params={"dag_id": "score_churn", "run_id": "a/../b"}).status_code == 422


def test_rejects_page_shows_values_as_they_arrived_escaped(ui: TestClient) -> None:
    page = ui.get("/rejects", params={"pipeline": "churn", "run_id": "manual__2026-10-25", "page": 2}).text
    assert "<th>customer_id</th><th>plan</th><th>x</th><th>region</th>" in page
    assert '<td class="null">NULL</td>' in page
    assert "&lt;script&gt;" in page
    assert "<script>'" not in page
    assert "&lt;b&gt;18&lt;/b&gt;" in page
    assert "page 2" in page
    assert "previous" in page
    assert ui.get("/rejects", params={"pipeline": "churn", "run_id": "r", "page": 0}).status_code == 422
    assert ui.get("/rejects", params={"pipeline": "churn", "run_id": "r", "reason": "a\x00b"}).status_code == 422


def test_json_endpoints_return_the_same_records(ui: TestClient, records: FakeRecords) -> None:
    runs = ui.get("/api/runs", params={"pipeline": "churn"}).json()
    assert [r["run_id"] for r in runs] == [r["run_id"] for r in records.runs if r["pipeline"] == "churn"]
    one = ui.get("/api/run", params={"pipeline": "churn", "run_id": records.runs[5]["run_id"]}).json()
    assert one["run"]["rows_written"] == 2_970
    assert one["charts"]["shadow"]["psi"] == [0.02]
    rejects = ui.get("/api/rejects", params={"pipeline": "churn", "run_id": records.runs[5]["run_id"]}).json()
    assert rejects["reasons"][0] == {"reason": "plan is NULL", "rows": 20}
    assert rejects["page_size"] == 50


def test_only_the_listed_assets_are_served(ui: TestClient) -> None:
    reply = ui.get("/static/vendor/chart.umd.min.js")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/javascript")
    assert hashlib.sha256(reply.content).hexdigest() == VENDORED["chart.umd.min.js"]
    for name in ("vendor/VENDORED.md", "../app.py", "..%2Fapp.py", "scoring_ui/app.py", "/etc/passwd"):
        assert ui.get(f"/static/{name}").status_code == 404, name
    assert ui.get("/docs").status_code == 404
    assert ui.get("/openapi.json").status_code == 404


@pytest.mark.parametrize("name", sorted(VENDORED))
def test_vendored_chart_library_is_the_published_build(name: str) -> None:
    data = (PLUGINS / "scoring_ui" / "static" / "vendor" / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == VENDORED[name]
    assert name in (PLUGINS / "scoring_ui" / "static" / "vendor" / "VENDORED.md").read_text()


def evaluated(records: FakeRecords, days: range = range(3)) -> None:
    records.performance = [performance_row(day, role) for day in days for role in ("challenger", "champion")]


def test_performance_page_draws_each_metric_per_role_from_the_recorded_rows(
    ui: TestClient, records: FakeRecords
) -> None:
    evaluated(records)
    page = ui.get("/performance", params={"pipeline": "churn"}).text
    for metric in ("roc_auc", "pr_auc", "log_loss", "brier"):
        assert f'data-chart="performance" data-key="{metric}"' in page, metric
    data = chart_data(page)
    auc = data["performance"]["roc_auc"]
    assert auc["labels"] == ["2026-10-20", "2026-10-21", "2026-10-22"]
    assert auc["series"]["champion"] == pytest.approx([0.80, 0.81, 0.82])
    assert auc["series"]["challenger"] == pytest.approx([0.82, 0.83, 0.84])
    assert auc["reference"] is None  # no manifest in this test's registry: no reference line, never a made-up one
    newest = {curve["role"]: curve["points"] for curve in data["calibration"]["roles"]}
    assert [p["x"] for p in newest["champion"]] == pytest.approx([(i + 0.5) / 10 for i in range(10)])
    assert 'data-chart="calibration"' in page
    assert page.count('class="window-row"') == 6
    assert "/scoring/run?pipeline=churn&amp;run_id=manual__2026-10-22" in page  # the run that published the window
    assert "Not yet evaluated" not in page
    assert "Awaiting outcomes" in page  # days 3-5 were published but have no rows
    assert ui.get("/api/performance", params={"pipeline": "churn"}).json()["chart"]["roc_auc"] == auc


def test_performance_page_escapes_recorded_text(ui: TestClient, records: FakeRecords) -> None:
    evaluated(records, range(1))
    records.performance[0]["model_name"] = "<script>alert(1)</script>"
    page = ui.get("/performance", params={"pipeline": "churn"}).text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\\u003cscript\\u003e" in page  # inside the chart JSON too (tojson)


def test_performance_page_of_a_pipeline_without_evaluations_says_when(ui: TestClient, records: FakeRecords) -> None:
    page = ui.get("/performance", params={"pipeline": "churn"}).text
    assert "Not yet evaluated: the oldest published window's outcomes complete after 2026-11-20 00:00:00 UTC" in page
    assert 'data-chart="performance"' not in page


def test_a_clusterer_has_no_labels_and_no_realised_performance(ui: TestClient, records: FakeRecords) -> None:
    records.runs.append(run(0, pipeline="segments", run_id="manual__segments"))
    records.performance = [
        performance_row(0, "champion", task="clusterer", pipeline="segments", status="no_labels", metrics={}, curves=[])
    ]
    page = ui.get("/performance", params={"pipeline": "segments"}).text
    assert "No labels, no realised performance" in page
    assert 'data-chart="performance"' not in page
    run_page = ui.get("/run", params={"pipeline": "segments", "run_id": "manual__segments"}).text
    assert "No labels, no realised performance" in run_page


def test_run_page_shows_its_windows_realised_metrics_once_known(ui: TestClient, records: FakeRecords) -> None:
    evaluated(records)
    page = ui.get("/run", params={"pipeline": "churn", "run_id": records.runs[2]["run_id"]}).text
    assert 'class="n metric-roc_auc">0.8200<' in page
    assert 'class="n metric-roc_auc">0.8400<' in page  # the challenger's
    assert chart_data(page)["calibration"]["roles"][0]["role"] == "challenger"
    assert "/scoring/performance?pipeline=churn" in page
    later = ui.get("/run", params={"pipeline": "churn", "run_id": records.runs[4]["run_id"]}).text
    assert "Not yet evaluated: outcomes complete after 2026-11-24 00:00:00 UTC (30d after the window's end)" in later
    assert 'data-chart="calibration"' not in later


def test_performance_of_an_unknown_pipeline_is_absent(ui: TestClient) -> None:
    missing = ui.get("/performance", params={"pipeline": "nosuch"})
    assert missing.status_code == 404
    assert "No scoring run of pipeline nosuch that you may read" in missing.text
    assert ui.get("/api/performance", params={"pipeline": "nosuch"}).status_code == 404
    assert ui.get("/performance", params={"pipeline": "churn'--"}).status_code == 422
    assert ui.get("/performance", params={"pipeline": "churn", "windows": 1}).status_code == 422


def test_a_pipeline_without_a_challenger_draws_the_champion_alone(ui: TestClient, records: FakeRecords) -> None:
    records.performance = [performance_row(day, "champion") for day in range(2)]
    page = ui.get("/performance", params={"pipeline": "churn"})
    assert page.status_code == 200
    assert list(chart_data(page.text)["performance"]["roc_auc"]["series"]) == ["champion"]
    assert "ROC AUC per window: champion<" in page.text
    run_page = ui.get("/run", params={"pipeline": "churn", "run_id": records.runs[1]["run_id"]}).text
    assert 'class="n metric-roc_auc">0.8100<' in run_page
    assert [c["role"] for c in chart_data(run_page)["calibration"]["roles"]] == ["champion"]


def test_a_missed_deadline_shows_on_the_runs_list_and_the_run_page(ui: TestClient, records: FakeRecords) -> None:
    from datetime import UTC, datetime

    late = records.runs[4]
    late.update(deadline_missed_at=datetime(2026, 10, 26, 5, 0, 3, tzinfo=UTC), alerts_sent=["deadline_missed"])
    listing = ui.get("/runs").text
    assert listing.count('<span class="badge deadline-missed"') == 1
    row = listing[listing.index(f'data-run-id="{late["run_id"]}"') :]
    assert row.index("deadline missed") < row.index("</tr>")
    page = ui.get("/run", params={"pipeline": "churn", "run_id": late["run_id"]}).text
    assert '<span class="badge deadline-missed">deadline missed</span>' in page
    assert "<h2>Deadline missed</h2>" in page
    assert '<strong class="deadline-missed-at">2026-10-26 05:00:03 UTC</strong>' in page
    assert "<strong>Alerts sent:</strong> deadline missed</p>" in page
    on_time = ui.get("/run", params={"pipeline": "churn", "run_id": records.runs[3]["run_id"]}).text
    assert "deadline-missed" not in on_time

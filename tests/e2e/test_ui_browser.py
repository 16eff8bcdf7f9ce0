"""The Scoring view and the trigger form in a real browser, against the running api-server and scheduler.

A person logs in, triggers a scoring DAG from its form with a custom window, finds the run in
the Scoring view with its row counts and charts holding its numbers, follows the link to the
Airflow DAG run, opens the run's Scoring tab and its rejects; the form refuses an end before
the start and a window in the future. Screenshots are saved (``make screenshots``: docs/img).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlparse

import pytest

from batchscore.local.airflow_client import AirflowClient
from batchscore.local.stack import ADMIN_PASSWORD, ADMIN_USER
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.windows import Window
from batchscore.reports.run_charts import density, window_label
from tests.conftest import SHADOW, TEST_ROOT, WAREHOUSE_END, Services
from tests.e2e.browser import FLAGS, VIEWPORT, chromium_path, log_in, pick_date_time, screenshot_dir
from tests.e2e.conftest import DAG_ID, PERF_PIPELINE, PERF_WINDOWS, recorded_performance, trigger, utc_day

pytestmark = pytest.mark.e2e

WINDOW_START, WINDOW_END = utc_day(WAREHOUSE_END - timedelta(days=1))
SHOTS = screenshot_dir(TEST_ROOT / "screenshots")
# `make screenshots`: earlier windows first (churn, and churn with a challenger), so the pictures have history.
FOR_README = bool(os.environ.get("BATCHSCORE_SCREENSHOTS"))
SHADOW_DAG = f"score_{SHADOW}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any, client: AirflowClient) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    log_in(tab, client.base, ADMIN_USER, ADMIN_PASSWORD)
    try:
        yield tab
    finally:
        context.close()


def open_trigger_form(page: Any, client: AirflowClient) -> Any:
    page.goto(f"{client.base}/dags/{DAG_ID}")
    page.get_by_test_id("trigger-dag-button").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Window start (inclusive)").wait_for()
    return dialog


def submit(page: Any, dialog: Any) -> Any:
    """Press the form's Trigger button; the API's answer to it."""
    with page.expect_response(
        lambda r: r.url.endswith(f"/dags/{DAG_ID}/dagRuns") and r.request.method == "POST"
    ) as sent:
        dialog.get_by_role("button", name="Trigger", exact=True).click()
    return sent.value


def scoring_frame(page: Any, path: str) -> Any:
    """The plugin's iframe inside Airflow's page, once it shows ``path`` (and has drawn its charts)."""
    page.wait_for_function(
        "path => [...document.querySelectorAll('iframe')].some(f => f.contentWindow.location.pathname === path"
        " && f.contentDocument.readyState === 'complete')",
        arg=path,
    )
    return next(f for f in page.frames if f is not page.main_frame and urlparse(f.url).path == path)


def chart_points(frame: Any, canvas_id: str) -> dict[str, Any]:
    """What a drawn chart holds (Chart.js's own data) and how many of its canvas pixels are painted."""
    return frame.evaluate(
        """id => {
            const canvas = document.getElementById(id);
            const chart = Chart.getChart(canvas);
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
            return {labels: chart.data.labels, datasets: chart.data.datasets.map(d => d.data), painted};
        }""",
        canvas_id,
    )


def test_trigger_form_reads_well_and_refuses_bad_windows(page: Any, client: AirflowClient) -> None:
    runs_before = {r["dag_run_id"] for r in client.dag_runs(DAG_ID)}
    dialog = open_trigger_form(page, client)
    text = dialog.inner_text()
    for title in ("Window start (inclusive)", "Window end (exclusive)", "Model churn: version or alias", "Dry run"):
        assert title in text
    assert "Give both ends or neither" in text
    assert "Extract, validate and score, record the run, but publish nothing." in text
    assert dialog.get_by_test_id("datetime-input").count() == 3  # the logical date, then the window's two ends
    assert dialog.locator("input[name=element_dry_run][type=checkbox]").count() == 1
    suggestions = dialog.locator("datalist#list_model_version option").evaluate_all("os => os.map(o => o.value)")
    assert "champion" in suggestions

    pick_date_time(page, "Window start (inclusive)", f"{WINDOW_END:%Y/%m/%d}", "00:00")
    pick_date_time(page, "Window end (exclusive)", f"{WINDOW_START:%Y/%m/%d}", "00:00")
    refused = submit(page, dialog)
    assert refused.status == 400
    assert "must be before end" in refused.json()["detail"]
    dialog.get_by_text(re.compile("must be before end")).wait_for()
    page.screenshot(path=str(SHOTS / "trigger-form-refused.png"))

    future = datetime.now(UTC) + timedelta(days=2)
    pick_date_time(page, "Window start (inclusive)", f"{future:%Y/%m/%d}", "00:00")
    pick_date_time(page, "Window end (exclusive)", f"{future + timedelta(days=1):%Y/%m/%d}", "00:00")
    refused = submit(page, dialog)
    assert refused.status == 400
    assert "not complete yet" in refused.json()["detail"]
    assert {r["dag_run_id"] for r in client.dag_runs(DAG_ID)} == runs_before  # no run was created


@pytest.fixture(scope="module")
def history(client: AirflowClient) -> str | None:
    """README pictures only: four earlier churn windows, three with a challenger (returns the last of those)."""
    if not FOR_README:
        return None
    client.wait_for_dag(SHADOW_DAG, timeout=240)
    client.send("PATCH", f"/dags/{SHADOW_DAG}", {"is_paused": False})
    churn, shadow = set(), []
    for back in range(5, 1, -1):
        churn.add(trigger(client, *utc_day(WAREHOUSE_END - timedelta(days=back))))
        if back < 5:
            shadow.append(trigger(client, *utc_day(WAREHOUSE_END - timedelta(days=back)), dag_id=SHADOW_DAG))
    client.wait_for_runs(DAG_ID, churn, timeout=600)
    client.wait_for_runs(SHADOW_DAG, set(shadow), timeout=600)
    return shadow[-1]


@pytest.fixture(scope="module")
def form_run(page: Any, client: AirflowClient, history: str | None) -> dict[str, Any]:
    """A run triggered from the form with a custom window, finished; its run record from the plugin's API."""
    dialog = open_trigger_form(page, client)
    pick_date_time(page, "Window start (inclusive)", f"{WINDOW_START:%Y/%m/%d}", "00:00")
    pick_date_time(page, "Window end (exclusive)", f"{WINDOW_END:%Y/%m/%d}", "00:00")
    dialog.get_by_text("Window end (exclusive)").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "trigger-form.png"))
    sent = submit(page, dialog)
    assert sent.ok, sent.text()
    run_id = sent.json()["dag_run_id"]
    client.wait_for_runs(DAG_ID, {run_id}, timeout=300)
    reply = client.session.get(f"{client.base}/scoring/api/run", params={"pipeline": "churn", "run_id": run_id})
    assert reply.status_code == 200
    details = reply.json()
    record = details["run"]
    assert record["status"] == "success"
    window = (datetime.fromisoformat(record["window_start"]), datetime.fromisoformat(record["window_end"]))
    assert window == (WINDOW_START, WINDOW_END)
    return details


def test_scoring_view_shows_the_run_with_its_counts_and_a_chart_of_it(
    page: Any, client: AirflowClient, form_run: dict[str, Any]
) -> None:
    record = form_run["run"]
    page.goto(f"{client.base}/plugin/scoring")
    frame = scoring_frame(page, "/scoring/runs")
    row = frame.locator(f"tr[data-run-id='{record['run_id']}']")
    for column in ("rows_read", "rows_scored", "rows_rejected", "rows_written"):
        assert row.locator(f"td.{column.replace('_', '-')}").inner_text() == f"{record[column]:,}"
    assert record["rows_read"] == record["rows_scored"] + record["rows_rejected"] > 2_000
    trend = chart_points(frame, "trend-churn")
    at = trend["labels"].index(window_label(WINDOW_START))
    assert trend["datasets"][0][at] == pytest.approx(record["score_summary"]["mean"])
    assert trend["datasets"][1][at] == pytest.approx(record["rows_rejected"] / record["rows_read"])
    assert trend["painted"] > 1_000
    row.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "scoring-view.png"))


def test_run_page_charts_hold_the_runs_recorded_distribution(
    page: Any, client: AirflowClient, form_run: dict[str, Any]
) -> None:
    record = form_run["run"]
    page.goto(f"{client.base}/plugin/scoring")
    scoring_frame(page, "/scoring/runs").locator(f"tr[data-run-id='{record['run_id']}'] a.run-link").click()
    frame = scoring_frame(page, "/scoring/run")
    assert frame.locator("td.rows-written").inner_text() == f"{record['rows_written']:,}"
    drawn = chart_points(frame, "chart-distribution")
    expected = density(record["score_summary"]["histogram"])
    assert expected is not None
    assert [p["x"] for p in drawn["datasets"][0]] == pytest.approx([p["x"] for p in expected])
    assert [p["y"] for p in drawn["datasets"][0]] == pytest.approx([p["y"] for p in expected])
    assert drawn["painted"] > 1_000
    for chart in ("drift", "shadow", "reference"):  # drawn exactly when the run recorded their data
        assert (frame.locator(f"#chart-{chart}").count() == 1) == (form_run["charts"][chart] is not None)
    # The demo model carries its training reference, so every run records drift per feature and for the score.
    assert form_run["charts"]["drift"] is not None
    heat = chart_points(frame, "chart-drift")
    own = {(c["y"], c["psi"]) for c in heat["datasets"][0] if c["run_id"] == record["run_id"]}
    assert own == {(row["feature"], row["psi"]) for row in form_run["feature_drift"]}
    reference = chart_points(frame, "chart-reference")
    assert reference["datasets"] == [
        form_run["charts"]["reference"]["reference"],
        form_run["charts"]["reference"]["observed"],
    ]
    page.screenshot(path=str(SHOTS / "scoring-run.png"))
    whole = page.context.new_page()  # the same page outside Airflow's frame, whole, for the README
    whole.goto(f"{client.base}/scoring/run?pipeline=churn&run_id={quote(record['run_id'], safe='')}")
    whole.screenshot(path=str(SHOTS / "scoring-run-full.png"), full_page=True)
    whole.close()


def test_link_from_a_scoring_run_leads_to_its_airflow_dag_run(
    page: Any, client: AirflowClient, form_run: dict[str, Any]
) -> None:
    run_id = form_run["run"]["run_id"]
    page.goto(f"{client.base}/plugin/scoring")
    scoring_frame(page, "/scoring/runs").locator(f"tr[data-run-id='{run_id}'] a.dag-run-link").click()
    page.wait_for_url(f"{client.base}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
    page.get_by_text(run_id).first.wait_for()  # Airflow's own run page, in the top window


def test_dag_run_tab_shows_the_scoring_record_and_its_rejects(
    page: Any, client: AirflowClient, form_run: dict[str, Any]
) -> None:
    record = form_run["run"]
    page.goto(f"{client.base}/dags/{DAG_ID}/runs/{quote(record['run_id'], safe='')}")
    page.locator("a[href$='/plugin/scoring-run']", has_text="Scoring").click()  # the run's own tab
    page.wait_for_url(re.compile(r"/plugin/scoring-run$"))
    frame = scoring_frame(page, "/scoring/run")
    assert frame.locator("body.embed").count() == 1
    assert frame.locator("td.rows-read").inner_text() == f"{record['rows_read']:,}"
    page.screenshot(path=str(SHOTS / "dag-run-tab.png"))
    reasons = form_run["reject_reasons"]
    assert sum(r["rows"] for r in reasons) == record["rows_rejected"] > 0
    frame.get_by_role("link", name=reasons[0]["reason"]).first.click()
    frame = scoring_frame(page, "/scoring/rejects")
    rows = frame.locator("table.rejects tbody tr")
    assert rows.count() == min(reasons[0]["rows"], 50)
    assert re.sub(r"'[^']*'", "'…'", rows.first.locator("td").nth(1).inner_text()) == reasons[0]["reason"]
    page.screenshot(path=str(SHOTS / "rejects.png"))


def calibration_of(rows: dict[tuple[str, str], dict[str, Any]], role: str, label: str) -> list[dict[str, float]]:
    return [{"x": b["mean_score"], "y": b["observed_rate"]} for b in rows[(role, label)]["curves"]]


def test_performance_charts_draw_the_recorded_metrics(
    page: Any, client: AirflowClient, airflow_db: Services, evaluated_windows: dict[Window, str]
) -> None:
    rows = recorded_performance(airflow_db, PERF_PIPELINE)
    labels = [f"{w.start:%Y-%m-%d}" for w in PERF_WINDOWS]
    page.goto(f"{client.base}/plugin/scoring")
    scoring_frame(page, "/scoring/runs").locator(f"#pipeline-{PERF_PIPELINE} a.performance-link").click()
    frame = scoring_frame(page, "/scoring/performance")
    for metric in ("roc_auc", "log_loss"):
        drawn = chart_points(frame, f"perf-{metric}")
        at = [drawn["labels"].index(label) for label in labels]
        for i, role in enumerate(("champion", "challenger")):
            assert [drawn["datasets"][i][k] for k in at] == [rows[(role, label)]["metrics"][metric] for label in labels]
        champion = rows[("champion", labels[-1])]
        manifest = ModelRegistry(airflow_db.registry).resolve(champion["model_name"], str(champion["model_version"]))
        assert set(drawn["datasets"][2]) == {manifest.metrics[f"holdout_{metric}"]}  # the training reference line
        assert drawn["painted"] > 1_000
    curves = chart_points(frame, "chart-calibration")
    assert [[{"x": p["x"], "y": p["y"]} for p in d] for d in curves["datasets"][:2]] == [
        calibration_of(rows, role, labels[-1]) for role in ("challenger", "champion")
    ]
    assert curves["datasets"][2] == [{"x": 0, "y": 0}, {"x": 1, "y": 1}]  # the diagonal
    assert curves["painted"] > 1_000
    page.screenshot(path=str(SHOTS / "scoring-performance.png"))
    frame.locator(f"tr.window-row[data-window='{labels[0]}'] a.run-link").click()
    run_frame = scoring_frame(page, "/scoring/run")
    assert run_frame.locator("tr.role-champion td.metric-roc_auc").inner_text() == (
        f"{rows[('champion', labels[0])]['metrics']['roc_auc']:,.4f}"
    )
    drawn = chart_points(run_frame, "chart-calibration")
    assert [{"x": p["x"], "y": p["y"]} for p in drawn["datasets"][1]] == calibration_of(rows, "champion", labels[0])


@pytest.mark.skipif(not FOR_README, reason="only for the README's pictures (make screenshots)")
def test_screenshot_of_a_run_with_a_challenger(page: Any, client: AirflowClient, history: str | None) -> None:
    assert history is not None
    whole = page.context.new_page()
    whole.goto(f"{client.base}/scoring/run?pipeline={SHADOW}&run_id={quote(history, safe='')}")
    assert chart_points(whole.main_frame, "chart-shadow")["painted"] > 1_000
    whole.screenshot(path=str(SHOTS / "scoring-run-challenger.png"), full_page=True)
    whole.close()

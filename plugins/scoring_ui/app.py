"""The plugin's FastAPI app, mounted by Airflow's api-server at ``/scoring``.

Pages (shown inside Airflow's UI as iframes): ``/runs`` (the overview), ``/run`` (one run: its
charts, drift, challenger, realised performance and links; also the tab on every DAG run),
``/performance`` (a pipeline's realised metrics over its evaluated windows, champion beside
challenger, and calibration), ``/rejects`` (a run's rejected rows). JSON with the same data under
``/api``. Every route, the static files included, needs a logged-in Airflow user (the app-wide
dependency); FastAPI's own docs routes are off, since they would not be. Every route that shows a
pipeline's data asks the auth manager (``scoring_ui.access``): a pipeline the user may not read is
left out of lists and answers 404, as one that does not exist; rejected rows' values need task-log
access besides. Query parameters are validated strictly (422 otherwise) and reach SQL only as bound
parameters. The scores database is the Airflow connection ``BATCHSCORE_SCORES_CONN_ID`` (default
``scores_db``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal

from airflow.api_fastapi.core_api.security import requires_authenticated
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from batchscore import settings
from batchscore.reports import performance_views, run_charts, run_views
from scoring_ui import links
from scoring_ui.access import Reader, ReaderDep
from scoring_ui.pages import render

STATIC = Path(__file__).resolve().parent / "static"
# The only files served: no path from a request ever reaches the file system.
ASSETS = {
    "scoring.css": "text/css",
    "scoring.js": "text/javascript",
    "vendor/chart.umd.min.js": "text/javascript",
    "vendor/chartjs-chart-matrix.min.js": "text/javascript",
}
REJECTS_PAGE_SIZE = 50

Pipeline = Annotated[str, Query(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]
RunId = Annotated[str, Query(pattern=r"^[A-Za-z0-9_.~:+\-]{1,250}$")]
Status = Literal["running", "success", "failed", "dry_run"]
Windows = Annotated[int, Query(ge=2, le=run_views.MAX_HISTORY, description="windows in the charts' history")]
Reason = Annotated[str | None, Query(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")]
Page = Annotated[int, Query(ge=1, le=1000)]


def _scores_url() -> str:
    from airflow.models.connection import Connection

    from batchscore.airflow.glue import url_of

    return url_of(Connection.get_connection_from_secrets(os.environ.get("BATCHSCORE_SCORES_CONN_ID", "scores_db")))


app = FastAPI(
    title="Scoring",
    dependencies=[Depends(requires_authenticated())],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


def _roots(request: Request) -> tuple[str, str]:
    """(this app's root, Airflow's UI root), from where Airflow mounted the app."""
    root = str(request.scope.get("root_path", "")).rstrip("/") or links.MOUNT
    return root, links.airflow_base(root)


def _run_filter(
    pipeline: str | None, status: str | None, since: date | None, until: date | None, limit: int, *, among: list[str]
) -> run_views.RunFilter:
    def instant(day: date | None) -> datetime | None:
        return None if day is None else datetime.combine(day, time(), tzinfo=UTC)

    return run_views.RunFilter(pipeline, status, instant(since), instant(until), limit, among=tuple(among))


def _absent(pipeline: str, run_id: str) -> HTTPException:
    """One answer for a run that does not exist and for one the user may not read: it confirms neither."""
    return HTTPException(404, f"no scoring run {run_id!r} of pipeline {pipeline!r}")


def _readable_run(url: str, who: Reader, pipeline: str, run_id: str) -> dict[str, Any] | None:
    """The run record when it exists and the user may read the pipeline's runs, else None."""
    return run_views.get_run(url, pipeline, run_id) if who.may_read_runs(pipeline) else None


def _with_run(runs: list[dict[str, Any]], run: dict[str, Any]) -> list[dict[str, Any]]:
    """The history as this run's page shows it: this run in its window's place when it scored one."""
    if run["status"] not in ("success", "dry_run") or run["window_start"] is None:
        return runs
    others = [r for r in runs if (r["window_start"], r["window_end"]) != (run["window_start"], run["window_end"])]
    return sorted([*others, run], key=lambda r: (r["window_start"], r["window_end"]))


def run_details(who: Reader, pipeline: str, run_id: str, windows: int) -> dict[str, Any] | None:
    """A run record with every chart its page draws (None: no such run, or not one the user may read)."""
    url = _scores_url()
    run = _readable_run(url, who, pipeline, run_id)
    if run is None:
        return None
    earlier = run_views.history(url, pipeline, until=run["window_start"], limit=windows) if run["window_start"] else []
    series = _with_run(earlier, run)
    drift = run_views.drift_for_runs(url, pipeline, list({r["run_id"] for r in [*series, run]}))
    performance = performance_views.run_performance(url, settings.model_registry_root(), run, now=datetime.now(UTC))
    return {
        "run": run,
        "performance": performance,
        "charts": {
            "distribution": run_charts.distribution(run, [r for r in series if r["run_id"] != run_id]),
            "reference": run_charts.versus_reference(drift, run_id),
            "trend": run_charts.trend(series),
            "drift": run_charts.drift_heatmap(series, drift),
            "shadow": run_charts.shadow_trend(series),
            "cost": run_charts.cost_trend(series),
            "calibration": performance["calibration"] if performance else None,
        },
        "feature_drift": run_charts.feature_drift(drift, run_id),
        "reject_reasons": run_views.reject_reasons(url, pipeline, run_id),
    }


# ----------------------------------------------------------------------------------------- JSON


@app.get("/api/runs")
def runs_json(
    who: ReaderDep,
    *,
    pipeline: Annotated[str | None, Query(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = None,
    status: Status | None = None,
    since: date | None = None,
    until: date | None = None,
    limit: Annotated[int, Query(ge=1, le=run_views.MAX_RUNS)] = 50,
) -> list[dict[str, Any]]:
    """Run records of the pipelines the user may read, per pipeline its ``limit`` newest windows.

    ``since``/``until`` bound the window start. A pipeline the user may not read has no runs here.
    """
    url = _scores_url()
    readable = who.readable(run_views.pipelines(url))
    if not readable or (pipeline is not None and pipeline not in readable):
        return []
    return run_views.list_runs(url, _run_filter(pipeline, status, since, until, limit, among=readable))


@app.get("/api/run")
def run_json(who: ReaderDep, pipeline: Pipeline, run_id: RunId, windows: Windows = 30) -> dict[str, Any]:
    """One run with its charts' data (what its page draws); 404 for a run the user may not read."""
    details = run_details(who, pipeline, run_id, windows)
    if details is None:
        raise _absent(pipeline, run_id)
    return details


def rejects_of(who: Reader, pipeline: str, run_id: str, reason: str | None, page: int) -> dict[str, Any] | None:
    """A run's rejects by kind of reason, and one page of rows when the user may read their values.

    None: no such run, or not one the user may read. ``rows`` is None (and ``values_visible``
    False) for a user who may read the run but not its task logs: the values are the source's
    data, maybe personal, and the task logs are where Airflow already guards them.
    """
    url = _scores_url()
    run = _readable_run(url, who, pipeline, run_id)
    if run is None:
        return None
    visible = who.may_read_values(pipeline)
    rows = (
        run_views.rejected_rows(
            url, pipeline, run_id, reason=reason, offset=(page - 1) * REJECTS_PAGE_SIZE, limit=REJECTS_PAGE_SIZE
        )
        if visible
        else None
    )
    return {
        "run": run,
        "reasons": run_views.reject_reasons(url, pipeline, run_id),
        "values_visible": visible,
        "rows": rows,
        "page": page,
        "page_size": REJECTS_PAGE_SIZE,
    }


@app.get("/api/rejects")
def rejects_json(
    who: ReaderDep, pipeline: Pipeline, run_id: RunId, reason: Reason = None, page: Page = 1
) -> dict[str, Any]:
    """A run's rejects counted by reason, and one page of rejected rows as they arrived (task-log access).

    404 for a run the user may not read; ``rows`` null when they may not read its task logs.
    """
    data = rejects_of(who, pipeline, run_id, reason, page)
    if data is None:
        raise _absent(pipeline, run_id)
    data.pop("run")
    return data


def performance_of(who: Reader, pipeline: str, windows: int) -> dict[str, Any] | None:
    """A pipeline's performance page data; None: no run of it recorded, or not one the user may read."""
    url = _scores_url()
    if not who.may_read_runs(pipeline) or pipeline not in run_views.pipelines(url):
        return None
    return performance_views.pipeline_performance(
        url, settings.model_registry_root(), pipeline, windows=windows, now=datetime.now(UTC)
    )


@app.get("/api/performance")
def performance_json(who: ReaderDep, pipeline: Pipeline, windows: Windows = 30) -> dict[str, Any]:
    """A pipeline's realised performance: per evaluated window and role, the recorded metrics (what its page draws).

    404 for a pipeline the user may not read, as for one never run.
    """
    data = performance_of(who, pipeline, windows)
    if data is None:
        raise HTTPException(404, f"no scoring runs of pipeline {pipeline!r}")
    return data


# ---------------------------------------------------------------------------------------- pages


@app.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request,
    who: ReaderDep,
    *,
    pipeline: Annotated[str | None, Query(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = None,
    status: Status | None = None,
    since: date | None = None,
    until: date | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 30,
    windows: Windows = 30,
) -> str:
    """The overview: per pipeline the user may read, a trend chart and its recent windows, filtered."""
    root, base = _roots(request)
    url = _scores_url()
    readable = who.readable(run_views.pipelines(url))
    grouped: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    if readable and (pipeline is None or pipeline in readable):
        for run in run_views.list_runs(url, _run_filter(pipeline, status, since, until, limit, among=readable)):
            grouped.setdefault(run["pipeline"], []).append(run)
    trends = {name: run_charts.trend(run_views.history(url, name, limit=windows)) for name in grouped}
    return render(
        "runs.html",
        root=root,
        base=base,
        links=links,
        grouped=grouped,
        trends=trends,
        pipelines=readable,
        statuses=run_views.STATUSES,
        filters={"pipeline": pipeline, "status": status, "since": since, "until": until, "limit": limit},
        windows=windows,
    )


def _absent_page(
    root: str, embed: bool, run_id: str | None, *, dag_id: str | None, pipeline: str | None
) -> HTMLResponse:
    """404 with the page that says so: the same for a run not recorded and one the user may not read."""
    page = render("absent.html", root=root, embed=embed, dag_id=dag_id, run_id=run_id, pipeline=pipeline)
    return HTMLResponse(page, status_code=404)


@app.get("/run", response_class=HTMLResponse)
def run_page(
    request: Request,
    who: ReaderDep,
    *,
    run_id: RunId,
    pipeline: Annotated[str | None, Query(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = None,
    dag_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.\-]{1,250}$")] = None,
    windows: Windows = 30,
    embed: bool = False,
) -> HTMLResponse:
    """One run; reached by pipeline (from the overview) or by DAG id (the tab on every Airflow DAG run)."""
    root, base = _roots(request)
    if pipeline is None:
        pipeline = links.pipeline_of(dag_id) if dag_id else None
        if pipeline is None:  # not a scoring DAG: nothing of any pipeline to guard
            return HTMLResponse(
                render("absent.html", root=root, embed=embed, dag_id=dag_id, run_id=run_id, pipeline=None)
            )
    details = run_details(who, pipeline, run_id, windows)
    if details is None:
        return _absent_page(root, embed, run_id, dag_id=dag_id, pipeline=pipeline)
    return HTMLResponse(render("run.html", root=root, base=base, links=links, embed=embed, windows=windows, **details))


@app.get("/performance", response_class=HTMLResponse)
def performance_page(
    request: Request, who: ReaderDep, *, pipeline: Pipeline, windows: Windows = 30, embed: bool = False
) -> HTMLResponse:
    """A pipeline's realised metrics over its evaluated windows, champion and challenger, and its calibration."""
    root, base = _roots(request)
    data = performance_of(who, pipeline, windows)
    if data is None:
        return _absent_page(root, embed, None, dag_id=None, pipeline=pipeline)
    charts = {"performance": data["chart"], "calibration": data["calibration"]}
    page = render("performance.html", root=root, base=base, links=links, embed=embed, charts=charts, **data)
    return HTMLResponse(page)


@app.get("/rejects", response_class=HTMLResponse)
def rejects_page(
    request: Request,
    who: ReaderDep,
    *,
    pipeline: Pipeline,
    run_id: RunId,
    reason: Reason = None,
    page: Page = 1,
    embed: bool = False,
) -> HTMLResponse:
    """A run's rejects by reason; with task-log access, the rows' values as they arrived, a page at a time."""
    root, base = _roots(request)
    data = rejects_of(who, pipeline, run_id, reason, page)
    if data is None:
        return _absent_page(root, embed, run_id, dag_id=None, pipeline=pipeline)
    columns: list[str] = []
    for row in data["rows"] or []:
        for key in row["row_data"] or {}:
            if key not in columns:
                columns.append(key)
    return HTMLResponse(
        render(
            "rejects.html",
            root=root,
            base=base,
            links=links,
            embed=embed,
            pipeline=pipeline,
            run_id=run_id,
            reason=reason,
            columns=columns,
            **data,
        )
    )


@app.get("/static/{name:path}")
def static(name: str) -> FileResponse:
    """The plugin's CSS and scripts and the vendored chart library (no CDN: many deployments are offline)."""
    if name not in ASSETS:
        raise HTTPException(404, "no such asset")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "private, max-age=3600"})

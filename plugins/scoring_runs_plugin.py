"""Airflow UI plugin: a "Scoring runs" page and JSON API on the api-server.

Shows ``scoring.scoring_runs`` (rows read/scored/rejected/written, seconds per stage,
model version, status, mean score) so an operator sees what each run published without
opening a SQL shell. Served under ``/scoring``; every route needs a logged-in Airflow user.
The scores database is the Airflow connection ``BATCHSCORE_SCORES_CONN_ID`` (default ``scores_db``).
"""

from __future__ import annotations

import html
import os
from typing import Any

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse


def _scores_url() -> str:
    from airflow.models.connection import Connection

    from batchscore.airflow_glue import url_of

    return url_of(Connection.get_connection_from_secrets(os.environ.get("BATCHSCORE_SCORES_CONN_ID", "scores_db")))


def _runs(pipeline: str | None, limit: int) -> list[dict[str, Any]]:
    from batchscore.runs import recent_runs

    return recent_runs(_scores_url(), pipeline=pipeline, limit=limit)


app = FastAPI(title="Scoring runs", dependencies=[Depends(requires_authenticated())])


@app.get("/api/runs")
def runs_json(
    pipeline: str | None = Query(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$"), limit: int = Query(50, ge=1, le=500)
) -> list[dict[str, Any]]:
    """Run records as JSON, newest first."""
    return _runs(pipeline, limit)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


@app.get("/runs", response_class=HTMLResponse)
def runs_page(
    pipeline: str | None = Query(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$"), limit: int = Query(100, ge=1, le=500)
) -> str:
    """A plain table of the latest runs (no scripts, no external assets)."""
    rows = []
    for run in _runs(pipeline, limit):
        summary = run.get("score_summary") or {}
        mean = summary.get("mean") if isinstance(summary, dict) else None
        cells = [
            run["pipeline"],
            run["run_id"],
            # A run that failed in plan may have no window or model yet.
            f"{run['window_start']:%Y-%m-%d %H:%M} → {run['window_end']:%Y-%m-%d %H:%M}"
            if run["window_start"] and run["window_end"]
            else None,
            run["status"] if not run.get("failed_stage") else f"{run['status']} in {run['failed_stage']}",
            f"{run['model_name']} v{run['model_version']}" if run["model_name"] else None,
            run["rows_read"],
            run["rows_scored"],
            run["rows_rejected"],
            run["rows_written"],
            run["extract_seconds"],
            run["predict_seconds"],
            run["load_seconds"],
            None if mean is None else f"{mean:.4f}",
            run["error"] if not run.get("remedy") else f"{run['error']} (remedy: {run['remedy']})",
        ]
        rows.append(
            f"<tr class='{html.escape(str(run['status']))}'>" + "".join(f"<td>{_cell(c)}</td>" for c in cells) + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "pipeline",
            "run",
            "window",
            "status",
            "model",
            "read",
            "scored",
            "rejected",
            "written",
            "extract s",
            "predict s",
            "load s",
            "mean score",
            "error",
        )
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Scoring runs</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{padding:4px 8px;"
        "border-bottom:1px solid #ddd;text-align:left;font-size:13px}tr.failed{background:#fde2e2}"
        "tr.running{background:#fff6d6}</style></head><body><h1>Scoring runs</h1>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>"
    )


class ScoringRunsPlugin(AirflowPlugin):
    name = "scoring_runs"
    fastapi_apps = [{"app": app, "url_prefix": "/scoring", "name": "Scoring runs"}]  # noqa: RUF012 (Airflow API)
    external_views = [  # noqa: RUF012 (Airflow API)
        {"name": "Scoring runs", "href": "/scoring/runs", "destination": "nav", "category": "browse"}
    ]

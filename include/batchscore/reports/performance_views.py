"""What the Scoring view shows of realised performance: a pipeline's evaluated windows, and one run's window.

Read from what was recorded, never recomputed: ``scoring.performance`` (the evaluation of each
window, per role), the run records (which windows were published, by which run), the pipeline
file's ``outcomes`` (the horizon: when a window's outcomes are complete) and the models'
manifests (their task; the training holdout metrics, the reference line). Each page is in one
of these states, with a sentence that says it:

- ``evaluated``: at least one window has realised metrics;
- ``no_labels``: a clusterer, whose segments have no outcome to be compared with;
- ``no_outcomes``: the pipeline declares no ``outcomes``, so nothing is evaluated;
- ``pending``: outcomes are declared, but no window is evaluated yet (each pending window says
  when its outcomes are complete);
- ``no_runs``: nothing was published yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from batchscore import settings
from batchscore.models.manifest import ModelManifest, RegistryError
from batchscore.models.registry import ModelRegistry
from batchscore.pipeline.config import load_config
from batchscore.pipeline.evaluation_config import OutcomesConfig
from batchscore.pipeline.windows import Window
from batchscore.reports import run_views
from batchscore.reports.performance_charts import CHART_METRICS, holdout_value, performance_chart, window_performance
from batchscore.reports.run_charts import window_label
from batchscore.run.evaluation import outcomes_due
from batchscore.sink.performance import performance_rows, window_performance_rows

NO_LABELS = "No labels, no realised performance: a clusterer's segments have no outcome to be compared with."
METRIC_TITLES = {
    "positive_rate": "positive rate",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "log_loss": "log loss",
    "brier": "Brier score",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
    "bias": "mean error (bias)",
    "mean_outcome": "mean outcome",
}
SHOWN_METRICS = {
    "classifier": ("positive_rate", *CHART_METRICS["classifier"]),
    "regressor": (*CHART_METRICS["regressor"], "mean_outcome"),
}


def pipeline_outcomes(pipeline: str) -> OutcomesConfig | None:
    """The pipeline file's ``outcomes``; None without one, or when the file is gone or invalid
    (its DAG's import error says why: this page only needs the horizon)."""
    try:
        return load_config(settings.pipelines_dir() / f"{pipeline}.yaml").outcomes
    except (OSError, ValueError):
        return None


def _manifest(registry: ModelRegistry, name: str | None, version: int | None) -> ModelManifest | None:
    """A model version's manifest, or None when it is not in this registry (an MLflow model, a deleted one)."""
    if name is None or version is None:
        return None
    try:
        return registry.resolve(name, str(version))
    except (RegistryError, OSError, ValueError):
        return None


def _holdouts(registry: ModelRegistry, rows: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Manifest metrics of every model version in ``rows`` (empty for a version whose manifest is not here)."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for key in {(r["model_name"], int(r["model_version"])) for r in rows}:
        manifest = _manifest(registry, *key)
        out[key] = dict(manifest.metrics) if manifest is not None else {}
    return out


def _calibration_chart(roles: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean score against observed rate per decile, one curve per role (classifiers only)."""
    curves = [{"role": r["role"], "model": r["model"], "points": r["calibration"]} for r in roles if r["calibration"]]
    return {"roles": curves} if curves else None


def _with_holdout(roles: list[dict[str, Any]], holdout: dict[tuple[str, int], dict[str, Any]]) -> list[dict]:
    """Each role's metrics beside its own model's training holdout value (None where the manifest has none)."""
    for role in roles:
        metrics = holdout.get((role["model_name"], int(role["model_version"])), {})
        role["holdout"] = {m: holdout_value(metrics, m) for m in role["metrics"]}
    return roles


def pipeline_performance(url: str, registry_root: str, pipeline: str, *, windows: int, now: datetime) -> dict[str, Any]:
    """The performance page of ``pipeline``: its metrics over the last ``windows`` evaluated windows.

    ``chart``: per metric, labels (windows), a series per role and the training reference;
    ``table``: per evaluated window, the run that published it and each role's recorded row;
    ``calibration``: the newest evaluated window's curves; ``pending``: published windows not
    evaluated yet, each with the time its outcomes are complete.
    """
    registry = ModelRegistry(registry_root)
    published = run_views.history(url, pipeline, limit=windows)
    rows = performance_rows(url, pipeline, windows=windows)
    outcomes = pipeline_outcomes(pipeline)
    newest_run = published[-1] if published else None
    task = rows[-1]["task"] if rows else None
    if task is None and newest_run is not None:
        manifest = _manifest(registry, newest_run["model_name"], newest_run["model_version"])
        task = manifest.task if manifest is not None else None
    holdout = _holdouts(registry, rows)
    chart = performance_chart(rows, holdout)
    run_of = {(r["window_start"], r["window_end"]): r["run_id"] for r in published}
    table: dict[tuple[datetime, datetime], dict[str, Any]] = {}
    for row in rows:
        key = (row["window_start"], row["window_end"])
        entry = table.setdefault(key, {"label": window_label(key[0]), "window": key, "run_id": run_of.get(key)})
        entry[row["role"]] = row
    evaluated = [r for r in rows if r["status"] == "evaluated"]
    newest = window_performance(rows, evaluated[-1]["window_start"]) if evaluated else []
    pending = []
    if outcomes is not None:
        for run in reversed(published):
            key = (run["window_start"], run["window_end"])
            if key not in table:
                due = outcomes_due(outcomes, Window(*key))
                pending.append({"label": window_label(key[0]), "run_id": run["run_id"], "due": due, "past": due <= now})
    if task == "clusterer":
        state = "no_labels"
    elif chart is not None:
        state = "evaluated"
    elif outcomes is None:
        state = "no_outcomes"
    elif not published:
        state = "no_runs"
    else:
        state = "pending"
    return {
        "pipeline": pipeline,
        "task": task,
        "state": state,
        "horizon": outcomes.horizon if outcomes is not None else None,
        "metrics": SHOWN_METRICS.get(task or "", ()),
        "chart": _chart_data(chart),
        "table": sorted(table.values(), key=lambda e: e["window"], reverse=True),
        "newest": _with_holdout(newest, holdout),
        "calibration": _calibration_chart(newest),
        "pending": pending,
    }


def _chart_data(chart: dict[str, Any] | None) -> dict[str, Any]:
    """The page's chart JSON, one entry per metric canvas: its windows, series per role and reference."""
    if chart is None:
        return {}
    return {
        name: {"labels": chart["windows"], "series": data["series"], "reference": data["reference"]}
        for name, data in chart["metrics"].items()
        if any(v is not None for points in data["series"].values() for v in points)
    }


def run_performance(url: str, registry_root: str, run: dict[str, Any], *, now: datetime) -> dict[str, Any] | None:
    """The realised performance of a run's window for its page; None for a run that published no window.

    ``state`` as the module says (``no_runs`` never: the run is one); ``roles``: each role's
    recorded metrics beside its training holdout, with calibration points; ``due``: when the
    window's outcomes are complete (``pending``); ``later_model``: the window's scores were
    evaluated under another version than this run's (a later run re-scored it).
    """
    if run["status"] != "success" or run["window_start"] is None or run["window_end"] is None:
        return None
    registry = ModelRegistry(registry_root)
    pipeline, start, end = run["pipeline"], run["window_start"], run["window_end"]
    rows = window_performance_rows(url, pipeline, start, end)
    manifest = _manifest(registry, run["model_name"], run["model_version"])
    task = rows[0]["task"] if rows else (manifest.task if manifest is not None else None)
    outcomes = pipeline_outcomes(pipeline)
    roles = _with_holdout(window_performance(rows, start), _holdouts(registry, rows))
    champion = next((r for r in rows if r["role"] == "champion"), None)
    due = outcomes_due(outcomes, Window(start, end)) if outcomes is not None else None
    if task == "clusterer":
        state = "no_labels"
    elif any(r["status"] == "evaluated" for r in rows):
        state = "evaluated"
    elif outcomes is None:
        state = "no_outcomes"
    else:
        state = "pending"
    return {
        "state": state,
        "task": task,
        "horizon": outcomes.horizon if outcomes is not None else None,
        "due": due,
        "due_past": due is not None and due <= now,
        "metrics": SHOWN_METRICS.get(task or "", ()),
        "roles": roles,
        "calibration": _calibration_chart(roles),
        "later_model": champion is not None and champion["model_version"] != run["model_version"],
        "evaluated_at": max((r["evaluated_at"] for r in rows), default=None),
    }

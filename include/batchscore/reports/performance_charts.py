"""The Scoring view's performance charts, shaped from ``scoring.performance`` (tested without a browser).

Per pipeline: each metric over its evaluated windows, one series per role (champion, challenger),
with the model's training holdout value (its manifest's ``metrics``) as the reference line; per
window: the realised metrics and the calibration curve (mean score against the observed rate per
score decile). Nothing is recomputed: every point is a recorded row. No row, no chart (None).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from batchscore.reports.run_charts import window_label

CHART_METRICS = {
    "classifier": ("roc_auc", "pr_auc", "log_loss", "brier"),
    "regressor": ("rmse", "mae", "r2", "bias"),
}


def holdout_value(metrics: dict[str, Any] | None, name: str) -> float | None:
    """The training holdout's value of metric ``name`` from a manifest's ``metrics``, when it has one."""
    for key in (f"holdout_{name}", name):  # the demo's manifests say holdout_roc_auc
        value = (metrics or {}).get(key)
        if isinstance(value, int | float):
            return float(value)
    return None


def performance_chart(
    rows: Sequence[dict[str, Any]], holdout: dict[tuple[str, int], dict[str, Any]]
) -> dict[str, Any] | None:
    """Metric series over windows per role: ``{"task", "windows", "metrics": {name: {"series", "reference"}}}``.

    ``rows``: the pipeline's ``scoring.performance`` rows, oldest first; ``holdout``: manifest
    metrics by (model name, version). The reference is the champion's holdout value of the
    newest window.
    """
    evaluated = [r for r in rows if r["status"] == "evaluated"]
    if not evaluated:
        return None
    task = evaluated[-1]["task"]
    starts: list[datetime] = sorted({r["window_start"] for r in evaluated})
    labels = [window_label(s) for s in starts]
    newest = (
        next(r for r in reversed(evaluated) if r["role"] == "champion")
        if any(r["role"] == "champion" for r in evaluated)
        else evaluated[-1]
    )
    metrics: dict[str, Any] = {}
    for name in CHART_METRICS.get(task, ()):
        series = {}
        for role in ("champion", "challenger"):
            points = {r["window_start"]: r["metrics"].get(name) for r in evaluated if r["role"] == role}
            if points:
                series[role] = [points.get(s) for s in starts]
        reference = holdout_value(holdout.get((newest["model_name"], newest["model_version"])), name)
        metrics[name] = {"series": series, "reference": reference}
    return {"task": task, "windows": labels, "metrics": metrics}


def window_performance(rows: Sequence[dict[str, Any]], window_start: datetime | None) -> list[dict[str, Any]]:
    """The realised metrics of one window, per role, with its calibration points (for the run page)."""
    out = []
    for row in rows:
        if row["window_start"] != window_start:
            continue
        calibration = (
            [{"x": b["mean_score"], "y": b["observed_rate"], "rows": b["rows"]} for b in row["curves"]]
            if row["task"] == "classifier"
            else None
        )
        out.append(
            {
                "role": row["role"],
                "model": f"{row['model_name']} v{row['model_version']}",
                "model_name": row["model_name"],
                "model_version": row["model_version"],
                "status": row["status"],
                "reason": row["reason"],
                "rows_matched": row["rows_matched"],
                "rows_without_outcome": row["rows_without_outcome"],
                "metrics": row["metrics"],
                "calibration": calibration,
            }
        )
    return out

"""Run records shaped as the scores database returns them, for the UI's tests without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

DAY = datetime(2026, 10, 20, tzinfo=UTC)
FEATURES = ("tenure_months", "monthly_charges", "plan")


def histogram(shift: float, rows: int = 1_000) -> dict[str, list[Any]]:
    """20 equal bins over [shift, shift + 0.8], counts summing to ``rows``."""
    edges = [shift + 0.04 * i for i in range(21)]
    weights = [1 + (i if i < 10 else 19 - i) for i in range(20)]
    counts = [round(rows * w / sum(weights)) for w in weights]
    return {"edges": edges, "counts": counts}


def run(day: int, *, status: str = "success", pipeline: str = "churn", **changes: Any) -> dict[str, Any]:
    start = DAY + timedelta(days=day)
    record: dict[str, Any] = {
        "pipeline": pipeline,
        "run_id": f"manual__{start:%Y-%m-%d}",
        "window_start": start,
        "window_end": start + timedelta(days=1),
        "status": status,
        "model_name": "churn",
        "model_version": 2,
        "model_sha256": "ab" * 32,
        "output_table": "scoring.churn_scores",
        "rows_read": 3_000,
        "rows_scored": 2_970,
        "rows_rejected": 30 + day,
        "rows_written": 2_970,
        "plan_seconds": 1.5,
        "extract_seconds": 0.4,
        "predict_seconds": 0.9,
        "load_seconds": 0.3,
        "score_summary": {
            "count": 2_970,
            "mean": 0.3 + 0.01 * day,
            "min": 0.01,
            "max": 0.95,
            "p10": 0.05,
            "p50": 0.3,
            "p90": 0.7,
            "labels": {"0": 2_000, "1": 970},
            "histogram": histogram(0.01 * day),
        },
        "slices": [
            {
                "index": 0,
                "lower": None,
                "upper": None,
                "rows_in": 3_000,
                "rows_rejected": 30,
                "seconds": 1.2,
                "read_seconds": 0.3,
                "score_seconds": 0.8,
                "host": "worker-a",
            }
        ],
        "error": None,
        "failed_stage": None,
        "remedy": None,
        "unused_columns": [],
        "drift_status": "ok",
        "drift_max_psi": 0.05,
        "shadow": None,
        "model_source": None,
        "read_cpu_seconds": 0.2,
        "score_cpu_seconds": 0.6 + 0.01 * day,
        "load_cpu_seconds": 0.1,
        "publish_cpu_seconds": 0.05,
        "startup_cpu_seconds": 2.0,
        "model_cpu_seconds": 0.4,
        "cpu_seconds": 3.5,
        "rows_per_cpu_second": 2_970 / 3.5,
        "alerts_sent": None,
        "deadline_missed_at": None,
        "started_at": start + timedelta(days=1, hours=2),
        "finished_at": start + timedelta(days=1, hours=2, minutes=1),
    }
    record.update(changes)
    return record


def drift_rows(record: dict[str, Any], psi: float = 0.05) -> list[dict[str, Any]]:
    rows = []
    for i, feature in enumerate((*FEATURES, "(score)")):
        value = psi * (i + 1)
        rows.append(
            {
                "run_id": record["run_id"],
                "window_start": record["window_start"],
                "window_end": record["window_end"],
                "feature": feature,
                "kind": "score" if feature == "(score)" else ("categorical" if feature == "plan" else "numeric"),
                "psi": value,
                "threshold": 0.2,
                "drifted": value > 0.2,
                "bins": {"labels": ["[0, 0.5)", "[0.5, 1]"], "reference": [0.6, 0.4], "observed": [0.5, 0.5]},
            }
        )
    return rows


SHADOW = {
    "model_name": "churn",
    "model_version": 3,
    "model_sha256": "cd" * 32,
    "table": "scoring.churn_scores_shadow",
    "rows": 2_970,
    "label_agreement": 0.93,
    "mean_abs_diff": 0.04,
    "psi": 0.02,
    "published": True,
}


def performance_row(day: int, role: str, *, version: int = 2, task: str = "classifier", **changes: Any) -> dict:
    """A ``scoring.performance`` row of the window of ``run(day)``: ROC AUC 0.80 + 0.01 * day (challenger +0.02)."""
    start = DAY + timedelta(days=day)
    gain = 0.02 if role == "challenger" else 0.0
    metrics: dict[str, Any] = (
        {"positive_rate": 0.3, "roc_auc": 0.8 + 0.01 * day + gain, "pr_auc": 0.6, "log_loss": 0.5, "brier": 0.17}
        if task == "classifier"
        else {"rmse": 40.0 + day, "mae": 30.0, "r2": 0.5, "bias": -1.5, "mean_outcome": 120.0}
    )
    curves: list[Any] = (
        [{"rows": 297, "mean_score": (i + 0.5) / 10, "observed_rate": (i + 0.4) / 10} for i in range(10)]
        if task == "classifier"
        else [-30.0 + 6 * i for i in range(9)]
    )
    row: dict[str, Any] = {
        "pipeline": "churn",
        "window_start": start,
        "window_end": start + timedelta(days=1),
        "model_name": "churn" if role == "champion" else "churn_challenger",
        "model_version": version,
        "role": role,
        "task": task,
        "status": "evaluated",
        "reason": None,
        "rows_scored": 2_970,
        "rows_matched": 2_960,
        "rows_without_outcome": 10,
        "outcomes_unmatched": 0,
        "metrics": metrics,
        "curves": curves,
        "run_id": f"scheduled__{start:%Y-%m-%d}",
        "evaluated_at": start + timedelta(days=31),
    }
    return {**row, **changes}

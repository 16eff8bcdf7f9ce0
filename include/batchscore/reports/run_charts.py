"""Chart series from recorded runs: what the UI draws, shaped here so it is tested without a browser.

Every series comes from what runs recorded (the score summary's histogram, row counts,
``scoring.drift`` bins, the shadow comparison); nothing is rescored. A chart whose data
does not exist (no histogram, no drift reference, no challenger) is ``None`` and not drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time
from typing import Any

SCORE_FEATURE = "(score)"
PREVIOUS_DISTRIBUTIONS = 5


def window_label(start: datetime | None) -> str:
    """A window by its start: the date alone when it starts at midnight UTC."""
    if start is None:
        return "?"
    return f"{start:%Y-%m-%d}" if start.timetz() == time(0, tzinfo=start.tzinfo) else f"{start:%Y-%m-%d %H:%M}"


def density(histogram: dict[str, Any] | None) -> list[dict[str, float]] | None:
    """Histogram bins as (bin centre, density) points: fraction of rows per unit of score.

    Runs bin their own [min, max] range, so their counts are not comparable bin by bin;
    densities are, on one score axis.
    """
    if not histogram:
        return None
    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    total = sum(counts)
    if len(edges) != len(counts) + 1 or total <= 0:
        return None
    points = []
    for low, high, count in zip(edges[:-1], edges[1:], counts, strict=True):
        width = high - low
        points.append({"x": (low + high) / 2, "y": count / total / width if width > 0 else 0.0})
    return points


def _histogram(run: dict[str, Any]) -> dict[str, Any] | None:
    summary = run.get("score_summary")
    return summary.get("histogram") if isinstance(summary, dict) else None


def distribution(run: dict[str, Any], earlier: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """This run's score density beside the latest ``PREVIOUS_DISTRIBUTIONS`` earlier windows'."""
    own = density(_histogram(run))
    if own is None:
        return None
    previous = []
    for other in reversed(earlier):
        if other["run_id"] == run["run_id"]:
            continue
        points = density(_histogram(other))
        if points is not None:
            previous.append({"label": window_label(other["window_start"]), "run_id": other["run_id"], "points": points})
        if len(previous) == PREVIOUS_DISTRIBUTIONS:
            break
    return {
        "run": {"label": window_label(run.get("window_start")), "run_id": run["run_id"], "points": own},
        "previous": previous,
        "counts": (_histogram(run) or {}).get("counts"),
    }


def versus_reference(drift_rows: Sequence[dict[str, Any]], run_id: str) -> dict[str, Any] | None:
    """The run's score distribution against the model's training reference, on the drift check's bins."""
    for row in drift_rows:
        if row["run_id"] == run_id and row["feature"] == SCORE_FEATURE:
            bins = row["bins"] or {}
            return {
                "labels": [str(label) for label in bins.get("labels", [])],
                "reference": bins.get("reference", []),
                "observed": bins.get("observed", []),
                "psi": row["psi"],
                "threshold": row["threshold"],
                "drifted": row["drifted"],
            }
    return None


def trend(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean score and reject rate (rejected / read) per window, oldest first; None when no window read a row."""
    points = []
    for run in runs:
        summary = run.get("score_summary") if isinstance(run.get("score_summary"), dict) else {}
        read = run.get("rows_read") or 0
        points.append(
            {
                "label": window_label(run["window_start"]),
                "run_id": run["run_id"],
                "mean": summary.get("mean") if summary else None,
                "reject_rate": (run.get("rows_rejected") or 0) / read if read else None,
            }
        )
    if not any(p["mean"] is not None or p["reject_rate"] is not None for p in points):
        return None  # a clusterer has no mean score, but its reject rate still tells a story
    return {
        "labels": [p["label"] for p in points],
        "run_ids": [p["run_id"] for p in points],
        "mean": [p["mean"] for p in points],
        "reject_rate": [p["reject_rate"] for p in points],
    }


def drift_heatmap(runs: Sequence[dict[str, Any]], drift_rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """PSI per feature (rows, the score last) and window (columns) over ``runs``; None without drift rows."""
    by_run = {run["run_id"]: run for run in runs}
    cells = [row for row in drift_rows if row["run_id"] in by_run]
    if not cells:
        return None
    features = sorted({row["feature"] for row in cells}, key=lambda f: (f == SCORE_FEATURE, f))
    columns = [run for run in runs if any(row["run_id"] == run["run_id"] for row in cells)]
    return {
        "features": features,
        "windows": [window_label(run["window_start"]) for run in columns],
        "run_ids": [run["run_id"] for run in columns],
        "cells": [
            {
                "x": window_label(by_run[row["run_id"]]["window_start"]),
                "y": row["feature"],
                "psi": row["psi"],
                "threshold": row["threshold"],
                "drifted": row["drifted"],
                "run_id": row["run_id"],
            }
            for row in cells
        ],
        "max_threshold": max(row["threshold"] for row in cells),
    }


def feature_drift(drift_rows: Sequence[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """The run's drift rows, most drifted first (the table under the heat map)."""
    rows = [row for row in drift_rows if row["run_id"] == run_id]
    return sorted(rows, key=lambda r: (-(r["psi"] or 0.0), r["feature"]))


def shadow_trend(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Champion/challenger agreement per window (label agreement, mean |score difference|, PSI); None without one."""
    shadowed = [run for run in runs if isinstance(run.get("shadow"), dict)]
    if not shadowed:
        return None
    return {
        "labels": [window_label(run["window_start"]) for run in shadowed],
        "run_ids": [run["run_id"] for run in shadowed],
        "challengers": [
            f"{run['shadow'].get('model_name', '?')} v{run['shadow'].get('model_version', '?')}" for run in shadowed
        ],
        "label_agreement": [run["shadow"].get("label_agreement") for run in shadowed],
        "mean_abs_diff": [run["shadow"].get("mean_abs_diff") for run in shadowed],
        "psi": [run["shadow"].get("psi") for run in shadowed],
    }


def cost_trend(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """CPU per million rows scored (all of a run, and scoring alone) and rows per CPU second, per window, oldest first.

    None when no run recorded its CPU (runs from before the engine measured it).
    """
    points = []
    for run in runs:
        rows = run.get("rows_scored") or 0
        total, score = run.get("cpu_seconds"), run.get("score_cpu_seconds")
        points.append(
            {
                "label": window_label(run["window_start"]),
                "run_id": run["run_id"],
                "cpu_per_mrow": total / rows * 1e6 if total is not None and rows else None,
                "score_cpu_per_mrow": score / rows * 1e6 if score is not None and rows else None,
                "rows_per_cpu_second": run.get("rows_per_cpu_second"),
            }
        )
    if not any(p["cpu_per_mrow"] is not None for p in points):
        return None
    return {
        "labels": [p["label"] for p in points],
        "run_ids": [p["run_id"] for p in points],
        "cpu_per_mrow": [p["cpu_per_mrow"] for p in points],
        "score_cpu_per_mrow": [p["score_cpu_per_mrow"] for p in points],
        "rows_per_cpu_second": [p["rows_per_cpu_second"] for p in points],
    }

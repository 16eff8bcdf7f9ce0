"""Realised performance in the scores DB: a window's published scores read back, its evaluation recorded.

``scoring.performance`` holds one row per (pipeline, window, model version, role); a window's
rows are replaced together in one transaction, so a reader sees the old evaluation or the new
one, and a window re-scored by another model keeps no row of the model it no longer has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from batchscore import db
from batchscore.pipeline.windows import Window
from batchscore.sink.output_table import table_ident


@dataclass(frozen=True)
class RolePerformance:
    """One model's realised performance on one window (a ``scoring.performance`` row)."""

    role: str  # champion | challenger
    model_name: str
    model_version: int
    task: str
    status: str  # evaluated | no_labels
    reason: str | None
    rows_scored: int
    rows_matched: int
    rows_without_outcome: int
    outcomes_unmatched: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    curves: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def published_scores(url: str, table: str, key: str, window: Window) -> tuple[pa.Table, list[tuple[str, int]]]:
    """The window's published rows of ``table`` as (key as text, score, label), and the models that scored them.

    Only published windows are partitions of the scores table, so what is read is what readers
    see. An absent table reads as no rows.
    """
    with db.pg_connect(url) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table_ident(table).as_string(conn),)).fetchone() == (None,):
            return pa.table({"key": pa.array([], pa.string()), "score": [], "label": []}), []
        cur = conn.execute(
            sql.SQL(
                "SELECT s.{key}::text, s.score, s.label, l.model_name, l.model_version FROM {table} AS s "
                "JOIN scoring.lineage AS l USING (lineage_id) WHERE s.window_start = %s AND s.window_end = %s"
            ).format(key=sql.Identifier(key), table=table_ident(table)),
            (window.start, window.end),
        )
        rows = cur.fetchall()
    models = sorted({(r[3], int(r[4])) for r in rows})
    return (
        pa.table(
            {
                "key": pa.array([r[0] for r in rows], pa.string()),
                "score": pa.array([r[1] for r in rows], pa.float64()),
                "label": pa.array([r[2] for r in rows], pa.string()),
            }
        ),
        models,
    )


def replace_performance(
    conn: psycopg.Connection[Any], *, pipeline: str, window: Window, run_id: str, rows: Sequence[RolePerformance]
) -> None:
    """Replace every performance row of (pipeline, window) by ``rows``, in one transaction."""
    with conn.transaction():
        conn.execute(
            "DELETE FROM scoring.performance WHERE pipeline = %s AND window_start = %s AND window_end = %s",
            (pipeline, window.start, window.end),
        )
        for row in rows:
            conn.execute(
                "INSERT INTO scoring.performance (pipeline, window_start, window_end, model_name, model_version, "
                "role, task, status, reason, rows_scored, rows_matched, rows_without_outcome, outcomes_unmatched, "
                "metrics, curves, run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    pipeline,
                    window.start,
                    window.end,
                    row.model_name,
                    row.model_version,
                    row.role,
                    row.task,
                    row.status,
                    row.reason,
                    row.rows_scored,
                    row.rows_matched,
                    row.rows_without_outcome,
                    row.outcomes_unmatched,
                    json.dumps(row.metrics),
                    json.dumps(row.curves),
                    run_id,
                ),
            )


def performance_rows(url: str, pipeline: str, *, windows: int | None = None) -> list[dict[str, Any]]:
    """The recorded performance of ``pipeline``'s last ``windows`` evaluated windows (all: None), oldest first."""
    with db.pg_connect(url) as conn:
        if conn.execute("SELECT to_regclass('scoring.performance')").fetchone() == (None,):
            return []
        cur = conn.execute(
            "WITH recent AS (SELECT DISTINCT window_start, window_end FROM scoring.performance WHERE pipeline = %s "
            "ORDER BY window_start DESC LIMIT %s) "
            "SELECT p.* FROM scoring.performance AS p JOIN recent USING (window_start, window_end) "
            "WHERE p.pipeline = %s ORDER BY p.window_start, p.role",
            (pipeline, windows if windows is not None else 100_000, pipeline),
        )
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def window_performance_rows(url: str, pipeline: str, window_start: datetime, window_end: datetime) -> list[dict]:
    """The recorded performance of one window of ``pipeline`` (one row per role; none before it is evaluated)."""
    with db.pg_connect(url) as conn:
        if conn.execute("SELECT to_regclass('scoring.performance')").fetchone() == (None,):
            return []
        cur = conn.execute(
            "SELECT * FROM scoring.performance WHERE pipeline = %s AND window_start = %s AND window_end = %s "
            "ORDER BY role",
            (pipeline, window_start, window_end),
        )
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def window_of(row: dict[str, Any]) -> tuple[datetime, datetime]:
    return row["window_start"], row["window_end"]


def published_runs(
    url: str, pipeline: str, windows: Sequence[tuple[datetime, datetime]]
) -> dict[tuple[Any, Any], dict]:
    """The latest successful run of each window: its shadow agreement (label agreement, score PSI) and drift."""
    if not windows:
        return {}
    with db.pg_connect(url) as conn:
        cur = conn.execute(
            "SELECT DISTINCT ON (window_start, window_end) window_start, window_end, run_id, model_version, shadow, "
            "drift_status, drift_max_psi FROM scoring.scoring_runs WHERE pipeline = %s AND status = 'success' "
            "AND window_start = ANY(%s) ORDER BY window_start, window_end, finished_at DESC NULLS LAST",
            (pipeline, [w[0] for w in windows]),
        )
        names = [c.name for c in cur.description or ()]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return {(r["window_start"], r["window_end"]): r for r in rows}


def record_decision(
    url: str,
    *,
    pipeline: str,
    run_id: str,
    model_name: str,
    alias: str,
    from_version: int | None,
    to_version: int,
    decision: str,
    decided_by: str | None,
    evidence: dict[str, Any],
) -> None:
    """Record one promotion request's decision (approved, rejected or expired); a retried task writes it once."""
    with db.pg_connect(url, autocommit=True) as conn:
        from batchscore.sink.run_record import apply_schema

        apply_schema(conn)
        conn.execute(
            "INSERT INTO scoring.promotion_decisions (pipeline, run_id, model_name, alias, from_version, to_version, "
            "decision, decided_by, evidence) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (pipeline, run_id) DO UPDATE SET decision = EXCLUDED.decision, "
            "decided_by = EXCLUDED.decided_by, decided_at = now(), evidence = EXCLUDED.evidence",
            (pipeline, run_id, model_name, alias, from_version, to_version, decision, decided_by, json.dumps(evidence)),
        )


def decisions(url: str, pipeline: str) -> list[dict[str, Any]]:
    """Every recorded promotion decision of ``pipeline``, newest first."""
    with db.pg_connect(url) as conn:
        if conn.execute("SELECT to_regclass('scoring.promotion_decisions')").fetchone() == (None,):
            return []
        cur = conn.execute(
            "SELECT * FROM scoring.promotion_decisions WHERE pipeline = %s ORDER BY decided_at DESC", (pipeline,)
        )
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

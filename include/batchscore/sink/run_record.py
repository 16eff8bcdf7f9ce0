"""Run records: one ``scoring.scoring_runs`` row per (pipeline, Airflow run).

A run is recorded as ``running`` when it is planned, and finished as ``success`` (in the
same transaction that publishes its scores), ``dry_run``, or ``failed`` with its error.
A retried task updates the same row, so counts are never added twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from batchscore import db, settings
from batchscore.pipeline.windows import Window
from batchscore.scoring.drift import DriftReport
from batchscore.sink.run_cost import RunCpu


def apply_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the shared audit, lineage and rejects tables if they are missing (idempotent; autocommit ``conn``)."""
    ddl = (settings.sql_dir() / "scoring.sql").read_text()
    # Concurrent first runs race on CREATE ... IF NOT EXISTS; serialise them.
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('batchscore:ddl', 0))")
        conn.execute(ddl.encode())  # bytes: the DDL is sent as it is, no placeholder parsing


def record_start(
    conn: psycopg.Connection[Any],
    *,
    pipeline: str,
    run_id: str,
    window: Window,
    model_name: str,
    model_version: int,
    model_sha256: str,
    output_table: str,
    unused_columns: list[str] | None = None,
    model_source: dict[str, Any] | None = None,
) -> None:
    """Mark the run as running (a rerun of the same Airflow run resets its row).

    ``unused_columns``: what the source query returns that the model does not use.
    ``model_source``: where the model came from when not from the registry itself (MLflow:
    the model URI, the version the alias resolved to, its run id and the artifact's sha256).
    """
    conn.execute(
        """
        INSERT INTO scoring.scoring_runs AS r
            (pipeline, run_id, window_start, window_end, status, model_name, model_version,
             model_sha256, output_table, unused_columns, model_source)
        VALUES (%s, %s, %s, %s, 'running', %s, %s, %s, %s, %s, %s::jsonb)
        ON CONFLICT (pipeline, run_id) DO UPDATE SET
            window_start = excluded.window_start, window_end = excluded.window_end, status = 'running',
            model_name = excluded.model_name, model_version = excluded.model_version,
            model_sha256 = excluded.model_sha256, output_table = excluded.output_table,
            unused_columns = excluded.unused_columns, model_source = excluded.model_source,
            rows_read = NULL, rows_scored = NULL, rows_rejected = NULL, rows_written = NULL,
            extract_seconds = NULL, predict_seconds = NULL, load_seconds = NULL, plan_seconds = NULL,
            slices = NULL, lineage_id = NULL, score_summary = NULL, error = NULL, failed_stage = NULL,
            remedy = NULL, drift_status = NULL, drift_max_psi = NULL, shadow = NULL, volume = NULL, started_at = now(),
            finished_at = NULL, read_cpu_seconds = NULL, score_cpu_seconds = NULL, load_cpu_seconds = NULL,
            publish_cpu_seconds = NULL, startup_cpu_seconds = NULL, model_cpu_seconds = NULL, cpu_seconds = NULL,
            rows_per_cpu_second = NULL
        """,
        (
            pipeline,
            run_id,
            window.start,
            window.end,
            model_name,
            model_version,
            model_sha256,
            output_table,
            unused_columns or [],
            json.dumps(model_source) if model_source is not None else None,
        ),
    )


def record_plan_seconds(conn: psycopg.Connection[Any], *, pipeline: str, run_id: str, seconds: float) -> None:
    conn.execute(
        "UPDATE scoring.scoring_runs SET plan_seconds = %s WHERE pipeline = %s AND run_id = %s",
        (seconds, pipeline, run_id),
    )


@dataclass(frozen=True)
class RunTotals:
    """What a finished run did, summed over its slices."""

    rows_read: int
    rows_scored: int
    rows_rejected: int
    rows_written: int
    extract_seconds: float
    predict_seconds: float
    load_seconds: float
    score_summary: dict[str, object]
    lineage_id: int | None
    slices: list[dict[str, Any]]
    cpu: RunCpu | None = None  # CPU seconds per stage, rows per CPU second


def record_finish(conn: psycopg.Connection[Any], *, pipeline: str, run_id: str, status: str, totals: RunTotals) -> None:
    """Finish the run record; called inside the publish transaction, so it commits with the scores."""
    conn.execute(
        """
        UPDATE scoring.scoring_runs SET status = %s, rows_read = %s, rows_scored = %s, rows_rejected = %s,
            rows_written = %s, extract_seconds = %s, predict_seconds = %s, load_seconds = %s,
            score_summary = %s::jsonb, lineage_id = %s, slices = %s::jsonb, error = NULL, failed_stage = NULL,
            remedy = NULL, finished_at = now(), read_cpu_seconds = %s, score_cpu_seconds = %s,
            load_cpu_seconds = %s, publish_cpu_seconds = %s, startup_cpu_seconds = %s, model_cpu_seconds = %s,
            cpu_seconds = %s, rows_per_cpu_second = %s
        WHERE pipeline = %s AND run_id = %s
        """,
        (
            status,
            totals.rows_read,
            totals.rows_scored,
            totals.rows_rejected,
            totals.rows_written,
            totals.extract_seconds,
            totals.predict_seconds,
            totals.load_seconds,
            json.dumps(totals.score_summary),
            totals.lineage_id,
            json.dumps(totals.slices),
            *_cpu_values(totals.cpu),
            pipeline,
            run_id,
        ),
    )


def _cpu_values(cpu: RunCpu | None) -> tuple[float | None, ...]:
    """The run's CPU columns in ``record_finish``'s order (all NULL when the slices recorded none)."""
    if cpu is None:
        return (None,) * 8
    return (cpu.read, cpu.score, cpu.load, cpu.publish, cpu.startup, cpu.model, cpu.total, cpu.rows_per_cpu_second)


def record_drift(
    conn: psycopg.Connection[Any], *, pipeline: str, run_id: str, window: Window, report: DriftReport
) -> None:
    """The run's drift rows (replacing a retry's) and its verdict; inside the publish transaction."""
    conn.execute("DELETE FROM scoring.drift WHERE pipeline = %s AND run_id = %s", (pipeline, run_id))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO scoring.drift (pipeline, run_id, window_start, window_end, feature, kind, psi, threshold, "
            "drifted, bins) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
            [
                (
                    pipeline,
                    run_id,
                    window.start,
                    window.end,
                    c.column,
                    c.kind,
                    c.psi,
                    c.threshold,
                    c.drifted,
                    json.dumps(c.bins_json()),
                )
                for c in report.columns
            ],
        )
    conn.execute(
        "UPDATE scoring.scoring_runs SET drift_status = %s, drift_max_psi = %s WHERE pipeline = %s AND run_id = %s",
        (report.status, report.max_psi, pipeline, run_id),
    )


def record_shadow(conn: psycopg.Connection[Any], *, pipeline: str, run_id: str, shadow: dict[str, Any]) -> None:
    """The run's challenger: model, table, counts, agreement with the champion, published or not."""
    conn.execute(
        "UPDATE scoring.scoring_runs SET shadow = %s::jsonb WHERE pipeline = %s AND run_id = %s",
        (json.dumps(shadow), pipeline, run_id),
    )


def record_event(
    conn: psycopg.Connection[Any], *, pipeline: str, run_id: str | None, stage: str, event: str, detail: str
) -> None:
    """Something that happened to a run beside its outcome (a publish that waited for readers, a slice
    attempt replaced, a sweep), kept in ``scoring.run_events``; in the caller's transaction."""
    conn.execute(
        "INSERT INTO scoring.run_events (pipeline, run_id, stage, event, detail) VALUES (%s, %s, %s, %s, %s)",
        (pipeline, run_id, stage, event, detail[:4000]),
    )


def record_event_now(url: str, *, pipeline: str, run_id: str | None, stage: str, event: str, detail: str) -> None:
    """:func:`record_event` in a transaction of its own."""
    with db.pg_connect(url, autocommit=True) as conn:
        record_event(conn, pipeline=pipeline, run_id=run_id, stage=stage, event=event, detail=detail)


def run_events(url: str, *, pipeline: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """A pipeline's recorded events (one run's with ``run_id``), oldest first."""
    with db.pg_connect(url) as conn:
        cur = conn.execute(
            "SELECT run_id, at, stage, event, detail FROM scoring.run_events WHERE pipeline = %s "
            "AND (%s::text IS NULL OR run_id = %s) ORDER BY event_id",
            (pipeline, run_id, run_id),
        )
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def record_volume(conn: psycopg.Connection[Any], *, pipeline: str, run_id: str, verdict: dict[str, Any]) -> None:
    """The volume guard's verdict on the run (rows, the floor, its basis; held or allowed)."""
    conn.execute(
        "UPDATE scoring.scoring_runs SET volume = %s::jsonb WHERE pipeline = %s AND run_id = %s",
        (json.dumps(verdict), pipeline, run_id),
    )


def record_failure(
    url: str,
    *,
    pipeline: str,
    run_id: str,
    error: str,
    stage: str | None = None,
    remedy: str | None = None,
    window: Window | None = None,
    output_table: str | None = None,
) -> bool:
    """Record a run as failed, with the stage, a one-line cause and the remedy.

    Upserts: a run that failed in ``plan`` has no row yet (its window may not even be known).
    A run recorded as ``success`` is failed too: a task of it was cleared and failed again, and
    Airflow shows the run failed (the caller says in ``error`` what the window holds then).
    """
    with db.pg_connect(url, autocommit=True) as conn:
        apply_schema(conn)  # a run failing on its first day may fail before plan created the tables
        cur = conn.execute(
            """
            INSERT INTO scoring.scoring_runs AS r
                (pipeline, run_id, window_start, window_end, output_table, status, error, failed_stage, remedy,
                 finished_at)
            VALUES (%s, %s, %s, %s, %s, 'failed', %s, %s, %s, now())
            ON CONFLICT (pipeline, run_id) DO UPDATE SET
                status = 'failed', error = excluded.error, failed_stage = excluded.failed_stage,
                remedy = excluded.remedy, finished_at = now(),
                window_start = coalesce(r.window_start, excluded.window_start),
                window_end = coalesce(r.window_end, excluded.window_end),
                output_table = coalesce(r.output_table, excluded.output_table)
            """,
            (
                pipeline,
                run_id,
                window.start if window else None,
                window.end if window else None,
                output_table,
                error[:4000],
                stage,
                (remedy or "")[:1000] or None,
            ),
        )
        return cur.rowcount > 0


RUN_COLUMNS = (
    "pipeline",
    "run_id",
    "window_start",
    "window_end",
    "status",
    "model_name",
    "model_version",
    "rows_read",
    "rows_scored",
    "rows_rejected",
    "rows_written",
    "plan_seconds",
    "extract_seconds",
    "predict_seconds",
    "load_seconds",
    "score_summary",
    "slices",
    "error",
    "failed_stage",
    "remedy",
    "unused_columns",
    "drift_status",
    "drift_max_psi",
    "shadow",
    "model_source",
    "volume",
    "read_cpu_seconds",
    "score_cpu_seconds",
    "load_cpu_seconds",
    "publish_cpu_seconds",
    "startup_cpu_seconds",
    "model_cpu_seconds",
    "cpu_seconds",
    "rows_per_cpu_second",
    "alerts_sent",
    "deadline_missed_at",
    "started_at",
    "finished_at",
)


def recent_runs(url: str, *, pipeline: str | None = None, limit: int = 50) -> list[dict[str, object]]:
    """The latest run records, newest first (what the UI's scoring-runs view shows)."""
    limit = max(1, min(int(limit), 500))
    with db.pg_connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('scoring.scoring_runs')").fetchone()
        if not exists or exists[0] is None:
            return []
        cur = conn.execute(
            sql.SQL(
                "SELECT {columns} FROM scoring.scoring_runs "
                "WHERE %(pipeline)s::text IS NULL OR pipeline = %(pipeline)s "
                "ORDER BY started_at DESC LIMIT %(limit)s"
            ).format(columns=sql.SQL(", ").join(map(sql.Identifier, RUN_COLUMNS))),
            {"pipeline": pipeline, "limit": limit},
        )
        return [dict(zip(RUN_COLUMNS, row, strict=True)) for row in cur.fetchall()]


def claim_alert(url: str, *, pipeline: str, run_id: str, event: str) -> bool:
    """Mark ``event`` as sent for the run; False when it already was (so each event goes out once per run).

    The claim is one atomic UPDATE, so slice tasks failing side by side send one message between
    them. A run without a record (the scores database was unreachable when it failed) claims
    nothing and returns True: a second message is better than none.
    """
    with db.pg_connect(url, autocommit=True) as conn:
        apply_schema(conn)
        cur = conn.execute(
            """
            UPDATE scoring.scoring_runs SET alerts_sent = array_append(coalesce(alerts_sent, '{}'), %(event)s)
            WHERE pipeline = %(pipeline)s AND run_id = %(run_id)s
              AND NOT (%(event)s = ANY(coalesce(alerts_sent, '{}')))
            RETURNING 1
            """,
            {"pipeline": pipeline, "run_id": run_id, "event": event},
        )
        if cur.fetchone() is not None:
            return True
        exists = conn.execute(
            "SELECT 1 FROM scoring.scoring_runs WHERE pipeline = %s AND run_id = %s", (pipeline, run_id)
        ).fetchone()
        return exists is None

"""Run records: one ``scoring.scoring_runs`` row per (pipeline, Airflow run).

A run is recorded as ``running`` when it is planned, and finished as ``success`` (in the
same transaction that publishes its scores), ``dry_run``, or ``failed`` with its error.
A retried task updates the same row, so counts are never added twice.
"""

from __future__ import annotations

import psycopg

from batchscore import db, settings
from batchscore.windows import Window


def apply_schema(url: str) -> None:
    """Create the shared audit and rejects tables if they are missing (idempotent)."""
    ddl = (settings.sql_dir() / "scoring.sql").read_text()
    # Concurrent first runs race on CREATE ... IF NOT EXISTS; serialise them.
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('batchscore:ddl', 0))")
        conn.execute(ddl)


def record_start(
    url: str,
    *,
    pipeline: str,
    run_id: str,
    window: Window,
    model_name: str,
    model_version: int,
    model_sha256: str,
    output_table: str,
) -> None:
    """Mark the run as running (a rerun of the same Airflow run resets its row)."""
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO scoring.scoring_runs AS r
                (pipeline, run_id, window_start, window_end, status, model_name, model_version,
                 model_sha256, output_table)
            VALUES (%s, %s, %s, %s, 'running', %s, %s, %s, %s)
            ON CONFLICT (pipeline, run_id) DO UPDATE SET
                window_start = excluded.window_start, window_end = excluded.window_end, status = 'running',
                model_name = excluded.model_name, model_version = excluded.model_version,
                model_sha256 = excluded.model_sha256, output_table = excluded.output_table,
                rows_read = NULL, rows_scored = NULL, rows_rejected = NULL, rows_written = NULL,
                extract_seconds = NULL, predict_seconds = NULL, load_seconds = NULL,
                score_summary = NULL, error = NULL, started_at = now(), finished_at = NULL
            """,
            (pipeline, run_id, window.start, window.end, model_name, model_version, model_sha256, output_table),
        )


def record_failure(url: str, *, pipeline: str, run_id: str, error: str) -> bool:
    """Mark a running run as failed with its error; returns False when there is no such run."""
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        cur = conn.execute(
            """
            UPDATE scoring.scoring_runs SET status = 'failed', error = %s, finished_at = now()
            WHERE pipeline = %s AND run_id = %s AND status <> 'success'
            """,
            (error[:4000], pipeline, run_id),
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
    "extract_seconds",
    "predict_seconds",
    "load_seconds",
    "score_summary",
    "error",
    "started_at",
    "finished_at",
)


def recent_runs(url: str, *, pipeline: str | None = None, limit: int = 50) -> list[dict[str, object]]:
    """The latest run records, newest first (what the UI's scoring-runs view shows)."""
    limit = max(1, min(int(limit), 500))
    with psycopg.connect(db.libpq_url(url)) as conn:
        exists = conn.execute("SELECT to_regclass('scoring.scoring_runs')").fetchone()
        if not exists or exists[0] is None:
            return []
        cur = conn.execute(
            f"SELECT {', '.join(RUN_COLUMNS)} FROM scoring.scoring_runs "
            "WHERE %(pipeline)s::text IS NULL OR pipeline = %(pipeline)s "
            "ORDER BY started_at DESC LIMIT %(limit)s",
            {"pipeline": pipeline, "limit": limit},
        )
        return [dict(zip(RUN_COLUMNS, row, strict=True)) for row in cur.fetchall()]

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

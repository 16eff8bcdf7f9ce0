"""Recording a missed deadline on the run record: ``scoring_runs.deadline_missed_at``, set once.

A window counts as landed when any run of the pipeline published it (status ``success``) at or
before the due time; then nothing is recorded. Otherwise the run's row gets the time the miss was
seen. A run still waiting for its upstream data has no row yet (``plan`` writes it): it gets one,
``running`` with its window, which ``plan`` later fills in and keeps the miss on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from batchscore import db
from batchscore.pipeline.windows import Window
from batchscore.sink.run_record import apply_schema


@dataclass(frozen=True)
class DeadlineMiss:
    """What the record said when the deadline passed.

    ``published_at``: when a run published the window by the deadline (then no miss is recorded);
    ``recorded``: this call set ``deadline_missed_at`` (False: it was set already, or published);
    ``status``/``failed_stage``: the run's record before (``status`` None: the run had none).
    """

    published_at: datetime | None
    recorded: bool
    missed_at: datetime | None
    status: str | None
    failed_stage: str | None


def record_deadline_miss(
    url: str, *, pipeline: str, run_id: str, window: Window, output_table: str, due: datetime
) -> DeadlineMiss:
    """Set the run's ``deadline_missed_at`` unless the window was published by ``due``; idempotent."""
    with db.pg_connect(url, autocommit=True) as conn:
        apply_schema(conn)  # a run waiting on its first day may have no tables yet
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('batchscore:deadline:' || %s || ':' || %s, 0))",
                (pipeline, run_id),
            )
            published = conn.execute(
                "SELECT max(finished_at) FROM scoring.scoring_runs WHERE pipeline = %s AND window_start = %s "
                "AND window_end = %s AND status = 'success' AND finished_at <= %s",
                (pipeline, window.start, window.end, due),
            ).fetchone()
            before = conn.execute(
                "SELECT status, failed_stage, deadline_missed_at FROM scoring.scoring_runs "
                "WHERE pipeline = %s AND run_id = %s",
                (pipeline, run_id),
            ).fetchone()
            status, failed_stage, missed_before = before if before else (None, None, None)
            if published and published[0] is not None:
                return DeadlineMiss(published[0], False, missed_before, status, failed_stage)
            row = conn.execute(
                """
                INSERT INTO scoring.scoring_runs AS r
                    (pipeline, run_id, window_start, window_end, output_table, status, deadline_missed_at)
                VALUES (%s, %s, %s, %s, %s, 'running', now())
                ON CONFLICT (pipeline, run_id) DO UPDATE SET
                    deadline_missed_at = coalesce(r.deadline_missed_at, excluded.deadline_missed_at),
                    window_start = coalesce(r.window_start, excluded.window_start),
                    window_end = coalesce(r.window_end, excluded.window_end),
                    output_table = coalesce(r.output_table, excluded.output_table)
                RETURNING deadline_missed_at
                """,
                (pipeline, run_id, window.start, window.end, output_table),
            ).fetchone()
            missed_at = row[0] if row else None
            return DeadlineMiss(None, missed_before is None, missed_at, status, failed_stage)

"""The sweep: unpublished slice tables older than the pipeline's ``execution.sweep_after_hours`` are dropped.

A slice table that never reached a publish is normally dropped by its own run (a failed run,
a dry run, a retried slice replacing its earlier attempt). Some outlive their run: a slice
task cleared without its downstream publish after the run finished, a run whose failure was
never reported (its callback died with its machine). The sweep finds them in
``scoring.lineage`` (``published_at IS NULL``), drops each with its rejects table and lineage
row, and records one ``swept`` row per table in ``scoring.run_events`` under the table's run.

Never swept: a slice of a run whose record says ``running`` (a live run), a slice younger
than the configured age (a clear in progress made it moments ago), and a table some session
holds (the sweep asks for its lock for a second and skips it if it must wait). A publish
that needs a swept slice scores it again (:func:`batchscore.run.publish_stage.publish_run`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from batchscore import db
from batchscore.pipeline.table_names import legacy_slice_table_name, slice_rejects_name, slice_table_name
from batchscore.sink import run_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sweep:
    """What one sweep dropped (``schema.table`` of each slice table) and what it left for later (busy)."""

    dropped: tuple[str, ...]
    busy: tuple[str, ...]


def _candidates(conn: psycopg.Connection[Any], pipeline: str, older_than: timedelta) -> list[tuple[Any, ...]]:
    return conn.execute(
        """
        SELECT l.lineage_id, l.output_table, l.run_id, l.slice_index, l.window_start, l.window_end, l.created_at,
               coalesce(r.status, 'no record')
        FROM scoring.lineage AS l
        LEFT JOIN scoring.scoring_runs AS r ON r.pipeline = l.pipeline AND r.run_id = l.run_id
        WHERE l.pipeline = %s AND l.published_at IS NULL AND l.created_at < now() - %s
          AND coalesce(r.status, 'no record') <> 'running'
        ORDER BY l.lineage_id
        """,
        (pipeline, older_than),
    ).fetchall()


def sweep_unpublished(url: str, *, pipeline: str, older_than: timedelta, by: str) -> Sweep:
    """Drop ``pipeline``'s unpublished slice tables older than ``older_than`` whose run is not live.

    ``by`` says who swept (``publish of <run>``, ``batchscore tables sweep``), for the record.
    Each table goes in a transaction of its own, with its lineage row locked and checked
    again, so a publish attaching it meanwhile wins and the table stays.
    """
    dropped: list[str] = []
    busy: list[str] = []
    with db.pg_connect(url) as conn:
        if conn.execute("SELECT to_regclass('scoring.lineage')").fetchone() == (None,):
            return Sweep((), ())
        candidates = _candidates(conn, pipeline, older_than)
        conn.rollback()
        for lineage_id, output_table, run_id, index, start, end, created, status in candidates:
            schema, table = str(output_table).split(".")
            names = dict.fromkeys(
                (
                    slice_table_name(table, lineage_id),
                    slice_rejects_name(table, lineage_id),
                    legacy_slice_table_name(table, lineage_id),
                    f"{legacy_slice_table_name(table, lineage_id)}_rej",
                )
            )
            label = f"{schema}.{slice_table_name(table, lineage_id)}"
            try:
                with conn.transaction():
                    conn.execute("SET LOCAL lock_timeout = '1s'")
                    still = conn.execute(
                        "SELECT 1 FROM scoring.lineage WHERE lineage_id = %s AND published_at IS NULL "
                        "FOR UPDATE SKIP LOCKED",
                        (lineage_id,),
                    ).fetchone()
                    if not still:
                        continue
                    rows = conn.execute(
                        "SELECT c.reltuples::bigint FROM pg_class AS c WHERE c.oid = to_regclass(%s)",
                        (label,),
                    ).fetchone()
                    conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(
                            sql.SQL(", ").join(sql.Identifier(schema, n) for n in names)
                        )
                    )
                    conn.execute("DELETE FROM scoring.lineage WHERE lineage_id = %s", (lineage_id,))
                    run_record.record_event(
                        conn,
                        pipeline=pipeline,
                        run_id=str(run_id),
                        stage="sweep",
                        event="swept",
                        detail=f"{label}: slice {index} of window [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}), "
                        f"made {created:%Y-%m-%d %H:%M %Z} and never published (run {status}; "
                        f"{'no' if rows is None else f'about {max(0, int(rows[0])):,}'} rows), dropped by {by} "
                        f"(older than {older_than})",
                    )
                dropped.append(label)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
                busy.append(label)
    if dropped or busy:
        log.info(
            "sweep by %s: dropped %d unpublished slice table(s) %s; busy, left: %s", by, len(dropped), dropped, busy
        )
    return Sweep(tuple(dropped), tuple(busy))

"""Read-only queries over the run records for the UI: runs, history, drift, shadow and rejects.

Everything here reads what runs recorded (``scoring.scoring_runs``, ``scoring.drift``,
``scoring.rejects``); nothing rescores. Every query is bounded (a LIMIT from the caller,
clamped here too) and takes its values as parameters, so a hostile filter is data, not SQL.
A database made before a table existed answers with empty results, not errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from batchscore import db
from batchscore.scoring.validation import VALUE_IN_REASON
from batchscore.sink.run_record import RUN_COLUMNS

STATUSES = ("running", "success", "failed", "dry_run")
MAX_RUNS = 500
MAX_HISTORY = 200
MAX_REJECTS_PAGE = 200
# Reasons are grouped with their values left out, so one kind of problem is one group and the
# groups can be shown to someone who may not read the values.
_QUOTED_VALUE = VALUE_IN_REASON


@dataclass(frozen=True)
class RunFilter:
    """Which runs to list: ``since``/``until`` bound the window start (inclusive, exclusive); ``limit`` per pipeline.

    ``among``: only these pipelines (those the user may read); None: every pipeline.
    """

    pipeline: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    among: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        object.__setattr__(self, "limit", max(1, min(int(self.limit), MAX_RUNS)))


def _has_tables(conn: psycopg.Connection[Any], *tables: str) -> bool:
    row = conn.execute(
        "SELECT bool_and(to_regclass(t) IS NOT NULL) FROM unnest(%s::text[]) AS t",
        ([f"scoring.{t}" for t in tables],),
    ).fetchone()
    return bool(row and row[0])


_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, RUN_COLUMNS))


def list_runs(url: str, run_filter: RunFilter) -> list[dict[str, Any]]:
    """Run records matching ``run_filter``: per pipeline its ``limit`` newest windows (runs without a window last)."""
    with db.pg_connect(url) as conn:
        if not _has_tables(conn, "scoring_runs"):
            return []
        query = sql.SQL(
            "SELECT {columns} FROM ("
            " SELECT *, row_number() OVER (PARTITION BY pipeline"
            "  ORDER BY window_start DESC NULLS LAST, started_at DESC) AS nth"
            " FROM scoring.scoring_runs"
            " WHERE (%(pipeline)s::text IS NULL OR pipeline = %(pipeline)s)"
            " AND (%(among)s::text[] IS NULL OR pipeline = ANY(%(among)s::text[]))"
            " AND (%(status)s::text IS NULL OR status = %(status)s)"
            " AND (%(since)s::timestamptz IS NULL OR window_start >= %(since)s)"
            " AND (%(until)s::timestamptz IS NULL OR window_start < %(until)s)"
            ") AS r WHERE nth <= %(limit)s ORDER BY pipeline, nth"
        ).format(columns=_COLUMNS)
        params = {
            "pipeline": run_filter.pipeline,
            "among": None if run_filter.among is None else list(run_filter.among),
            "status": run_filter.status,
            "since": run_filter.since,
            "until": run_filter.until,
            "limit": run_filter.limit,
        }
        with conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute(query, params).fetchall())


def pipelines(url: str) -> list[str]:
    """Every pipeline that has recorded a run (the overview's filter choices)."""
    with db.pg_connect(url) as conn:
        if not _has_tables(conn, "scoring_runs"):
            return []
        return [r[0] for r in conn.execute("SELECT DISTINCT pipeline FROM scoring.scoring_runs ORDER BY 1")]


def get_run(url: str, pipeline: str, run_id: str) -> dict[str, Any] | None:
    """One run record, or None."""
    with db.pg_connect(url) as conn:
        if not _has_tables(conn, "scoring_runs"):
            return None
        query = sql.SQL(
            "SELECT {columns}, model_sha256, output_table FROM scoring.scoring_runs WHERE pipeline = %s AND run_id = %s"
        ).format(columns=_COLUMNS)
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, (pipeline, run_id)).fetchone()


def history(url: str, pipeline: str, *, until: datetime | None = None, limit: int = 30) -> list[dict[str, Any]]:
    """The last ``limit`` published windows, one run per window (the one whose scores it holds), oldest first.

    ``until``: only windows starting at or before it (a run's page shows the runs up to its own).
    A window's run is its latest successful one: a dry run or a failed run published nothing, so
    neither stands for a window's scores (a dry run's own page still shows it in its window's place).
    """
    limit = max(1, min(int(limit), MAX_HISTORY))
    with db.pg_connect(url) as conn:
        if not _has_tables(conn, "scoring_runs"):
            return []
        query = """
            SELECT * FROM (
                SELECT DISTINCT ON (window_start, window_end)
                    run_id, status, window_start, window_end, model_name, model_version, rows_read, rows_scored,
                    rows_rejected, rows_written, score_summary, drift_status, drift_max_psi, shadow, finished_at
                FROM scoring.scoring_runs
                WHERE pipeline = %(pipeline)s AND status = 'success' AND window_start IS NOT NULL
                  AND (%(until)s::timestamptz IS NULL OR window_start <= %(until)s)
                ORDER BY window_start DESC, window_end DESC, finished_at DESC NULLS LAST, started_at DESC
                LIMIT %(limit)s
            ) AS latest ORDER BY window_start, window_end
        """
        with conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute(query, {"pipeline": pipeline, "until": until, "limit": limit}).fetchall())


def drift_for_runs(url: str, pipeline: str, run_ids: list[str]) -> list[dict[str, Any]]:
    """``scoring.drift`` rows of the given runs (a feature, or '(score)', per row), by feature."""
    if not run_ids:
        return []
    with db.pg_connect(url) as conn:
        if not _has_tables(conn, "drift"):
            return []
        query = """
            SELECT run_id, window_start, window_end, feature, kind, psi, threshold, drifted, bins
            FROM scoring.drift WHERE pipeline = %s AND run_id = ANY(%s)
            ORDER BY feature, window_start
        """
        with conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute(query, (pipeline, run_ids[:MAX_HISTORY])).fetchall())


def reject_reasons(url: str, pipeline: str, run_id: str) -> list[dict[str, Any]]:
    """The run's rejects counted by kind of reason (the offending value left out), most frequent first."""
    with db.pg_connect(url) as conn:
        if not _has_tables(conn, "rejects"):
            return []
        query = """
            SELECT regexp_replace(reason, %s, '''…''', 'g') AS reason, count(*) AS rows
            FROM scoring.rejects WHERE pipeline = %s AND run_id = %s
            GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 100
        """
        with conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute(query, (_QUOTED_VALUE, pipeline, run_id)).fetchall())


def rejected_rows(
    url: str, pipeline: str, run_id: str, *, reason: str | None = None, offset: int = 0, limit: int = 50
) -> list[dict[str, Any]]:
    """One page of the run's rejected rows (entity key, reason, the row as it arrived), by entity key.

    ``reason`` is a kind from :func:`reject_reasons` (values left out), matched exactly.
    """
    limit = max(1, min(int(limit), MAX_REJECTS_PAGE))
    with db.pg_connect(url) as conn:
        if not _has_tables(conn, "rejects"):
            return []
        query = """
            SELECT entity_key, reason, row_data FROM scoring.rejects
            WHERE pipeline = %(pipeline)s AND run_id = %(run_id)s
              AND (%(reason)s::text IS NULL OR regexp_replace(reason, %(quoted)s, '''…''', 'g') = %(reason)s)
            -- numeric keys in numeric order; the rejects of a run never change, so pages are stable
            ORDER BY length(entity_key) NULLS FIRST, entity_key, reason, ctid
            OFFSET %(offset)s LIMIT %(limit)s
        """
        params = {
            "pipeline": pipeline,
            "run_id": run_id,
            "reason": reason,
            "quoted": _QUOTED_VALUE,
            "offset": max(0, int(offset)),
            "limit": limit,
        }
        with conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute(query, params).fetchall())

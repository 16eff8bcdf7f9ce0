"""A run's rejected rows: from each slice's rejects table into ``scoring.rejects``, keyed by the slice's lineage id.

Each slice keeps its rejected rows in a table of its own until publish copies them into
``scoring.rejects`` (with the run id and the slice's lineage id) and drops that table. The
lineage id makes every copy idempotent and lets a window's rejects follow its slices: when a
publish keeps slices that were already attached (a run whose cleared slice was scored again),
their rows stay, and every other run's rows of the window go.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import psycopg
from psycopg import sql

from batchscore import db
from batchscore.errors import PermanentError
from batchscore.pipeline.windows import Window
from batchscore.scoring.validation import VALUE_IN_REASON


class RejectThresholdExceeded(PermanentError, RuntimeError):
    """Too many rows failed validation: nothing is published for the window."""

    remedy = (
        "see the run's rows in scoring.rejects (reason, row as it arrived); fix the source, "
        "or raise validation.max_reject_fraction"
    )


class RejectSource(Protocol):
    """A scored slice (``publish.SliceResult``): its lineage id, its rejects table, its counts."""

    @property
    def lineage_id(self) -> int: ...
    @property
    def schema(self) -> str: ...
    @property
    def rejects_table(self) -> str: ...
    @property
    def rows_in(self) -> int: ...
    @property
    def rows_rejected(self) -> int: ...


def _with_table(conn: psycopg.Connection[Any], slices: Sequence[RejectSource]) -> list[RejectSource]:
    """The slices whose rejects table still exists (a published slice's rows are in ``scoring.rejects`` already)."""
    names = [sql.Identifier(s.schema, s.rejects_table).as_string(conn) for s in slices]
    found = conn.execute("SELECT to_regclass(n) IS NOT NULL FROM unnest(%s::text[]) AS n", (names,)).fetchall()
    return [s for s, (exists,) in zip(slices, found, strict=True) if exists]


def top_reasons(url: str, slices: Sequence[RejectSource], limit: int = 3) -> str:
    """The commonest kinds of reject reason across the slices, for the one-line error.

    The values are left out (``'…'``): the error is shown with the run record, to people who may
    not read the rejected rows' values; the rejects keep them.
    """
    with db.pg_connect(url) as conn:
        parts = [
            sql.SQL("SELECT reason FROM {}").format(sql.Identifier(s.schema, s.rejects_table))
            for s in _with_table(conn, slices)
        ]
        parts.append(
            sql.SQL("SELECT reason FROM scoring.rejects WHERE lineage_id = ANY({})").format(
                sql.Literal([s.lineage_id for s in slices])
            )
        )
        statement = sql.SQL(
            "SELECT regexp_replace(reason, {}, {}, 'g'), count(*) FROM ({}) AS r GROUP BY 1 ORDER BY 2 DESC LIMIT {}"
        ).format(
            sql.Literal(VALUE_IN_REASON), sql.Literal("'…'"), sql.SQL(" UNION ALL ").join(parts), sql.Literal(limit)
        )
        return "; ".join(f"{n:,} × {reason}" for reason, n in conn.execute(statement))


def check_reject_threshold(url: str, slices: Sequence[RejectSource], max_fraction: float) -> None:
    """Fail before any publish when the share of rejected rows is above the pipeline's threshold."""
    rows_in = sum(s.rows_in for s in slices)
    rejected = sum(s.rows_rejected for s in slices)
    if rows_in and rejected / rows_in > max_fraction:
        raise RejectThresholdExceeded(
            f"{rejected:,} of {rows_in:,} rows ({rejected / rows_in:.2%}) failed validation, above "
            f"max_reject_fraction={max_fraction:.2%}; nothing was published. Top reasons: "
            f"{top_reasons(url, slices)}"
        )


def keep_rejects(
    conn: psycopg.Connection[Any], pipeline: str, window: Window, run_id: str, slices: Sequence[RejectSource]
) -> None:
    """Copy the slices' rejects into ``scoring.rejects`` under the run's id and their lineage ids; drop their tables.

    Idempotent: a slice's earlier copy is replaced, and slices whose table is gone were copied before.
    """
    pieces = _with_table(conn, slices)
    for piece in pieces:
        conn.execute("DELETE FROM scoring.rejects WHERE lineage_id = %s", (piece.lineage_id,))
        if piece.rows_rejected:
            conn.execute(
                sql.SQL(
                    "INSERT INTO scoring.rejects (pipeline, window_start, window_end, run_id, lineage_id, entity_key, "
                    "reason, row_data) SELECT %s, %s, %s, %s, %s, entity_key, reason, row_data::jsonb FROM {}"
                ).format(sql.Identifier(piece.schema, piece.rejects_table)),
                (pipeline, window.start, window.end, run_id, piece.lineage_id),
            )
    if pieces:
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(
                sql.SQL(", ").join(sql.Identifier(p.schema, p.rejects_table) for p in pieces)
            )
        )


def replace_rejects(
    conn: psycopg.Connection[Any], pipeline: str, window: Window, run_id: str, slices: Sequence[RejectSource]
) -> None:
    """The window's rejects become those of ``slices`` (other runs' rows of the window, failed ones too, go)."""
    conn.execute(
        "DELETE FROM scoring.rejects WHERE pipeline = %s AND window_start = %s AND window_end = %s "
        "AND (lineage_id IS NULL OR lineage_id <> ALL(%s))",
        (pipeline, window.start, window.end, [s.lineage_id for s in slices]),
    )
    keep_rejects(conn, pipeline, window, run_id, slices)

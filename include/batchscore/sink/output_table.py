"""The pipeline's scores table: partitioned by window, each window partitioned by the slices that made it.

::

    scoring.churn_scores                      PARTITION BY RANGE (window_start, window_end)
      churn_scores_w202611010000_1a2b3c4d     one window,   PARTITION BY LIST (lineage_id)
        churn_scores_l1234                    one slice's rows (one lineage row each)
        churn_scores_l1235

Publishing a window swaps one partition; dropping old windows (retention) is a
``DROP TABLE`` of theirs. Rows carry only a ``lineage_id``; the ``<table>_lineage`` view
joins each to its run and model artifact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol

import psycopg
import pyarrow as pa
from psycopg import sql

from batchscore.pipeline.windows import Window

PG_KEY_TYPES = {
    pa.int64(): "bigint",
    pa.int32(): "integer",
    pa.int16(): "smallint",
    pa.int8(): "smallint",
    pa.uint8(): "smallint",
    pa.uint16(): "integer",
    pa.uint32(): "bigint",
    pa.string(): "text",
}
DDL_LOCK = "batchscore:ddl"
LINEAGE_DEFAULTS = ("window_start", "window_end", "lineage_id")


def pg_key_type(key_type: pa.DataType) -> str:
    """The scores table's column type for an entity key of Arrow type ``key_type``."""
    pg_type = PG_KEY_TYPES.get(key_type)
    if pg_type is None:
        raise ValueError(f"entity key type {key_type} is not supported; use an integer or text key")
    return pg_type


def table_ident(qualified: str) -> sql.Identifier:
    """``schema.table`` (validated by the config) as a quoted identifier."""
    schema, table = qualified.split(".")
    return sql.Identifier(schema, table)


def lineage_view(qualified: str) -> str:
    """The view beside a scores table that joins each score to its run and model artifact."""
    return f"{qualified.split('.')[1][:55]}_lineage"


def partition_name(table: str, window: Window) -> str:
    """The partition holding one window's scores: readable, unique per window, <= 63 characters."""
    digest = hashlib.sha256(f"{window.start.isoformat()}|{window.end.isoformat()}".encode()).hexdigest()[:8]
    return f"{table[:36]}_w{window.start:%Y%m%d%H%M}_{digest}"


def slice_table_name(table: str, lineage_id: int) -> str:
    """The table one slice's scores are loaded into; it becomes a leaf of its window's partition."""
    return f"{table[:40]}_l{lineage_id}"


def window_check(window: Window) -> sql.Composable:
    """The CHECK that proves a table holds only ``window``'s rows, so attaching it scans nothing.

    The window's partition and each slice table carry it under the same name, as PostgreSQL
    requires of a partition's constraints.
    """
    return sql.SQL("CONSTRAINT window_bounds CHECK (window_start = {} AND window_end = {})").format(
        sql.Literal(window.start), sql.Literal(window.end)
    )


def ensure_output_table(conn: psycopg.Connection[Any], qualified: str, key: str, pg_type: str) -> None:
    """Create the pipeline's scores table and its lineage view if they do not exist (idempotent).

    ``conn`` must be in autocommit mode; concurrent first runs are serialised by a lock.
    """
    schema = qualified.split(".", maxsplit=1)[0]
    table = table_ident(qualified)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (DDL_LOCK,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                """
                CREATE TABLE IF NOT EXISTS {table} (
                    {key}          {key_type} NOT NULL,
                    score          double precision,
                    label          text,
                    window_start   timestamptz NOT NULL,
                    window_end     timestamptz NOT NULL,
                    lineage_id     bigint      NOT NULL
                ) PARTITION BY RANGE (window_start, window_end)
                """
            ).format(table=table, key=sql.Identifier(key), key_type=sql.SQL(pg_type))
        )
        row = conn.execute(
            "SELECT c.relkind, a.attname IS NOT NULL FROM pg_class c LEFT JOIN pg_attribute a "
            "ON a.attrelid = c.oid AND a.attname = 'lineage_id' AND NOT a.attisdropped WHERE c.oid = %s::regclass",
            (table.as_string(conn),),
        ).fetchone()
        if row is None or row[0] != "p" or not row[1]:
            raise RuntimeError(
                f"{qualified} exists but is not partitioned by window with a lineage_id column (made by an "
                "older version?); rename or drop it and re-run"
            )
        view = sql.Identifier(schema, lineage_view(qualified))
        if conn.execute("SELECT to_regclass(%s)", (view.as_string(conn),)).fetchone() == (None,):
            conn.execute(  # only when missing: no lock on a view in use
                sql.SQL(
                    "CREATE VIEW {view} AS SELECT s.*, l.run_id, l.model_name, l.model_version, l.model_sha256, "
                    "l.published_at FROM {table} AS s JOIN scoring.lineage AS l USING (lineage_id)"
                ).format(view=view, table=table)
            )


class Leaf(Protocol):
    """A loaded slice table: a champion's :class:`SliceResult` or a challenger's ``ShadowSlice``."""

    @property
    def lineage_id(self) -> int: ...
    @property
    def schema(self) -> str: ...
    @property
    def table(self) -> str: ...


def swap_window(conn: psycopg.Connection[Any], output_table: str, window: Window, slices: Sequence[Leaf]) -> None:
    """Replace the window's partition by one made of ``slices`` (no row is scanned or copied).

    Inside the caller's transaction (publish's, under the window's lock): readers see the old
    window or the new one.
    """
    schema, table = output_table.split(".")
    parent, final = table_ident(output_table), sql.Identifier(schema, partition_name(table, window))
    if conn.execute("SELECT to_regclass(%s)", (final.as_string(conn),)).fetchone() != (None,):
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, final))
        conn.execute(sql.SQL("DROP TABLE {}").format(final))  # with the leaves of the previous run
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {}) PARTITION BY LIST (lineage_id)").format(final, parent))
    conn.execute(sql.SQL("ALTER TABLE {} ADD {}").format(final, window_check(window)))
    drop_defaults = sql.SQL(", ").join(
        sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(sql.Identifier(c)) for c in LINEAGE_DEFAULTS
    )
    for piece in slices:
        leaf = sql.Identifier(piece.schema, piece.table)
        conn.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                final, leaf, sql.Literal(piece.lineage_id)
            )
        )
        conn.execute(sql.SQL("ALTER TABLE {} ").format(leaf) + drop_defaults)
    conn.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}, {}) TO ({}, {})").format(
            parent,
            final,
            sql.Literal(window.start),
            sql.Literal(window.end),
            sql.Literal(window.start),
            sql.Literal(window.end + timedelta(microseconds=1)),
        )
    )

"""The pipeline's scores table: partitioned by window, each window partitioned by the slices that made it.

::

    scoring.churn_scores                      PARTITION BY RANGE (window_start, window_end)
      churn_scores_w202611010000_1a2b3c4d     one window,   PARTITION BY LIST (lineage_id)
        churn_scores_l1234                    one slice's rows (one lineage row each)
        churn_scores_l1235

A window's partition is attached by its first publish and stays; publishing swaps the slices
inside it (:func:`swap_window`), locking that window only. Names are derived by
:mod:`batchscore.pipeline.table_names`. Dropping old windows (retention) is a ``DROP TABLE`` of theirs.
Rows carry only a ``lineage_id``; the ``<table>_lineage`` view joins each to its run and model
artifact.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import psycopg
import pyarrow as pa
from psycopg import sql

from batchscore.pipeline.table_names import legacy_lineage_view, legacy_partition_name, lineage_view, partition_name
from batchscore.pipeline.windows import Window

log = logging.getLogger(__name__)

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
        if conn.execute(
            "SELECT relispartition FROM pg_class WHERE oid = %s::regclass", (table.as_string(conn),)
        ).fetchone() == (True,):
            raise RuntimeError(
                f"{qualified} is a window partition of another scores table; give the pipeline an output.table "
                "of its own"
            )
        view = sql.Identifier(schema, lineage_view(qualified))
        if conn.execute("SELECT to_regclass(%s)", (view.as_string(conn),)).fetchone() == (None,):
            conn.execute(  # only when missing: no lock on a view in use
                sql.SQL(
                    "CREATE VIEW {view} AS SELECT s.*, l.run_id, l.model_name, l.model_version, l.model_sha256, "
                    "l.published_at FROM {table} AS s JOIN scoring.lineage AS l USING (lineage_id)"
                ).format(view=view, table=table)
            )
            _warn_of_legacy_view(conn, qualified, view)


def _warn_of_legacy_view(conn: psycopg.Connection[Any], qualified: str, view: sql.Identifier) -> None:
    """Say so when an older version's lineage view of this table (a cut name) is still there: readers move."""
    schema = qualified.split(".", maxsplit=1)[0]
    legacy = sql.Identifier(schema, legacy_lineage_view(qualified))
    if legacy == view:
        return
    row = conn.execute(
        "SELECT 1 FROM pg_depend AS d JOIN pg_rewrite AS r ON r.oid = d.objid "
        "WHERE r.ev_class = to_regclass(%s) AND d.refobjid = %s::regclass LIMIT 1",
        (legacy.as_string(conn), table_ident(qualified).as_string(conn)),
    ).fetchone()
    if row:
        log.warning(
            "%s: its lineage view is now %s; %s was its name under an older version (cut at 55 characters, so "
            "it could be shared with another table): point its readers at the new view and drop it",
            qualified,
            view.as_string(conn),
            legacy.as_string(conn),
        )


class Leaf(Protocol):
    """A loaded slice table: a champion's :class:`SliceResult` or a challenger's ``ShadowSlice``."""

    @property
    def lineage_id(self) -> int: ...
    @property
    def schema(self) -> str: ...
    @property
    def table(self) -> str: ...


def window_partition(conn: psycopg.Connection[Any], output_table: str, window: Window) -> sql.Identifier | None:
    """The window's partition of ``output_table``, or None before its first publish.

    Looked up by its name, then by the name an older version gave it (long table names were
    cut differently): :func:`swap_window` renames such a partition when it next publishes.
    """
    schema, table = output_table.split(".")
    for name in dict.fromkeys((partition_name(table, window), legacy_partition_name(table, window))):
        found = sql.Identifier(schema, name)
        row = conn.execute(
            "SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s) AND inhparent = %s::regclass",
            (found.as_string(conn), table_ident(output_table).as_string(conn)),
        ).fetchone()
        if row:
            return found
    return None


def _leaves(conn: psycopg.Connection[Any], partition: sql.Identifier) -> dict[tuple[str, str], sql.Identifier]:
    """The slice tables attached to a window's partition, by (schema, name)."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE i.inhparent = %s::regclass",
        (partition.as_string(conn),),
    ).fetchall()
    return {(str(s), str(t)): sql.Identifier(str(s), str(t)) for s, t in rows}


def attached_slices(conn: psycopg.Connection[Any], output_table: str, window: Window) -> set[tuple[str, str]] | None:
    """The (schema, name) of each slice table the window's partition holds now; None before its first publish."""
    final = window_partition(conn, output_table, window)
    return None if final is None else set(_leaves(conn, final))


@dataclass(frozen=True)
class Swap:
    """What a swap changed in the window's partition: slice tables attached, and old ones dropped."""

    attached: int
    dropped: int
    created: bool  # the window's first publish: its partition was made and attached to the table


def swap_window(conn: psycopg.Connection[Any], output_table: str, window: Window, slices: Sequence[Leaf]) -> Swap:
    """Make ``slices`` the leaves of the window's partition (no row is scanned or copied).

    Only the window's own partition is locked (ACCESS EXCLUSIVE, with its leaves): readers
    of other windows, whose queries prune to their partitions, never wait, and a scan of the
    whole table waits only while this transaction holds the lock. The window's partition
    stays attached to the table once made; its first publish attaches it, which takes only
    SHARE UPDATE EXCLUSIVE on the table (no reader waits for that either). Leaves already
    attached and wanted stay (a run whose cleared slice was scored again keeps its other
    slices); the others are detached and dropped.

    Inside the caller's transaction (publish's, under the window's advisory lock and a short
    ``lock_timeout``): readers see the old window or the new one.
    """
    parent = table_ident(output_table)
    final = window_partition(conn, output_table, window)
    wanted = {(p.schema, p.table): p for p in slices}
    schema, table = output_table.split(".")
    partition = partition_name(table, window)
    named = sql.Identifier(schema, partition)
    if final is not None:
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(final))  # with its leaves
        if final != named:  # made by an older version, under its cut name
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(final, sql.Identifier(partition)))
            final = named
        current = _leaves(conn, final)
        created = False
    else:
        final, current, created = named, {}, True
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {}) PARTITION BY LIST (lineage_id)").format(final, parent))
        conn.execute(sql.SQL("ALTER TABLE {} ADD {}").format(final, window_check(window)))
    for name, leaf in current.items():
        if name not in wanted:
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(final, leaf))
            conn.execute(sql.SQL("DROP TABLE {}").format(leaf))  # a slice of the window's previous run
    drop_defaults = sql.SQL(", ").join(
        sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(sql.Identifier(c)) for c in LINEAGE_DEFAULTS
    )
    added = [piece for name, piece in wanted.items() if name not in current]
    for piece in added:
        leaf = sql.Identifier(piece.schema, piece.table)
        conn.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                final, leaf, sql.Literal(piece.lineage_id)
            )
        )
        conn.execute(sql.SQL("ALTER TABLE {} ").format(leaf) + drop_defaults)
    if created:
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
    return Swap(attached=len(added), dropped=len(current) - (len(wanted) - len(added)), created=created)

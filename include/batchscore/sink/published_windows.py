"""Which windows a scores table holds now, and the rule that windows of one table never overlap.

A window is published when its partition is in the scores table (what readers see), so the
windows are read from the catalogue: each window partition's bound is
``FROM (start, end) TO (start, end + 1 µs)`` on ``(window_start, window_end)``. Partitions are
keyed by the exact bounds, so PostgreSQL itself would let ``[D 00:00, D 12:00)`` sit beside
``[D, D+1)`` and the same keys would get two scores for the same hours: :func:`check_no_overlap`
refuses that, in ``plan`` (before anything is written) and again inside publish's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from batchscore.errors import PermanentError
from batchscore.pipeline.windows import Window
from batchscore.sink.output_table import table_ident

# The bound's first two literals are the window's start and end; each is rendered with its UTC
# offset, so casting it back to timestamptz is exact whatever the session's TimeZone.
_WINDOWS = """
    SELECT nsp, rel, window_start, window_end FROM (
        SELECT n.nspname, c.relname, (b.bounds)[1]::timestamptz, (b.bounds)[2]::timestamptz
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL (
            SELECT array_agg(m[1] ORDER BY o) AS bounds
            FROM regexp_matches(pg_get_expr(c.relpartbound, c.oid), '''([^'']*)''', 'g') WITH ORDINALITY AS t (m, o)
        ) AS b
        WHERE i.inhparent = to_regclass(%(table)s) AND cardinality(b.bounds) >= 2
    ) AS w (nsp, rel, window_start, window_end)
    WHERE %(start)s::timestamptz IS NULL OR (window_start < %(end)s AND window_end > %(start)s)
    ORDER BY window_start, window_end
"""


class OverlappingWindow(PermanentError, ValueError):
    """The window overlaps a published window of the same scores table without equal bounds."""

    remedy = (
        "score the published window's exact bounds to replace its scores, or windows that do not overlap it; "
        "to re-cut published windows, drop the partition named in the error first (its scores go with it)"
    )


@dataclass(frozen=True)
class PublishedWindow:
    """One window the scores table holds, and the partition that holds it (``schema.name``)."""

    window: Window
    partition: str


def published_windows(
    conn: psycopg.Connection[Any], output_table: str, *, overlapping: Window | None = None
) -> list[PublishedWindow]:
    """The windows ``output_table`` holds now (all, or those overlapping ``overlapping``), by start.

    An empty list when the table does not exist yet.
    """
    params = {
        "table": table_ident(output_table).as_string(conn),
        "start": overlapping.start if overlapping else None,
        "end": overlapping.end if overlapping else None,
    }
    rows: list[tuple[str, str, datetime, datetime]] = conn.execute(_WINDOWS, params).fetchall()
    return [PublishedWindow(Window(start, end), f"{schema}.{name}") for schema, name, start, end in rows]


def holds_window(conn: psycopg.Connection[Any], output_table: str, window: Window) -> bool:
    """True when ``output_table`` holds a partition for exactly ``window``."""
    return any(p.window == window for p in published_windows(conn, output_table, overlapping=window))


def check_no_overlap(conn: psycopg.Connection[Any], pipeline: str, output_table: str, window: Window) -> None:
    """Refuse ``window`` when a published window of ``output_table`` overlaps it without equal bounds.

    Equal bounds are a replacement (the ordinary re-run). Inside publish's transaction, call
    it after the new partition is attached: attaching takes a lock that two attaches to one
    table cannot share, so a concurrent publish of an overlapping window is seen here.
    """
    clashes = [p for p in published_windows(conn, output_table, overlapping=window) if p.window != window]
    if not clashes:
        return
    first = clashes[0]
    more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
    raise OverlappingWindow(
        f"window {window} overlaps the published window {first.window}{more} of {output_table} "
        f"(pipeline {pipeline}): the same hours would have two scores. To replace that window's scores, "
        f"re-run it with its exact bounds (window_start={first.window.start.isoformat()}, "
        f"window_end={first.window.end.isoformat()}); to re-cut it, drop its partition {first.partition} first"
    )

"""Extract: stream one window of the source query into parts on the staging area.

PostgreSQL sources take the fast path: ADBC runs the query through binary COPY and
hands back Arrow record batches as they arrive. Any other SQLAlchemy source streams
through a server-side cursor. Either way, memory holds one batch and the open part,
never the window.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from batchscore import db, staging, storage
from batchscore.features import conform, staged_schema
from batchscore.progress import Progress
from batchscore.registry import FeatureSpec
from batchscore.windows import Window

log = logging.getLogger(__name__)
_PLACEHOLDER = re.compile(r"(?<!:):(window_start|window_end)\b")


@dataclass(frozen=True)
class ExtractResult:
    """The parts written for a window, in order, and how many rows they hold (in all and each)."""

    parts: tuple[str, ...]
    rows: int
    seconds: float
    rows_per_part: tuple[int, ...] = ()


def render_query(query: str, window: Window) -> str:
    """Substitute the window bounds as typed literals (for COPY, which takes no parameters).

    Only the two datetimes we produced are rendered, never user text, so this is safe.
    """
    values = {"window_start": window.start, "window_end": window.end}

    def literal(match: re.Match[str]) -> str:
        instant: datetime = values[match.group(1)]
        return f"'{instant.isoformat()}'::timestamptz"

    return _PLACEHOLDER.sub(literal, query)


def _pg_batches(url: str, query: str, window: Window, batch_rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    import adbc_driver_postgresql.dbapi as adbc

    conn = adbc.connect(db.libpq_url(url))
    cur = conn.cursor()
    cur.execute(render_query(query, window))
    reader = cur.fetch_record_batch()

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                for offset in range(0, batch.num_rows, batch_rows):
                    yield batch.slice(offset, batch_rows)
        finally:
            cur.close()
            conn.close()

    return reader.schema, batches()


def _sqlalchemy_batches(
    url: str, query: str, window: Window, batch_rows: int
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    import sqlalchemy as sa

    engine = sa.create_engine(db.sqlalchemy_url(url))
    conn = engine.connect().execution_options(stream_results=True, yield_per=batch_rows)
    result = conn.execute(sa.text(query), {"window_start": window.start, "window_end": window.end})
    names = list(result.keys())
    first = result.fetchmany(batch_rows)

    def to_batch(rows: Sequence[Any]) -> pa.RecordBatch:
        columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
        return pa.RecordBatch.from_arrays([pa.array(list(c)) for c in columns], names=names)

    schema = to_batch(first).schema

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            rows = first
            while rows:
                yield to_batch(rows)
                rows = result.fetchmany(batch_rows)
        finally:
            conn.close()
            engine.dispose()

    return schema, batches()


def source_batches(url: str, query: str, window: Window, batch_rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The window's rows as a stream of record batches, and the source's schema."""
    if db.is_postgres(url):
        return _pg_batches(url, query, window, batch_rows)
    return _sqlalchemy_batches(url, query, window, batch_rows)


def part_url(run_dir: str, index: int) -> str:
    return storage.join(run_dir, "extract", f"part-{index:05d}{staging.SUFFIX}")


def extract_window(
    *,
    source_url: str,
    query: str,
    window: Window,
    key: str,
    features: tuple[FeatureSpec, ...],
    run_dir: str,
    part_rows: int,
    batch_rows: int,
    on_part: Callable[[str], None] | None = None,
    expected_rows: int | None = None,
) -> ExtractResult:
    """Stream the window's rows into staged parts under ``run_dir``/extract.

    Parts are named by index, so a retried extract overwrites them deterministically;
    stale parts from an earlier attempt are removed first. ``on_part`` is called with each
    part's URL as soon as it is complete, so scoring can start before the extract ends.
    ``expected_rows`` (the planner's estimate) only feeds the progress lines' ETA.
    """
    started = time.perf_counter()
    storage.remove_tree(storage.join(run_dir, "extract"))
    source_schema, batches = source_batches(source_url, query, window, batch_rows)
    schema = staged_schema(source_schema, key, features)
    writer = staging.RollingPartWriter(lambda i: part_url(run_dir, i), schema, part_rows, on_part)
    progress = Progress(log, "extract", expected_rows, estimated=True)
    for batch in batches:
        writer.write(conform(batch, schema))
        progress.add(batch.num_rows)
    parts = writer.finish()
    seconds = time.perf_counter() - started
    log.info("extract: %d rows of %s into %d parts in %.1fs", progress.rows, window, len(parts), seconds)
    return ExtractResult(tuple(parts), progress.rows, seconds, tuple(writer.rows_per_part))


def estimate_rows(source_url: str, query: str, window: Window) -> int | None:
    """PostgreSQL's planner estimate of the window's rows (for progress ETAs only; None elsewhere or on error)."""
    if not db.is_postgres(source_url):
        return None
    import psycopg

    try:
        with psycopg.connect(db.libpq_url(source_url)) as conn:
            row = conn.execute(f"EXPLAIN (FORMAT JSON) {render_query(query, window)}").fetchone()
    except psycopg.Error as exc:
        log.warning("could not estimate the window's rows (%s); progress lines will have no ETA", exc)
        return None
    return int(row[0][0]["Plan"]["Plan Rows"]) if row else None


def probe_schema(source_url: str, query: str, window: Window) -> pa.Schema:
    """The source query's columns and types, read without fetching rows (``LIMIT 0``)."""
    wrapped = f"SELECT * FROM ({query}) AS batchscore_probe LIMIT 0"
    schema, batches = source_batches(source_url, wrapped, window, 1)
    for _ in batches:
        pass
    return schema

"""Extract: stream one slice of a window of the source query as Arrow record batches.

PostgreSQL sources take the fast path: binary COPY, decoded into Arrow record batches by
the engine's own compiled decoder (:mod:`batchscore.source.copy_stream`), or by ADBC for
result types that decoder does not read (or with ``BATCHSCORE_COPY_DECODER=0``): the same
schema and values either way. Any other SQLAlchemy source streams
through a server-side cursor (and is always read as one slice). Either way memory holds
a batch, never the window.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
from psycopg import sql

from batchscore import db
from batchscore.pipeline.windows import Window
from batchscore.source.slices import KeySlice, slice_query

log = logging.getLogger(__name__)
_PLACEHOLDER = re.compile(r"(?<!:):(window_start|window_end)\b")


def render_query(query: str, window: Window) -> str:
    """Substitute the window bounds as typed literals (COPY takes no parameters).

    Only the two datetimes of the window are rendered (as ``psycopg.sql.Literal``), never
    user text, so this is safe.
    """
    values = {"window_start": window.start, "window_end": window.end}

    def literal(match: re.Match[str]) -> str:
        instant: datetime = values[match.group(1)]
        return db.render(sql.Literal(instant))

    return _PLACEHOLDER.sub(literal, query)


def _slice_batches(batches: Iterator[pa.RecordBatch], batch_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for offset in range(0, batch.num_rows, batch_rows):
            yield batch.slice(offset, batch_rows)


def copy_decoder_enabled() -> bool:
    """``BATCHSCORE_COPY_DECODER=0`` reads every PostgreSQL source through ADBC."""
    return os.environ.get("BATCHSCORE_COPY_DECODER", "1") != "0"


def _pg_batches(url: str, query: str, batch_rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if copy_decoder_enabled():
        from batchscore.source.copy_stream import copy_batches

        decoded = copy_batches(url, query, batch_rows)
        if decoded is not None:
            return decoded
    return _adbc_batches(url, query, batch_rows)


def _adbc_batches(url: str, query: str, batch_rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    conn = db.adbc_connect(url)
    try:
        cur = conn.cursor()
        cur.execute(query)
        reader = cur.fetch_record_batch()
    except BaseException:
        conn.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from _slice_batches(reader, batch_rows)
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


def source_batches(  # noqa: PLR0917
    url: str, query: str, window: Window, key: str, key_slice: KeySlice, batch_rows: int
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """One slice of the window's rows as a stream of record batches, and the source's schema."""
    if db.is_postgres(url):
        return _pg_batches(url, slice_query(render_query(query, window), key, key_slice), batch_rows)
    if not key_slice.whole:
        raise ValueError("only PostgreSQL sources are cut into slices; other sources are read as one slice")
    return _sqlalchemy_batches(url, query, window, batch_rows)


def estimate_rows(source_url: str, query: str, window: Window) -> int | None:
    """PostgreSQL's planner estimate of the window's rows (slice count and ETAs; None elsewhere or on error)."""
    if not db.is_postgres(source_url):
        return None
    import psycopg

    try:
        with db.pg_connect(source_url) as conn:
            row = conn.execute(f"EXPLAIN (FORMAT JSON) {render_query(query, window)}").fetchone()
    except psycopg.Error as exc:
        log.warning("could not estimate the window's rows (%s); one slice, no ETA in progress lines", exc)
        return None
    return int(row[0][0]["Plan"]["Plan Rows"]) if row else None


def probe_schema(source_url: str, query: str, window: Window) -> pa.Schema:
    """The source query's columns and types, read without fetching rows (``LIMIT 0``)."""
    if db.is_postgres(source_url) and copy_decoder_enabled():
        from batchscore.source.copy_stream import describe_schema

        described = describe_schema(source_url, render_query(query, window))
        if described is not None:
            return described
    # The query is the pipeline's own (trusted config, validated at parse time); the window is bound.
    wrapped = f"SELECT * FROM ({query}) AS batchscore_probe LIMIT 0"  # noqa: S608
    schema, batches = source_batches(source_url, wrapped, window, "", KeySlice(0), 1)
    for _ in batches:
        pass
    return schema

"""Load: one slice's scores into a table of its own, and its rejects beside it.

Each slice of a run gets a lineage row (run, window, key range, model artifact) and a
table ``<table>_l<lineage_id>`` that already carries the run's lineage as column
defaults and CHECK constraints proving its window and lineage. The scores are streamed
into it by binary COPY (ADBC ingest) in one transaction, outside any lock; the publish
step later attaches it to the window without scanning it. A retried slice drops its own
earlier attempt first, so it replaces exactly its slice and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from batchscore import db
from batchscore.errors import PermanentError
from batchscore.models.manifest import ModelManifest
from batchscore.pipeline.table_names import legacy_slice_table_name, slice_rejects_name, slice_table_name
from batchscore.pipeline.windows import Window
from batchscore.sink import run_record
from batchscore.sink.output_table import table_ident, window_check
from batchscore.source.slices import KeySlice

log = logging.getLogger(__name__)


class DuplicateKeys(PermanentError):
    """The window holds a key more than once and the pipeline says ``duplicate_keys: fail``."""

    remedy = "make the source query return each key once per window, or set validation.duplicate_keys"


@dataclass(frozen=True)
class SliceTarget:
    """Where one attempt of one slice loads: its lineage row and its two tables (``schema``, names)."""

    lineage_id: int
    schema: str
    table: str
    rejects_table: str

    @property
    def scores_ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)

    @property
    def rejects_ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.rejects_table)


def _target(output_table: str, lineage_id: int) -> SliceTarget:
    schema, table = output_table.split(".")
    return SliceTarget(lineage_id, schema, slice_table_name(table, lineage_id), slice_rejects_name(table, lineage_id))


def _drop_attempts(conn: psycopg.Connection[Any], output_table: str, where: sql.Composable, params: tuple) -> int:
    """Drop the tables and lineage rows of unpublished slice attempts matching ``where``."""
    ids = [
        int(row[0])
        for row in conn.execute(
            sql.SQL("SELECT lineage_id FROM scoring.lineage WHERE published_at IS NULL AND output_table = %s AND ")
            + where,
            (output_table, *params),
        )
    ]
    schema, table = output_table.split(".")
    for lineage_id in ids:
        target = _target(output_table, lineage_id)
        legacy = legacy_slice_table_name(table, lineage_id)  # an attempt made by an older version (cut names)
        names = dict.fromkeys((target.table, target.rejects_table, legacy, f"{legacy}_rej"))
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(
                sql.SQL(", ").join(sql.Identifier(schema, name) for name in names)
            )
        )
        conn.execute("DELETE FROM scoring.lineage WHERE lineage_id = %s", (lineage_id,))
    return len(ids)


def drop_run_slices(url: str, *, pipeline: str, output_table: str, run_id: str) -> int:
    """Drop every unpublished slice of a run (failed, over the reject threshold, or a dry run)."""
    with db.pg_connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('scoring.lineage')").fetchone() == (None,):
            return 0
        return _drop_attempts(conn, output_table, sql.SQL("pipeline = %s AND run_id = %s"), (pipeline, run_id))


def published_by(url: str, output_table: str, window: Window, run_id: str) -> datetime | None:
    """When ``run_id`` published the slices the window holds now; None when it holds another run's, or none."""
    from batchscore.sink.output_table import attached_slices

    schema, table = output_table.split(".")
    with db.pg_connect(url) as conn:
        if conn.execute("SELECT to_regclass('scoring.lineage')").fetchone() == (None,):
            return None
        attached = attached_slices(conn, output_table, window)
        rows = conn.execute(
            "SELECT lineage_id, published_at FROM scoring.lineage WHERE output_table = %s AND run_id = %s "
            "AND published_at IS NOT NULL",
            (output_table, run_id),
        ).fetchall()
    ours = {
        (schema, name): published
        for lineage_id, published in rows
        for name in (slice_table_name(table, lineage_id), legacy_slice_table_name(table, lineage_id))
    }
    if not attached or not attached <= set(ours):
        return None
    return max(ours[name] for name in attached)


def slices_gone(url: str, results: Sequence[Any]) -> list[int]:
    """The indexes of the unpublished slices (``SliceResult``) whose tables are gone: the run failed, or swept.

    An unpublished slice is there when its scores table exists (its challenger's too) and its
    rejects table. A published slice is left to publish to judge: attached to the window, it
    is there; replaced since by another run's publish, it must not come back.
    """
    with db.pg_connect(url) as conn:
        missing = []
        for r in results:
            tables = [sql.Identifier(r.schema, r.table), sql.Identifier(r.schema, r.rejects_table)]
            if r.shadow is not None:
                tables.append(sql.Identifier(r.shadow["schema"], r.shadow["table"]))
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM scoring.lineage WHERE lineage_id = %s AND published_at IS NOT NULL) "
                "OR bool_and(to_regclass(t) IS NOT NULL) FROM unnest(%s::text[]) AS t",
                (r.lineage_id, [t.as_string(conn) for t in tables]),
            ).fetchone()
            if not (row and row[0]):
                missing.append(r.index)
    return missing


def prepare_slice(
    url: str,
    *,
    pipeline: str,
    output_table: str,
    window: Window,
    run_id: str,
    manifest: ModelManifest,
    key_slice: KeySlice,
) -> SliceTarget:
    """Replace any earlier attempt of this slice, record its lineage and create its two tables."""
    parent = table_ident(output_table)
    with db.pg_connect(url, autocommit=True) as conn:
        dropped = _drop_attempts(
            conn,
            output_table,
            sql.SQL("pipeline = %s AND run_id = %s AND window_start = %s AND window_end = %s AND slice_index = %s"),
            (pipeline, run_id, window.start, window.end, key_slice.index),
        )
        if dropped:
            log.info("%s: replaced %d earlier attempt(s)", key_slice.describe(), dropped)
            run_record.record_event(
                conn,
                pipeline=pipeline,
                run_id=run_id,
                stage="score_slice",
                event="attempt replaced",
                detail=f"{output_table} {key_slice.describe()}: {dropped} earlier attempt(s) that never published "
                "(a try lost or failed mid-load, or cleared) dropped before loading again",
            )
        published = conn.execute(
            "SELECT 1 FROM scoring.lineage WHERE pipeline = %s AND run_id = %s AND output_table = %s "
            "AND window_start = %s AND window_end = %s AND slice_index = %s AND published_at IS NOT NULL",
            (pipeline, run_id, output_table, window.start, window.end, key_slice.index),
        ).fetchone()
        if published:
            run_record.record_event(
                conn,
                pipeline=pipeline,
                run_id=run_id,
                stage="score_slice",
                event="scored again",
                detail=f"{output_table} {key_slice.describe()}: scored again after the run had published it (the "
                "task was cleared); a publish after it swaps this slice in, the run's other slices stay",
            )
        row = conn.execute(
            """
            INSERT INTO scoring.lineage (pipeline, output_table, window_start, window_end, run_id, model_name,
                                         model_version, model_sha256, slice_index, key_lower, key_upper)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING lineage_id
            """,
            (
                pipeline,
                output_table,
                window.start,
                window.end,
                run_id,
                manifest.name,
                manifest.version,
                manifest.sha256,
                key_slice.index,
                None if key_slice.lower is None else str(key_slice.lower),
                None if key_slice.upper is None else str(key_slice.upper),
            ),
        ).fetchone()
        assert row is not None
        target = _target(output_table, int(row[0]))
        defaults = {"window_start": window.start, "window_end": window.end, "lineage_id": target.lineage_id}
        with conn.transaction():
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {})").format(target.scores_ident, parent))
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {table} {defaults}, ADD {window}, ADD CONSTRAINT lineage CHECK (lineage_id = {id})"
                ).format(
                    table=target.scores_ident,
                    defaults=sql.SQL(", ").join(
                        sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(sql.Identifier(c), sql.Literal(v))
                        for c, v in defaults.items()
                    ),
                    window=window_check(window),
                    id=sql.Literal(target.lineage_id),
                )
            )
            conn.execute(
                sql.SQL("CREATE UNLOGGED TABLE {} (entity_key text, reason text NOT NULL, row_data text)").format(
                    target.rejects_ident
                )
            )
    return target


def ingest_scores(url: str, target: SliceTarget, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> int:
    """Stream ``batches`` (key, score, label) into the slice's table by binary COPY, in one transaction.

    The window, lineage id come from the table's column defaults. Nothing is visible to
    readers of the scores table until the publish step attaches the slice.
    """
    reader = pa.RecordBatchReader.from_batches(schema, batches)
    with db.adbc_connect(url) as conn, conn.cursor() as cur:
        written = cur.adbc_ingest(target.table, reader, mode="append", db_schema_name=target.schema)
        conn.commit()
    return int(written)


class RejectWriter:
    """Appends rejected rows to the slice's rejects table as they come (memory holds one batch of them)."""

    def __init__(self, url: str, target: SliceTarget) -> None:
        self._conn = db.pg_connect(url, autocommit=True)
        self._copy = sql.SQL("COPY {} (entity_key, reason, row_data) FROM STDIN").format(target.rejects_ident)
        self.rows = 0

    def write(self, rejects: pa.Table) -> None:
        if not rejects.num_rows:
            return
        with self._conn.cursor() as cur, cur.copy(self._copy) as copy:
            for row in zip(*(rejects.column(i).to_pylist() for i in range(3)), strict=True):
                copy.write_row(row)
        self.rows += rejects.num_rows

    def close(self) -> None:
        self._conn.close()


def remove_duplicate_keys(url: str, target: SliceTarget, key: str, policy: str) -> int:
    """Apply ``policy`` to the keys the slice holds more than once; returns the rows moved to the rejects.

    ``reject`` moves every copy to the slice's rejects, ``keep_first`` keeps the first copy
    in the source's order (the load kept that order) and rejects the others, ``fail``
    raises :class:`DuplicateKeys`. Nothing of this is visible before publish.
    """
    table, column = target.scores_ident, sql.Identifier(key)
    duplicated = sql.SQL("SELECT {k} FROM {t} GROUP BY {k} HAVING count(*) > 1").format(k=column, t=table)
    with db.pg_connect(url, autocommit=True) as conn:
        if policy == "fail":
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), string_agg(k::text, ', ') FILTER (WHERE n <= 5) FROM "
                    "(SELECT {k} AS k, row_number() OVER (ORDER BY {k}) AS n FROM ({d}) AS d) AS numbered"
                ).format(k=column, d=duplicated)
            ).fetchone()
            assert row is not None
            raise DuplicateKeys(
                f"{row[0]:,} key(s) appear more than once in the window (first: {row[1]}); "
                "validation.duplicate_keys is fail, so nothing is published"
            )
        first_kept = policy == "keep_first"
        moved = conn.execute(
            sql.SQL(
                """
                WITH copies AS (
                    SELECT ctid AS row_ctid, row_number() OVER (PARTITION BY {k} ORDER BY ctid) AS copy_no,
                           count(*) OVER (PARTITION BY {k}) AS copies
                    FROM {t} WHERE {k} IN ({d})
                ), moved AS (
                    DELETE FROM {t} AS s USING copies AS c
                    WHERE s.ctid = c.row_ctid AND (NOT {first_kept} OR c.copy_no > 1)
                    RETURNING s.{k} AS k, s.score, s.label, c.copy_no, c.copies
                )
                INSERT INTO {rejects} (entity_key, reason, row_data)
                SELECT k::text,
                       'duplicate key: ' || copies || ' copies in the window'
                           || CASE WHEN {first_kept} THEN ' (the first was kept)' ELSE '' END,
                       json_build_object({key_name}, k, 'score', score, 'label', label, 'copy', copy_no)::text
                FROM moved
                """
            ).format(
                k=column,
                t=table,
                d=duplicated,
                first_kept=sql.Literal(first_kept),
                rejects=target.rejects_ident,
                key_name=sql.Literal(key),
            )
        ).rowcount
    log.info("%s: %d row(s) with a duplicated key moved to the rejects (duplicate_keys: %s)", table, moved, policy)
    return int(moved)


def read_scores(url: str, target: SliceTarget) -> Iterator[pa.RecordBatch]:
    """The slice's stored scores and labels (to summarise again after duplicates were taken out)."""
    with db.adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT score, label FROM {}").format(target.scores_ident).as_string(None))
        yield from cur.fetch_record_batch()

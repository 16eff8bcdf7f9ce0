"""Load: publish a window's scores atomically, replacing whatever that window had before.

The scores table is partitioned by window. The scores are bulk-loaded (ADBC ingest,
i.e. binary COPY) into a new table outside any lock; then ONE short transaction takes
the window's advisory lock, swaps that table in as the window's partition (dropping the
old one), replaces the window's rejects and marks the run ``success``. Readers see the
old window or the new one, never a mix; two runs on the same window queue on the lock;
runs on other windows do not wait.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batchscore import db, runs, staging
from batchscore.predict import PartResult
from batchscore.progress import Progress
from batchscore.registry import ModelManifest
from batchscore.summary import ScoreSummary
from batchscore.validation import REJECT_SCHEMA
from batchscore.windows import Window

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PG_KEY_TYPES = {
    pa.int64(): "bigint",
    pa.int32(): "integer",
    pa.int16(): "smallint",
    pa.int8(): "smallint",
    pa.uint8(): "smallint",
    pa.uint16(): "integer",
    pa.uint32(): "bigint",
    pa.string(): "text",
}


class PublishLockTimeout(RuntimeError):
    """Another run held the window's publish lock past the timeout; nothing was published."""


class RejectThresholdExceeded(RuntimeError):
    """Too many rows failed validation: nothing is published for the window."""


@dataclass(frozen=True)
class PublishResult:
    rows_written: int
    rows_rejected: int
    seconds: float
    score_summary: dict[str, object]
    published: bool


def quote_ident(name: str) -> str:
    """Double-quote a validated lower-case identifier (config names are checked the same way)."""
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a valid identifier")
    return f'"{name}"'


def _table_sql(qualified: str) -> str:
    schema, table = qualified.split(".")
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def ensure_output_table(url: str, qualified: str, key: str, key_type: pa.DataType) -> None:
    """Create the pipeline's scores table, partitioned by window, if it does not exist (idempotent).

    Each window is one partition, so publishing a window is a partition swap and dropping
    old windows (retention) is a ``DROP TABLE`` of their partitions. Rows carry only a
    ``lineage_id`` (see ``scoring.lineage``); the ``<table>_lineage`` view spells it out.
    """
    import psycopg

    pg_type = _PG_KEY_TYPES.get(key_type)
    if pg_type is None:
        raise ValueError(f"entity key type {key_type} is not supported; use an integer or text key")
    schema = qualified.split(".", maxsplit=1)[0]
    table = _table_sql(qualified)
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('batchscore:ddl', 0))")
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        conn.execute(
            f"""
            CREATE TABLE IF NOT EXISTS {table} (
                {quote_ident(key)} {pg_type} NOT NULL,
                score          double precision,
                label          text,
                window_start   timestamptz NOT NULL,
                window_end     timestamptz NOT NULL,
                lineage_id     bigint      NOT NULL
            ) PARTITION BY RANGE (window_start, window_end)
            """
        )
        row = conn.execute(
            "SELECT c.relkind, a.attname IS NOT NULL FROM pg_class c LEFT JOIN pg_attribute a "
            "ON a.attrelid = c.oid AND a.attname = 'lineage_id' AND NOT a.attisdropped WHERE c.oid = %s::regclass",
            (table,),
        ).fetchone()
        if row is None or row[0] != "p" or not row[1]:
            raise RuntimeError(
                f"{qualified} exists but is not partitioned by window with a lineage_id column (made by an "
                "older version?); rename or drop it and re-run"
            )
        view = f"{quote_ident(schema)}.{quote_ident(lineage_view(qualified))}"
        if conn.execute("SELECT to_regclass(%s)", (view,)).fetchone() == (None,):  # no lock on a view in use
            conn.execute(
                f"CREATE VIEW {view} AS "
                f"SELECT s.*, l.run_id, l.model_name, l.model_version, l.model_sha256, l.published_at "
                f"FROM {table} AS s JOIN scoring.lineage AS l USING (lineage_id)"
            )


def lineage_view(qualified: str) -> str:
    """The view beside a scores table that joins each score to its run and model artifact."""
    return f"{qualified.split('.')[1][:55]}_lineage"


def partition_name(table: str, window: Window) -> str:
    """The partition holding one window's scores: readable, unique per window, <= 63 characters."""
    digest = hashlib.sha256(f"{window.start.isoformat()}|{window.end.isoformat()}".encode()).hexdigest()[:8]
    return f"{table[:36]}_w{window.start:%Y%m%d%H%M}_{digest}"


def _key_type(score_parts: Sequence[str]) -> pa.DataType:
    return staging.read_schema(score_parts[0]).field("entity_key").type


def check_reject_threshold(parts: Sequence[PartResult], max_fraction: float) -> None:
    """Fail before any write when the share of rejected rows is above the pipeline's threshold."""
    rows_in = sum(p.rows_in for p in parts)
    rejected = sum(p.rows_rejected for p in parts)
    if rows_in and rejected / rows_in > max_fraction:
        raise RejectThresholdExceeded(
            f"{rejected} of {rows_in} rows ({rejected / rows_in:.2%}) failed validation, above "
            f"max_reject_fraction={max_fraction:.2%}; nothing was published. See the rejects parts "
            f"under the run's staging folder for the reasons."
        )


def _literal(value: object) -> str:
    """A SQL literal for DDL defaults (DDL takes no bind parameters); only our own values pass here."""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


def _new_lineage(
    conn: psycopg.Connection[Any], *, pipeline: str, table: str, window: Window, run_id: str, manifest: ModelManifest
) -> int:
    """Record which run, window and model artifact the rows about to be loaded come from."""
    row = conn.execute(
        """
        INSERT INTO scoring.lineage
            (pipeline, output_table, window_start, window_end, run_id, model_name, model_version, model_sha256)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING lineage_id
        """,
        (pipeline, table, window.start, window.end, run_id, manifest.name, manifest.version, manifest.sha256),
    ).fetchone()
    assert row is not None
    return int(row[0])


def publish_window(
    *,
    url: str,
    pipeline: str,
    output_table: str,
    key: str,
    window: Window,
    run_id: str,
    manifest: ModelManifest,
    parts: Iterable[PartResult],
    extract_seconds: float | Callable[[], float],
    max_reject_fraction: float,
    dry_run: bool = False,
    lock_timeout_seconds: int = 600,
    expected_rows: int | None = None,
) -> PublishResult:
    """Swap in the window's new scores partition and rejects in one transaction; finish the run record.

    The scores are first bulk-loaded (binary COPY) into a stand-alone table that already
    carries the run's lineage as column defaults and a CHECK constraint on the window,
    outside any lock. The short publish transaction then detaches and drops the window's
    old partition, attaches the new one (no scan: the CHECK proves the bound), replaces the
    window's rejects and marks the run ``success``.

    ``parts`` may be a lazy iterable that yields parts as they are scored (the in-process
    runner): the bulk load then overlaps the scoring, and the reject threshold is checked
    once the last part is in, still before anything is published. ``expected_rows`` is the
    total to show progress against when ``parts`` is lazy.
    """
    import adbc_driver_postgresql.dbapi as adbc
    import psycopg

    started = time.perf_counter()
    if isinstance(parts, Sequence):
        check_reject_threshold(parts, max_reject_fraction)  # fail before any write when all parts are known
    pending = iter(parts)
    seen = [next(pending)]  # extract always stages at least one (possibly empty) part
    key_type = _key_type([seen[0].scores])
    runs.apply_schema(url)
    ensure_output_table(url, output_table, key, key_type)
    schema_name, table_name = output_table.split(".")
    parent = _table_sql(output_table)
    final = partition_name(table_name, window)
    stage = f"{table_name[:30]}_stage_{hashlib.sha256(run_id.encode()).hexdigest()[:12]}"
    stage_sql, final_sql = f"{quote_ident(schema_name)}.{quote_ident(stage)}", quote_ident(final)
    rejects_stage = f"{quote_ident(schema_name)}.{quote_ident(stage + '_rej')}"
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {stage_sql}, {rejects_stage}")  # a crashed attempt's leftovers
        lineage_id = _new_lineage(
            conn, pipeline=pipeline, table=output_table, window=window, run_id=run_id, manifest=manifest
        )
        defaults = {"window_start": window.start, "window_end": window.end, "lineage_id": lineage_id}
        conn.execute(f"CREATE TABLE {stage_sql} (LIKE {parent} INCLUDING DEFAULTS)")
        conn.execute(
            f"ALTER TABLE {stage_sql} "
            + ", ".join(f"ALTER COLUMN {c} SET DEFAULT {_literal(v)}" for c, v in defaults.items())
            + f", ADD CONSTRAINT {quote_ident(stage + '_window')} CHECK (window_start = {_literal(window.start)} "
            f"AND window_end = {_literal(window.end)})"
        )
        conn.execute(f"CREATE UNLOGGED TABLE {rejects_stage} (entity_key text, reason text, row_data text)")
    ingest_schema = pa.schema([(key, key_type), ("score", pa.float64()), ("label", pa.string())])
    summary = ScoreSummary()
    if isinstance(parts, Sequence):
        progress = Progress(log, "load", sum(p.rows_scored for p in parts))
    else:
        progress = Progress(log, "load", expected_rows, estimated=True)

    def score_batches() -> Iterator[pa.RecordBatch]:
        for part in itertools.chain(seen[:1], pending):
            if part is not seen[0]:
                seen.append(part)
            for batch in staging.iter_batches(part.scores, 262_144):
                summary.add(batch)
                progress.add(batch.num_rows)
                yield pa.RecordBatch.from_arrays(batch.columns, schema=ingest_schema)

    try:
        with adbc.connect(db.libpq_url(url)) as conn, conn.cursor() as cur:
            reader = pa.RecordBatchReader.from_batches(ingest_schema, score_batches())
            cur.adbc_ingest(stage, reader, mode="append", db_schema_name=schema_name)
            check_reject_threshold(seen, max_reject_fraction)
            cur.adbc_ingest(
                stage + "_rej",
                staging.reader([p.rejects for p in seen], REJECT_SCHEMA),
                mode="append",
                db_schema_name=schema_name,
            )
            conn.commit()
    except BaseException:
        with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {stage_sql}, {rejects_stage}")
            conn.execute("DELETE FROM scoring.lineage WHERE lineage_id = %s", (lineage_id,))
        raise
    score_summary = summary.as_dict()
    rows_in = sum(p.rows_in for p in seen)
    rows_scored = sum(p.rows_scored for p in seen)
    rows_rejected = sum(p.rows_rejected for p in seen)
    with psycopg.connect(db.libpq_url(url)) as conn:
        status = "dry_run" if dry_run else "success"
        if dry_run:
            conn.execute(f"DROP TABLE {stage_sql}")
            conn.execute("DELETE FROM scoring.lineage WHERE lineage_id = %s", (lineage_id,))
        else:
            conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_seconds)}s'")
            try:
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"batchscore:publish:{output_table}:{window.start.isoformat()}:{window.end.isoformat()}",),
                )
            except psycopg.errors.LockNotAvailable:
                raise PublishLockTimeout(
                    f"another run kept publishing window {window} of {output_table} for more than "
                    f"{lock_timeout_seconds}s; nothing was changed, the task can be retried"
                ) from None
            old = conn.execute("SELECT to_regclass(%s)", (f"{quote_ident(schema_name)}.{final_sql}",)).fetchone()
            if old and old[0] is not None:
                conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {quote_ident(schema_name)}.{final_sql}")
                conn.execute(f"DROP TABLE {quote_ident(schema_name)}.{final_sql}")
            conn.execute(f"ALTER TABLE {stage_sql} RENAME TO {final_sql}")
            conn.execute(
                f"ALTER TABLE {parent} ATTACH PARTITION {quote_ident(schema_name)}.{final_sql} FOR VALUES "
                f"FROM ({_literal(window.start)}, {_literal(window.end)}) "
                f"TO ({_literal(window.start)}, {_literal(window.end + timedelta(microseconds=1))})"
            )
            conn.execute(
                f"ALTER TABLE {quote_ident(schema_name)}.{final_sql} "
                + ", ".join(f"ALTER COLUMN {c} DROP DEFAULT" for c in defaults)
            )
            conn.execute(
                "UPDATE scoring.lineage SET published_at = now(), rows_written = %s WHERE lineage_id = %s",
                (sum(p.rows_scored for p in seen), lineage_id),
            )
            conn.execute(
                "DELETE FROM scoring.rejects WHERE pipeline = %s AND window_start = %s AND window_end = %s",
                (pipeline, window.start, window.end),
            )
            conn.execute(
                f"""
                INSERT INTO scoring.rejects (pipeline, window_start, window_end, run_id, entity_key, reason, row_data)
                SELECT %s, %s, %s, %s, entity_key, reason, row_data::jsonb FROM {rejects_stage}
                """,
                (pipeline, window.start, window.end, run_id),
            )
        conn.execute(f"DROP TABLE {rejects_stage}")
        seconds = time.perf_counter() - started
        conn.execute(
            """
            UPDATE scoring.scoring_runs SET status = %s, rows_read = %s, rows_scored = %s, rows_rejected = %s,
                rows_written = %s, extract_seconds = %s, predict_seconds = %s, load_seconds = %s,
                score_summary = %s::jsonb, lineage_id = %s, error = NULL, finished_at = now()
            WHERE pipeline = %s AND run_id = %s
            """,
            (
                status,
                rows_in,
                rows_scored,
                rows_rejected,
                0 if dry_run else rows_scored,
                extract_seconds() if callable(extract_seconds) else extract_seconds,
                sum(p.seconds for p in seen),
                seconds,
                json.dumps(score_summary),
                None if dry_run else lineage_id,
                pipeline,
                run_id,
            ),
        )
    log.info("load: %s %d scores and %d rejects for %s in %.1fs", status, rows_scored, rows_rejected, window, seconds)
    return PublishResult(0 if dry_run else rows_scored, rows_rejected, seconds, score_summary, not dry_run)

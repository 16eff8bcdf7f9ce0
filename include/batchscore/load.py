"""Load: publish a window's scores atomically, replacing whatever that window had before.

The scores are bulk-loaded (ADBC ingest, i.e. binary COPY) into a temporary staging
table; then ONE transaction takes the window's advisory lock, deletes the window's old
scores and rejects, inserts the new ones with their lineage, and marks the run
``success``. Readers see the old window or the new one, never a mix; two runs on the
same window queue on the lock; runs on other windows do not wait.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from batchscore import db, runs, storage
from batchscore.predict import PartResult
from batchscore.registry import ModelManifest
from batchscore.validation import REJECT_SCHEMA
from batchscore.windows import Window

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
    """Create the scores table for a pipeline if it does not exist (idempotent)."""
    import psycopg

    pg_type = _PG_KEY_TYPES.get(key_type)
    if pg_type is None:
        raise ValueError(f"entity key type {key_type} is not supported; use an integer or text key")
    schema = qualified.split(".", maxsplit=1)[0]
    table = _table_sql(qualified)
    index = quote_ident(f"{qualified.split('.')[1]}_window_idx"[:63])
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
                model_name     text        NOT NULL,
                model_version  integer     NOT NULL,
                model_sha256   text        NOT NULL,
                run_id         text        NOT NULL,
                scored_at      timestamptz NOT NULL
            )
            """
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {table} (window_start, window_end)")


def _parquet_reader(urls: Sequence[str], schema: pa.Schema) -> pa.RecordBatchReader:
    def batches() -> Iterator[pa.RecordBatch]:
        for url in urls:
            fs, path = storage.filesystem(url)
            with fs.open(path, "rb") as handle:
                yield from pq.ParquetFile(handle).iter_batches(batch_size=262_144)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _key_type(score_parts: Sequence[str]) -> pa.DataType:
    fs, path = storage.filesystem(score_parts[0])
    with fs.open(path, "rb") as handle:
        return pq.ParquetFile(handle).schema_arrow.field("entity_key").type


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


def publish_window(
    *,
    url: str,
    pipeline: str,
    output_table: str,
    key: str,
    window: Window,
    run_id: str,
    manifest: ModelManifest,
    parts: Sequence[PartResult],
    extract_seconds: float,
    max_reject_fraction: float,
    dry_run: bool = False,
    lock_timeout_seconds: int = 600,
) -> PublishResult:
    """Replace the window's scores and rejects in one transaction and finish the run record."""
    import adbc_driver_postgresql.dbapi as adbc

    started = time.perf_counter()
    check_reject_threshold(parts, max_reject_fraction)
    score_urls = [p.scores for p in parts]
    reject_urls = [p.rejects for p in parts]
    key_type = _key_type(score_urls)
    runs.apply_schema(url)
    ensure_output_table(url, output_table, key, key_type)
    scores_schema = pa.schema([("entity_key", key_type), ("score", pa.float64()), ("label", pa.string())])
    rows_in = sum(p.rows_in for p in parts)
    rows_scored = sum(p.rows_scored for p in parts)
    rows_rejected = sum(p.rows_rejected for p in parts)
    predict_seconds = sum(p.seconds for p in parts)
    table = _table_sql(output_table)
    with adbc.connect(db.libpq_url(url)) as conn, conn.cursor() as cur:
        cur.adbc_ingest(
            "batchscore_stage_scores", _parquet_reader(score_urls, scores_schema), mode="create", temporary=True
        )
        cur.adbc_ingest(
            "batchscore_stage_rejects", _parquet_reader(reject_urls, REJECT_SCHEMA), mode="create", temporary=True
        )
        cur.execute(
            """
            SELECT json_build_object(
                'count', count(score), 'mean', avg(score), 'min', min(score), 'max', max(score),
                'p10', percentile_cont(0.1) WITHIN GROUP (ORDER BY score),
                'p50', percentile_cont(0.5) WITHIN GROUP (ORDER BY score),
                'p90', percentile_cont(0.9) WITHIN GROUP (ORDER BY score),
                'labels', (SELECT json_object_agg(coalesce(label, 'null'), n) FROM (
                    SELECT label, count(*) AS n FROM batchscore_stage_scores
                    GROUP BY label ORDER BY n DESC LIMIT 50) AS top_labels)
            )::text FROM batchscore_stage_scores
            """
        )
        summary: dict[str, object] = json.loads(cur.fetchone()[0])
        status = "dry_run" if dry_run else "success"
        rows_written = 0 if dry_run else rows_scored
        if not dry_run:
            cur.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_seconds)}s'")
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                parameters=(f"batchscore:publish:{output_table}:{window.start.isoformat()}:{window.end.isoformat()}",),
            )
            cur.execute(
                f"DELETE FROM {table} WHERE window_start = $1 AND window_end = $2",
                parameters=(window.start, window.end),
            )
            cur.execute(
                f"""
                INSERT INTO {table} ({quote_ident(key)}, score, label, window_start, window_end, model_name,
                                     model_version, model_sha256, run_id, scored_at)
                SELECT entity_key, score, label, $1, $2, $3, $4::integer, $5, $6, now()
                FROM batchscore_stage_scores
                """,
                parameters=(window.start, window.end, manifest.name, manifest.version, manifest.sha256, run_id),
            )
            cur.execute(
                "DELETE FROM scoring.rejects WHERE pipeline = $1 AND window_start = $2 AND window_end = $3",
                parameters=(pipeline, window.start, window.end),
            )
            cur.execute(
                """
                INSERT INTO scoring.rejects (pipeline, window_start, window_end, run_id, entity_key, reason, row_data)
                SELECT $1, $2, $3, $4, entity_key, reason, row_data::jsonb FROM batchscore_stage_rejects
                """,
                parameters=(pipeline, window.start, window.end, run_id),
            )
        seconds = time.perf_counter() - started
        cur.execute(
            """
            UPDATE scoring.scoring_runs SET status = $1, rows_read = $2, rows_scored = $3, rows_rejected = $4,
                rows_written = $5, extract_seconds = $6, predict_seconds = $7, load_seconds = $8,
                score_summary = $9::jsonb, error = NULL, finished_at = now()
            WHERE pipeline = $10 AND run_id = $11
            """,
            parameters=(
                status,
                rows_in,
                rows_scored,
                rows_rejected,
                rows_written,
                extract_seconds,
                predict_seconds,
                seconds,
                json.dumps(summary),
                pipeline,
                run_id,
            ),
        )
        conn.commit()
    log.info("load: %s %d scores and %d rejects for %s in %.1fs", status, rows_written, rows_rejected, window, seconds)
    return PublishResult(rows_written, rows_rejected, seconds, summary, not dry_run)

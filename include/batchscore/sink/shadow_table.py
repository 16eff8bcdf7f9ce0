"""Champion/challenger shadow scoring, its table: the challenger's scores loaded and published beside the champion's.

The rows are read once. Each batch the champion scored is scored again by the challenger
(with the challenger's own validation), and its scores stream into a slice table of the
``<table>_shadow`` scores table on a loader thread of their own, so memory holds a few
batches whatever the slice's size. Publish attaches both tables' slices in one
transaction: the challenger's scores are published, or withheld, with the champion's.
How far the two agree is counted by :mod:`batchscore.scoring.shadow`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from batchscore.models.manifest import ModelManifest
from batchscore.pipeline.windows import Window
from batchscore.scoring.predict import score_batch
from batchscore.scoring.shadow import Agreement, ShadowSlice, agreement, comparison_bins
from batchscore.sink.load import SliceTarget, ingest_scores
from batchscore.sink.output_table import swap_window


class ShadowLoader:
    """Streams the challenger's scores into its slice table on a thread of its own, through a bounded queue."""

    def __init__(self, url: str, target: SliceTarget, schema: pa.Schema, depth: int = 8) -> None:
        self.target = target
        self.rows = 0
        self._queue: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, args=(url, schema), name="shadow-load", daemon=True)
        self._thread.start()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while (batch := self._queue.get()) is not None:
            yield batch

    def _load(self, url: str, schema: pa.Schema) -> None:
        try:
            self.rows = ingest_scores(url, self.target, schema, self._batches())
        except BaseException as exc:  # handed to the scoring side, which raises it at its next write
            self._error = exc

    def _put(self, item: pa.RecordBatch | None) -> None:
        while True:
            if self._error is not None:
                raise RuntimeError(f"loading the challenger's scores failed: {self._error}") from self._error
            try:
                self._queue.put(item, timeout=1.0)
                return
            except queue.Full:
                continue

    def write(self, scores: pa.Table) -> None:
        for batch in scores.to_batches():
            self._put(batch)

    def close(self) -> int:
        """End the stream and wait for the load's commit; the rows loaded."""
        self._put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"loading the challenger's scores failed: {self._error}") from self._error
        return self.rows

    def abort(self) -> None:
        """Stop the loader after a failure elsewhere (the slice's retry drops what it loaded)."""
        if self._thread.is_alive() and self._error is None:
            with contextlib.suppress(RuntimeError):  # it failed meanwhile: nothing to stop
                self._put(None)
        self._thread.join(timeout=60)


class Challenger:
    """The challenger's side of a slice: scores each batch the champion scored, loads, compares."""

    def __init__(  # noqa: PLR0917 (built once per slice, by job.score_slice)
        self,
        model: Any,
        manifest: ModelManifest,
        loader: ShadowLoader,
        champion: ModelManifest,
        key: str,
        unseen_categories: Any,
        schema: pa.Schema,
    ) -> None:
        self.model, self.manifest, self.loader = model, manifest, loader
        self.agreement = Agreement(comparison_bins(champion))
        self._key, self._unseen, self._schema = key, unseen_categories, schema
        self._lock = threading.Lock()
        self.rows_rejected = 0

    def score(self, clean: pa.Table, champion: pa.Table) -> pa.Table:
        """Score the rows the champion scored (``clean``; its scores ``champion``); on a scoring thread.

        Returns the challenger's scores, for the caller to hand to :attr:`loader` in the source's
        order, as the champion's are loaded (batches finish in any order): so ``keep_first``
        keeps the same copy of a duplicated key in both tables.
        """
        theirs = score_batch(clean, self.model, self.manifest, self._key, self._unseen, self._schema)
        self.agreement.add(champion, theirs.scores)
        with self._lock:
            self.rows_rejected += theirs.rejects.num_rows
        return theirs.scores

    def finish(self) -> ShadowSlice:
        """Wait for the challenger's load to commit; what publish needs of it."""
        rows = self.loader.close()
        target = self.loader.target
        return ShadowSlice(
            target.lineage_id,
            target.schema,
            target.table,
            target.rejects_table,
            rows,
            self.rows_rejected,
            self.agreement.partial(),
        )


@dataclass(frozen=True)
class ShadowPublish:
    """The run's challenger: where its scores go and which model made them."""

    table: str
    model_name: str
    model_version: int
    model_sha256: str

    def slices(self, results: Sequence[Any]) -> list[ShadowSlice]:
        return [ShadowSlice(**r.shadow) for r in results if r.shadow is not None]

    def record(self, results: Sequence[Any], published: bool) -> dict[str, Any]:
        """The run record's ``shadow``: the model, its table, its counts and how far it agrees with the champion."""
        pieces = self.slices(results)
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_sha256": self.model_sha256,
            "table": self.table,
            "rows_scored": sum(p.rows_scored for p in pieces),
            "rows_rejected": sum(p.rows_rejected for p in pieces),
            **agreement([p.agreement for p in pieces]),
            "published": published,
        }


def publish_shadow(conn: psycopg.Connection[Any], shadow: ShadowPublish, window: Window, slices: Sequence[Any]) -> None:
    """The challenger's slices become its table's window (inside the champion's publish transaction)."""
    pieces = shadow.slices(slices)
    if len(pieces) != len(slices):
        raise RuntimeError(f"publish needs the challenger's scores of every slice: {len(pieces)} of {len(slices)}")
    swap_window(conn, shadow.table, window, pieces)
    for piece in pieces:
        conn.execute(
            "UPDATE scoring.lineage SET published_at = now(), rows_written = %s WHERE lineage_id = %s",
            (piece.rows_scored, piece.lineage_id),
        )
    conn.execute(
        sql.SQL("DROP TABLE IF EXISTS {}").format(
            sql.SQL(", ").join(sql.Identifier(p.schema, p.rejects_table) for p in pieces)
        )
    )

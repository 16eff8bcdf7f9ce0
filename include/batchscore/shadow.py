"""Champion/challenger shadow scoring: the challenger scores the champion's rows in the same run.

The rows are read once. Each batch the champion scored is scored again by the challenger
(with the challenger's own validation), and its scores stream into a slice table of the
``<table>_shadow`` scores table on a loader thread of their own, so memory holds a few
batches whatever the slice's size. Publish attaches both tables' slices in one
transaction: the challenger's scores are published, or withheld, with the champion's.

How far the two agree is counted as the batches go by: rows compared, labels equal,
summed absolute score difference, and both score distributions over the same bins, from
which publish computes the PSI between them.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from batchscore.drift import DECILES, SCORE, Bins, Reference, fractions, psi
from batchscore.load import SliceTarget, ingest_scores
from batchscore.output_table import swap_window
from batchscore.predict import score_batch
from batchscore.registry import ModelManifest
from batchscore.windows import Window


def comparison_bins(champion: ModelManifest) -> Bins | None:
    """Bins to compare the two score distributions in: the champion's reference score bins, or deciles of [0, 1].

    None for a regressor without a reference (no range known in advance) and a clusterer
    without one (labels are compared row by row instead).
    """
    if champion.reference is not None:
        for bins in Reference.from_dict(champion.reference).bins:
            if bins.column == SCORE:
                return bins
    if champion.task == "classifier":
        return Bins(SCORE, "score", (), edges=DECILES)
    return None


class Agreement:
    """Counts how far champion and challenger agree, batch by batch (thread-safe)."""

    def __init__(self, bins: Bins | None) -> None:
        self.bins = bins
        self._lock = threading.Lock()
        self.rows = 0
        self.labels_equal = 0
        self.labelled = 0
        self.abs_diff = 0.0
        self.scored = 0
        size = len(bins.labels) if bins is not None else 0
        self.champion = np.zeros(size, dtype=np.int64)
        self.challenger = np.zeros(size, dtype=np.int64)

    def add(self, champion: pa.Table, challenger: pa.Table) -> None:
        """``champion`` and ``challenger``: one batch's scores (key, score, label) from each model."""
        if challenger.num_rows != champion.num_rows:  # the challenger rejected some rows: align by key
            positions = pc.index_in(challenger.column(0), value_set=champion.column(0).combine_chunks())
            champion = champion.take(positions)
        labels = pc.equal(champion.column("label"), challenger.column("label"))
        equal = int(pc.sum(labels).as_py() or 0)
        labelled = len(labels) - labels.null_count
        scores = pc.abs(pc.subtract(champion.column("score"), challenger.column("score")))
        diff = float(pc.sum(scores).as_py() or 0.0)
        scored = len(scores) - scores.null_count
        column = "label" if self.bins is not None and self.bins.categories is not None else "score"
        ours = self.bins.count(champion.column(column)) if self.bins is not None else None
        theirs = self.bins.count(challenger.column(column)) if self.bins is not None else None
        with self._lock:
            self.rows += challenger.num_rows
            self.labels_equal += equal
            self.labelled += labelled
            self.abs_diff += diff
            self.scored += scored
            if ours is not None and theirs is not None:
                self.champion += ours
                self.challenger += theirs

    def partial(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rows": self.rows,
                "labels_equal": self.labels_equal,
                "labelled": self.labelled,
                "abs_diff": self.abs_diff,
                "scored": self.scored,
                "champion": self.champion.tolist(),
                "challenger": self.challenger.tolist(),
            }


def _summed(counts: Sequence[Sequence[int]]) -> np.ndarray:
    """Bin counts of several slices added up (every slice uses the same bins)."""
    return np.sum([np.asarray(c, dtype=np.int64) for c in counts], axis=0) if counts else np.zeros(0, np.int64)


def agreement(partials: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's agreement from its slices' :meth:`Agreement.partial` (what the run record's ``shadow`` holds)."""
    rows = sum(int(p["rows"]) for p in partials)
    labelled = sum(int(p["labelled"]) for p in partials)
    scored = sum(int(p["scored"]) for p in partials)
    champion = _summed([p["champion"] for p in partials])
    challenger = _summed([p["challenger"] for p in partials])
    compared = bool(len(champion) and champion.sum() and challenger.sum())
    return {
        "rows": rows,
        "label_agreement": sum(int(p["labels_equal"]) for p in partials) / labelled if labelled else None,
        "mean_abs_diff": sum(float(p["abs_diff"]) for p in partials) / scored if scored else None,
        "psi": psi(fractions(challenger), fractions(champion)) if compared else None,
    }


@dataclass(frozen=True)
class ShadowSlice:
    """Where one slice's challenger scores are (small, for XCom), with the slice's agreement counts."""

    lineage_id: int
    schema: str
    table: str
    rejects_table: str
    rows_scored: int
    rows_rejected: int
    agreement: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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

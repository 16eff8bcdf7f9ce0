"""Publish: the run's slices become the window's scores, in ONE short transaction.

Everything heavy happened before, in the slice tasks (each slice's scores are already in
a table of its own that proves its window and lineage with CHECK constraints). Here, under
the window's advisory lock and a short ``lock_timeout`` retried until a deadline
(:mod:`batchscore.sink.polite_locks`): the slices are swapped in inside the window's own
partition (:func:`~batchscore.sink.output_table.swap_window`, each attach scans nothing), the
window's rejects are replaced, the lineage rows are marked published and the run record is
finished. Readers see the old window or the new one, never a mix; readers of other windows
never wait; two runs on one window queue on the advisory lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import psycopg
from psycopg import sql

from batchscore import db
from batchscore.errors import PermanentError
from batchscore.pipeline.windows import Window
from batchscore.scoring import summary
from batchscore.scoring.drift import DriftReport, Reference, evaluate
from batchscore.sink import run_record
from batchscore.sink.load import drop_run_slices
from batchscore.sink.output_table import attached_slices, swap_window, window_partition
from batchscore.sink.polite_locks import LocksBusy, LockWait, lock_holders, politely
from batchscore.sink.published_windows import OverlappingWindow, check_no_overlap
from batchscore.sink.rejects import RejectThresholdExceeded, check_reject_threshold, keep_rejects, replace_rejects
from batchscore.sink.run_cost import RunCpu
from batchscore.sink.shadow_table import ShadowPublish, publish_shadow
from batchscore.sink.volume_guard import VolumeGuard, VolumeGuardHeld, judge

log = logging.getLogger(__name__)


class PublishLockTimeout(RuntimeError):
    """Another run held the window's publish lock past the timeout; nothing was published."""


class DriftHeld(PermanentError, RuntimeError):
    """The window's features or scores moved past the pipeline's drift thresholds under ``policy: hold``."""

    alert_event = "drift_hold"

    remedy = (
        "compare reference and observed bins in scoring.drift for this run; fix the source if it broke, or retrain "
        "(or re-register with a new --reference) if the change is real; drift.policy: warn publishes while recording"
    )


@dataclass(frozen=True)
class DriftGate:
    """The model's drift reference and the pipeline's policy, applied to the slices' counts at publish."""

    reference: Reference
    policy: Literal["warn", "hold"]
    threshold: float
    score_threshold: float
    min_rows: int

    def judge(self, slices: Sequence[SliceResult]) -> DriftReport:
        return evaluate(
            self.reference,
            [s.drift for s in slices if s.drift is not None],
            threshold=self.threshold,
            score_threshold=self.score_threshold,
            policy=self.policy,
            min_rows=self.min_rows,
        )


@dataclass(frozen=True)
class SliceResult:
    """What scoring one slice produced (small enough for XCom): where its rows are, counts, timings."""

    index: int
    lineage_id: int
    schema: str
    table: str
    rejects_table: str
    lower: int | str | None
    upper: int | str | None
    rows_in: int
    rows_scored: int
    rows_rejected: int
    seconds: float  # the slice's work, from the first query to the commit of its load
    read_seconds: float  # waiting for the source's rows
    score_seconds: float  # validating and scoring, summed over the scoring threads
    startup_seconds: float  # process start to the first query (imports, model load)
    first_row_seconds: float  # process start to the first row read
    host: str
    summary: dict[str, Any]
    unique_key_seconds: float = 0.0  # proving one row per key (and handling duplicates)
    drift: dict[str, list[int]] | None = None  # rows per reference bin, per column (batchscore.scoring.drift)
    drift_seconds: float = 0.0  # CPU seconds counting rows into the drift bins (on the scoring threads)
    shadow: dict[str, Any] | None = None  # the challenger's slice (batchscore.scoring.shadow.ShadowSlice), if any
    cpu: dict[str, float] | None = None  # CPU seconds per stage (batchscore.sink.run_cost.SliceCpu)
    warm_start: bool = False  # the process began with the scoring stack imported (a preloading forkserver)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SliceResult:
        return cls(**data)

    def record(self) -> dict[str, Any]:
        """The slice as the run record lists it (no score sample, no drift counts)."""
        return {k: v for k, v in self.to_dict().items() if k not in {"summary", "drift", "shadow"}}


@dataclass(frozen=True)
class PublishResult:
    rows_written: int
    rows_rejected: int
    seconds: float
    score_summary: dict[str, object]
    published: bool


def _lock_window(conn: psycopg.Connection[Any], output_table: str, window: Window, timeout_seconds: float) -> None:
    """The window's advisory lock: runs publishing one window queue here (no reader ever waits on it)."""
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(timeout_seconds * 1000)}ms")))
    try:
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"batchscore:publish:{output_table}:{window.start.isoformat()}:{window.end.isoformat()}",),
        )
    except psycopg.errors.LockNotAvailable:
        raise PublishLockTimeout(
            f"another run kept publishing window {window} of {output_table} for more than "
            f"{timeout_seconds:.0f}s; nothing was changed, the task can be retried"
        ) from None


def _window_lock_holders(conn: psycopg.Connection[Any], tables: Sequence[str], window: Window) -> list[str]:
    """Who holds the locks a publish of ``window`` needs: its partitions, or (first publish) the tables themselves."""
    trees: list[str] = []
    parents: list[str] = []
    for table in tables:
        partition = window_partition(conn, table, window)
        (trees if partition is not None else parents).append(partition.as_string(conn) if partition else table)
    return lock_holders(conn, trees, parents)


class SlicesReplaced(PermanentError, RuntimeError):
    """The run was published, then another run replaced the window: its slice tables went with that publish."""

    remedy = (
        "the window holds the later run's scores; to score it again with this run, clear the run from its plan "
        "task (or trigger a new run for the window)"
    )


def _already_published(
    conn: psycopg.Connection[Any], output_table: str, window: Window, slices: Sequence[SliceResult]
) -> bool:
    """True when an earlier attempt of this publish committed (it was lost after its commit).

    Published and still the window's slices: nothing to do. Published, but the window now
    holds other slices: a later run replaced this one, whose tables are gone; raises
    :class:`SlicesReplaced` rather than report a publish that did not happen.
    """
    row = conn.execute(
        "SELECT count(*) FROM scoring.lineage WHERE lineage_id = ANY(%s) AND published_at IS NOT NULL",
        ([s.lineage_id for s in slices],),
    ).fetchone()
    published = int(row[0]) if row else 0
    attached = attached_slices(conn, output_table, window) or set()
    if published and attached == {(s.schema, s.table) for s in slices}:
        return True
    gone = [s.index for s in slices if (s.schema, s.table) not in attached and _published(conn, s.lineage_id)]
    if gone:
        raise SlicesReplaced(
            f"slice(s) {', '.join(map(str, gone))} of this run were published to window {window} of {output_table} "
            "and have since been replaced by another run's publish (or the window was dropped); nothing was changed"
        )
    return False


def _published(conn: psycopg.Connection[Any], lineage_id: int) -> bool:
    row = conn.execute("SELECT published_at IS NOT NULL FROM scoring.lineage WHERE lineage_id = %s", (lineage_id,))
    found = row.fetchone()
    return bool(found and found[0])


def publish_window(
    url: str,
    *,
    pipeline: str,
    output_table: str,
    window: Window,
    run_id: str,
    slices: Sequence[SliceResult],
    max_reject_fraction: float,
    dry_run: bool = False,
    lock_timeout_seconds: int = 600,
    drift: DriftGate | None = None,
    shadow: ShadowPublish | None = None,
    volume: VolumeGuard | None = None,
) -> PublishResult:
    """Make ``slices`` the window's scores, atomically; finish the run record. Idempotent on retry.

    Over the reject threshold, held by drift or by the volume guard (``volume``: judged under
    the window's lock, before the swap), overlapping another published window, or for a dry
    run, the slices are dropped and nothing changes. The run's drift (with ``drift``) is
    recorded in every case. A challenger's slices (``shadow``) become its table's window in
    the same transaction, or are dropped with them.
    """
    started = time.perf_counter()
    publish_cpu = time.thread_time()
    slices = sorted(slices, key=lambda s: s.index)
    totals = run_record.RunTotals(
        rows_read=sum(s.rows_in for s in slices),
        rows_scored=sum(s.rows_scored for s in slices),
        rows_rejected=sum(s.rows_rejected for s in slices),
        rows_written=0 if dry_run else sum(s.rows_scored for s in slices),
        extract_seconds=sum(s.read_seconds for s in slices),
        predict_seconds=sum(s.score_seconds for s in slices),
        load_seconds=0.0,
        score_summary=summary.merge([s.summary for s in slices]),
        lineage_id=None if dry_run else slices[0].lineage_id,
        slices=[s.record() for s in slices],
    )
    report = drift.judge(slices) if drift is not None else None
    if report is not None and report.status in {"warn", "held"}:
        log.warning("publish: drift against the model's reference (%s): %s", report.status, report.describe())
    refusal = _Refusal(url, pipeline, output_table, window, run_id, slices, report, shadow)
    try:
        check_reject_threshold(url, slices, max_reject_fraction)
        if report is not None and report.status == "held":
            raise DriftHeld(
                f"drift held the publish of window {window}: {report.describe()}; nothing was published "
                "(drift.policy: hold)"
            )
    except (RejectThresholdExceeded, DriftHeld):
        refusal.record(replace(totals, cpu=_run_cpu(slices, time.thread_time() - publish_cpu)))
        raise
    if dry_run:
        _drop_slices(url, pipeline, output_table, run_id, shadow)
    spent = replace(totals, cpu=_run_cpu(slices, time.thread_time() - publish_cpu))  # a refusal records the slices' CPU
    refused = refusal.recorded(spent)

    def finish(conn: psycopg.Connection[Any], waited: LockWait | None) -> tuple[str, run_record.RunTotals, float]:
        """The publish transaction's body (after the window's lock): guard, swap, lineage, rejects, run record."""
        if not dry_run:
            if _already_published(conn, output_table, window, slices):
                log.info("publish: window %s was published by an earlier attempt of this task", window)
            else:
                _guard_volume(conn, volume, pipeline, run_id, output_table, window, totals.rows_scored)
                swap_window(conn, output_table, window, slices)
                check_no_overlap(conn, pipeline, output_table, window)  # after the attach: see its docstring
                for piece in slices:
                    conn.execute(
                        "UPDATE scoring.lineage SET published_at = now(), rows_written = %s WHERE lineage_id = %s",
                        (piece.rows_scored, piece.lineage_id),
                    )
                replace_rejects(conn, pipeline, window, run_id, slices)
                if shadow is not None:
                    publish_shadow(conn, shadow, window, slices)
        elif volume is not None:  # a dry run says what a real run would do
            _guard_volume(conn, volume, pipeline, run_id, output_table, window, totals.rows_scored, dry_run=True)
        seconds = time.perf_counter() - started
        status = "dry_run" if dry_run else "success"
        done = replace(totals, load_seconds=seconds, cpu=_run_cpu(slices, time.thread_time() - publish_cpu))
        run_record.record_finish(conn, pipeline=pipeline, run_id=run_id, status=status, totals=done)
        if report is not None:
            run_record.record_drift(conn, pipeline=pipeline, run_id=run_id, window=window, report=report)
        if shadow is not None:
            run_record.record_shadow(conn, pipeline=pipeline, run_id=run_id, shadow=shadow.record(slices, not dry_run))
        if waited is not None:
            run_record.record_event(
                conn, pipeline=pipeline, run_id=run_id, stage="publish", event="waited", detail=str(waited)
            )
        return status, done, seconds

    tables = [output_table, *([shadow.table] if shadow is not None else [])]
    try:
        with refused:
            status, totals, seconds = politely(
                url,
                finish,
                what=f"the locks on window {window} of {', '.join(tables)}",
                holders=lambda conn: _window_lock_holders(conn, tables, window),
                deadline_seconds=lock_timeout_seconds,
                enter=None if dry_run else lambda conn, left: _lock_window(conn, output_table, window, left),
            )
    except LocksBusy as exc:
        raise PublishLockTimeout(
            f"other sessions kept window {window} of {output_table} locked: {exc}; nothing was changed, "
            "the task can be retried (those sessions are listed; end them or let them finish)"
        ) from exc
    log.info(
        "publish: %s %d scores and %d rejects from %d slice(s) for %s in %.2fs",
        status,
        totals.rows_scored,
        totals.rows_rejected,
        len(slices),
        window,
        seconds,
    )
    return PublishResult(totals.rows_written, totals.rows_rejected, seconds, totals.score_summary, not dry_run)


def _guard_volume(  # noqa: PLR0917 (publish_window's two call sites)
    conn: psycopg.Connection[Any],
    guard: VolumeGuard | None,
    pipeline: str,
    run_id: str,
    output_table: str,
    window: Window,
    rows: int,
    *,
    dry_run: bool = False,
) -> None:
    """Judge ``rows`` against the volume guard and record the verdict; :class:`VolumeGuardHeld` when held.

    Raised inside publish's transaction, so nothing of it commits; the verdict travels on the
    error to :meth:`_Refusal.recorded`, which records it with the run's counts.
    """
    if guard is None:
        return
    verdict = judge(conn, guard, output_table, window, rows)
    if verdict.held and not dry_run:
        raise VolumeGuardHeld(verdict.cause(window), verdict=verdict)
    if verdict.held:
        log.warning("publish (dry run): a real run would be held: %s", verdict.cause())
    elif verdict.allowed:
        log.warning("publish: %s; allow_shrink is set, so window %s is published", verdict.cause(), window)
    run_record.record_volume(conn, pipeline=pipeline, run_id=run_id, verdict=verdict.record())


@dataclass(frozen=True)
class _Refusal:
    """What a refused publish records: nothing is published, but the bad rows are kept aside (under
    this run's id, beside the window's current rejects) and the run's counts, drift and volume
    verdict recorded, so the cause can be seen."""

    url: str
    pipeline: str
    output_table: str
    window: Window
    run_id: str
    slices: Sequence[SliceResult]
    report: DriftReport | None
    shadow: ShadowPublish | None

    def record(self, totals: run_record.RunTotals, volume: dict[str, Any] | None = None) -> None:
        """Record the refused run (status ``failed``) and drop its slices."""
        with db.pg_connect(self.url) as conn:
            keep_rejects(conn, self.pipeline, self.window, self.run_id, self.slices)
            run_record.record_finish(conn, pipeline=self.pipeline, run_id=self.run_id, status="failed", totals=totals)
            if self.report is not None:
                run_record.record_drift(
                    conn, pipeline=self.pipeline, run_id=self.run_id, window=self.window, report=self.report
                )
            if self.shadow is not None:
                run_record.record_shadow(
                    conn, pipeline=self.pipeline, run_id=self.run_id, shadow=self.shadow.record(self.slices, False)
                )
            if volume is not None:
                run_record.record_volume(conn, pipeline=self.pipeline, run_id=self.run_id, verdict=volume)
        _drop_slices(self.url, self.pipeline, self.output_table, self.run_id, self.shadow)

    @contextmanager
    def recorded(self, totals: run_record.RunTotals) -> Iterator[None]:
        """Around publish's transaction: a refusal inside it (volume guard, overlap) rolled it back; record it."""
        try:
            yield
        except (VolumeGuardHeld, OverlappingWindow) as exc:
            verdict = exc.verdict.record() if isinstance(exc, VolumeGuardHeld) and exc.verdict else None
            self.record(totals, verdict)
            raise


def _drop_slices(url: str, pipeline: str, output_table: str, run_id: str, shadow: ShadowPublish | None) -> None:
    """Drop the run's unpublished slices, the challenger's too."""
    drop_run_slices(url, pipeline=pipeline, output_table=output_table, run_id=run_id)
    if shadow is not None:
        drop_run_slices(url, pipeline=pipeline, output_table=shadow.table, run_id=run_id)


def _run_cpu(slices: Sequence[SliceResult], publish_cpu: float) -> RunCpu:
    """The run's CPU per stage: the slices' summed, this publish's own (the client side of its transaction)."""
    return RunCpu.of((s.cpu for s in slices), publish_cpu, sum(s.rows_scored for s in slices))

"""Publishing one window never makes the readers of other windows wait (real PostgreSQL, readers on other connections).

Windows A, B and C of one scores table are published first. Then B is published again
while a reader holds A open, or while a reader holds a scan of the whole table open for
30 seconds; probes of the other windows, each a fresh query, time how long they wait.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest

from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.windows import Window
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints, RunPlan, plan_run
from batchscore.run.publish_stage import publish_run
from batchscore.run.stages import score_slice
from batchscore.sink.publish import PublishResult
from batchscore.sink.run_record import run_events
from tests.conftest import WAREHOUSE_END, Services, day_window
from tests.integration.helpers import churn_config, run_record, stored_scores

pytestmark = pytest.mark.integration
PIPELINE = "churn_locks"
TABLE = f"scoring.{PIPELINE}_scores"


def _window(n: int) -> Window:
    return Window(*day_window(WAREHOUSE_END - timedelta(days=n)))


A, B, C = _window(2), _window(3), _window(4)


def _config() -> PipelineConfig:
    base = churn_config()
    return base.model_copy(update={"name": PIPELINE, "output": base.output.model_copy(update={"table": TABLE})})


def _endpoints(services: Services) -> Endpoints:
    return Endpoints(services.warehouse_url, services.scores_url, services.registry)


@pytest.fixture(scope="module")
def published(services: Services) -> None:
    for window, run_id in ((A, "it__locks_a"), (B, "it__locks_b"), (C, "it__locks_c")):
        run_pipeline(_config(), _endpoints(services), window=window, run_id=run_id)


def _scored(services: Services, window: Window, run_id: str) -> tuple[RunPlan, list]:
    """A run of ``window`` planned and scored, ready to publish (the slow part, done before any lock)."""
    plan = plan_run(_config(), _endpoints(services), window=window, run_id=run_id)
    return plan, [score_slice(_config(), _endpoints(services), plan, s) for s in plan.key_slices]


def _read_window(url: str, window: Window) -> float:
    """Seconds a fresh reader waits for the window's row count (a new connection, a pruning query)."""
    with psycopg.connect(url, autocommit=True) as conn:
        began = time.perf_counter()
        conn.execute(
            f"SELECT count(*) FROM {TABLE} WHERE window_start = %s AND window_end = %s", (window.start, window.end)
        ).fetchone()
        return time.perf_counter() - began


class Probe:
    """Reads a window again and again on a thread of its own, keeping the longest wait."""

    def __init__(self, url: str, window: Window) -> None:
        self.longest, self.reads = 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, window), daemon=True)
        self._thread.start()

    def _run(self, url: str, window: Window) -> None:
        while not self._stop.is_set():
            self.longest = max(self.longest, _read_window(url, window))
            self.reads += 1
            time.sleep(0.05)

    def stop(self) -> Probe:
        self._stop.set()
        self._thread.join(timeout=30)
        return self


def test_a_transaction_open_on_window_a_lets_window_b_publish_and_c_answer(services: Services, published: None) -> None:
    plan, results = _scored(services, B, "it__locks_b_again")
    with psycopg.connect(services.scores_url) as reader:  # an analyst's session, left open on window A
        reader.execute(f"SELECT count(*) FROM {TABLE} WHERE window_start = %s AND window_end = %s", (A.start, A.end))
        began = time.perf_counter()
        result = publish_run(_config(), _endpoints(services), plan, results)
        publish_seconds = time.perf_counter() - began
        read_c = _read_window(services.scores_url, C)
        reader.rollback()
    assert result.published
    assert publish_seconds < 10, f"publishing B took {publish_seconds:.1f}s beside a reader of A"
    assert read_c < 1.0, f"a fresh reader of C waited {read_c:.2f}s"
    assert set(stored_scores(services.scores_url, TABLE, B.start, B.end)["run_id"]) == {"it__locks_b_again"}
    assert set(stored_scores(services.scores_url, TABLE, A.start, A.end)["run_id"]) == {"it__locks_a"}


def test_a_whole_table_scan_held_30s_delays_no_other_reader_and_the_publish_waits_for_it(
    services: Services, published: None
) -> None:
    plan, results = _scored(services, B, "it__locks_b_polite")
    before_b = stored_scores(services.scores_url, TABLE, B.start, B.end)
    outcome: dict[str, object] = {}

    def publish() -> None:
        try:
            outcome["result"] = publish_run(_config(), _endpoints(services), plan, results)
        finally:
            outcome["finished"] = time.monotonic()

    with psycopg.connect(services.scores_url) as scan:  # an export reading every window in one transaction
        scan.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
        scan_pid = scan.info.backend_pid
        probes = [Probe(services.scores_url, A), Probe(services.scores_url, C)]
        same_window = Probe(services.scores_url, B)
        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        time.sleep(30)
        assert "finished" not in outcome, "the publish went ahead while the scan held window B"
        during = stored_scores(services.scores_url, TABLE, B.start, B.end)
        scan.rollback()
        scan_ended = time.monotonic()
    publisher.join(timeout=60)
    for probe in [*probes, same_window]:
        probe.stop()

    result = outcome["result"]
    assert isinstance(result, PublishResult)
    assert result.published
    assert float(outcome["finished"]) >= scan_ended  # type: ignore[arg-type]
    assert all(p.reads > 100 for p in probes), [p.reads for p in probes]
    assert max(p.longest for p in probes) < 1.0, f"readers of A and C waited {[p.longest for p in probes]}"
    assert same_window.longest < 2.5, f"a reader of B itself waited {same_window.longest:.2f}s (one attempt at most)"
    assert during.equals(before_b), "B's old scores stayed whole while the publish waited"
    assert set(stored_scores(services.scores_url, TABLE, B.start, B.end)["run_id"]) == {"it__locks_b_polite"}
    events = run_events(services.scores_url, pipeline=PIPELINE, run_id=plan.run_id)
    waits = [e for e in events if e["event"] == "waited"]
    assert len(waits) == 1
    assert f"pid {scan_pid} " in waits[0]["detail"]
    record = run_record(services.scores_url, PIPELINE, plan.run_id)
    assert record is not None
    assert record["status"] == "success"


def test_a_repeatable_read_reader_keeps_the_window_it_read_and_sees_a_window_it_had_not_read_as_published(
    services: Services, published: None
) -> None:
    """What docs/semantics.md promises a REPEATABLE READ transaction that began before a swap."""
    plan, results = _scored(services, C, "it__locks_c_rr")
    old_c = set(stored_scores(services.scores_url, TABLE, C.start, C.end)["run_id"])
    query = f"SELECT count(*), min(lineage_id) FROM {TABLE} WHERE window_start = %s AND window_end = %s"
    with psycopg.connect(services.scores_url) as reader:
        reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        a_before = reader.execute(query, (A.start, A.end)).fetchone()  # snapshot taken: the slices of C are loaded
        outcome: dict[str, PublishResult] = {}
        publisher = threading.Thread(
            target=lambda: outcome.setdefault("r", publish_run(_config(), _endpoints(services), plan, results))
        )
        publisher.start()
        publisher.join(timeout=60)
        c_after = reader.execute(query, (C.start, C.end)).fetchone()
        a_after = reader.execute(query, (A.start, A.end)).fetchone()
        reader.rollback()
    assert outcome["r"].published
    assert a_after == a_before
    new_ids = {r.lineage_id for r in results}
    assert c_after is not None
    assert c_after[1] in new_ids, "a window first read after the swap shows the new slices"
    assert old_c != {"it__locks_c_rr"}


def test_a_repeatable_read_snapshot_older_than_the_runs_loads_sees_none_of_them(
    services: Services, published: None
) -> None:
    """The documented limit: attaching is not MVCC-safe, so a snapshot taken before a slice's load misses it."""
    with psycopg.connect(services.scores_url) as reader:
        reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        reader.execute(f"SELECT count(*) FROM {TABLE} WHERE window_start = %s AND window_end = %s", (A.start, A.end))
        plan, results = _scored(services, C, "it__locks_c_old_snapshot")  # loaded after the reader's snapshot
        assert publish_run(_config(), _endpoints(services), plan, results).published
        seen = reader.execute(
            f"SELECT count(*) FROM {TABLE} WHERE window_start = %s AND window_end = %s", (C.start, C.end)
        ).fetchone()
        reader.rollback()
    assert len(results) == 1
    assert seen == (0,)
    assert _read_window(services.scores_url, C) < 1.0
    assert len(stored_scores(services.scores_url, TABLE, C.start, C.end)) == results[0].rows_scored

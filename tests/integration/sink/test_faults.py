"""Faults of the scores database, on a PostgreSQL server of this module's own (the session's stays up).

The server is restarted while a slice is loading and while publish is inside its transaction,
and runs out of disk in the middle of a load (a tablespace on a 128 kB tmpfs, mounted by the
test as root). Each ends with the window exact, or its previous scores untouched, and a run
record that says what happened. Each retry is called as Airflow would call it: the same task
function with the same inputs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest

from batchscore.errors import remedy_of
from batchscore.local.embedded_pg import SYSTEM_USER_WHEN_ROOT, EmbeddedPostgres, free_port
from batchscore.pipeline.config import PipelineConfig
from batchscore.pipeline.windows import Window
from batchscore.run.failures import fail_run
from batchscore.run.in_process import run_pipeline
from batchscore.run.planning import Endpoints, plan_run
from batchscore.run.publish_stage import publish_run
from batchscore.run.stages import score_slice
from batchscore.sink.run_record import run_events
from tests.conftest import TEST_ROOT, WAREHOUSE_END, Services, day_window
from tests.e2e.holds import DISARM_HOLD, HOLD_KEY, arm_hold, loading_backend
from tests.integration.helpers import churn_config, expected_scores, run_record, stored_scores

pytestmark = pytest.mark.integration
PIPELINE = "churn_faults"
TABLE = f"scoring.{PIPELINE}_scores"
WINDOW = Window(*day_window(WAREHOUSE_END - timedelta(days=2)))


def _config() -> PipelineConfig:
    base = churn_config()
    return base.model_copy(update={"name": PIPELINE, "output": base.output.model_copy(update={"table": TABLE})})


@pytest.fixture(scope="module")
def own(services: Services) -> Iterator[tuple[EmbeddedPostgres, Endpoints]]:
    """A scores server of this module's own, with the window published once (the scores every fault must keep)."""
    pg = EmbeddedPostgres(TEST_ROOT / "faults-pg", port=free_port(), settings={"fsync": "off"})
    pg.start()
    pg.ensure_database("scores")
    endpoints = Endpoints(services.warehouse_url, pg.url("scores"), services.registry)
    run_pipeline(_config(), endpoints, window=WINDOW, run_id="it__faults_first")
    try:
        yield pg, endpoints
    finally:
        pg.destroy()


def _assert_exact(services: Services, endpoints: Endpoints, run_id: str) -> None:
    expected, rejected = expected_scores(services.warehouse_url, services.registry, WINDOW.start, WINDOW.end)
    stored = stored_scores(endpoints.scores_url, TABLE, WINDOW.start, WINDOW.end)
    assert len(stored) == len(expected) > 2_000
    np.testing.assert_allclose(stored.loc[expected.index, "score"], expected["score"], rtol=0, atol=1e-12)
    assert set(stored["run_id"]) == {run_id}
    record = run_record(endpoints.scores_url, PIPELINE, run_id)
    assert record is not None
    assert (record["status"], record["rows_written"], record["rows_rejected"]) == (
        "success",
        len(expected),
        len(rejected),
    )


def _in_thread(target, *args) -> tuple[threading.Thread, dict]:  # type: ignore[no-untyped-def]
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = target(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _restart(pg: EmbeddedPostgres) -> None:
    pg.stop()  # fast shutdown: every session is cut, open transactions roll back
    pg.start()


def test_the_scores_database_restarted_while_a_slice_loads(own: tuple, services: Services) -> None:
    pg, endpoints = own
    before = stored_scores(endpoints.scores_url, TABLE, WINDOW.start, WINDOW.end)
    plan = plan_run(_config(), endpoints, window=WINDOW, run_id="it__faults_load")
    with psycopg.connect(endpoints.scores_url, autocommit=True) as admin:
        admin.execute(arm_hold(TABLE))
    holder = psycopg.connect(endpoints.scores_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
    thread, outcome = _in_thread(score_slice, _config(), endpoints, plan, plan.key_slices[0])
    loading_backend(endpoints.scores_url, TABLE)  # the COPY has rows in and waits at its 200th
    _restart(pg)
    thread.join(timeout=120)
    holder.close()

    assert "error" in outcome, "the load failed with its connection"
    assert stored_scores(endpoints.scores_url, TABLE, WINDOW.start, WINDOW.end).equals(before)
    with psycopg.connect(endpoints.scores_url, autocommit=True) as admin:
        admin.execute(DISARM_HOLD)
    retried = [score_slice(_config(), endpoints, plan, s) for s in plan.key_slices]  # Airflow's retry
    publish_run(_config(), endpoints, plan, retried)

    _assert_exact(services, endpoints, "it__faults_load")
    replaced = run_events(endpoints.scores_url, pipeline=PIPELINE, run_id=plan.run_id)
    assert [e["event"] for e in replaced] == ["attempt replaced"]
    assert "1 earlier attempt(s) that never published" in replaced[0]["detail"]


def _publishing(url: str, timeout: float = 60) -> None:
    """Wait until the publish waits inside its transaction, after its swap (on a lineage row the test holds)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%%UPDATE scoring.lineage SET published_at%%'"
            ).fetchone():
                return
            time.sleep(0.05)
    raise TimeoutError("the publish never reached its transaction")


def test_the_scores_database_restarted_while_publish_is_in_its_transaction(own: tuple, services: Services) -> None:
    pg, endpoints = own
    before = stored_scores(endpoints.scores_url, TABLE, WINDOW.start, WINDOW.end)
    plan = plan_run(_config(), endpoints, window=WINDOW, run_id="it__faults_publish")
    results = [score_slice(_config(), endpoints, plan, s) for s in plan.key_slices]
    holder = psycopg.connect(endpoints.scores_url)
    holder.execute("SELECT 1 FROM scoring.lineage WHERE lineage_id = %s FOR UPDATE", (results[0].lineage_id,))
    thread, outcome = _in_thread(publish_run, _config(), endpoints, plan, results)
    _publishing(endpoints.scores_url)  # it has swapped the slices in, uncommitted
    _restart(pg)
    thread.join(timeout=120)
    holder.close()

    assert isinstance(outcome.get("error"), psycopg.OperationalError), outcome
    assert stored_scores(endpoints.scores_url, TABLE, WINDOW.start, WINDOW.end).equals(before), "rolled back"
    assert run_record(endpoints.scores_url, PIPELINE, plan.run_id)["status"] == "running"  # type: ignore[index]
    publish_run(_config(), endpoints, plan, results)  # Airflow's retry: the slices are still there

    _assert_exact(services, endpoints, "it__faults_publish")


@pytest.fixture
def small_disk(own: tuple) -> Iterator[str]:
    """A tablespace on a 128 kB tmpfs (mounted here, as root) that new tables of the scores database go to."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited filesystem needs root")
    pg, _ = own
    mount = Path(TEST_ROOT / "small-disk")
    mount.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        shutil.chown(mount, SYSTEM_USER_WHEN_ROOT, SYSTEM_USER_WHEN_ROOT)
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute(f"CREATE TABLESPACE small LOCATION '{mount}'")
            conn.execute("ALTER DATABASE scores SET default_tablespace = small")
        yield str(mount)
    finally:
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("ALTER DATABASE scores RESET default_tablespace")
            conn.execute("DROP TABLESPACE IF EXISTS small")
        subprocess.run(["umount", str(mount)], check=True)


def _used_kb(mount: str) -> int:
    stat = os.statvfs(mount)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize // 1024


def test_the_scores_database_out_of_disk_in_the_middle_of_a_load(
    own: tuple, services: Services, small_disk: str
) -> None:
    pg, endpoints = own
    before = stored_scores(endpoints.scores_url, TABLE, WINDOW.start, WINDOW.end)
    plan = plan_run(_config(), endpoints, window=WINDOW, run_id="it__faults_disk")
    with pytest.raises(Exception, match="No space left on device") as info:
        score_slice(_config(), endpoints, plan, plan.key_slices[0])
    fail_run(_config(), endpoints, plan.run_id, info.value, stage="score_slice", window=WINDOW)  # the last try

    assert stored_scores(endpoints.scores_url, TABLE, WINDOW.start, WINDOW.end).equals(before)
    record = run_record(endpoints.scores_url, PIPELINE, plan.run_id)
    assert record is not None
    assert (record["status"], record["failed_stage"]) == ("failed", "score_slice")
    assert "No space left on device" in record["error"]
    assert record["remedy"] == remedy_of(info.value)
    assert record["remedy"].startswith("the scores database ran out of disk")
    assert _used_kb(small_disk) < 64, "the failed load was dropped, its space freed"

    with psycopg.connect(pg.url(), autocommit=True) as conn:  # the operator frees space: tables go elsewhere
        conn.execute("ALTER DATABASE scores RESET default_tablespace")
    run_pipeline(_config(), endpoints, window=WINDOW, run_id="it__faults_disk")  # the run cleared and run again
    _assert_exact(services, endpoints, "it__faults_disk")

"""A missed deadline on the real scores database: recorded once, never for a window published in time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from batchscore.local.stack import LocalStack
from batchscore.pipeline.windows import Window
from batchscore.sink.deadline_misses import record_deadline_miss
from tests.integration.helpers import run_record

PIPELINE = "deadline_it"
WINDOW = Window(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
DUE = datetime(2026, 3, 2, 5, tzinfo=UTC)


def _miss(url: str, run_id: str, window: Window = WINDOW, due: datetime = DUE):
    return record_deadline_miss(
        url, pipeline=PIPELINE, run_id=run_id, window=window, output_table="scoring.deadline_it_scores", due=due
    )


def _published(url: str, run_id: str, window: Window, finished_at: datetime) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO scoring.scoring_runs (pipeline, run_id, window_start, window_end, status, model_name, "
            "model_version, model_sha256, output_table, finished_at) VALUES (%s, %s, %s, %s, 'success', 'm', 1, "
            "'x', 'scoring.deadline_it_scores', %s)",
            (PIPELINE, run_id, window.start, window.end, finished_at),
        )


def test_a_waiting_run_without_a_record_gets_one_with_the_miss_once(database: LocalStack) -> None:
    url = database.database_url("scores")
    first = _miss(url, "waiting")
    assert (first.published_at, first.recorded, first.status, first.failed_stage) == (None, True, None, None)
    record = run_record(url, PIPELINE, "waiting")
    assert record is not None
    assert (record["status"], record["window_start"], record["window_end"]) == ("running", WINDOW.start, WINDOW.end)
    assert record["deadline_missed_at"] == first.missed_at is not None
    again = _miss(url, "waiting")
    assert (again.recorded, again.missed_at, again.status) == (False, first.missed_at, "running")


def test_a_failed_runs_record_keeps_its_failure_and_gets_the_miss(database: LocalStack) -> None:
    from batchscore.sink.run_record import record_failure

    url = database.database_url("scores")
    window = Window(WINDOW.start + timedelta(days=1), WINDOW.end + timedelta(days=1))
    record_failure(url, pipeline=PIPELINE, run_id="failed", error="Boom: no", stage="plan", window=window)
    miss = _miss(url, "failed", window, DUE + timedelta(days=1))
    assert (miss.recorded, miss.status, miss.failed_stage) == (True, "failed", "plan")
    record = run_record(url, PIPELINE, "failed")
    assert record is not None
    assert (record["status"], record["error"], record["deadline_missed_at"]) == ("failed", "Boom: no", miss.missed_at)


def test_a_window_published_by_the_deadline_records_nothing(database: LocalStack) -> None:
    url = database.database_url("scores")
    window = Window(WINDOW.start + timedelta(days=2), WINDOW.end + timedelta(days=2))
    due = DUE + timedelta(days=2)
    _published(url, "earlier_run", window, due - timedelta(minutes=1))  # another run of the window, in time
    miss = _miss(url, "late_rerun", window, due)
    assert (miss.published_at, miss.recorded) == (due - timedelta(minutes=1), False)
    assert run_record(url, PIPELINE, "late_rerun") is None


def test_a_window_published_after_the_deadline_is_a_miss(database: LocalStack) -> None:
    url = database.database_url("scores")
    window = Window(WINDOW.start + timedelta(days=3), WINDOW.end + timedelta(days=3))
    due = DUE + timedelta(days=3)
    _published(url, "too_late", window, due + timedelta(minutes=5))  # the callback ran late; the scores were late
    miss = _miss(url, "too_late", window, due)
    assert (miss.published_at, miss.recorded, miss.status) == (None, True, "success")
    record = run_record(url, PIPELINE, "too_late")
    assert record is not None
    assert (record["status"], record["deadline_missed_at"]) == ("success", miss.missed_at)

"""Progress lines: rows, share of the total, rate and ETA, at most once per cadence."""

import logging

import pytest

from batchscore.run.progress import Progress

log = logging.getLogger("test.progress")


def test_line_has_rows_share_rate_and_eta() -> None:
    progress = Progress(log, "extract", 1_000_000, estimated=True)
    progress.rows = 250_000
    line = progress.line(progress.started + 5.0)
    assert line == "extract: 250,000 rows of ~1,000,000 (25%), 50,000 rows/s, ETA ~15s"


def test_eta_in_minutes_and_hours_and_never_negative() -> None:
    progress = Progress(log, "load", 10_000_000)
    progress.rows = 1_000
    assert progress.line(progress.started + 1.0).endswith("ETA 2h46m39s")
    progress.rows = 120_000
    assert progress.line(progress.started + 1.0).endswith("ETA 1m22s")
    progress.rows = 12_000_000  # an estimate that was too low
    assert progress.line(progress.started + 1.0).endswith("(100%), 12,000,000 rows/s, ETA 0s")


def test_without_a_total_there_is_no_share_or_eta() -> None:
    progress = Progress(log, "predict part-00001.arrow")
    progress.rows = 10
    assert progress.line(progress.started + 2.0) == "predict part-00001.arrow: 10 rows, 5 rows/s"


def test_logs_at_most_once_per_cadence(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.progress")
    every_time = Progress(log, "a", 100, every=0.0)
    for _ in range(3):
        every_time.add(10)
    rarely = Progress(log, "b", 100, every=3600.0)
    for _ in range(3):
        rarely.add(10)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(":")[0] for line in lines] == ["a", "a", "a"]
    assert lines[-1].startswith("a: 30 rows of 100 (30%)")

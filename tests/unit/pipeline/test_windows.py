from datetime import UTC, datetime, timedelta, timezone

import pytest

from batchscore.pipeline.windows import Window, WindowError, last_complete_interval, parse_instant, resolve_window

DAILY = "0 0 * * *"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_scheduled_and_backfill_runs_use_the_data_interval() -> None:
    window = resolve_window(
        schedule=DAILY,
        run_after=utc(2026, 11, 2),
        data_interval_start=utc(2026, 11, 1),
        data_interval_end=utc(2026, 11, 2),
    )
    assert window == Window(utc(2026, 11, 1), utc(2026, 11, 2))


def test_backfill_of_an_old_date_uses_its_own_interval_not_now() -> None:
    window = resolve_window(
        schedule=DAILY,
        run_after=utc(2026, 11, 23, 9),
        data_interval_start=utc(2026, 3, 4),
        data_interval_end=utc(2026, 3, 5),
    )
    assert (window.start, window.end) == (utc(2026, 3, 4), utc(2026, 3, 5))


def test_manual_run_without_logical_date_scores_last_complete_interval() -> None:
    window = resolve_window(schedule=DAILY, run_after=utc(2026, 11, 23, 10, 15))
    assert window == Window(utc(2026, 11, 22), utc(2026, 11, 23))


def test_manual_run_with_zero_length_interval_falls_back_to_run_after() -> None:
    instant = utc(2026, 11, 23, 10, 15)
    window = resolve_window(schedule=DAILY, run_after=instant, data_interval_start=instant, data_interval_end=instant)
    assert window == Window(utc(2026, 11, 22), utc(2026, 11, 23))


def test_run_after_exactly_on_a_tick_includes_the_interval_ending_then() -> None:
    assert last_complete_interval(DAILY, utc(2026, 11, 23)) == Window(utc(2026, 11, 22), utc(2026, 11, 23))


def test_manual_params_override_everything() -> None:
    window = resolve_window(
        schedule=DAILY,
        run_after=utc(2026, 11, 23),
        data_interval_start=utc(2026, 11, 1),
        data_interval_end=utc(2026, 11, 2),
        param_start="2026-10-05",
        param_end="2026-10-06T12:00:00Z",
    )
    assert window == Window(utc(2026, 10, 5), utc(2026, 10, 6, 12))


def test_params_with_offsets_are_normalised_to_utc() -> None:
    window = resolve_window(
        schedule=DAILY,
        run_after=utc(2026, 11, 23),
        param_start="2026-10-05T02:00:00+02:00",
        param_end="2026-10-06T00:00:00+00:00",
    )
    assert window.start == utc(2026, 10, 5)
    assert window.start.tzinfo is UTC


def test_pipeline_timezone_reads_naive_params_and_cron() -> None:
    window = resolve_window(schedule=DAILY, run_after=utc(2026, 11, 23, 12), tz="Europe/Paris")
    assert window == Window(utc(2026, 11, 21, 23), utc(2026, 11, 22, 23))
    assert parse_instant("2026-11-01", "Europe/Paris") == utc(2026, 10, 31, 23)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-10-05", None, "both window_start and window_end"),
        (None, "2026-10-05", "both window_start and window_end"),
        ("2026-10-06", "2026-10-05", "must be before end"),
        ("2026-10-05", "2026-10-05", "must be before end"),
        ("yesterday", "2026-10-05", "not an ISO date"),
        ("2026-10-05'; DROP TABLE x;--", "2026-10-06", "not an ISO date"),
        ("x" * 5000, "2026-10-06", "not an ISO date"),
        ("2026-01-01", "2026-06-01", "more than max_window_days=31"),
        ("2026-11-22", "2026-11-24", "not complete yet"),
    ],
)
def test_bad_params_fail_with_a_reason(start: str | None, end: str | None, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        resolve_window(schedule=DAILY, run_after=utc(2026, 11, 23, 1), param_start=start, param_end=end)


def test_window_rejects_naive_datetimes() -> None:
    with pytest.raises(WindowError, match="timezone-aware"):
        Window(datetime(2026, 1, 1), datetime(2026, 1, 2))


def test_window_slug_and_duration() -> None:
    window = Window(datetime(2026, 11, 1, 1, tzinfo=timezone(timedelta(hours=1))), utc(2026, 11, 2))
    assert window.slug == "20261101T000000Z-20261102T000000Z"
    assert window.duration == timedelta(days=1)

"""The window of an asset-started run: from its partition, its events' extra, or their source run's interval."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batchscore.errors import PermanentError
from batchscore.pipeline.event_windows import (
    EventFacts,
    EventWindowError,
    partition_window,
    window_of_event,
    window_of_events,
)
from batchscore.pipeline.schedule_config import AssetSchedule
from batchscore.pipeline.windows import Window

DAILY = AssetSchedule(asset="s3://lake/activity", partitioned=True, period="1d")
SIX_HOURS = AssetSchedule(asset="s3://lake/activity", partitioned=True, period="6h")
AFTER = datetime(2026, 11, 20, 3, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_partition_date_gives_one_period_from_it() -> None:
    window = partition_window(DAILY, key="2026-11-01", partition_date=utc(2026, 11, 1), run_after=AFTER)
    assert window == Window(utc(2026, 11, 1), utc(2026, 11, 2))


def test_a_key_without_a_date_is_parsed_in_our_format_or_the_producers() -> None:
    ours = partition_window(DAILY, key="2026-11-01", partition_date=None, run_after=AFTER)
    producers = partition_window(DAILY, key="2026-11-01T00:00:00", partition_date=None, run_after=AFTER)
    assert ours == producers == Window(utc(2026, 11, 1), utc(2026, 11, 2))
    six = partition_window(SIX_HOURS, key="2026-11-01T18:00:00", partition_date=None, run_after=AFTER)
    assert six == Window(utc(2026, 11, 1, 18), utc(2026, 11, 2))


def test_a_daily_partition_is_a_local_day_across_a_clock_change() -> None:
    # Europe/Paris leaves summer time on 2026-10-25: that local day lasts 25 hours.
    window = partition_window(DAILY, key="2026-10-25", partition_date=None, run_after=AFTER, tz="Europe/Paris")
    assert window == Window(utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))


@pytest.mark.parametrize(
    ("schedule", "key", "date", "expected"),
    [
        (DAILY, "2026-11-01T05:00:00", None, "not on the 1d grid in UTC"),
        (SIX_HOURS, "2026-11-01T05:00:00", None, "not on the 6h grid in UTC"),
        (DAILY, "2026-11-19", None, "has not ended at the run's time"),
        (DAILY, "yesterday", None, "partition_key 'yesterday' does not match '%Y-%m-%d'"),
        (DAILY, "9" * 500, None, "is not a date key"),
        (DAILY, None, None, "partition_key None is not a date key"),
        (DAILY, "2026-11-01", datetime(2026, 11, 1), "has no time zone"),
    ],
)
def test_a_partition_that_is_not_a_period_fails_permanently(
    schedule: AssetSchedule, key: str | None, date: datetime | None, expected: str
) -> None:
    with pytest.raises(EventWindowError, match=expected) as info:
        partition_window(schedule, key=key, partition_date=date, run_after=datetime(2026, 11, 19, 12, tzinfo=UTC))
    assert isinstance(info.value, PermanentError)
    assert len(str(info.value)) < 300


def test_an_event_extra_names_the_window() -> None:
    event = EventFacts(extra={"window_start": "2026-11-01T00:00:00Z", "window_end": "2026-11-02T00:00:00+00:00"})
    assert window_of_event(event) == Window(utc(2026, 11, 1), utc(2026, 11, 2))


def test_a_naive_extra_is_read_in_the_pipeline_time_zone() -> None:
    event = EventFacts(extra={"window_start": "2026-11-01", "window_end": "2026-11-02"})
    assert window_of_event(event, "America/New_York") == Window(utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))


def test_without_extra_the_source_runs_data_interval_is_the_window() -> None:
    event = EventFacts(extra={"rows": 10}, interval_start=utc(2026, 11, 1), interval_end=utc(2026, 11, 2))
    assert window_of_event(event) == Window(utc(2026, 11, 1), utc(2026, 11, 2))


def test_the_extra_wins_over_the_source_interval() -> None:
    event = EventFacts(
        extra={"window_start": "2026-11-03", "window_end": "2026-11-04"},
        interval_start=utc(2026, 11, 1),
        interval_end=utc(2026, 11, 2),
    )
    assert window_of_event(event) == Window(utc(2026, 11, 3), utc(2026, 11, 4))


def test_an_event_with_neither_fails_once_with_a_one_line_cause() -> None:
    event = EventFacts(extra={}, interval_start=utc(2026, 11, 1), interval_end=utc(2026, 11, 1), source="load/r1")
    with pytest.raises(EventWindowError) as info:
        window_of_event(event)
    assert str(info.value) == (
        "load/r1 names no window: no extra window_start/window_end and no data interval on its run"
    )
    assert "trigger a manual run with window_start and window_end" in info.value.remedy
    with pytest.raises(EventWindowError, match="no triggering asset events"):
        window_of_events([])


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"window_start": "2026-11-01"}, "only one of window_start and window_end"),
        ({"window_start": 20261101, "window_end": "2026-11-02"}, "window_start must be an ISO date-time string, got"),
        ({"window_start": None, "window_end": "2026-11-02"}, "window_start must be an ISO date-time string, got None"),
        (
            {"window_start": "2026-11-01'; DROP TABLE scoring.churn_scores; --", "window_end": "2026-11-02"},
            "window_start must be an ISO date-time string",
        ),
        ({"window_start": "2026-11-01 OR 1=1", "window_end": "2026-11-02"}, "is not an ISO date-time"),
        ({"window_start": "x" * 100_000, "window_end": "2026-11-02"}, "got 'xxxxxxxx"),
        ({"window_start": ["2026-11-01"], "window_end": "2026-11-02"}, "got ['2026-11-01']"),
        ({"window_start": "2026-11-02", "window_end": "2026-11-01"}, "is not before window_end"),
    ],
)
def test_hostile_extra_values_get_a_clear_short_error(extra: dict, expected: str) -> None:
    with pytest.raises(EventWindowError) as info:
        window_of_event(EventFacts(extra=extra, source="event of upstream"))
    message = str(info.value)
    assert message.startswith("event of upstream: ")
    assert expected in message
    assert len(message) < 200  # a hostile value is quoted shortened, never whole


def test_several_events_that_touch_give_their_span_and_a_gap_is_refused() -> None:
    day = [
        EventFacts(extra={"window_start": f"2026-11-0{d}", "window_end": f"2026-11-0{d + 1}"}, source=f"e{d}")
        for d in (1, 2, 4)
    ]
    assert window_of_events(day[:2]) == Window(utc(2026, 11, 1), utc(2026, 11, 3))
    assert window_of_events([day[0], day[0]]) == Window(utc(2026, 11, 1), utc(2026, 11, 2))
    with pytest.raises(EventWindowError, match="windows with a gap"):
        window_of_events(day)

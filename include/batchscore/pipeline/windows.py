"""Scoring windows: the half-open time range [start, end) a run scores.

A run never decides what to read from the wall clock. Scheduled and backfill runs take
the window from the DAG run's data interval; a manual run takes it from the trigger
form's params, or else scores the last complete schedule interval before ``run_after``
(what Airflow itself infers for a manual run of an interval timetable).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from batchscore.errors import PermanentError


class WindowError(PermanentError, ValueError):
    """The requested window is malformed, too long, or not complete yet."""

    remedy = "give window_start and window_end as ISO date-times, start before end, within max_window_days"


@dataclass(frozen=True)
class Window:
    """Half-open UTC time range: ``start`` is included, ``end`` is not."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise WindowError(f"window {name} must be a timezone-aware datetime, got {value!r}")
            object.__setattr__(self, name, value.astimezone(UTC))
        if self.start >= self.end:
            raise WindowError(f"window start {self.start.isoformat()} must be before end {self.end.isoformat()}")

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def slug(self) -> str:
        """A file-system-safe label, e.g. ``20261101T000000Z-20261102T000000Z``."""
        return f"{self.start:%Y%m%dT%H%M%SZ}-{self.end:%Y%m%dT%H%M%SZ}"

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def parse_instant(value: str | datetime | date, tz: str = "UTC") -> datetime:
    """Parse an ISO date or date-time; naive values are read in ``tz``, dates at midnight."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 40:
            raise WindowError(f"{value!r} is not an ISO date or date-time")
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise WindowError(f"{value!r} is not an ISO date or date-time (e.g. 2026-11-01T00:00:00Z)") from None
    else:
        raise WindowError(f"{value!r} is not an ISO date or date-time")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(tz))
    return parsed.astimezone(UTC)


def last_complete_interval(schedule: str, before: datetime, tz: str = "UTC") -> Window:
    """The latest cron interval that ended at or before ``before``."""
    local = before.astimezone(ZoneInfo(tz))
    ticks = croniter(schedule, local + timedelta(microseconds=1))
    end = ticks.get_prev(datetime)
    start = ticks.get_prev(datetime)
    return Window(start, end)


def resolve_window(
    *,
    schedule: str,
    run_after: datetime,
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
    param_start: str | None = None,
    param_end: str | None = None,
    tz: str = "UTC",
    max_days: int = 31,
) -> Window:
    """Decide which window a run scores.

    Order: explicit params (both or neither) > a non-empty data interval > the last
    complete schedule interval before ``run_after``. A window longer than ``max_days``
    or ending after ``run_after`` is refused: it would score data that is not all there.
    """
    if (param_start is None) != (param_end is None):
        raise WindowError("give both window_start and window_end, or neither")
    if param_start is not None and param_end is not None:
        window = Window(parse_instant(param_start, tz), parse_instant(param_end, tz))
    elif data_interval_start is not None and data_interval_end is not None and data_interval_start < data_interval_end:
        window = Window(data_interval_start, data_interval_end)
    else:
        window = last_complete_interval(schedule, run_after, tz)
    if window.duration > timedelta(days=max_days):
        raise WindowError(f"window {window} spans {window.duration}, more than max_window_days={max_days}")
    if window.end > run_after.astimezone(UTC):
        raise WindowError(f"window {window} ends after the run's time {run_after.isoformat()}: not complete yet")
    return window

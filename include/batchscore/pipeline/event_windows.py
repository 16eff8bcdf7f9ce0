"""The window of a run started by an upstream Asset: from its partition, else from its triggering events.

A partitioned run has no data interval: it scores [partition_date, partition_date + period), the
partition date read from the run (Airflow derives it through the mapper) or, for a key without
one, parsed from the key. A plain asset-triggered run scores the window its events name, in their
``extra`` (``window_start``/``window_end``, ISO date-times) or else their producing run's data
interval. Values from an event are data from another DAG: each is checked for type, length and
ISO form before use, quoted shortened in errors, and only ever reaches SQL as a bound parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from batchscore.pipeline.schedule_config import AssetSchedule
from batchscore.pipeline.windows import Window, WindowError, parse_instant


class EventWindowError(WindowError):
    """An asset-triggered run cannot tell which window to score; no retry changes its events."""

    remedy = (
        "have the producer set extra window_start/window_end (ISO) on its asset event, or run on a data "
        "interval; to score a window now, trigger a manual run with window_start and window_end"
    )


@dataclass(frozen=True)
class EventFacts:
    """What one triggering asset event says about its window: its ``extra`` and its source run's interval."""

    extra: Mapping[str, object]
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    source: str = "an asset event"  # e.g. "load_day/manual__2026-11-02" for messages


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _instant(extra: Mapping[str, object], name: str, source: str, tz: str) -> datetime:
    value = extra.get(name)
    if not isinstance(value, str) or not 0 < len(value.strip()) <= 40:
        raise EventWindowError(f"{source}: extra {name} must be an ISO date-time string, got {_shown(value)}")
    try:
        return parse_instant(value, tz)
    except WindowError:
        raise EventWindowError(f"{source}: extra {name} {_shown(value)} is not an ISO date-time") from None


def window_of_event(event: EventFacts, tz: str = "UTC") -> Window:
    """The window one event names: its extra's bounds (both or neither), else its source run's data interval."""
    has_start, has_end = "window_start" in event.extra, "window_end" in event.extra
    if has_start or has_end:
        if has_start != has_end:
            raise EventWindowError(f"{event.source}: extra has only one of window_start and window_end")
        start = _instant(event.extra, "window_start", event.source, tz)
        end = _instant(event.extra, "window_end", event.source, tz)
        if start >= end:
            raise EventWindowError(f"{event.source}: extra window_start {start} is not before window_end {end}")
        return Window(start, end)
    first, last = event.interval_start, event.interval_end
    if first is not None and last is not None and first < last:
        return Window(first, last)
    raise EventWindowError(
        f"{event.source} names no window: no extra window_start/window_end and no data interval on its run"
    )


def window_of_events(events: Sequence[EventFacts], tz: str = "UTC") -> Window:
    """The one window a run's triggering events name; several that touch or overlap give their span.

    Airflow folds every event queued before the run into one run, so several are normal. Windows
    with a gap between them would make the run score data nobody announced: that is refused.
    """
    if not events:
        raise EventWindowError("the run has no triggering asset events, so no window")
    windows = sorted({window_of_event(e, tz) for e in events}, key=lambda w: (w.start, w.end))
    start, end = windows[0].start, windows[0].end
    for window in windows[1:]:
        if window.start > end:
            raise EventWindowError(
                f"the triggering events name windows with a gap: [{start.isoformat()}, {end.isoformat()}) and "
                f"{window}; score each with its own manual run"
            )
        end = max(end, window.end)
    return Window(start, end)


def partition_start(schedule: AssetSchedule, key: str | None, partition_date: datetime | None, tz: str) -> datetime:
    """The partition's first instant: the run's ``partition_date``, else its key parsed in ``tz``."""
    if partition_date is not None:
        if partition_date.tzinfo is None:
            raise EventWindowError(f"partition_date {partition_date!r} has no time zone")
        return partition_date.astimezone(UTC)
    if not isinstance(key, str) or not 0 < len(key) <= 40:
        raise EventWindowError(f"the run has no partition_date and its partition_key {_shown(key)} is not a date key")
    for fmt in dict.fromkeys((schedule.downstream_key_format, schedule.key_format)):
        try:
            parsed = datetime.strptime(key, fmt)
        except ValueError:
            continue
        return parsed.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
    raise EventWindowError(
        f"partition_key {_shown(key)} does not match {schedule.downstream_key_format!r} (this pipeline's keys)"
        f" or {schedule.key_format!r} (schedule.key_format, the producer's)"
    )


def partition_window(
    schedule: AssetSchedule, *, key: str | None, partition_date: datetime | None, run_after: datetime, tz: str = "UTC"
) -> Window:
    """[partition start, + period) in the pipeline's time zone; on the period's grid and ended by ``run_after``."""
    local = partition_start(schedule, key, partition_date, tz).astimezone(ZoneInfo(tz))
    period = schedule.period_delta
    on_grid = (local.minute, local.second, local.microsecond) == (0, 0, 0) and (
        local.hour == 0 if period.days else local.hour % (period.seconds // 3600) == 0
    )
    if not on_grid:
        raise EventWindowError(
            f"partition {_shown(key)} starts at {local.isoformat()}, not on the {schedule.period} grid in {tz}",
            remedy="partition the producer by the pipeline's period, or set schedule.period to the producer's",
        )
    end = (local.replace(tzinfo=None) + period).replace(tzinfo=ZoneInfo(tz))
    window = Window(local, end)
    if window.end > run_after.astimezone(UTC):
        raise EventWindowError(
            f"partition {_shown(key)} covers {window}, which has not ended at the run's time {run_after.isoformat()}",
            remedy="emit a partition once its period has closed (CronPartitionTimetable(..., run_offset=-1) "
            "names the period a run just closed)",
        )
    return window

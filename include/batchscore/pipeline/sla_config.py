"""The ``sla:`` section of a pipeline file: the time of day by which a window's scores must be published.

``sla: {land_by: "06:00", timezone: "Europe/Paris"}`` says: the scores of a window are due at the
first 06:00 (Paris wall-clock time) after the window ends, so a nightly window of day D is due at
06:00 on D+1. The DAG turns it into an Airflow deadline alert (:mod:`batchscore.airflow.deadlines`);
this module validates the section and computes the due time, in plain Python.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator

# 24-hour wall-clock time, minutes required, seconds optional: "06:00", "23:59:30".
LAND_BY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


class SlaConfig(BaseModel):
    """When a window's scores must have landed: ``land_by`` (HH:MM[:SS]) in ``timezone`` (an IANA zone).

    ``timezone`` None means the pipeline's own ``timezone`` (pass it to :meth:`zone`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    land_by: str
    timezone: str | None = None

    @field_validator("land_by", mode="before")
    @classmethod
    def _wall_clock(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted 16:00 (not 06:00) as the base-60 integer 960: refuse it with the fix.
        if isinstance(value, int) and not isinstance(value, bool):
            meant = f"{value // 60:02d}:{value % 60:02d}" if 0 <= value < 24 * 60 else "HH:MM"
            raise ValueError(
                f'{value} is not a time of day (YAML reads an unquoted {meant} as {value}): quote it, "{meant}"'
            )
        if not isinstance(value, str) or not LAND_BY.match(value.strip()):
            raise ValueError(f'{str(value)[:40]!r} is not a time of day (HH:MM or HH:MM:SS, 24-hour, e.g. "06:00")')
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, tz: str | None) -> str | None:
        if tz is None:
            return None
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r} (an IANA name such as Europe/Paris or UTC)") from exc
        return tz

    @property
    def wall_clock(self) -> time:
        """``land_by`` as a time of day (no zone)."""
        match = LAND_BY.match(self.land_by)
        assert match is not None  # validated
        hour, minute, second = match.groups()
        return time(int(hour), int(minute), int(second or 0))

    def zone(self, default: str = "UTC") -> ZoneInfo:
        return ZoneInfo(self.timezone or default)


def land_by_after(window_end: datetime, land_by: time, tz: ZoneInfo) -> datetime:
    """The first wall-clock ``land_by`` in ``tz`` strictly after ``window_end``, in UTC.

    Across daylight-saving changes the wall-clock time is kept: 06:00 Paris is 05:00 UTC in
    winter and 04:00 UTC in summer. A ``land_by`` that does not exist that day (02:30 on the
    spring-forward night) is the instant it would be on the old offset (03:30 on the new one); one
    that happens twice (the autumn night) is the first of the two.
    """
    if window_end.tzinfo is None:
        raise ValueError(f"window end {window_end.isoformat()} has no time zone")
    local_day = window_end.astimezone(tz).date()
    for days in (0, 1, 2):  # the first candidate after window_end is today's or tomorrow's; 2 covers DST edges
        candidate = datetime.combine(local_day + timedelta(days=days), land_by, tzinfo=tz).astimezone(UTC)
        if candidate > window_end:
            return candidate
    raise AssertionError("unreachable: a wall-clock time recurs within two days")

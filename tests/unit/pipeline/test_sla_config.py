"""The sla: section: validated at parse time, and the due time it gives a window, across zones and DST."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from batchscore.pipeline.config import ConfigError, parse_config
from batchscore.pipeline.sla_config import land_by_after

REPO = Path(__file__).resolve().parents[3]
PARIS = ZoneInfo("Europe/Paris")


def churn_with(sla_yaml: str) -> object:
    data = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    data["sla"] = yaml.safe_load(sla_yaml)
    return parse_config(data, Path("include/pipelines/churn.yaml"))


def test_a_time_and_a_zone_are_read() -> None:
    config = churn_with("{land_by: 06:00, timezone: Europe/Paris}")  # YAML keeps a leading-zero 06:00 a string
    sla = config.sla  # type: ignore[attr-defined]
    assert (sla.land_by, sla.timezone, sla.wall_clock, sla.zone().key) == (
        "06:00",
        "Europe/Paris",
        time(6),
        "Europe/Paris",
    )


def test_without_a_zone_the_pipeline_zone_is_used_and_seconds_are_allowed() -> None:
    sla = churn_with('{land_by: "23:59:30"}').sla  # type: ignore[attr-defined]
    assert (sla.timezone, sla.wall_clock, sla.zone("America/New_York").key) == (
        None,
        time(23, 59, 30),
        "America/New_York",
    )


@pytest.mark.parametrize(
    ("sla", "message"),
    [
        (
            "{land_by: 16:00}",
            'sla.land_by: 960 is not a time of day (YAML reads an unquoted 16:00 as 960): quote it, "16:00"',
        ),
        ('{land_by: "6am"}', "sla.land_by: '6am' is not a time of day (HH:MM or HH:MM:SS, 24-hour"),
        ('{land_by: "24:00"}', "sla.land_by: '24:00' is not a time of day"),
        ('{land_by: "06:60"}', "sla.land_by: '06:60' is not a time of day"),
        ('{land_by: "06:00", timezone: Europe/Pariss}', "sla.timezone: unknown time zone 'Europe/Pariss'"),
        ('{land_by: "06:00", tz: UTC}', "sla.tz: Extra inputs are not permitted"),
        ("{timezone: UTC}", "sla.land_by: Field required"),
    ],
)
def test_a_bad_sla_names_the_file_and_the_field(sla: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        churn_with(sla)
    assert str(caught.value).startswith("include/pipelines/churn.yaml: sla.")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("window_end", "land_by", "zone", "due"),
    [
        # a nightly UTC window of 2026-01-14 is due at 06:00 Paris on the 15th: 05:00 UTC in winter
        (datetime(2026, 1, 15, tzinfo=UTC), time(6), PARIS, datetime(2026, 1, 15, 5, tzinfo=UTC)),
        # in summer 06:00 Paris is 04:00 UTC
        (datetime(2026, 7, 15, tzinfo=UTC), time(6), PARIS, datetime(2026, 7, 15, 4, tzinfo=UTC)),
        # a Paris-midnight window ends at 22:00 UTC the day before; due the same Paris morning
        (datetime(2026, 7, 14, 22, tzinfo=UTC), time(6), PARIS, datetime(2026, 7, 15, 4, tzinfo=UTC)),
        # a window ending after land_by's time of day is due the next day
        (datetime(2026, 1, 15, 7, tzinfo=UTC), time(6), PARIS, datetime(2026, 1, 16, 5, tzinfo=UTC)),
        # a window ending exactly at land_by is due one day later (strictly after the end)
        (datetime(2026, 1, 15, 5, tzinfo=UTC), time(6), PARIS, datetime(2026, 1, 16, 5, tzinfo=UTC)),
        # spring forward (2026-03-29, 02:00 -> 03:00 in Paris): 06:00 is at +02:00
        (datetime(2026, 3, 29, tzinfo=UTC), time(6), PARIS, datetime(2026, 3, 29, 4, tzinfo=UTC)),
        # the night before it 06:00 was still at +01:00
        (datetime(2026, 3, 28, tzinfo=UTC), time(6), PARIS, datetime(2026, 3, 28, 5, tzinfo=UTC)),
        # fall back (2026-10-25, 03:00 -> 02:00): 06:00 is at +01:00 again
        (datetime(2026, 10, 25, tzinfo=UTC), time(6), PARIS, datetime(2026, 10, 25, 5, tzinfo=UTC)),
        # 02:30 does not exist on 2026-03-29 in Paris: the instant it would be on the old offset (03:30 CEST)
        (datetime(2026, 3, 29, tzinfo=UTC), time(2, 30), PARIS, datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        # 02:30 happens twice on 2026-10-25: the first one (+02:00)
        (datetime(2026, 10, 25, tzinfo=UTC), time(2, 30), PARIS, datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        # a zone west of UTC: 06:00 New York on 2026-01-15 is 11:00 UTC
        (
            datetime(2026, 1, 15, 5, tzinfo=UTC),
            time(6),
            ZoneInfo("America/New_York"),
            datetime(2026, 1, 15, 11, tzinfo=UTC),
        ),
        # Australia/Lord_Howe shifts by 30 minutes (+11:00 in January)
        (
            datetime(2026, 1, 14, 13, tzinfo=UTC),
            time(6),
            ZoneInfo("Australia/Lord_Howe"),
            datetime(2026, 1, 14, 19, tzinfo=UTC),
        ),
    ],
)
def test_the_due_time_is_the_first_land_by_after_the_window_end(
    window_end: datetime, land_by: time, zone: ZoneInfo, due: datetime
) -> None:
    got = land_by_after(window_end, land_by, zone)
    assert got == due
    assert got.tzinfo is UTC


def test_a_naive_window_end_is_refused() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        land_by_after(datetime(2026, 1, 15), time(6), PARIS)

"""``schedule:``: a cron string, a plain Asset, or a partitioned Asset; every mistake named at parse time."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchscore.pipeline.config import ConfigError, PipelineConfig, load_config, parse_config
from batchscore.pipeline.schedule_config import AssetSchedule, grid_cron
from tests.unit.pipeline.test_config import churn_data, write


def churn_on(schedule: object, tz: str = "UTC") -> PipelineConfig:
    """The shipped churn pipeline on another ``schedule`` and ``timezone`` (for the other schedule tests)."""
    data = churn_data()
    data.update(schedule=schedule, timezone=tz)
    return parse_config(data, Path("churn.yaml"))


def _with_schedule(tmp_path: Path, schedule: object):
    data = churn_data()
    data["schedule"] = schedule
    return load_config(write(tmp_path, data))


def test_a_cron_string_stays_the_default_form(tmp_path: Path) -> None:
    config = _with_schedule(tmp_path, "0 2 * * *")
    assert config.schedule == "0 2 * * *"
    assert grid_cron(config.schedule) == "0 2 * * *"


def test_a_plain_asset_by_uri_or_name(tmp_path: Path) -> None:
    by_uri = _with_schedule(tmp_path, {"asset": "postgres://warehouse/public/customer_activity"})
    assert by_uri.schedule == AssetSchedule(asset="postgres://warehouse/public/customer_activity")
    assert isinstance(by_uri.schedule, AssetSchedule)
    assert (by_uri.schedule.is_uri, by_uri.schedule.partitioned, by_uri.schedule.period) == (True, False, "1d")
    by_name = _with_schedule(tmp_path, {"asset": "customer_activity_daily"})
    assert isinstance(by_name.schedule, AssetSchedule)
    assert by_name.schedule.is_uri is False


@pytest.mark.parametrize(
    ("period", "mapper", "own_keys", "cron", "hours"),
    [
        ("1d", "start_of_day", "%Y-%m-%d", "0 0 * * *", 24),
        ("1h", "start_of_hour", "%Y-%m-%dT%H", "0 * * * *", 1),
        ("6h", "identity", "%Y-%m-%dT%H:%M:%S", "0 */6 * * *", 6),
    ],
)
def test_a_partitioned_asset_gets_a_mapper_and_a_grid_for_its_period(
    tmp_path: Path, period: str, mapper: str, own_keys: str, cron: str, hours: int
) -> None:
    config = _with_schedule(tmp_path, {"asset": "s3://lake/activity", "partitioned": True, "period": period})
    schedule = config.schedule
    assert isinstance(schedule, AssetSchedule)
    assert (schedule.mapper, schedule.downstream_key_format, schedule.grid_cron) == (mapper, own_keys, cron)
    assert schedule.period_delta.total_seconds() == hours * 3600


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("every night", "schedule: 'every night' is not a valid cron expression"),
        ({"asset": "s3://lake/x", "period": "5m"}, "schedule: period: '5m' is not a supported period"),
        ({"asset": "s3://lake/x", "period": "7h"}, "schedule: period: '7h' is not a supported period"),
        ({"asset": "not a name"}, "schedule: asset: 'not a name' is not a valid Asset name or URI"),
        ({"asset": "s3://lake/has space"}, "is not a valid Asset URI"),
        ({"asset": "airflow://reserved"}, "is not a valid Asset URI"),
        ({"asset": "x" * 300}, "is not a valid Asset name or URI"),
        ({"asset": "s3://lake/x", "partitioned": "sometimes"}, "partitioned: Input should be a valid boolean"),
        ({"asset": "s3://lake/x", "key_format": "%Y-%m"}, "schedule: key_format: '%Y-%m' must hold %Y, %m and %d"),
        ({"asset": "s3://lake/x", "key_format": "%Y%m%d;%x"}, "may use only %Y %m %d %H %M %S"),
        ({"asset": "s3://lake/x", "cron": "0 0 * * *"}, "schedule: cron: Extra inputs are not permitted"),
        ({"partitioned": True}, "schedule: asset: Field required"),
        (42, "schedule: must be a cron string or a mapping"),
    ],
)
def test_a_bad_schedule_is_named_with_the_file_and_the_field(tmp_path: Path, schedule: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        _with_schedule(tmp_path, schedule)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "churn.yaml") + ": schedule: ")
    assert expected in message
    assert "\n" not in message  # one line

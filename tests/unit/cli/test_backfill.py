"""``batchscore backfill``: which runs re-score a date range of an asset-scheduled pipeline."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from batchscore.cli.backfill import plan_backfill
from batchscore.pipeline.windows import Window
from tests.unit.pipeline.test_schedule_config import churn_on

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 11, 3, 12, tzinfo=UTC)


def test_a_partitioned_pipeline_gets_one_partition_key_per_ended_day() -> None:
    config = churn_on({"asset": "s3://lake/activity", "partitioned": True})
    runs = plan_backfill(config, date(2026, 11, 1), date(2026, 11, 5), NOW)
    assert [r.body["partition_key"] for r in runs] == ["2026-11-01", "2026-11-02"]  # 11-03 has not ended
    assert runs[0].window == Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
    assert runs[0].body == {
        "logical_date": None,
        "dag_run_id": "manual__20261101T000000Z-20261102T000000Z__20261103T120000",
        "partition_key": "2026-11-01",
    }


def test_a_plain_asset_pipeline_gets_the_trigger_forms_window_per_period_in_its_timezone() -> None:
    config = churn_on({"asset": "s3://lake/activity", "period": "12h"}, tz="Europe/Paris")
    runs = plan_backfill(config, date(2026, 11, 1), date(2026, 11, 1), NOW)
    assert [r.body["conf"] for r in runs] == [
        {"window_start": "2026-10-31T23:00:00+00:00", "window_end": "2026-11-01T11:00:00+00:00"},
        {"window_start": "2026-11-01T11:00:00+00:00", "window_end": "2026-11-01T23:00:00+00:00"},
    ]
    assert all("partition_key" not in r.body for r in runs)


def test_an_hourly_partitioned_pipeline_uses_its_own_hour_keys() -> None:
    config = churn_on({"asset": "s3://lake/activity", "partitioned": True, "period": "1h"})
    runs = plan_backfill(config, date(2026, 11, 2), date(2026, 11, 2), NOW)
    assert len(runs) == 24
    assert (runs[0].body["partition_key"], runs[-1].body["partition_key"]) == ("2026-11-02T00", "2026-11-02T23")
    assert len({r.body["dag_run_id"] for r in runs}) == 24


@pytest.mark.parametrize(
    ("schedule", "first", "last", "message"),
    [
        ("0 0 * * *", date(2026, 11, 1), date(2026, 11, 2), "use airflow backfill create --dag-id score_churn"),
        ({"asset": "s3://lake/a"}, date(2026, 11, 2), date(2026, 11, 1), "--from-date 2026-11-02 is after"),
        ({"asset": "s3://lake/a", "period": "1h"}, date(2026, 1, 1), date(2026, 11, 1), "more than 1000 runs"),
    ],
)
def test_what_it_refuses(schedule: object, first: date, last: date, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_backfill(churn_on(schedule), first, last, NOW)

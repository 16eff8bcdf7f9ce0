"""The Airflow side of ``schedule:``: which timetable a pipeline gets, and which window an asset-started run scores.

Contexts are plain dicts with the Task SDK's own event class, as the task runner builds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset, CronDataIntervalTimetable, PartitionedAssetTimetable, StartOfDayMapper
from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
from airflow.sdk.definitions.asset import AssetUriRef
from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor
from airflow.utils.types import DagRunType

from batchscore.airflow.glue import window_from_context
from batchscore.airflow.schedules import dag_schedule, scores_event_extra
from batchscore.pipeline.config import ConfigError
from batchscore.pipeline.event_windows import EventWindowError
from batchscore.pipeline.windows import Window
from tests.unit.pipeline.test_schedule_config import churn_on

REPO = Path(__file__).resolve().parents[3]
AFTER = datetime(2026, 11, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _DagRun:
    run_type: DagRunType
    run_after: datetime


def _event(extra: dict[str, Any], run_id: str = "manual__1") -> AssetEventDagRunReferenceResult:
    return AssetEventDagRunReferenceResult(
        asset=AssetReferenceAssetEventDagRun(name="activity", uri="s3://lake/activity", extra={}),
        extra=extra,
        source_task_id="load",
        source_dag_id="load_activity",
        source_run_id=run_id,
        source_map_index=-1,
        source_aliases=[],
        timestamp=datetime(2026, 11, 2, 0, 5, tzinfo=UTC),
    )


def _context(run_type: DagRunType, **extra: Any) -> dict[str, Any]:
    return {"params": {}, "dag_run": _DagRun(run_type, AFTER), "run_id": "r1", **extra}


def test_a_cron_schedule_keeps_its_interval_timetable() -> None:
    timetable = dag_schedule(churn_on("0 2 * * *"))
    assert isinstance(timetable, CronDataIntervalTimetable)
    assert timetable == CronDataIntervalTimetable("0 2 * * *", timezone="UTC")


def test_a_plain_asset_schedule_declares_the_producers_asset() -> None:
    """Not a reference: Airflow 3.3.2 gives a run triggered through Asset.ref no triggering events."""
    by_uri = Asset(name="s3://lake/activity", uri="s3://lake/activity")
    assert dag_schedule(churn_on({"asset": "s3://lake/activity"})) == by_uri
    named = dag_schedule(churn_on({"asset": "s3://lake/activity", "name": "activity"}))
    assert (named.name, named.uri) == ("activity", "s3://lake/activity")
    assert dag_schedule(churn_on({"asset": "activity_daily"})) == Asset(name="activity_daily")


def test_a_partitioned_asset_schedule_maps_the_producers_keys_to_local_days() -> None:
    timetable = dag_schedule(churn_on({"asset": "s3://lake/activity", "partitioned": True}, tz="Europe/Paris"))
    assert isinstance(timetable, PartitionedAssetTimetable)
    assert timetable.asset_condition == AssetUriRef(uri="s3://lake/activity")
    mapper = timetable.default_partition_mapper
    assert isinstance(mapper, StartOfDayMapper)
    assert (mapper.input_format, mapper.output_format, str(mapper._timezone)) == (
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d",
        "Europe/Paris",
    )


def test_a_pipeline_scheduled_on_its_own_scores_is_refused() -> None:
    with pytest.raises(ConfigError, match="is its own scores Asset"):
        dag_schedule(churn_on({"asset": "batchscore://scores_db/scoring.churn_scores"}))


def test_a_partitioned_run_scores_its_partition() -> None:
    config = churn_on({"asset": "s3://lake/activity", "partitioned": True})
    context = _context(
        DagRunType.ASSET_TRIGGERED, partition_key="2026-11-01", partition_date=datetime(2026, 11, 1, tzinfo=UTC)
    )
    assert window_from_context(config, context) == Window(
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    )


def test_a_manual_run_with_a_partition_key_and_no_date_scores_that_partition() -> None:
    config = churn_on({"asset": "s3://lake/activity", "partitioned": True})
    context = _context(DagRunType.MANUAL, partition_key="2026-10-30", partition_date=None)
    assert window_from_context(config, context) == Window(
        datetime(2026, 10, 30, tzinfo=UTC), datetime(2026, 10, 31, tzinfo=UTC)
    )


def test_a_plain_asset_run_scores_the_window_in_its_events_extra() -> None:
    config = churn_on({"asset": "s3://lake/activity"})
    events = TriggeringAssetEventsAccessor.build(
        [_event({"window_start": "2026-11-01T00:00:00Z", "window_end": "2026-11-02T00:00:00Z", "rows": 3})]
    )
    context = _context(DagRunType.ASSET_TRIGGERED, triggering_asset_events=events)
    assert window_from_context(config, context) == Window(
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    )


def test_an_event_window_still_obeys_the_pipelines_window_rules() -> None:
    config = churn_on({"asset": "s3://lake/activity"})
    late = _event({"window_start": "2026-11-02T00:00:00Z", "window_end": "2026-11-04T00:00:00Z"})
    context = _context(DagRunType.ASSET_TRIGGERED, triggering_asset_events=TriggeringAssetEventsAccessor.build([late]))
    with pytest.raises(Exception, match="ends after the run's time"):
        window_from_context(config, context)
    long = _event({"window_start": "2026-01-01T00:00:00Z", "window_end": "2026-11-01T00:00:00Z"})
    context = _context(DagRunType.ASSET_TRIGGERED, triggering_asset_events=TriggeringAssetEventsAccessor.build([long]))
    with pytest.raises(Exception, match="more than max_window_days=31"):
        window_from_context(config, context)


def test_an_asset_run_with_a_partitioned_schedule_but_no_key_fails_permanently() -> None:
    config = churn_on({"asset": "s3://lake/activity", "partitioned": True})
    with pytest.raises(EventWindowError, match="started by assets but has no partition_key"):
        window_from_context(config, _context(DagRunType.ASSET_TRIGGERED, partition_key=None, partition_date=None))


def test_a_manual_run_without_a_window_scores_the_last_complete_period() -> None:
    config = churn_on({"asset": "s3://lake/activity", "period": "6h"})
    assert window_from_context(config, _context(DagRunType.MANUAL)) == Window(
        datetime(2026, 11, 2, 18, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    )


def test_the_form_window_wins_over_the_partition() -> None:
    config = churn_on({"asset": "s3://lake/activity", "partitioned": True})
    context = _context(DagRunType.MANUAL, partition_key="2026-10-30", partition_date=None)
    context["params"] = {"window_start": "2026-10-01T00:00:00Z", "window_end": "2026-10-02T00:00:00Z"}
    assert window_from_context(config, context) == Window(
        datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC)
    )


def test_the_scores_event_extra_names_the_window_rows_model_and_run() -> None:
    @dataclass
    class Plan:
        window_start: str = "2026-11-01T00:00:00+00:00"
        window_end: str = "2026-11-02T00:00:00+00:00"
        model_name: str = "churn"
        model_version: int = 3

    @dataclass
    class Result:
        rows_written: int = 2990
        rows_rejected: int = 10
        published: bool = True

    config = churn_on({"asset": "s3://lake/activity", "partitioned": True})
    extra = scores_event_extra(config, {"partition_key": "2026-11-01", "run_id": "r9"}, Plan(), Result())
    assert extra == {
        "pipeline": "churn",
        "window_start": "2026-11-01T00:00:00+00:00",
        "window_end": "2026-11-02T00:00:00+00:00",
        "partition_key": "2026-11-01",
        "rows": 2990,
        "rows_rejected": 10,
        "published": True,
        "model_name": "churn",
        "model_version": 3,
        "run_id": "r9",
        "timezone": "UTC",
    }

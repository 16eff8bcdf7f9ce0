"""A pipeline's schedule as Airflow objects, an asset-started run's window, and the scores Asset's event.

``schedule:`` a cron string gives ``CronDataIntervalTimetable`` (a real interval per run);
``{asset: ...}`` schedules on a reference to the upstream Asset (by URI or name, so the producer's
definition is the one that counts); ``{asset: ..., partitioned: true}`` gives a
``PartitionedAssetTimetable`` whose mapper turns the producer's keys into this pipeline's periods.
Only this module and the DAG factory know these Airflow names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import (
    Asset,
    AssetAlias,
    CronDataIntervalTimetable,
    IdentityMapper,
    PartitionedAssetTimetable,
    StartOfDayMapper,
    StartOfHourMapper,
)

from batchscore.pipeline.config import ConfigError, PipelineConfig
from batchscore.pipeline.event_windows import EventFacts, EventWindowError, partition_window, window_of_events
from batchscore.pipeline.schedule_config import AssetSchedule
from batchscore.pipeline.windows import Window


def scores_asset(config: PipelineConfig) -> Asset:
    """The Asset a pipeline's published scores update, so downstream DAGs can wait for fresh scores."""
    return Asset(name=f"scores_{config.name}", uri=f"batchscore://{config.output.conn_id}/{config.output.table}")


def scores_alias(config: PipelineConfig) -> AssetAlias:
    """The ``publish`` task's outlet: an alias through which it updates :func:`scores_asset` only when it published.

    An Asset named in ``outlets`` gets an event whenever its task succeeds, a dry run's too, which
    would start every downstream DAG on scores that did not change. Through an alias the task adds
    the event itself (:func:`announce_scores`), or none.
    """
    return AssetAlias(name=f"scores_{config.name}_published")


def upstream_asset(schedule: AssetSchedule) -> Any:
    """The upstream Asset a schedule waits for: a reference for partitions, the Asset itself for plain events.

    A partitioned schedule refers to the producer's Asset by URI (or name), so the producer's own
    definition counts. A plain one must declare the Asset: Airflow 3.3.2's scheduler hands a run the
    events (``triggering_asset_events``, where its window is) only of Assets the DAG names directly,
    not of ``Asset.ref``s. It is ``Asset(uri=...)`` (named by its URI, as ``Asset("s3://...")`` is),
    ``Asset(name=...)``, or both when ``schedule.name`` gives the producer's name.
    """
    if schedule.partitioned:
        return Asset.ref(uri=schedule.asset) if schedule.is_uri else Asset.ref(name=schedule.asset)
    if schedule.is_uri:
        return Asset(name=schedule.name or schedule.asset, uri=schedule.asset)
    return Asset(name=schedule.asset)


def partition_mapper(schedule: AssetSchedule, tz: str) -> Any:
    """The producer's key (``key_format``, read in ``tz``) to this pipeline's period start: day, hour, or as is."""
    if schedule.mapper == "start_of_day":
        return StartOfDayMapper(timezone=tz, input_format=schedule.key_format)
    if schedule.mapper == "start_of_hour":
        return StartOfHourMapper(timezone=tz, input_format=schedule.key_format)
    return IdentityMapper()


def dag_schedule(config: PipelineConfig) -> Any:
    """What ``@dag(schedule=...)`` gets for the pipeline's ``schedule:``.

    Refuses (ConfigError) a pipeline scheduled on its own scores Asset: each run would start the next.
    """
    schedule = config.schedule
    if not isinstance(schedule, AssetSchedule):
        return CronDataIntervalTimetable(schedule, timezone=config.timezone)
    own = scores_asset(config)
    if schedule.asset in (own.uri, own.name):
        raise ConfigError(f"pipeline {config.name}: schedule.asset {schedule.asset!r} is its own scores Asset")
    if schedule.partitioned:
        return PartitionedAssetTimetable(
            assets=upstream_asset(schedule), default_partition_mapper=partition_mapper(schedule, config.timezone)
        )
    return upstream_asset(schedule)


def _run_type(context: Any) -> str:
    run_type = getattr(context["dag_run"], "run_type", None)
    return str(getattr(run_type, "value", run_type))


def _event_facts(context: Any) -> list[EventFacts]:
    """Each triggering event once (an event reached through an alias is listed under both)."""
    seen: dict[tuple[object, ...], EventFacts] = {}
    accessor = context.get("triggering_asset_events") or {}
    for events in accessor.values():
        for event in events:
            key = (event.source_dag_id, event.source_run_id, event.source_map_index, event.timestamp)
            if key in seen:
                continue
            extra = dict(event.extra or {})
            start = end = None
            if "window_start" not in extra and "window_end" not in extra:
                run = event.source_dag_run  # one call to the API server, only when the extra names no window
                start, end = (run.data_interval_start, run.data_interval_end) if run is not None else (None, None)
            source = f"event of {event.asset.name} from {event.source_dag_id}/{event.source_run_id}"
            seen[key] = EventFacts(extra=extra, interval_start=start, interval_end=end, source=source)
    return list(seen.values())


def asset_run_window(config: PipelineConfig, context: Any) -> Window | None:
    """The window an asset-scheduled run names: its partition's, else its events'; None for a manual run without.

    Raises :class:`EventWindowError` (permanent) when an asset-triggered run names no usable window.
    """
    schedule = config.schedule
    assert isinstance(schedule, AssetSchedule)
    run_after: datetime = context["dag_run"].run_after
    key, partition_date = context.get("partition_key"), context.get("partition_date")
    if key or partition_date:
        return partition_window(
            schedule, key=key, partition_date=partition_date, run_after=run_after, tz=config.timezone
        )
    if _run_type(context) != "asset_triggered":
        return None  # manual without a window: the caller scores the last complete period
    if schedule.partitioned:
        raise EventWindowError("the run was started by assets but has no partition_key")
    return window_of_events(_event_facts(context), config.timezone)


def scores_event_extra(config: PipelineConfig, context: Any, plan: Any, result: Any) -> dict[str, Any]:
    """What the scores Asset's event tells a downstream DAG: which window landed, from which run and model.

    ``published`` is always true (a run that published nothing emits no event); it stays in the
    extra for consumers written when dry runs emitted events too.
    """
    key = context.get("partition_key")
    return {
        "pipeline": config.name,
        "window_start": plan.window_start,
        "window_end": plan.window_end,
        "partition_key": key,
        "rows": result.rows_written,
        "rows_rejected": result.rows_rejected,
        "published": result.published,
        "model_name": plan.model_name,
        "model_version": plan.model_version,
        "run_id": context["run_id"],
        "timezone": str(ZoneInfo(config.timezone)),
    }


def announce_scores(config: PipelineConfig, context: Any, plan: Any, result: Any) -> bool:
    """Emit the scores Asset's event, with the window, rows and model, if the run published; whether it did.

    A dry run publishes nothing and emits nothing, so no downstream DAG starts. The event carries
    the run's partition key (Airflow puts the DAG run's on events added through an alias).
    """
    if not result.published:
        return False
    extra = scores_event_extra(config, context, plan, result)
    context["outlet_events"][scores_alias(config)].add(scores_asset(config), extra=extra)
    return True
